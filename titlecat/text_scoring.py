"""Doc-free scoring: the `doc.cats` of titles through a pipeline made only of titlecat's parts, without spaCy Docs.

`nlp.pipe` makes a Doc per title (the tokenizer, Token objects, `doc._` extensions) and each textcat writes its
scores into it one label at a time; titlecat's classifiers read nothing of a Doc but its text and its title vector.
`TextScorer` runs the same layers on a batch of strings: the n-gram features of the batch
(`titlecat.components.TitleFeatures.of_texts`), the title vectors (`TitleVectorPipe.vectors`), each textcat's linear
layers and softmax. The batches are those `nlp.pipe` would make, and every layer is the pipeline's own, called on
the same arrays: the scores are the very floats `nlp.pipe` gives.

A pipeline with any other part (another component, architecture or kind of textcat, a textcat listening to a
transformer) has no `TextScorer` (`text_scorer` returns None, `TextScorer.of` says why): its callers use `nlp.pipe`.
`TITLECAT_DOC_FREE=0` in the environment turns the path off (`doc_free_enabled`).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from spacy.language import Language
from spacy.pipeline import TextCategorizer
from thinc.api import Model

from .combined import TitleAnswers
from .components import TitleFeatures, forward_unscored_if_blank
from .multilingual import TitleVectorPipe, _scores_forward, _title_vectors_forward

DOC_FREE_VARIABLE = "TITLECAT_DOC_FREE"


def doc_free_enabled() -> bool:
    """False where the environment says TITLECAT_DOC_FREE=0 (or false, no, off): every title goes through
    `nlp.pipe`, e.g. to compare the two paths."""
    return os.environ.get(DOC_FREE_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class TextcatLayers:
    """One exclusive titlecat textcat as the layers its forward pass runs: `features` (extract_title_features) into
    `ngram_linear`; with `vector_linear`, the title vectors of `vector_pipe` (times `vector_weight`) into it too;
    the sum through `softmax_ops.softmax`."""

    name: str
    labels: tuple[str, ...]
    features: Model
    ngram_linear: Model
    softmax_ops: object
    vector_pipe: str | None = None
    vector_width: int = 0
    vector_weight: float = 1.0
    vector_linear: Model | None = None


def textcat_layers(name: str, textcat: TextCategorizer, vector_pipe: str | None) -> TextcatLayers:
    """The layers of a titlecat.MultilingualTitleClassifier.v1 or titlecat.TitleNgramClassifier.v2 textcat (the
    vectors of `vector_pipe`, the last title vector component before it); ValueError for anything else."""
    model = textcat.model
    labels = tuple(textcat.labels)
    if type(textcat) is not TextCategorizer:  # textcat_multilabel scores each label on its own (a sigmoid)
        raise ValueError(f"[{name}] is a {type(textcat).__name__}, not an exclusive textcat")
    if getattr(model._func, "func", None) is not forward_unscored_if_blank:
        raise ValueError(f"[{name}]'s model {model.name!r} is not a titlecat classifier")
    if model.name == "with_cpu(multilingual_title_scores)":
        scores = model.layers[0]
        features, ngram_linear, vectors, vector_linear = scores.layers
        if not (
            scores._func is _scores_forward
            and isinstance(features._func, TitleFeatures)
            and ngram_linear.name == "sparse_linear"
            and vectors._func is _title_vectors_forward
            and vector_linear.name == "linear"
        ):
            raise ValueError(f"[{name}]'s multilingual classifier has layers titlecat does not know")
        if vector_pipe is None:
            raise ValueError(f"[{name}] reads title vectors, and no title vector component comes before it")
        return TextcatLayers(
            name, labels, features, ngram_linear, scores.ops, vector_pipe,
            int(vectors.attrs["width"]), vectors.attrs["weight"], vector_linear,
        )  # fmt: skip
    if model.name == "with_cpu(extract_title_features>>resizable(sparse_linear))>>with_cpu(softmax_activation)":
        linear_part, softmax_part = model.layers
        features, resizable = linear_part.layers[0].layers
        softmax = softmax_part.layers[0]
        if not (isinstance(features._func, TitleFeatures) and resizable.layers[0].name == "sparse_linear"):
            raise ValueError(f"[{name}]'s n-gram classifier has layers titlecat does not know")
        return TextcatLayers(name, labels, features, resizable.layers[0], softmax.ops)
    raise ValueError(f"[{name}]'s model {model.name!r} is not a titlecat classifier")


class TextScorer:
    """The scores of titles through a pipeline of titlecat parts (see the module): `scores` (a matrix per textcat),
    `cats` (each title's `doc.cats`)."""

    def __init__(self, steps: Sequence[tuple[str, object]], answer_tasks: Sequence[tuple[str, ...]] = ()):
        # ("vectors", (name, a weak reference to its TitleVectorPipe)) or ("textcat", TextcatLayers), in the
        # pipeline's order.
        self.steps = list(steps)
        self.textcats = [step for kind, step in self.steps if kind == "textcat"]
        # The labels of each task a titlecat_answers component answers: 0.0 for a blank title, as it sets them.
        self.answer_labels = [label for labels in answer_tasks for label in labels]

    @classmethod
    def of(cls, nlp: Language) -> TextScorer:
        """The scorer of `nlp`'s enabled components; ValueError naming the first part it does not know."""
        steps: list[tuple[str, object]] = []
        answer_tasks: list[tuple[str, ...]] = []
        vector_pipe: str | None = None
        for name, pipe in nlp.pipeline:
            if isinstance(pipe, TitleVectorPipe):
                # A weak reference: the scorer is kept per pipeline in a WeakKeyDictionary, and the component holds
                # its pipeline (`pipe.nlp`), which a strong one would then keep alive for ever.
                steps.append(("vectors", (name, weakref.ref(pipe))))
                vector_pipe = name
            elif isinstance(pipe, TextCategorizer):
                steps.append(("textcat", textcat_layers(name, pipe, vector_pipe)))
            elif type(pipe) is TitleAnswers:
                answer_tasks += pipe.task_labels().values()
            else:
                raise ValueError(f"[{name}] is a {type(pipe).__name__}, which the Doc-free path does not know")
        if not any(kind == "textcat" for kind, _ in steps):
            raise ValueError(f"the pipeline {nlp.pipe_names} has no textcat the Doc-free path knows")
        return cls(steps, answer_tasks)

    def scores(self, texts: Sequence[str], batch_size: int) -> dict[str, np.ndarray]:
        """Each textcat's scores [len(texts), its labels] (float32), in batches of `batch_size` texts, as `nlp.pipe`
        with that batch size forms them: each layer then sees the very arrays it sees there."""
        texts = list(texts)
        parts: dict[str, list[np.ndarray]] = {textcat.name: [] for textcat in self.textcats}
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            for name, scores in self._batch_scores(batch).items():
                parts[name].append(scores)
        return {
            textcat.name: np.concatenate(parts[textcat.name])
            if parts[textcat.name]
            else np.zeros((0, len(textcat.labels)), dtype="float32")
            for textcat in self.textcats
        }

    def _batch_scores(self, batch: list[str]) -> dict[str, np.ndarray]:
        blank = [index for index, text in enumerate(batch) if not text.strip()]
        vectors: dict[str, np.ndarray] = {}
        scores: dict[str, np.ndarray] = {}
        for kind, step in self.steps:
            if kind == "vectors":
                name, pipe = step
                vectors[name] = title_vectors(pipe(), batch)
                continue
            textcat: TextcatLayers = step
            if not any(batch):
                # spaCy's textcat scores a batch without a single token 0.0, without calling its model.
                scores[textcat.name] = np.zeros((len(batch), len(textcat.labels)), dtype="float32")
                continue
            features = textcat.features._func.of_texts(batch, textcat.features.ops)
            logits = textcat.ngram_linear.predict(features)
            if textcat.vector_linear is not None:
                logits = logits + textcat.vector_linear.predict(vectors[textcat.vector_pipe] * textcat.vector_weight)
            batch_scores = textcat.softmax_ops.softmax(logits)
            if blank:  # titlecat.components.unscored_if_blank
                batch_scores = batch_scores.copy()
                batch_scores[blank] = 0.0
            scores[textcat.name] = np.asarray(batch_scores)
        return scores

    def cats(self, texts: Sequence[str], batch_size: int) -> list[dict[str, float]]:
        """Each text's `doc.cats` as `nlp.pipe` sets them: every textcat's labels in the pipeline's order."""
        scores = self.scores(texts, batch_size)
        rows: list[dict[str, float]] = [{} for _ in texts]
        for textcat in self.textcats:
            for cats, values in zip(rows, scores[textcat.name].tolist(), strict=True):
                cats.update(zip(textcat.labels, values, strict=True))
        if self.answer_labels:
            zeros = dict.fromkeys(self.answer_labels, 0.0)
            for text, cats in zip(texts, rows, strict=True):
                if not text.strip():
                    cats.update(zeros)
        return rows

    def task_scores(
        self, texts: Sequence[str], batch_size: int, tasks: dict[str, Sequence[str]]
    ) -> dict[str, np.ndarray]:
        """Each task's [len(texts), len(its labels)]: the scores `cats` would give its labels (a label two textcats
        share: the later one's, as in doc.cats), without building the dicts."""
        scores = self.scores(texts, batch_size)
        column_of = {
            label: (textcat.name, column) for textcat in self.textcats for column, label in enumerate(textcat.labels)
        }
        missing = [label for labels in tasks.values() for label in labels if label not in column_of]
        if missing:
            raise KeyError(f"no textcat of the pipeline scores {missing}")
        blank = [index for index, text in enumerate(texts) if not text.strip()] if self.answer_labels else []
        by_task = {}
        for task, labels in tasks.items():
            matrix = np.stack([scores[column_of[label][0]][:, column_of[label][1]] for label in labels], axis=1)
            answered = [column for column, label in enumerate(labels) if label in self.answer_labels]
            if blank and answered:
                matrix[np.ix_(blank, answered)] = 0.0
            by_task[task] = matrix
        return by_task


def title_vectors(pipe: TitleVectorPipe, batch: list[str]) -> np.ndarray:
    """[len(batch), width] of the vectors `pipe` sets on the batch's docs (`TitleVectorPipe.set_vectors`: each
    distinct non-blank text once, in order of first appearance), zeros for a blank text, as the classifier reads
    them (`titlecat.multilingual.title_vectors`)."""
    distinct = list(dict.fromkeys(text for text in batch if text.strip()))
    computed = pipe.vectors(distinct)
    row_of = {text: row for row, text in enumerate(distinct)}
    rows = np.fromiter((row_of.get(text, -1) for text in batch), dtype="int64", count=len(batch))
    vectors = np.zeros((len(batch), computed.shape[1] if computed.ndim == 2 else 0), dtype="float32")
    has_vector = rows >= 0
    if has_vector.any():
        vectors[has_vector] = computed[rows[has_vector]]
    return vectors


# Each loaded pipeline's scorer (or None), decided once: the key is its components, so a pipeline changed after
# (add_pipe, remove_pipe, disabling) is looked at again.
_scorers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def text_scorer(nlp: Language) -> TextScorer | None:
    """`TextScorer.of(nlp)`, or None where the pipeline has a part it does not know or TITLECAT_DOC_FREE=0."""
    if not doc_free_enabled():
        return None
    components = tuple((name, id(pipe)) for name, pipe in nlp.pipeline)
    known = _scorers.get(nlp)
    if known is not None and known[0] == components:
        return known[1]
    try:
        scorer: TextScorer | None = TextScorer.of(nlp)
    except ValueError:
        scorer = None
    _scorers[nlp] = (components, scorer)
    return scorer
