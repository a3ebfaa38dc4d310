"""The Doc-free path (titlecat.text_scoring) gives the scores and answers of `nlp.pipe` on real titles, without making
a Doc; a pipeline with a part it does not know falls back to `nlp.pipe`. The pipelines: small fast pipelines trained
on curated titles (piece vectors of the tiny encoder, `titlecat.MultilingualTitleClassifier.v1`; conftest's
`train_small_pipelines`) and the `model` fixture (`titlecat.TitleNgramClassifier.v2`, seeded random weights)."""

from __future__ import annotations

import csv
import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import spacy
from conftest import curated_examples, train_small_pipelines, write_titles
from spacy.training import Example

from titlecat import predict as predict_module
from titlecat.combined import combine
from titlecat.components import TitleFeatures
from titlecat.piece_vectors import PieceTable
from titlecat.predict import AnswerCache, PredictOptions, answers, label_texts, pipeline_tasks, predict_file
from titlecat.text_scoring import DOC_FREE_VARIABLE, TextScorer, text_scorer

# Titles no corpus title is like: blank and whitespace (all scores 0.0), punctuation only (no word, no n-gram inside
# a word but its own), very long, scripts the curated titles hardly have, the same title twice.
ODD_TITLES = [
    "", " ", "   ", " \t\n ", "!!!", "...?", "-", "(m/w/d)", "x" * 5000,
    " / ".join(["Senior Key Account Manager Vertrieb Industriekunden"] * 12),
    "営業部長", "销售经理", "Директор по продажам", "مدير المبيعات", "מנהל מכירות", "Διευθυντής Πωλήσεων",
    "영업 관리자", "ผู้จัดการฝ่ายขาย", "Sales  Manager  ", "\tLead Developer\n", "Head of Sales", "Head of Sales",
]  # fmt: skip


@pytest.fixture(scope="module")
def fast_pipelines(tmp_path_factory, data_dir, tiny_encoder_dir) -> Path:
    """folder/combined (one shared title_encoder) and folder/<task>/model-best, trained on curated titles."""
    return train_small_pipelines(tmp_path_factory.mktemp("fast"), tiny_encoder_dir)


@pytest.fixture(scope="module")
def corpus_titles() -> list[str]:
    """Real titles, distinct: curated titles of both tasks, then ODD_TITLES."""
    titles = [example.text for task in ("seniority", "department") for example in curated_examples(task, 2500)]
    return list(dict.fromkeys(titles)) + ODD_TITLES


def per_task_vectors_pipeline(fast_pipelines: Path):
    """The two tasks combined with piece tables that differ (department's rows reversed): each task then has its own
    `title_encoder_<task>`, run just before its textcat."""
    sources = {task: spacy.load(fast_pipelines / task / "model-best") for task in ("seniority", "department")}
    pieces = sources["department"].get_pipe("title_encoder")
    pieces.table = PieceTable(pieces.table.tokenizer_json, np.ascontiguousarray(pieces.table.table[::-1]))
    return combine(sources)


def load(kind: str, fast_pipelines: Path, model: Path):
    if kind == "per-task vectors":
        nlp = per_task_vectors_pipeline(fast_pipelines)
        assert "title_encoder_seniority" in nlp.pipe_names and "title_encoder_department" in nlp.pipe_names
        return nlp
    return spacy.load({"fast combined": fast_pipelines / "combined", "fast seniority": fast_pipelines / "seniority"
                       / "model-best", "n-gram combined": model}[kind])  # fmt: skip


def cats_of_nlp_pipe(nlp, titles: list[str], batch_size: int) -> list[dict[str, float]]:
    TitleFeatures.last_batch = ((), None)
    return [doc.cats for doc in nlp.pipe(titles, batch_size=batch_size)]


def without_docs(nlp):
    """`nlp` whose tokenizer refuses to work: nothing that makes a Doc can run."""

    def no_tokenizer(text):
        raise AssertionError(f"a Doc was made for {text!r}")

    nlp.tokenizer = no_tokenizer
    return nlp


@pytest.mark.parametrize("kind", ["fast combined", "fast seniority", "per-task vectors", "n-gram combined"])
@pytest.mark.parametrize("batch_size", [1000, 7])
def test_the_doc_free_scores_are_those_of_nlp_pipe_on_real_titles(
    kind, batch_size, fast_pipelines, model, corpus_titles
):
    nlp = load(kind, fast_pipelines, model)
    # Blank titles first: with a batch of 7, a batch without a single token, which spaCy's textcat scores 0.0.
    titles = ["", "", "", "", "", "", "", *corpus_titles]
    expected = cats_of_nlp_pipe(nlp, titles, batch_size)
    scorer = TextScorer.of(nlp)
    TitleFeatures.last_batch = ((), None)
    found = scorer.cats(titles, batch_size)
    assert len(found) == len(titles)
    for title, cats, expected_cats in zip(titles, found, expected, strict=True):
        assert list(cats) == list(expected_cats), title  # the same labels, in doc.cats' order
        assert max(abs(cats[label] - expected_cats[label]) for label in cats) <= 1e-6, title
        if not title.strip():
            assert set(cats.values()) == {0.0}, repr(title)
    assert found == expected  # in fact the very floats: the same layers on the same arrays
    tasks = pipeline_tasks(nlp)
    assert [answers(cats, tasks, True) for cats in found] == [answers(cats, tasks, True) for cats in expected]
    # Scored without a single Doc.
    without_docs(nlp)
    assert TextScorer.of(nlp).cats(titles[:50], batch_size) == expected[:50]


