"""The TF-IDF + logistic regression baseline the benchmark trains beside the spaCy pipelines."""

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
