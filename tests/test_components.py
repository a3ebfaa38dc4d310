"""The features of the CPU pipeline's registered architecture, titlecat.TitleNgramClassifier.v2."""

import numpy as np
import pytest
import spacy

from titlecat.components import extract_title_features, title_features


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


def trained_categorizer(class_weighting: str, steps: int = 0):
    """A titlecat_textcat on 8 real-looking titles, 6 of one label: initialised, optionally trained."""
    from spacy.training import Example

    nlp = spacy.blank("xx")
    nlp.add_pipe(
        "titlecat_textcat",
        name="textcat",
        config={
            "class_weighting": class_weighting,
            "model": {"@architectures": "titlecat.TitleNgramClassifier.v2", "length": 2**12},
        },
    )
    titles = {
        "Sales Manager": "Sales",
        "Verkaufsleiter": "Sales",
        "Key Account Manager": "Sales",
        "Vertrieb Außendienst": "Sales",
        "Area Sales Manager": "Sales",
        "Verkäufer": "Sales",
        "Einkäufer": "Purchasing",
        "Marketing Manager": "Marketing",
    }
    labels = ("Marketing", "Purchasing", "Sales")
    examples = [
        Example.from_dict(nlp.make_doc(title), {"cats": {name: float(name == label) for name in labels}})
        for title, label in titles.items()
    ]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(steps):
        nlp.update(examples, sgd=optimizer)
    return nlp, examples


def test_balanced_class_weights_are_counted_on_the_training_data():
    nlp, _ = trained_categorizer("balanced")
    # n / (n_labels × n_label): 8 / (3 × 6) for Sales, 8 / (3 × 1) for the others.
    assert nlp.get_pipe("textcat").cfg["class_weights"] == pytest.approx(
        {"Marketing": 8 / 3, "Purchasing": 8 / 3, "Sales": 8 / 18}
    )
    assert trained_categorizer("none")[0].get_pipe("textcat").cfg["class_weights"] == dict.fromkeys(
        ("Marketing", "Purchasing", "Sales"), 1.0
    )


def test_each_example_gradient_is_scaled_by_its_gold_label_weight():
    nlp, examples = trained_categorizer("balanced")
    textcat = nlp.get_pipe("textcat")
    scores = textcat.model.predict([e.predicted for e in examples])
    _, weighted = textcat.get_loss(examples, scores)
    textcat.cfg["class_weighting"] = "none"
    _, plain = textcat.get_loss(examples, scores)
    weights = [textcat.cfg["class_weights"][max(e.reference.cats, key=e.reference.cats.get)] for e in examples]
    assert np.allclose(weighted, plain * np.asarray(weights)[:, None])


def test_class_weights_survive_saving_and_an_unknown_weighting_is_refused(tmp_path):
    nlp, _ = trained_categorizer("balanced", steps=3)
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("textcat").cfg["class_weights"] == pytest.approx(
        nlp.get_pipe("textcat").cfg["class_weights"]
    )
    assert loaded("Verkaufsleiter").cats == nlp("Verkaufsleiter").cats
    with pytest.raises(ValueError, match="class_weighting 'inverse' is not one of"):
        spacy.blank("xx").add_pipe("titlecat_textcat", config={"class_weighting": "inverse"})


@pytest.mark.parametrize("title", ["Leiterin Vertrieb DACH", "Sales-Manager (m/w/d) Sales", "A", ""])
def test_hashed_features_count_the_titles_feature_strings(title):
    from collections import Counter

    from spacy.strings import hash_string

    from titlecat.components import title_feature_counts

    word_counts, char_counts = title_feature_counts(title, 2, 5)
    words, chars = title_features(title, 2, 5)
    assert word_counts == Counter(hash_string(f) for f in words)
    assert char_counts == Counter(hash_string(f) for f in chars)
