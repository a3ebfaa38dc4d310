"""Splits, DocBins and the corpus report shared by both tasks."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from operator import attrgetter
from pathlib import Path
from typing import TypeVar

import numpy as np
import spacy
from sklearn.model_selection import train_test_split
from spacy.language import Language
from spacy.tokens import DocBin
from spacy.training import Example as SpacyExample

from .components import SAMPLE_WEIGHT_KEY, read_corpus_docs, user_data_path
from .labels import TASKS, Task, one_hot
from .readers import Example, read_curated_csv

SPLITS = ("train", "dev", "test")
# The evaluation sets from the hand-labelled CVs: cv-dev (for choices) and OOD (evaluation only).
CV_SETS = {"cv_dev": "cv_dev.spacy", "ood": "ood.spacy"}
# The training corpus of each variant: curated train, or curated train + pseudo-labelled CV titles.
TRAIN_FILES = {"base": "train.spacy", "augmented": "train_augmented.spacy"}
T = TypeVar("T")
BALANCED_READER = "titlecat.ClassBalancedCorpus.v1"


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


def oversample_to_largest(examples: Sequence[T], seed: int, label: Callable[[T], str] = attrgetter("label")) -> list[T]:
    """Every label drawn up to the size of the largest (with replacement, seeded), as imbalanced-learn's
    RandomOverSampler does: the reference study's recipe (its department bag-of-words, retrained in the
    benchmark, and its seniority transformer), and the transformer recipe's class balance (docs/trf_recipe.md).
    The examples come first, in their order, then the drawn copies, label by label."""
    rng = np.random.RandomState(seed)
    by_label: dict[str, list[T]] = {}
    for example in examples:
        by_label.setdefault(label(example), []).append(example)
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


# doc.user_data keys a corpus may carry: a training example's weight in the fit (SAMPLE_WEIGHT_KEY; ESCO names weigh
# less than a curated title), and a title's language (the multilingual dev set, ESCO names: per-language figures).
WEIGHT_KEY = SAMPLE_WEIGHT_KEY
LANG_KEY = "titlecat_lang"


def to_docbin(examples: Iterable[Example], task: Task, nlp: spacy.Language | None = None) -> DocBin:
    """A task's corpus: each example's title with its one-hot doc.cats."""
    nlp = nlp or make_nlp()
    docbin = DocBin(attrs=["ORTH"])
    for example in examples:
        doc = nlp.make_doc(example.text)
        doc.cats = one_hot(example.label, task.labels)
        docbin.add(doc)
    return docbin


def write_corpus(
    path: Path | str,
    examples: Iterable[Example],
    task: Task,
    nlp: spacy.Language | None = None,
    user_data: Iterable[dict] | None = None,
) -> None:
    """`to_docbin` at `path`; `user_data`, one dict per example (WEIGHT_KEY, LANG_KEY), beside it (`user_data_path`:
    `read_corpus_docs` puts it back into each doc.user_data)."""
    examples = list(examples)
    to_docbin(examples, task, nlp).to_disk(path)
    extras_path = user_data_path(path)
    if user_data is None:
        extras_path.unlink(missing_ok=True)  # a file from an earlier run would give these docs its data
        return
    extras = list(user_data)
    if len(extras) != len(examples):
        raise ValueError(f"{path}: {len(extras)} user_data dicts for {len(examples)} examples")
    extras_path.write_text(json.dumps(extras, ensure_ascii=False) + "\n", encoding="utf-8")


def read_docbin(path: Path | str, task: Task, nlp: spacy.Language | None = None) -> tuple[list[str], list[str]]:
    """(texts, gold labels) of a corpus file."""
    nlp = nlp or make_nlp()
    texts, labels = [], []
    for doc in DocBin().from_disk(path).get_docs(nlp.vocab):
        texts.append(doc.text)
        labels.append(max(task.labels, key=lambda label: doc.cats.get(label, 0.0)))
    return texts, labels


def read_user_data(path: Path | str, key: str, default=None, nlp: spacy.Language | None = None) -> list:
    """Each doc's `doc.user_data[key]` of a corpus file (default where it has none), in the corpus's order."""
    return [doc.user_data.get(key, default) for doc in read_corpus_docs(path, nlp or make_nlp())]


def corpus_task(cats: dict[str, float], path: Path | str) -> Task:
    """The task whose labels a corpus's doc.cats hold."""
    for task in TASKS.values():
        if set(cats) == set(task.labels):
            return task
    raise ValueError(f"{path}: doc.cats labels {sorted(cats)} are those of no task ({', '.join(TASKS)})")


@spacy.registry.readers(BALANCED_READER)
def create_class_balanced_corpus(
    path: Path, oversample_tasks: list[str], seed: int
) -> Callable[[Language], list[SpacyExample]]:
    """spaCy's Corpus of a task's DocBin; for a task named in `oversample_tasks`, every label drawn up to the size
    of the largest (`oversample_to_largest`, seeded). The training loop shuffles the examples every epoch."""
    unknown = sorted(set(oversample_tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"corpora.train.oversample_tasks: {unknown[0]!r} is no task ({', '.join(TASKS)})")
    epochs = iter(range(1 << 30))

    def read(nlp: Language) -> list[SpacyExample]:
        # As spaCy's Corpus makes them (no empty doc), with each doc's user_data (its weight).
        examples = [SpacyExample(nlp.make_doc(doc.text), doc) for doc in read_corpus_docs(path, nlp) if len(doc)]
        if not examples:
            return examples
        # An example of weight w < 1 (ESCO names) is kept with probability w, drawn anew each epoch (seeded): a
        # gradient loop has no sample weights, and this gives it w of the example in expectation.
        draws = np.random.RandomState(seed + next(epochs)).random_sample(len(examples))
        examples = [
            example
            for example, draw in zip(examples, draws, strict=True)
            if draw < float(example.reference.user_data.get(WEIGHT_KEY, 1.0))
        ]
        task = corpus_task(examples[0].reference.cats, path)
        if task.name not in oversample_tasks:
            return examples
        return oversample_to_largest(examples, seed, lambda example: max(task.labels, key=example.reference.cats.get))

    return read


def label_counts(examples: Iterable[Example], task: Task) -> dict[str, int]:
    counts = Counter(example.label for example in examples)
    return {label: counts.get(label, 0) for label in task.labels}


def casefold_set(texts: Iterable[str]) -> set[str]:
    return {text.casefold() for text in texts}
