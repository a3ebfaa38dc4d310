"""The CPU pipeline's registered architectures (titlecat.TitleNgramClassifier.v2, and the n-grams beside piece vectors
of titlecat.MultilingualTitleClassifier.v1): their features and how they are fitted."""

import math
from collections import Counter

import numpy as np
import pytest
import scipy.sparse
import spacy
from conftest import REPO, assert_blank_titles_unscored, piece_vectors_of, write_docbins
from sklearn.linear_model import LogisticRegression
from spacy.cli.train import train
from spacy.strings import hash_string
from spacy.training.initialize import init_nlp
from spacy.util import load_config, registry
from thinc.api import SparseLinear_v2

from titlecat.components import extract_title_features, hashed_design_matrix, title_features
from titlecat.corpus import read_docbin
from titlecat.labels import get_task


def extract(*titles: str):
    """The (keys, values, lengths) batch the classifier's feature layer gives for these titles."""
    nlp = spacy.blank("xx")
    batch, _ = extract_title_features(2, 5)([nlp(title) for title in titles], is_train=False)
    return batch


def test_words_ignore_separators_and_single_characters():
    words, chars = title_features("Sales-Manager (m/w/d)", 2, 3)
    assert words == ["w:sales", "w:manager", "b:sales manager"]
    # Character n-grams keep each whitespace-separated piece as written, padded by spaces.
    assert " sa" in chars and "er " in chars and "d) " in chars
    assert all(2 <= len(gram) <= 3 for gram in chars)


@pytest.mark.parametrize(
    ("title", "squared_norm"),
    [
        ("Leiterin Vertrieb DACH", 2.0),  # words and character n-grams: one unit block each
        ("A", 1.0),  # no word of 2+ characters: character block only
        ("", 0.0),
    ],
)
def test_each_feature_block_has_unit_length(title, squared_norm):
    keys, values, lengths = extract(title)
    assert len(keys) == len(values) == lengths[0]
    assert float(np.sum(values**2)) == pytest.approx(squared_norm, abs=1e-5)


def test_a_longer_title_does_not_get_larger_feature_values():
    _, values, lengths = extract("CEO", "Chief Executive Officer and Managing Director")
    short, long = values[: lengths[0]], values[lengths[0] :]
    assert float(np.sum(short**2)) == pytest.approx(float(np.sum(long**2)), abs=1e-5)


def expected_features(title: str) -> dict[int, float]:
    """A title's features by their plain definition: `title_features` hashed and counted, each block of unit length."""
    expected: dict[int, float] = {}
    for features in title_features(title, 2, 5):
        block = Counter(map(hash_string, features))
        norm = math.sqrt(sum(count**2 for count in block.values()))
        expected.update({key: count / norm for key, count in block.items()})
    return expected


def layer_features(batch) -> list[dict[int, float]]:
    keys, values, lengths = batch
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return [
        dict(zip(keys[start:end].tolist(), values[start:end].tolist(), strict=True))
        for start, end in zip(offsets, offsets[1:], strict=False)
    ]


def test_the_feature_layer_counts_the_titles_feature_strings():
    titles = ["Leiterin Vertrieb DACH", "Sales-Manager (m/w/d) Sales", "A", "", "Vertriebsleiterin", "Sales Sales"]
    got = layer_features(extract(*titles))
    assert len(got) == len(titles)
    for title, features in zip(titles, got, strict=True):
        assert features == pytest.approx(expected_features(title)), title
    # A repeated word counts twice: its weight is twice that of a word seen once.
    sales_manager = got[1]
    assert sales_manager[hash_string("w:sales")] == pytest.approx(2 * sales_manager[hash_string("w:manager")])


@pytest.mark.parametrize("max_keys", [2**19, 20], ids=["memo kept", "memo emptied before each batch"])
def test_the_feature_layer_gives_the_same_features_batch_after_batch(max_keys):
    nlp = spacy.blank("xx")
    docs = [nlp(title) for title in ["Leiterin Vertrieb DACH", "Head of Sales", "Leiterin Einkauf", "CEO"]]
    layer = extract_title_features(2, 5, max_keys=max_keys)
    for _ in range(3):
        for doc in docs:
            (features,) = layer_features(layer.predict([doc]))
            assert features == pytest.approx(expected_features(doc.text))


def test_a_titles_features_come_in_the_same_order_whatever_the_layer_saw_before():
    # The order sets the float rounding of the scores: `titlecat predict-ray` workers, which see the
    # titles in other orders, must answer exactly as `titlecat predict` does.
    nlp = spacy.blank("xx")
    titles = ["Leiterin Vertrieb DACH", "Head of Sales DACH", "Vertriebsleiterin", "Sales Sales"]

    def per_title(order):
        keys, values, lengths = extract_title_features(2, 5).predict([nlp(titles[i]) for i in order])
        ends = np.cumsum(lengths)
        return {i: (keys[end - n : end], values[end - n : end]) for i, n, end in zip(order, lengths, ends, strict=True)}

    forward, backward = per_title([0, 1, 2, 3]), per_title([3, 2, 1, 0])
    for i, title in enumerate(titles):
        assert np.array_equal(forward[i][0], backward[i][0]) and np.array_equal(forward[i][1], backward[i][1])
        # In the order the features occur in the title, words first (as `title_features` lists them).
        words, _ = title_features(title, 2, 5)
        word_keys = list(dict.fromkeys(map(hash_string, words)))
        assert forward[i][0][: len(word_keys)].tolist() == word_keys


