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


@pytest.mark.parametrize("title", ["Leiterin Vertrieb DACH", "Sales-Manager (m/w/d) Sales", "A", ""])
def test_hashed_features_count_the_titles_feature_strings(title):
    from collections import Counter

    from spacy.strings import hash_string

    from titlecat.components import title_feature_counts

    word_counts, char_counts = title_feature_counts(title, 2, 5)
    words, chars = title_features(title, 2, 5)
    assert word_counts == Counter(hash_string(f) for f in words)
    assert char_counts == Counter(hash_string(f) for f in chars)
