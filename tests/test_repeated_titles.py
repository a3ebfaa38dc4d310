"""The fast paths of `titlecat predict` give the answers of the plain one: a repeated title is labelled once (within a
chunk and across chunks, with a bounded cache), and the textcats of a combined pipeline share one batch's n-gram
features. The pipeline is the `model` fixture: both titlecat textcats with random weights (seeded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import spacy
from conftest import read_rows, write_titles
from spacy.training import Example

import titlecat.combined  # noqa: F401  (registers titlecat_answers)
import titlecat.components  # noqa: F401  (registers the architecture)
from titlecat import predict as predict_module
from titlecat.components import TEXT_KEY, TitleFeatures, title_text
from titlecat.labels import TASKS
from titlecat.predict import AnswerCache, PredictOptions, predict_file
from titlecat.text_scoring import DOC_FREE_VARIABLE, TextScorer

TITLES = ["Head of Sales", "Werkstudent IT-Support", "Directeur commercial", "Einkäuferin", "Senior Developer"]


def one_by_one(model: Path, titles: list[str]) -> list[dict]:
    """Each title's scores from a fresh pipeline, one `nlp(title)` at a time: no cache, no batch, no sharing."""
    nlp = spacy.load(model)
    TitleFeatures.last_batch = ((), None)
    return [{label: round(score, 4) for label, score in nlp(title).cats.items()} for title in titles]


@pytest.mark.parametrize("doc_free", ["1", "0"])
@pytest.mark.parametrize("max_titles", [50_000, 3])
def test_a_repeated_title_goes_through_the_pipeline_once_with_the_answers_of_one_by_one(
    model, tmp_path, monkeypatch, max_titles, doc_free
):
    # Repeats within a chunk of 4 and across chunks; a cache of 3 titles is emptied as it fills.
    titles = [TITLES[i] for i in (0, 1, 0, 0, 2, 3, 1, 0, 4, 4, 2, 0, 3)]
    source = write_titles(tmp_path / "export.csv", titles)
    nlp = spacy.load(model)
    piped: list[str] = []  # the titles labelled, through nlp.pipe or the Doc-free path
    pipe, doc_free_scores = nlp.pipe, TextScorer.scores

    def counting_pipe(texts, **kwargs):
        texts = list(texts)
        piped.extend(texts)
        return pipe(texts, **kwargs)

    def counting_scores(scorer, texts, batch_size):
        piped.extend(texts)
        return doc_free_scores(scorer, texts, batch_size)

    monkeypatch.setattr(nlp, "pipe", counting_pipe)
    monkeypatch.setattr(TextScorer, "scores", counting_scores)
    monkeypatch.setenv(DOC_FREE_VARIABLE, doc_free)
    monkeypatch.setattr(predict_module, "AnswerCache", lambda: AnswerCache(max_titles))
    predict_file(
        nlp,
        source,
        tmp_path / "out.csv",
        PredictOptions.of(column="title", id_column="id", all_scores=True, chunk_size=4, progress=False, sidecar=False),
    )
    rows = read_rows(tmp_path / "out.csv")
    assert [row["title"] for row in rows] == titles and [row["id"] for row in rows] == [str(i) for i in range(13)]
    columns = {f"{task.name}:{label}": label for task in TASKS.values() for label in task.labels}
    assert [{label: float(row[column]) for column, label in columns.items()} for row in rows] == one_by_one(
        model, titles
    )
    if max_titles > len(TITLES):
        assert sorted(piped) == sorted(set(titles))  # each distinct title once, over the whole file
    else:
        assert len(piped) < len(titles)  # once a chunk at least, however small the cache
        assert all(len(set(piped[i : i + 4])) == len(piped[i : i + 4]) for i in range(0, len(piped), 4))


def test_the_answer_cache_stays_within_its_bound():
    cache = AnswerCache(max_titles=3)
    cache.add({"a": {"x": 1}, "b": {"x": 2}})
    assert cache.known(["a", "c"]) == {"a": {"x": 1}}
    cache.add({"c": {"x": 3}, "d": {"x": 4}})  # would hold 4: emptied first
    assert cache.known(["a", "b", "c", "d"]) == {"c": {"x": 3}, "d": {"x": 4}}
    cache.add({str(i): {} for i in range(10)})  # more than it holds at once: its first 3
    assert len(cache.answers) == 3


def test_textcats_of_different_ngram_ranges_do_not_share_features(model):
    """Two textcats read one batch's features once; a third with other n-gram lengths computes its own."""
    nlp = spacy.load(model)
    other = nlp.add_pipe(
        "textcat",
        name="other",
        before="titlecat_answers",
        config={"model": {"@architectures": "titlecat.TitleNgramClassifier.v2", "length": 2**12, "min_n": 1}},
    )
    other.add_label("x")
    other.add_label("y")
    reference = nlp.make_doc("Vertrieb")
    reference.cats = {"x": 1.0, "y": 0.0}
    other.initialize(lambda: [Example(nlp.make_doc("Vertrieb"), reference)], nlp=nlp)
    linear = other.model.get_ref("output_layer")
    linear.set_param("W", np.random.default_rng(1).normal(size=linear.get_param("W").shape).astype("float32"))
    alone = spacy.blank("xx")
    alone.add_pipe("other", source=nlp)
    expected = one_by_one(model, TITLES)
    expected_other = []
    for title in TITLES:
        TitleFeatures.last_batch = ((), None)
        expected_other.append(alone(title).cats)
    assert len({round(cats["x"], 4) for cats in expected_other}) == len(TITLES)  # title-dependent scores
    TitleFeatures.last_batch = ((), None)
    docs = list(nlp.pipe(TITLES))
    scores = [{label: round(score, 4) for label, score in doc.cats.items() if label not in ("x", "y")} for doc in docs]
    assert scores == expected
    for doc, cats in zip(docs, expected_other, strict=True):
        assert {label: doc.cats[label] for label in ("x", "y")} == pytest.approx(cats, abs=1e-6)


def test_a_titles_text_is_read_from_its_tokens_once():
    nlp = spacy.blank("xx")
    doc = nlp("Leiterin  Vertrieb ")
    assert TEXT_KEY not in doc.user_data
    assert title_text(doc) == doc.text == "Leiterin  Vertrieb "
    assert doc.user_data[TEXT_KEY] == doc.text