def test_label_texts_gives_the_answers_of_nlp_pipe_without_making_a_doc(fast_pipelines, corpus_titles, monkeypatch):
    nlp = spacy.load(fast_pipelines / "combined")
    tasks = pipeline_tasks(nlp)
    titles = [title for title in corpus_titles if title.strip()]
    expected = [answers(cats, tasks, True) for cats in cats_of_nlp_pipe(nlp, titles, 1000)]
    without_docs(nlp)
    cache = AnswerCache(max_titles=100)
    assert label_texts(nlp, tasks, titles + titles[:30], True, cache=cache) == expected + expected[:30]
    assert len(cache.answers) <= 100
    monkeypatch.setenv(DOC_FREE_VARIABLE, "0")
    assert text_scorer(nlp) is None
    with pytest.raises(AssertionError, match="a Doc was made"):
        label_texts(nlp, tasks, titles[:3])


def test_a_pipeline_is_not_kept_alive_by_its_scorer(fast_pipelines):
    nlp = spacy.load(fast_pipelines / "combined")
    assert text_scorer(nlp) is text_scorer(nlp) is not None  # decided once
    pipeline = weakref.ref(nlp)
    del nlp
    gc.collect()
    assert pipeline() is None


def add_unknown_component(nlp, kind: str):
    if kind == "component":
        nlp.add_pipe("sentencizer", first=True)  # changes no score
        return "sentencizer"
    architecture = {
        "@architectures": "spacy.TextCatBOW.v3",
        "exclusive_classes": True,
        "ngram_size": 1,
        "no_output_layer": False,
    }
    textcat = nlp.add_pipe("textcat", name="other", before="titlecat_answers", config={"model": architecture})
    reference = nlp.make_doc("Vertrieb")
    reference.cats = {"x": 1.0, "y": 0.0}
    textcat.initialize(lambda: [Example(nlp.make_doc("Vertrieb"), reference)], nlp=nlp)
    return "other"


@pytest.mark.parametrize("kind", ["component", "architecture"])
def test_a_pipeline_with_a_part_it_does_not_know_falls_back_to_nlp_pipe(
    kind, fast_pipelines, corpus_titles, monkeypatch
):
    nlp = spacy.load(fast_pipelines / "combined")
    tasks = pipeline_tasks(nlp)
    titles = corpus_titles[:200]
    expected = [answers(cats, tasks, False) for cats in cats_of_nlp_pipe(nlp, titles, 1000)]
    assert text_scorer(nlp) is not None
    name = add_unknown_component(nlp, kind)
    with pytest.raises(ValueError, match=rf"\[{name}\]"):
        TextScorer.of(nlp)
    assert text_scorer(nlp) is None  # looked at again: the pipeline changed
    piped = []
    pipe = nlp.pipe

    def counting_pipe(texts, **kwargs):
        texts = list(texts)
        piped.extend(texts)
        return pipe(texts, **kwargs)

    monkeypatch.setattr(nlp, "pipe", counting_pipe)
    assert label_texts(nlp, tasks, titles) == expected
    assert piped == list(dict.fromkeys(titles))


@pytest.mark.parametrize("all_scores", [False, True])
def test_titlecat_predict_writes_the_same_bytes_with_and_without_the_doc_free_path(
    fast_pipelines, corpus_titles, tmp_path, monkeypatch, all_scores
):
    # A few thousand real titles, some of them repeated, across chunks (the cache) and with the odd ones.
    titles = corpus_titles + corpus_titles[::7]
    source = write_titles(tmp_path / "titles.csv", titles)
    options = PredictOptions.of(
        column="title", id_column="id", all_scores=all_scores, chunk_size=700, progress=False, sidecar=False
    )
    nlp = spacy.load(fast_pipelines / "combined")
    outputs = {}
    for enabled in ("0", "1"):
        monkeypatch.setenv(DOC_FREE_VARIABLE, enabled)
        TitleFeatures.last_batch = ((), None)
        if enabled == "1":
            monkeypatch.setattr(predict_module, "answers", None)  # the Doc path's answers() is not called
        predict_file(nlp, source, tmp_path / f"out_{enabled}.csv", options)
        outputs[enabled] = (tmp_path / f"out_{enabled}.csv").read_bytes()
    with (tmp_path / "out_1.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(titles) and sum(row["status"] == "ok" for row in rows) > 5000
    assert outputs["1"] == outputs["0"]


# Texts the tokenizer must not cut word by word, or whose words it cuts as alone: a trailing space (a piece of its
# own), whitespace other than spaces, characters the normaliser replaces, NFKC's changes, an added token.
UNUSUAL_TEXTS = [
    "Sales ", " Sales", "Sales  Manager", "Sales\u00a0Manager", "Sales\tManager", "a\u00a8b c",
    "ｓａｌｅｓ ｍａｎａｇｅｒ", "e\u0301cole", "a \u0301b", "<s>Lead", "Lead</s> x", "a\u200bb",
    "Vertriebs\u2581leiter", "x\x01y", "ﬁnance ﬂ",
]  # fmt: skip


def test_piece_ids_by_words_are_those_of_the_whole_text(fast_pipelines, corpus_titles):
    table = spacy.load(fast_pipelines / "combined").get_pipe("title_encoder").table
    assert table._not_by_words is not None  # the tiny encoder's tokenizer is one whose words are cut alone
    texts = corpus_titles + UNUSUAL_TEXTS
    whole = [encoding.ids for encoding in table.tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert table.piece_ids(texts) == whole
    assert table.piece_ids(texts[::-1]) == whole[::-1]  # from the words it remembers
    assert sum(not table._not_by_words.search(text) for text in texts) > 0.8 * len(texts)  # most, by words
