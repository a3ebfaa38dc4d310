"""Splits, DocBins and the corpus report shared by both tasks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import spacy
from sklearn.model_selection import train_test_split
from spacy.tokens import DocBin

from .labels import Task, one_hot
from .readers import Example, read_curated_csv

SPLITS = ("train", "dev", "test")
# The evaluation sets from the hand-labelled CVs: cv-dev (for choices) and OOD (evaluation only).
CV_SETS = {"cv_dev": "cv_dev.spacy", "ood": "ood.spacy"}
# The training corpus of each variant: curated train, or curated train + pseudo-labelled CV titles.
TRAIN_FILES = {"base": "train.spacy", "augmented": "train_augmented.spacy"}


def subsample_per_label(examples: Sequence[Example], max_per_label: int, seed: int) -> list[Example]:
    """At most `max_per_label` examples of each label (for tests and quick runs); 0 keeps all."""
    if max_per_label <= 0:
        return list(examples)
    rng = np.random.RandomState(seed)
    keep: set[int] = set()
    by_label: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        by_label.setdefault(example.label, []).append(index)
    for indices in by_label.values():
        keep.update(rng.permutation(indices)[:max_per_label].tolist())
    return [example for index, example in enumerate(examples) if index in keep]


def harmonise(examples: Sequence[Example], task: Task) -> tuple[list[Example], int]:
    """Training labels in the annotators' convention (Task.training_label), and how many it changed.

    Hand labels never go through this."""
    mapped = [replace(e, label=task.training_label(e.text, e.label)) for e in examples]
    return mapped, sum(e.label != m.label for e, m in zip(examples, mapped, strict=True))


def oversample_to_largest(examples: Sequence[Example], seed: int) -> list[Example]:
    """Every label drawn up to the size of the largest (with replacement, seeded), as imbalanced-learn's
    RandomOverSampler does: the reference study's department recipe, retrained in the benchmark."""
    rng = np.random.RandomState(seed)
    by_label: dict[str, list[Example]] = {}
    for example in examples:
        by_label.setdefault(example.label, []).append(example)
    largest = max(len(group) for group in by_label.values())
    balanced = list(examples)
    for label in sorted(by_label):
        group = by_label[label]
        balanced += [group[i] for i in rng.randint(0, len(group), largest - len(group))]
    return balanced


def split_70_15_15(examples: Sequence[Example], seed: int) -> dict[str, list[Example]]:
    """The study's protocol: 70/15/15, stratified by label, the same seed for both cuts."""
    labels = [example.label for example in examples]
    train, rest = train_test_split(list(examples), test_size=0.3, stratify=labels, random_state=seed)
    dev, test = train_test_split(rest, test_size=0.5, stratify=[e.label for e in rest], random_state=seed)
    return {"train": train, "dev": dev, "test": test}


def curated_splits(assets_dir: Path | str, task: Task, seed: int, max_per_label: int = 0):
    """train/dev/test of the task's curated CSV with the CSV's own labels, and its skipped rows."""
    curated, skipped = read_curated_csv(Path(assets_dir) / task.curated_asset, task)
    return split_70_15_15(subsample_per_label(curated, max_per_label, seed), seed), skipped


def make_nlp(lang: str = "xx") -> spacy.Language:
    # The multilingual tokenizer: titles come in any language, often mixed.
    return spacy.blank(lang)


def to_docbin(examples: Iterable[Example], task: Task, nlp: spacy.Language | None = None) -> DocBin:
    nlp = nlp or make_nlp()
    docbin = DocBin(attrs=["ORTH"], store_user_data=False)
    for example in examples:
        doc = nlp.make_doc(example.text)
        doc.cats = one_hot(example.label, task.labels)
        docbin.add(doc)
    return docbin


def read_docbin(path: Path | str, task: Task, nlp: spacy.Language | None = None) -> tuple[list[str], list[str]]:
    """(texts, gold labels) of a corpus file."""
    nlp = nlp or make_nlp()
    texts, labels = [], []
    for doc in DocBin().from_disk(path).get_docs(nlp.vocab):
        texts.append(doc.text)
        labels.append(max(task.labels, key=lambda label: doc.cats.get(label, 0.0)))
    return texts, labels


def oversampled_docbin(path: Path | str, task: Task, seed: int) -> DocBin:
    """A corpus file with every label drawn up to the size of the largest (`oversample_to_largest`): the
    class balance the reference study trained its seniority transformer with."""
    texts, labels = read_docbin(path, task)
    pairs = enumerate(zip(texts, labels, strict=True))
    examples = [Example(text, label, Path(path).name, index) for index, (text, label) in pairs]
    return to_docbin(oversample_to_largest(examples, seed), task)


def label_counts(examples: Iterable[Example], task: Task) -> dict[str, int]:
    counts = Counter(example.label for example in examples)
    return {label: counts.get(label, 0) for label in task.labels}


def casefold_set(texts: Iterable[str]) -> set[str]:
    return {text.casefold() for text in texts}
