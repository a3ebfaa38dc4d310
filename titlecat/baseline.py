"""The baselines the benchmark trains beside the spaCy pipelines: TF-IDF + logistic regression on the same data,
and the reference study's own bag-of-words recipe."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline


def train_tfidf_logreg(texts: Sequence[str], labels: Sequence[str], seed: int = 42):
    """Character 2-5-grams within word boundaries plus word 1-2-grams, multinomial logistic regression."""
    features = FeatureUnion(
        [
            ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), lowercase=True, sublinear_tf=True)),
            ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), lowercase=True, sublinear_tf=True)),
        ]
    )
    model = make_pipeline(features, LogisticRegression(C=10.0, max_iter=2000, random_state=seed))
    return model.fit(list(texts), list(labels))


def train_reference_bow(texts: Sequence[str], labels: Sequence[str], seed: int = 42):
    """The reference study's bag-of-words, as its notebooks build it: lower-cased word 1-2-grams
    (min_df=3, max_df=0.9) and class-balanced logistic regression. Oversampling, where the study used
    it (department), is the caller's: it belongs to the data, not the model."""
    words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=3, max_df=0.9, lowercase=True)
    model = make_pipeline(words, LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed))
    return model.fit(list(texts), list(labels))
