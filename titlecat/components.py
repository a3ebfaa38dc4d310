"""Registered spaCy functions the titlecat pipelines need at load time, and the one that fits the CPU pipeline.

Shipped inside every wheel with `spacy package --code`, so this module must be
self-contained: it imports spacy, thinc and numpy (murmurhash, scipy and scikit-learn
only when fitting a pipeline), never the rest of titlecat.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache, partial

import numpy as np
from spacy.ml.models.textcat import resize_and_set_ref, resize_linear_weighted
from spacy.strings import hash_string
from spacy.tokens import Doc
from spacy.training import Corpus
from spacy.util import registry
from thinc.api import Model, SparseLinear_v2, chain, resizable, softmax_activation, with_cpu
from thinc.types import Floats2d

# Bias of a label that the output layer gains on resizing: such a label starts out improbable.
NEG_VALUE = -5000


# Words as scikit-learn's TfidfVectorizer finds them: runs of 2+ word characters, so
# "Sales-Manager", "(m/w/d)" and "IT/Vertrieb" give the same words as their spaced forms.
WORD = re.compile(r"\b\w\w+\b")


def _word_features(lowered: str) -> list[str]:
    words = WORD.findall(lowered)
    return [f"w:{word}" for word in words] + [
        f"b:{first} {second}" for first, second in zip(words, words[1:], strict=False)
    ]


def _char_ngrams(piece: str, min_n: int, max_n: int) -> list[str]:
    padded = f" {piece} "
    return [padded[i : i + n] for n in range(min_n, max_n + 1) for i in range(len(padded) - n + 1)]


def title_features(text: str, min_n: int, max_n: int) -> tuple[list[str], list[str]]:
    """Word features (lower-cased words and word bigrams) and character n-grams within word boundaries.

    Character n-grams carry most of the signal in short multilingual titles:
    German compounds (Vertriebsleiterin), gendered forms and typos share
    pieces with the titles seen in training even when no whole word matches.
    """
    lowered = text.lower()
    return _word_features(lowered), [gram for piece in lowered.split() for gram in _char_ngrams(piece, min_n, max_n)]


# Hashes of the pieces a title is made of, cached: job titles reuse a small vocabulary ("manager",
# "leiter", "sales"), so most words of an unseen title were featurised before. With the batched
# scaling in the forward pass, the feature layer ran about 2.7x faster (a microbenchmark on the
# project's 2-core machine); a bounded cache keeps memory flat on millions of titles.
@lru_cache(maxsize=2**18)
def _hash(feature: str) -> int:
    return hash_string(feature)


@lru_cache(maxsize=2**18)
def _char_ngram_keys(piece: str, min_n: int, max_n: int) -> tuple[int, ...]:
    return tuple(map(hash_string, _char_ngrams(piece, min_n, max_n)))


def title_feature_counts(text: str, min_n: int, max_n: int) -> tuple[Counter, Counter]:
    """The hashed features of `title_features` and their counts: (word block, character block)."""
    lowered = text.lower()
    word_counts = Counter(map(_hash, _word_features(lowered)))
    char_counts: Counter = Counter()
    for piece in lowered.split():
        char_counts.update(_char_ngram_keys(piece, min_n, max_n))
    return word_counts, char_counts


def extract_title_features(min_n: int, max_n: int) -> Model[list[Doc], tuple]:
    def forward(model: Model, docs: list[Doc], is_train: bool):
        keys: list[int] = []
        counts: list[int] = []
        block_sizes: list[int] = []
        lengths = []
        for doc in docs:
            for block in title_feature_counts(doc.text, min_n, max_n):
                keys += block
                counts += block.values()
                block_sizes.append(len(block))
            lengths.append(block_sizes[-1] + block_sizes[-2])
        # Each block scaled to unit length, as in a union of two TF-IDF vectorizers: a title's few
        # words weigh as much as its many character n-grams (chosen on held-out CVs, docs/quality.md),
        # and long titles do not get larger scores. Done for the whole batch at once: it is the hot loop.
        values = np.asarray(counts, dtype="float32")
        block_of_value = np.repeat(np.arange(len(block_sizes)), block_sizes)
        norms = np.sqrt(np.bincount(block_of_value, weights=values**2, minlength=len(block_sizes)))
        values /= np.maximum(norms, 1e-8)[block_of_value]
        ops = model.ops
        batch = (
            ops.asarray(np.fromiter(keys, dtype="uint64", count=len(keys))),
            ops.asarray(values, dtype="f"),
            ops.asarray(lengths, dtype="int32"),
        )
        return batch, lambda d_batch: []

    return Model("extract_title_features", forward, attrs={"min_n": min_n, "max_n": max_n})


@registry.architectures("titlecat.TitleNgramClassifier.v2")
def build_title_ngram_classifier(
    min_n: int = 2, max_n: int = 5, length: int = 2**20, nO: int | None = None
) -> Model[list[Doc], Floats2d]:
    """An exclusive-class linear classifier over hashed word and character n-grams of the title.

    The featurisation of TF-IDF + logistic regression, shipped inside the
    pipeline; configs/cpu.cfg fits it by logistic regression too
    (`titlecat.fit_title_classifier.v1`). Built like
    spaCy's TextCatBOW.v3, with these features in place of token n-grams.
    """
    sparse_linear = SparseLinear_v2(nO=nO, length=length)
    resizable_layer = resizable(
        sparse_linear, resize_layer=partial(resize_linear_weighted, fill_defaults={"b": NEG_VALUE, "W": 0})
    )
    model = with_cpu(chain(extract_title_features(min_n, max_n), resizable_layer), resizable_layer.ops)
    output_layer = softmax_activation()
    model = chain(model, with_cpu(output_layer, output_layer.ops))
    if nO is not None:
        model.set_dim("nO", nO)
    model.set_ref("output_layer", sparse_linear)
    model.attrs["multi_label"] = False
    model.attrs["resize_output"] = partial(resize_and_set_ref, resizable_layer=resizable_layer)
    return model


def hashed_design_matrix(keys: np.ndarray, values: np.ndarray, lengths: np.ndarray, length: int):
    """The titles as rows of the linear layer's input space: a feature adds its value to both weights it hashes to,
    so `matrix @ W[label]` is the layer's score for the label (without bias)."""
    import scipy.sparse
    from murmurhash.mrmr import hash_bytes

    # thinc's SparseLinear picks a key's two weights by MurmurHash3 (x86, 32 bit) of its 8 bytes, seeds 0 and 1.
    unique_keys, key_index = np.unique(keys, return_inverse=True)
    key_bytes = [key.to_bytes(8, "little") for key in unique_keys.tolist()]
    columns = [
        (np.array([hash_bytes(b, seed) & 0xFFFFFFFF for b in key_bytes], dtype="int64") % length)[key_index]
        for seed in (0, 1)
    ]
    rows = np.repeat(np.arange(len(lengths)), lengths)
    return scipy.sparse.csr_matrix(
        (np.concatenate([values, values]), (np.concatenate([rows, rows]), np.concatenate(columns))),
        shape=(len(lengths), length),
        dtype="float64",
    )


