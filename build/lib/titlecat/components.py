"""Registered spaCy functions the titlecat pipelines need at load time.

Shipped inside every wheel with `spacy package --code`, so this module must be
self-contained: it imports spacy, thinc and numpy, never the rest of titlecat.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from spacy.ml.models.textcat import resize_and_set_ref, resize_linear_weighted
from spacy.strings import hash_string
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, SparseLinear_v2, chain, resizable, softmax_activation, with_cpu
from thinc.types import Floats2d

# Bias of a label that the output layer gains on resizing: such a label starts out improbable.
NEG_VALUE = -5000


def title_features(text: str, min_n: int, max_n: int) -> list[str]:
    """Lower-cased words, word bigrams and character n-grams within word boundaries.

    Character n-grams carry most of the signal in short multilingual titles:
    German compounds (Vertriebsleiterin), gendered forms and typos share
    pieces with the titles seen in training even when no whole word matches.
    """
    words = text.lower().split()
    features = [f"w:{word}" for word in words]
    features += [f"b:{first} {second}" for first, second in zip(words, words[1:], strict=False)]
    for word in words:
        padded = f" {word} "
        for n in range(min_n, max_n + 1):
            features += [padded[i : i + n] for i in range(len(padded) - n + 1)]
    return features


def extract_title_features(min_n: int, max_n: int) -> Model[list[Doc], tuple]:
    def forward(model: Model, docs: list[Doc], is_train: bool):
        keys, values, lengths = [], [], []
        for doc in docs:
            unique, counts = np.unique(
                np.array([hash_string(f) for f in title_features(doc.text, min_n, max_n)], dtype="uint64"),
                return_counts=True,
            )
            # Unit length per title, as TF-IDF does: long titles do not get larger scores.
            weights = counts.astype("float32")
            keys.append(unique)
            values.append(weights / max(np.linalg.norm(weights), 1e-8))
            lengths.append(len(unique))
        ops = model.ops
        batch = (
            ops.asarray(np.concatenate(keys) if keys else np.zeros((0,), dtype="uint64")),
            ops.asarray(np.concatenate(values) if values else np.zeros((0,), dtype="float32"), dtype="f"),
            ops.asarray(lengths, dtype="int32"),
        )
        return batch, lambda d_batch: []

    return Model("extract_title_features", forward, attrs={"min_n": min_n, "max_n": max_n})


@registry.architectures("titlecat.TitleNgramClassifier.v1")
def build_title_ngram_classifier(
    min_n: int = 2, max_n: int = 5, length: int = 2**20, nO: int | None = None
) -> Model[list[Doc], Floats2d]:
    """An exclusive-class linear classifier over hashed word and character n-grams of the title.

    The featurisation of TF-IDF + logistic regression, trained by `spacy train`
    with early stopping on dev and shipped inside the pipeline. Built like
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
