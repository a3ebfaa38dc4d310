"""Registered spaCy functions the titlecat pipelines need at load time, and the one that fits the CPU pipeline.

Shipped inside every wheel with `spacy package --code`, so this module must be
self-contained: it imports spacy, thinc and numpy (murmurhash, scipy and scikit-learn
only when fitting a pipeline), never the rest of titlecat.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import numpy as np
from spacy.ml.models.textcat import resize_and_set_ref, resize_linear_weighted
from spacy.strings import hash_string
from spacy.tokens import Doc, DocBin
from spacy.util import registry
from thinc.api import Model, SparseLinear_v2, chain, resizable, softmax_activation, with_cpu
from thinc.types import Floats2d

# Bias of a label that the output layer gains on resizing: such a label starts out improbable.
NEG_VALUE = -5000


# doc.user_data key of a title's text, read once per doc: spaCy builds doc.text anew from its tokens on each read (a
# Token object a token), and a title's text was read 9 times on its way through the fast combined pipeline.
TEXT_KEY = "titlecat_text"


def title_text(doc: Doc) -> str:
    """`doc.text`, kept in doc.user_data after the first read (a title's text never changes in a titlecat pipeline)."""
    text = doc.user_data.get(TEXT_KEY)
    if text is None:
        text = doc.user_data[TEXT_KEY] = doc.text
    return text


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


# The bound of a FeatureTable. The words and pieces of the study's titles take some 47,000 keys; new word pairs,
# most of what an unseen title brings, add the rest. 2^17 keys is reached within the first 200,000 distinct titles
# and emptied about every 200,000 after (refilling costs ~0.2 s): a million distinct titles then peak within 3% of
# 100,000's, where 2^19 grew by 114 MiB (+18.6%) without ever filling (docs/speed.md).
MAX_FEATURE_KEYS = 2**17


class FeatureTable:
    """The hashed features of title pieces, memoised as small ids into one table of keys.

    Job titles reuse a small vocabulary ("manager", "leiter", "sales"), so most pieces of an unseen
    title were featurised before, and small ids let the forward pass count a whole batch's features
    with one numpy sort. The table is emptied when it outgrows `max_keys`, which keeps memory flat
    on millions of titles (MAX_FEATURE_KEYS).
    """

    def __init__(self, min_n: int, max_n: int, max_keys: int = MAX_FEATURE_KEYS):
        self.min_n, self.max_n, self.max_keys = min_n, max_n, max_keys
        self.clear()

    def clear(self) -> None:
        self.keys: list[int] = []
        self.key_array = np.zeros(0, dtype="uint64")
        self._ids: dict[int, int] = {}
        self._pieces: dict[str, np.ndarray] = {}
        self._words: dict[str, int] = {}
        self._bigrams: dict[tuple[str, str], int] = {}

    def _id(self, feature: str) -> int:
        key = hash_string(feature)
        feature_id = self._ids.get(key)
        if feature_id is None:
            feature_id = self._ids[key] = len(self.keys)
            self.keys.append(key)
        return feature_id

    def piece(self, piece: str) -> np.ndarray:
        """Ids of the character n-grams of one whitespace-separated piece (lower-cased)."""
        ids = self._pieces.get(piece)
        if ids is None:
            ngrams = _char_ngrams(piece, self.min_n, self.max_n)
            ids = self._pieces[piece] = np.fromiter(map(self._id, ngrams), dtype="int64", count=len(ngrams))
        return ids

    def word(self, word: str) -> int:
        feature_id = self._words.get(word)
        if feature_id is None:
            feature_id = self._words[word] = self._id(f"w:{word}")
        return feature_id

    def bigram(self, first: str, second: str) -> int:
        feature_id = self._bigrams.get((first, second))
        if feature_id is None:
            feature_id = self._bigrams[(first, second)] = self._id(f"b:{first} {second}")
        return feature_id

    def keys_of(self, ids: np.ndarray) -> np.ndarray:
        if len(self.key_array) < len(self.keys):
            self.key_array = np.asarray(self.keys, dtype="uint64")
        return self.key_array[ids]


class TitleFeatures:
    """The forward pass of `extract_title_features`: a module-level class, not a closure, so a pipeline pickles
    (nlp.pipe(n_process=...) under the spawn and forkserver start methods, the default on macOS, Windows and,
    from Python 3.14, Linux). A pickle carries the settings, not the memo, which each process refills."""

    def __init__(self, min_n: int, max_n: int, max_keys: int = MAX_FEATURE_KEYS):
        self.table = FeatureTable(min_n, max_n, max_keys)

    def __getstate__(self) -> dict:
        table = self.table
        return {"min_n": table.min_n, "max_n": table.max_n, "max_keys": table.max_keys}

    def __setstate__(self, state: dict) -> None:
        self.table = FeatureTable(state["min_n"], state["max_n"], state["max_keys"])

    # The last batch's features, shared by every instance: a combined pipeline's textcats read the same titles one
    # after the other, and the features (keys, not the tables' ids) are the same whichever table made them.
    last_batch: tuple = ((), None)

    def __call__(self, model: Model, docs: list[Doc], is_train: bool):
        return self.of_texts([title_text(doc) for doc in docs], model.ops), _no_gradient

    def of_texts(self, texts: list[str], ops) -> tuple:
        """(keys, values, lengths) of a batch of titles' texts, as arrays of `ops`: the forward pass without Docs,
        which titlecat.text_scoring calls on strings."""
        table = self.table
        batch_key = (table.min_n, table.max_n, type(ops), texts)
        last_key, last_features = TitleFeatures.last_batch
        if last_key == batch_key:
            return last_features
        if len(table.keys) > table.max_keys:
            table.clear()
        # Two blocks per title, words then characters, as ids with repeats; counted below for the batch.
        blocks: list[np.ndarray] = []
        block_sizes: list[int] = []
        for text in texts:
            lowered = text.lower()
            words = WORD.findall(lowered)
            word_ids = list(map(table.word, words))
            word_ids += map(table.bigram, words, words[1:])
            pieces = list(map(table.piece, lowered.split()))
            blocks.append(np.array(word_ids, dtype="int64"))
            blocks += pieces
            block_sizes += (len(word_ids), sum(map(len, pieces)))
        ids = np.concatenate(blocks) if blocks else np.zeros(0, dtype="int64")
        block_of_id = np.repeat(np.arange(len(block_sizes), dtype="int64"), block_sizes)
        # One sort counts every (block, feature) pair of the batch; ids stay far below 2^32 (max_keys).
        pairs, first_seen, counts = np.unique((block_of_id << 32) | ids, return_index=True, return_counts=True)
        # Back in the order the features occur in the title: ids depend on which titles the memo saw
        # first, and the order of a title's features sets the float rounding of its scores.
        in_title_order = np.argsort(first_seen)
        pairs, counts = pairs[in_title_order], counts[in_title_order]
        block_of_value = pairs >> 32
        # Each block scaled to unit length, as in a union of two TF-IDF vectorizers: a title's few
        # words weigh as much as its many character n-grams (chosen on held-out CVs, docs/quality.md),
        # and long titles do not get larger scores.
        values = counts.astype("float32")
        norms = np.sqrt(np.bincount(block_of_value, weights=values**2, minlength=len(block_sizes)))
        values /= np.maximum(norms, 1e-8)[block_of_value]
        features_per_block = np.bincount(block_of_value, minlength=len(block_sizes))
        batch = (
            ops.asarray(table.keys_of(pairs & 0xFFFFFFFF)),
            ops.asarray(values, dtype="f"),
            ops.asarray(features_per_block[0::2] + features_per_block[1::2], dtype="int32"),
        )
        TitleFeatures.last_batch = (batch_key, batch)
        return batch


def _no_gradient(d_batch) -> list:
    return []


def extract_title_features(min_n: int, max_n: int, max_keys: int = MAX_FEATURE_KEYS) -> Model[list[Doc], tuple]:
    """(keys, values, lengths) for thinc's SparseLinear: each title's hashed features (`title_features`)
    with their counts, a title's word block and its character block each scaled to unit length."""
    return Model(
        "extract_title_features", TitleFeatures(min_n, max_n, max_keys), attrs={"min_n": min_n, "max_n": max_n}
    )


@registry.layers("titlecat.title_features.v1")
def title_features_layer(min_n: int, max_n: int) -> Model[list[Doc], tuple]:
    """`extract_title_features` by name: how titlecat/trf_textcat.py, shipped as a file of its own, finds them."""
    return extract_title_features(min_n, max_n)


# The name other shipped modules find `unscored_if_blank` by (see there).
UNSCORED_IF_BLANK = "titlecat.unscored_if_blank.v1"


@registry.misc(UNSCORED_IF_BLANK)
def unscored_if_blank(model: Model[list[Doc], Floats2d]) -> Model[list[Doc], Floats2d]:
    """The title classifier `model`, scoring every label 0.0 for a doc with no text (empty or whitespace only).

    titlecat's convention for a title with no text: no score, the same alone and in a batch. spaCy's textcat
    itself scores a batch without any token 0.0, without calling its model (`nlp("")`); a classifier would score
    an empty doc in a batch by its biases alone, and `"   "` (one whitespace token) as a title. Applied to the
    model an architecture returns (every titlecat classifier architecture should), as the last step of its forward
    pass; no layer is added, so a pipeline saved before loads into it unchanged (thinc matches layers by position).

    Another shipped module gets it from spaCy's registry, `registry.misc.get("titlecat.unscored_if_blank.v1")`,
    not by importing this one: `spacy package --code` imports each file alone, where `from .components` fails.
    """
    model._func = partial(forward_unscored_if_blank, model._func)
    return model


def forward_unscored_if_blank(forward, model: Model, docs: list[Doc], is_train: bool):
    # A module-level function (with a partial): a pipeline pickles, see TitleFeatures.
    scores, backprop = forward(model, docs, is_train=is_train)
    blank = [index for index, doc in enumerate(docs) if not title_text(doc).strip()]
    if not blank:
        return scores, backprop
    scores = scores.copy()
    scores[blank] = 0.0

    def backprop_unscored(d_scores):
        d_scores = d_scores.copy()
        d_scores[blank] = 0.0  # a blank title teaches nothing
        return backprop(d_scores)

    return scores, backprop_unscored


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
    return unscored_if_blank(model)


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
        from wasabi import msg

        textcat = nlp.get_pipe(component)
        model = textcat.model
        extract = next((layer for layer in model.walk() if layer.name == "extract_title_features"), None)
        if extract is None:
            raise ValueError(f"[{component}]: titlecat.fit_title_classifier.v1 fits a titlecat.TitleNgramClassifier")
        linear = model.get_ref("output_layer")
        docs = read_corpus_docs(path, nlp)
        msg.info(f"Fitting {component} by logistic regression (C={C}) on {len(docs):,} titles of {path}")
        keys, values, lengths = extract.predict(docs)
        n_weights = linear.get_dim("length")
        matrix = hashed_design_matrix(np.asarray(keys), np.asarray(values), np.asarray(lengths), n_weights)
        weights, bias = fit_linear_by_logistic_regression(
            matrix, docs, list(textcat.labels), f"{path}: fitting {component}", C, None, max_iter
        )
        linear.set_param("W", linear.ops.asarray(weights.ravel()))
        linear.set_param("b", linear.ops.asarray(bias))
        return nlp

    return fit


# A training doc's weight in the fit (doc.user_data; ESCO names weigh less than a curated title: docs/labels.md).
SAMPLE_WEIGHT_KEY = "titlecat_weight"
# Where a corpus keeps its docs' user_data (weights, languages): a JSON list beside the DocBin, one dict per doc, not
# the DocBin's own user data, which srsly decodes doc by doc through every registered msgpack hook (about 1 ms a
# doc with spaCy's registry filled: 30 s for the augmented train, on every read).
USER_DATA_SUFFIX = ".user_data.json"


def user_data_path(path) -> Path:
    """The user_data file of the corpus at `path` (corpus/seniority/train_augmented.spacy: its .user_data.json)."""
    return Path(path).with_suffix(USER_DATA_SUFFIX)


def read_corpus_docs(path, nlp) -> list[Doc]:
    """The docs of a corpus file in order, each with its user_data (`user_data_path`) where the corpus has one."""
    docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    extras_path = user_data_path(path)
    if extras_path.exists():
        extras = json.loads(extras_path.read_text(encoding="utf-8"))
        if not isinstance(extras, list) or len(extras) != len(docs):
            found = len(extras) if isinstance(extras, list) else type(extras).__name__
            raise ValueError(
                f"{extras_path}: expected a list of {len(docs)} dicts, one per doc of {path}; found {found}"
            )
        for doc, extra in zip(docs, extras, strict=True):
            doc.user_data.update(extra)
    return docs


def fit_linear_by_logistic_regression(
    matrix, docs: list[Doc], labels: list[str], what: str, C: float, class_weight: str | None, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weights [n_labels, n_columns] and biases of L2-regularised logistic regression (L-BFGS) of the docs' labels
    (their best `doc.cats`) on the rows of `matrix`, in the order of `labels`; a label no doc has gets bias
    NEG_VALUE, so it is never chosen. A doc's `user_data["titlecat_weight"]` (ESCO names) is its sample weight.
    `what` names the fit in errors."""
    from sklearn.linear_model import LogisticRegression

    gold = [max(doc.cats, key=doc.cats.get) for doc in docs if any(doc.cats.values())]
    if len(gold) < len(docs) or len(set(gold)) < 2:
        raise ValueError(
            f"{what} needs a label (doc.cats) on every title and 2+ labels; "
            f"{len(gold)} of {len(docs)} titles have one, labels: {sorted(set(gold))}"
        )
    weights = np.asarray([float(doc.user_data.get(SAMPLE_WEIGHT_KEY, 1.0)) for doc in docs])
    sample_weight = None
    if not np.all(weights == 1.0):
        sample_weight = weights
        if class_weight == "balanced":
            # scikit-learn balances by counts; with sample weights, each class's total weight is what is balanced
            # (the same as "balanced" when every weight is 1): n / (k * the class's weight).
            totals = {label: weights[[g == label for g in gold]].sum() for label in sorted(set(gold))}
            class_weight = {label: weights.sum() / (len(totals) * total) for label, total in totals.items()}
    classifier = LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter).fit(
        matrix, gold, sample_weight=sample_weight
    )
    coef, intercept = classifier.coef_, classifier.intercept_
    if len(classifier.classes_) == 2:
        # scikit-learn keeps one row for two labels: the softmax of (-z/2, z/2) is its sigmoid of z.
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    weights = np.zeros((len(labels), matrix.shape[1]), dtype="float32")
    bias = np.full((len(labels),), NEG_VALUE, dtype="float32")
    for row, label in enumerate(classifier.classes_):
        weights[labels.index(label)] = coef[row]
        bias[labels.index(label)] = intercept[row]
    return weights, bias