def test_the_design_matrix_gives_the_sparse_linear_layers_scores():
    keys, values, lengths = extract("Leiterin Vertrieb DACH", "Senior Software Engineer", "CEO", "")
    length = 2**10  # small, so that features share weights as they do in the real layer
    layer = SparseLinear_v2(nO=4, length=length)
    layer.initialize()
    weights = np.random.RandomState(0).normal(size=4 * length).astype("float32")
    layer.set_param("W", weights)
    layer.set_param("b", np.zeros(4, dtype="float32"))
    scores = layer.predict((keys, values, lengths))
    matrix = hashed_design_matrix(keys, values, lengths, length)
    assert np.allclose(scores, matrix @ weights.reshape(4, length).T, atol=1e-4)
    assert not scores[3].any()  # the empty title has no features


def test_a_title_with_no_text_gets_no_score_alone_and_in_a_batch():
    """Unequal biases: without the convention an empty title in a batch would get softmax(b), " " its own scores."""
    nlp = spacy.blank("xx")
    textcat = nlp.add_pipe("textcat", config={"model": {"@architectures": "titlecat.TitleNgramClassifier.v2"}})
    for label in ("Junior", "Senior", "Lead"):
        textcat.add_label(label)
    nlp.initialize()
    textcat.model.get_ref("output_layer").set_param("b", np.array([0.0, 1.0, 2.0], dtype="float32"))
    assert_blank_titles_unscored(nlp, "Senior Software Engineer")


def fit_cpu_pipeline(train_path, dev_path, encoder_dir):
    """The CPU config initialised (that is: fitted) on train_path, its piece vectors from encoder_dir."""
    overrides = {"paths.train": str(train_path), "paths.dev": str(dev_path), **piece_vectors_of(encoder_dir)}
    config = load_config(REPO / "configs" / "cpu.cfg", overrides=overrides, interpolate=False)
    return init_nlp(config), config, overrides


@pytest.mark.parametrize("labels", [None, ("Sales", "Marketing")], ids=["11 departments", "two labels"])
def test_the_cpu_pipeline_is_logistic_regression_on_its_own_features(tmp_path, data_dir, tiny_encoder_dir, labels):
    train_path, dev_path = write_docbins(tmp_path, "department", 300, 100, labels=labels)
    fitted, config, _ = fit_cpu_pipeline(train_path, dev_path, tiny_encoder_dir)
    assert fitted.pipe_names == ["title_encoder", "textcat"]
    textcat, pieces = fitted.get_pipe("textcat"), fitted.get_pipe("title_encoder")
    task = get_task("department")
    train_titles, gold = read_docbin(train_path, task)
    titles = train_titles + read_docbin(dev_path, task)[0]

    # The definition, computed apart from the callback: scikit-learn on the rows the two linear layers see, the
    # n-grams and the weighted piece vectors (centred on the train titles' mean, which the intercept absorbs).
    extract_layer = next(layer for layer in textcat.model.walk() if layer.name == "extract_title_features")
    length = textcat.model.get_ref("output_layer").get_dim("length")
    ngrams = hashed_design_matrix(*extract_layer.predict([fitted.make_doc(t) for t in titles]), length)
    weight = config["components"]["textcat"]["model"]["vector_weight"]
    vectors = pieces.table.vectors(titles) * weight
    rows = scipy.sparse.hstack([ngrams, vectors - vectors[:300].mean(axis=0)], format="csr")
    fit = config["initialize"]["after_init"]
    reference = LogisticRegression(C=fit["C"], class_weight=fit["class_weight"], max_iter=3000)
    reference.fit(rows[:300], gold)
    assert np.mean(reference.predict(rows[:300]) == np.array(gold)) > 0.9
    expected = reference.predict_proba(rows)
    probabilities = np.array([[doc.cats[label] for label in reference.classes_] for doc in fitted.pipe(titles)])
    assert np.allclose(probabilities, expected, atol=1e-4)


def test_spacy_train_keeps_the_fitted_cpu_pipeline(tmp_path, data_dir, tiny_encoder_dir):
    train_path, dev_path = write_docbins(tmp_path, "department", 300, 100)
    fitted, _, overrides = fit_cpu_pipeline(train_path, dev_path, tiny_encoder_dir)
    train(REPO / "configs" / "cpu.cfg", tmp_path / "model", overrides=overrides)
    trained = spacy.load(tmp_path / "model" / "model-best")
    titles, _ = read_docbin(dev_path, get_task("department"))
    for doc, trained_doc in zip(fitted.pipe(titles), trained.pipe(titles), strict=True):
        assert trained_doc.cats == pytest.approx(doc.cats, abs=1e-5)


def test_fitting_a_corpus_without_labels_names_the_file(tmp_path, data_dir):
    from spacy.tokens import DocBin

    nlp = spacy.blank("xx")
    unlabelled, no_label_set = nlp("Sales Manager"), nlp("Buchhalter")
    no_label_set.cats = {"Sales": 0.0, "Administrative": 0.0}
    DocBin(docs=[unlabelled, no_label_set], store_user_data=True).to_disk(tmp_path / "train.spacy")
    fit = registry.callbacks.get("titlecat.fit_title_classifier.v1")(path=str(tmp_path / "train.spacy"))
    nlp.add_pipe("textcat", config={"model": {"@architectures": "titlecat.TitleNgramClassifier.v2", "length": 2**10}})
    nlp.get_pipe("textcat").add_label("Sales")
    nlp.get_pipe("textcat").add_label("Administrative")
    nlp.initialize()
    with pytest.raises(ValueError, match=r"train\.spacy: fitting textcat needs a label .*; 0 of 2 titles have one"):
        fit(nlp)