@registry.callbacks("titlecat.fit_title_classifier.v1")
def make_fit_title_classifier(path: str, component: str = "textcat", C: float = 10.0, max_iter: int = 3000):
    """An `[initialize.after_init]` callback: fit the linear layer of a TitleNgramClassifier by L2-regularised
    logistic regression (scikit-learn, L-BFGS, to convergence) on the training corpus at `path`.

    Adam with early stopping stayed short of the convex optimum on these features; configs/cpu.cfg
    keeps the fit (its loop runs at learning rate 0; docs/quality.md, round 5). Needs scikit-learn at
    training time only.
    """

    def fit(nlp):
        from sklearn.linear_model import LogisticRegression
        from wasabi import msg

        textcat = nlp.get_pipe(component)
        model = textcat.model
        extract = next((layer for layer in model.walk() if layer.name == "extract_title_features"), None)
        if extract is None:
            raise ValueError(f"[{component}]: titlecat.fit_title_classifier.v1 fits a titlecat.TitleNgramClassifier")
        linear = model.get_ref("output_layer")
        docs = [example.reference for example in Corpus(path)(nlp)]
        labels = [max(doc.cats, key=doc.cats.get) for doc in docs if any(doc.cats.values())]
        if len(labels) < len(docs) or len(set(labels)) < 2:
            raise ValueError(
                f"{path}: fitting {component} needs a label (doc.cats) on every title and 2+ labels; "
                f"{len(labels)} of {len(docs)} titles have one, labels: {sorted(set(labels))}"
            )
        msg.info(f"Fitting {component} by logistic regression (C={C}) on {len(docs):,} titles of {path}")
        keys, values, lengths = extract.predict(docs)
        n_weights = linear.get_dim("length")
        matrix = hashed_design_matrix(np.asarray(keys), np.asarray(values), np.asarray(lengths), n_weights)
        classifier = LogisticRegression(C=C, max_iter=max_iter).fit(matrix, labels)
        coef, intercept = classifier.coef_, classifier.intercept_
        if len(classifier.classes_) == 2:
            # scikit-learn keeps one row for two labels: the softmax of (-z/2, z/2) is its sigmoid of z.
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        weights = np.zeros((len(textcat.labels), n_weights), dtype="float32")
        bias = np.full((len(textcat.labels),), NEG_VALUE, dtype="float32")
        for row, label in enumerate(classifier.classes_):
            weights[textcat.labels.index(label)] = coef[row]
            bias[textcat.labels.index(label)] = intercept[row]
        linear.set_param("W", linear.ops.asarray(weights.ravel()))
        linear.set_param("b", linear.ops.asarray(bias))
        return nlp

    return fit
