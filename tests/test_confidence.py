"""Confidence: calibration error, temperature scaling, coverage, the review flag and the LLM fallback of predict."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spacy
from conftest import DATA, REPO, piece_vectors_of, read_rows, write_docbins
from fake_openai_server import FakeOpenAI

from titlecat.combined import combine
from titlecat.confidence import (
    FallbackError,
    LLMFallback,
    apply_temperature,
    cross_validated_ece,
    ece_noise_floor,
    expected_calibration_error,
    fallback,
    fit_temperature,
    least_confident,
    reliability,
    row_postprocess,
)
from titlecat.labels import TASKS
from titlecat.predict import PredictOptions, load_pipeline, predict_file
from titlecat.readers import normalise_title, read_recorded_answers


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# --- expected calibration error -------------------------------------------------------------------------------------


def test_ece_is_the_weighted_gap_between_accuracy_and_score_per_bin():
    # Two bins by hand: at 0.1 two titles, none right (gap 0.1); at 0.9 two titles, one right (gap 0.4).
    assert expected_calibration_error([0.1, 0.1, 0.9, 0.9], [False, False, True, False]) == pytest.approx(0.25)
    # One bin, score 0.9, 60% right: the gap is the error.
    assert expected_calibration_error([0.9] * 10, [True] * 6 + [False] * 4) == pytest.approx(0.3)
    # A score of exactly 1.0 falls in the last bin, 0.0 in the first; bins are (lo, hi].
    rows = reliability([0.0, 1.0, 1 / 15], [True, True, False])
    assert [(row["low"], row["n"]) for row in rows] == [(0.0, 2), (pytest.approx(14 / 15), 1)]


def test_calibrated_scores_have_an_ece_near_zero_on_many_titles_but_not_on_few():
    rng = np.random.RandomState(0)
    scores = rng.uniform(0.1, 1.0, 200_000)
    right = rng.rand(len(scores)) < scores  # each title right with probability equal to its score
    assert expected_calibration_error(scores, right) < 0.005
    overconfident = np.minimum(scores + 0.2, 1.0)
    assert expected_calibration_error(overconfident, right) > 0.15
    # On 217 titles the sampling noise alone gives several points of ECE: the floor the docs report.
    assert 0.03 < ece_noise_floor(scores[:217]) < 0.12
    assert ece_noise_floor(scores[:20_000], draws=50) < 0.01


# --- temperature scaling --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("true_temperature", [2.0, 0.5])
def test_fitting_recovers_a_known_temperature(true_temperature):
    rng = np.random.RandomState(1)
    logits = rng.normal(0.0, 2.0, (20_000, 6))
    true = softmax(logits)
    gold = np.array([rng.choice(6, p=row) for row in true])
    # The model's scores: the true logits multiplied by T, i.e. over- (T > 1) or underconfident (T < 1).
    model = softmax(logits * true_temperature)
    fitted = fit_temperature(model, gold)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    assert np.allclose(apply_temperature(model, fitted), true, atol=0.02)
    assert (apply_temperature(model, fitted).argmax(axis=1) == model.argmax(axis=1)).all()
    # Cross-validated over groups: each fold's fit recovers it too, and the pooled ECE is small.
    groups = np.arange(len(gold)) // 10
    error, temperatures = cross_validated_ece(model, gold, groups)
    assert len(temperatures) == 5 and all(t == pytest.approx(true_temperature, rel=0.08) for t in temperatures)
    assert error < 0.02 < expected_calibration_error(model.max(axis=1), model.argmax(axis=1) == gold)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir, tiny_encoder_dir) -> Path:
    """A small seniority and department pipeline (300 curated titles each) and their combination."""
    from spacy.cli.train import train

    import titlecat.components  # noqa: F401

    folder = tmp_path_factory.mktemp("tiny-confidence")
    for task in TASKS:
        train_path, dev_path = write_docbins(folder / "corpus" / task, task, 300, 60, seed=3)
        overrides = {"paths.train": str(train_path), "paths.dev": str(dev_path), **piece_vectors_of(tiny_encoder_dir)}
        train(REPO / "configs" / "cpu.cfg", folder / task, overrides=overrides)
    sources = {task: spacy.load(folder / task / "model-best") for task in TASKS}
    combine(sources).to_disk(folder / "combined")
    return folder


def test_the_combined_pipeline_stores_and_applies_its_temperatures(tiny, tmp_path):
    sources = {task: spacy.load(tiny / task / "model-best") for task in TASKS}
    temperatures = {"seniority": 1.8, "department": 0.7}
    combine(sources, temperatures=temperatures).to_disk(tmp_path / "calibrated")
    calibrated = spacy.load(tmp_path / "calibrated")  # the temperatures survive saving and loading
    plain = spacy.load(tiny / "combined")
    titles = ["Leiterin Vertrieb DACH", "Chargé de recrutement", "Werkstudent IT", "Einkäufer"]
    for title in titles:
        before, after = plain(title), calibrated(title)
        for task, labels in ((t, TASKS[t].labels) for t in TASKS):
            scores = np.array([[before.cats[label] for label in labels]])
            expected = apply_temperature(scores, temperatures[task])[0]
            assert [after.cats[label] for label in labels] == pytest.approx(expected.tolist(), abs=1e-5)
            assert after._.get(task) == before._.get(task)  # the best label never moves
            assert after._.get(f"{task}_score") == pytest.approx(expected.max(), abs=1e-5)
        # T > 1 softens, T < 1 sharpens.
        assert after._.seniority_score <= before._.seniority_score
        assert after._.department_score >= before._.department_score
    with pytest.raises(ValueError, match="must be > 0"):
        combine(sources, temperatures={"seniority": 0.0})
    assert plain("Einkäufer").cats == spacy.load(tiny / "combined")("Einkäufer").cats  # the sources are untouched


# --- coverage and the offline fallback ------------------------------------------------------------------------------


def test_least_confident_takes_the_lowest_scores_with_ties_in_input_order():
    scores = [0.9, 0.2, 0.5, 0.2, 0.7, 0.99, 0.3, 0.2]
    assert least_confident(scores, share=0.25).tolist() == [1, 3]
    assert least_confident(scores, share=0.5).tolist() == [1, 3, 6, 7]
    assert least_confident(scores, share=0.0).tolist() == []
    assert least_confident(scores, share=1.0).tolist() == list(range(8))
    assert least_confident(scores, below=0.5).tolist() == [1, 3, 6, 7]
    with pytest.raises(ValueError):
        least_confident(scores, share=0.5, below=0.5)
    with pytest.raises(ValueError):
        least_confident(scores, share=1.5)


def test_the_fallback_replaces_the_least_confident_answers_where_the_llm_answered():
    predicted = ["Sales", "Other", "Marketing", "Sales"]
    scores = [0.9, 0.3, 0.4, 0.95]
    llm = ["Other", None, "Purchasing", "Purchasing"]
    answers, sent, taken = fallback(predicted, scores, llm, 0.5)
    assert (answers, sent, taken) == (["Sales", "Other", "Purchasing", "Sales"], 2, 1)


# --- titlecat predict: review flag and LLM fallback -----------------------------------------------------------------

TITLES = [
    "Leiterin Vertrieb DACH",
    "Chargé de recrutement",
    "Product Owner",
    "Assistentin der Geschäftsführung",
    "Werkstudent IT",
    "Einkäufer",
    "Key Account Manager",
    "Projektleiter",
    "Buchhalterin",
    "Teamleiter Kundenservice",
    "Marketing Manager",
    "Softwareentwickler",
]


def write_titles(path: Path, titles: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "title"])
        writer.writerows([[f"t{i}", title] for i, title in enumerate(titles)] + [["bad", "12345"]])
    return path


def run_predict(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "titlecat", "predict", *map(str, args), "--column", "title", "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_review_flag_marks_rows_with_a_task_below_the_threshold(tiny, tmp_path):
    titles = write_titles(tmp_path / "titles.csv", TITLES)
    result = run_predict(titles, tmp_path / "out.csv", "--model", tiny / "combined", "--review-below", 0.6)
    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "out.csv")
    assert list(rows[0])[-1] == "needs_review"
    flagged = 0
    for row in rows[:-1]:
        expected = float(row["seniority_score"]) < 0.6 or float(row["department_score"]) < 0.6
        assert row["needs_review"] == str(expected)
        flagged += expected
    assert 0 < flagged < len(TITLES)  # the tiny pipelines are sure of some titles and not of others
    assert rows[-1]["status"] == "not_text" and rows[-1]["needs_review"] == ""
    assert f"needs_review: {flagged} rows" in result.stderr
    # Without the flag the output is exactly as before.
    assert run_predict(titles, tmp_path / "plain.csv", "--model", tiny / "combined").returncode == 0
    plain = read_rows(tmp_path / "plain.csv")
    assert [{k: v for k, v in row.items() if k != "needs_review"} for row in rows] == plain


def test_llm_fallback_sends_the_least_confident_department_titles_and_resumes(tiny, tmp_path):
    titles = write_titles(tmp_path / "titles.csv", TITLES)
    assert run_predict(titles, tmp_path / "plain.csv", "--model", tiny / "combined").returncode == 0
    plain = read_rows(tmp_path / "plain.csv")[:-1]
    by_score = sorted(range(len(plain)), key=lambda i: float(plain[i]["department_score"]))
    chosen = {TITLES[i] for i in by_score[:6]}
    # The fake LLM files every title under Purchasing, except one it answers wrongly (retried once, then kept).
    answers = {title: {"department": "Purchasing", "seniority": "Director"} for title in TITLES}
    broken = TITLES[by_score[0]]
    args = [titles, tmp_path / "out.csv", "--model", tiny / "combined", "--llm-fallback", "openai"]
    args += ["--llm-model", "fake-model", "--llm-api-key-env", "", "--llm-share", 0.5, "--review-below", 0.99]
    store = tmp_path / "answers.jsonl"
    args += ["--llm-store", store]
    with FakeOpenAI({broken: ["malformed"]}, answers) as server:
        result = run_predict(*args, "--llm-base-url", server.base_url, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert set(server.requests) == chosen  # only the least confident half, each once (+1 retry)
        assert server.requests[broken] == 2
        rows = read_rows(tmp_path / "out.csv")
        for title, row, before in zip(TITLES, rows[:-1], plain, strict=True):
            assert row["seniority"] == before["seniority"]  # seniority is not sent by default
            assert row["seniority_score"] == before["seniority_score"]
            if title == broken:
                assert row["department_answered_by"] == "llm_failed"
                assert row["department"] == before["department"]
            elif title in chosen:
                assert (row["department"], row["department_score"]) == ("Purchasing", "")
                assert row["department_answered_by"] == "llm"
                # An LLM answer is not flagged: only the model's scores count.
                assert row["needs_review"] == str(float(row["seniority_score"]) < 0.99)
            else:
                assert row["department"] == before["department"] and row["department_answered_by"] == "model"
        assert rows[-1]["department_answered_by"] == ""
        assert "7 requests" in result.stderr and "titles without an answer: 1" in result.stderr
        assert len(store.read_text().splitlines()) == 7  # every answer, the two invalid ones included

        # A rerun reads every answer from the store: no request, the same output.
        first = dict(server.requests)
        again = run_predict(
            *args[:1], tmp_path / "again.csv", *args[2:], "--llm-base-url", server.base_url, cwd=tmp_path
        )
        assert again.returncode == 0, again.stderr
        assert dict(server.requests) == first
        assert "department: 0 requests" in again.stderr
    assert read_rows(tmp_path / "again.csv") == rows


def test_llm_fallback_draws_no_progress_bar_where_stderr_is_no_terminal(tiny, tmp_path):
    """A log file or a pipe gets the notes and the summary, not a bar's carriage returns."""
    titles = write_titles(tmp_path / "titles.csv", TITLES)
    args = [titles, tmp_path / "out.csv", "--model", tiny / "combined", "--column", "title", "--llm-fallback", "openai"]
    args += ["--llm-model", "fake-model", "--llm-api-key-env", "", "--llm-share", 0.5]
    with FakeOpenAI() as server:
        command = [sys.executable, "-m", "titlecat", "predict", *map(str, args), "--llm-base-url", server.base_url]
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr
        assert sum(server.requests.values()) > 0
    assert "\r" not in result.stderr and "title/s" not in result.stderr, result.stderr
    assert "department: " in result.stderr and "requests" in result.stderr  # the fallback's summary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_llm_fallback_on_a_down_endpoint_stops_and_writes_nothing(tiny, tmp_path):
    titles = write_titles(tmp_path / "titles.csv", TITLES)
    settings = {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "fake-model", "api_key_env": ""}
    settings |= {"backoff": 0.01, "max_tries": 2, "breaker_seconds": 0.5}
    postprocess = row_postprocess(tmp_path / "out.csv", None, "openai", None, 0.9, "department", None, settings)
    with pytest.raises(FallbackError, match="looks down.*rerun asks only for the rest"):
        predict_file(
            load_pipeline(tiny / "combined"),
            titles,
            tmp_path / "out.csv",
            PredictOptions.of(column="title", progress=False, postprocess=postprocess),
        )
    assert not (tmp_path / "out.csv").exists()


def test_recorded_fallback_finds_its_answers_from_any_folder(tmp_path, monkeypatch):
    """configs/llm_recorded.cfg names assets/gemini_synthetic.csv relative to its project: run from elsewhere, the
    fallback resolves it against the project folder rather than failing on a missing file."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "assets").mkdir()
    shutil.copy(REPO / "configs" / "llm_recorded.cfg", project / "configs")
    shutil.copy(DATA / "gemini_synthetic.csv", project / "assets")
    recorded = read_recorded_answers(DATA / "gemini_synthetic.csv")
    title = normalise_title(recorded[min(recorded)]["position"])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    fallback = LLMFallback(str(project / "configs" / "llm_recorded.cfg"), tmp_path / "store.jsonl")
    assert fallback.answer([title])[title] is not None


def test_recorded_llm_answers_are_mapped_onto_the_annotators_convention(tiny, tmp_path):
    # The recorded backend answers by title: the first recorded row of each title.
    recorded = read_recorded_answers(DATA / "gemini_synthetic.csv")
    first: dict[str, dict] = {}
    for row_id in sorted(recorded):
        first.setdefault(normalise_title(recorded[row_id]["position"]), recorded[row_id])
    owners = [t for t, r in first.items() if r["department"] == "Business Development" and t in ("Owner", "Founder")]
    assert owners  # gemini files general management alone under Business Development; the annotators: Other
    unknown = "Chef de Mission Lunaire"
    assert unknown not in first
    titles = write_titles(tmp_path / "titles.csv", [*owners, unknown])
    settings = {"path": str(DATA / "gemini_synthetic.csv")}
    postprocess = row_postprocess(
        tmp_path / "out.csv", None, "recorded", 1.0, None, "department,seniority", None, settings
    )
    predict_file(
        load_pipeline(tiny / "combined"),
        titles,
        tmp_path / "out.csv",
        PredictOptions.of(column="title", progress=False, postprocess=postprocess),
    )
    rows = read_rows(tmp_path / "out.csv")
    for row in rows[: len(owners)]:
        assert row["department"] == "Other" and row["department_answered_by"] == "llm"
        assert row["seniority_answered_by"] == "llm"
    assert rows[len(owners)]["department_answered_by"] == "llm_failed"  # no recorded answer for it


def test_predict_ray_flags_and_falls_back_as_predict_does(tiny, tmp_path):
    """--review-below and --llm-fallback in predict-ray: the rows of predict, the same titles sent to the LLM."""
    pytest.importorskip("ray")
    titles = write_titles(tmp_path / "titles.csv", TITLES)
    answers = {title: {"department": "Purchasing", "seniority": "Director"} for title in TITLES}
    options = ["--model", tiny / "combined", "--llm-fallback", "openai", "--llm-model", "fake-model"]
    options += ["--llm-api-key-env", "", "--llm-share", 0.25, "--review-below", 0.9]
    sent = {}
    for command in ("predict", "predict-ray"):
        with FakeOpenAI({}, answers) as server:
            args = [titles, tmp_path / f"{command}.csv", *options, "--llm-base-url", server.base_url]
            args += ["--llm-store", tmp_path / f"{command}.jsonl"]
            cli = [sys.executable, "-m", "titlecat", command, *map(str, args), "--column", "title", "--no-progress"]
            result = subprocess.run(cli, capture_output=True, text=True, cwd=tmp_path, timeout=300)
            assert result.returncode == 0, result.stderr[-3000:]
            assert "needs_review:" in result.stderr, result.stderr
            assert "LLM fallback (openai:fake-model)" in result.stderr, result.stderr
            sent[command] = dict(server.requests)
    assert sent["predict-ray"] == sent["predict"] and len(sent["predict"]) > 0
    rows = read_rows(tmp_path / "predict-ray.csv")
    assert rows == read_rows(tmp_path / "predict.csv")
    assert {"needs_review", "department_answered_by"} <= set(rows[0])
    assert {row["department_answered_by"] for row in rows[:-1]} == {"model", "llm"}


def test_bad_fallback_options_are_errors_naming_the_option(tiny, tmp_path):
    from typer.testing import CliRunner

    from titlecat.cli import app

    titles = write_titles(tmp_path / "titles.csv", TITLES)
    openai = ["--llm-fallback", "openai", "--llm-api-key-env", ""]
    cases = [
        (["--llm-share", "0.5"], "need --llm-fallback"),
        (openai, "exactly one of --llm-share and --llm-below"),
        (["--llm-fallback", "nosuch", "--llm-share", "0.1"], "nosuch"),
        ([*openai, "--llm-share", "2"], "--llm-share must be between"),
        ([*openai, "--llm-share", "0.1", "--llm-tasks", "mood"], "--llm-tasks mood"),
        (["--review-below", "1.5"], "--review-below must be between"),
        # An unset key variable: the fix in predict's own flags, not the pseudo-labelling script's.
        (["--llm-fallback", "openai", "--llm-api-key-env", "TITLECAT_TEST_UNSET_KEY", "--llm-share", "0.1"],
         "$TITLECAT_TEST_UNSET_KEY is not set"),
        (["--llm-fallback", "openai", "--llm-api-key-env", "TITLECAT_TEST_UNSET_KEY", "--llm-share", "0.1"],
         "with --llm-api-key-env NAME, or send no key to a server that needs none (Ollama, vLLM, llama.cpp) with "
         "--llm-api-key-env ''"),
    ]  # fmt: skip
    base = ["predict", str(titles), str(tmp_path / "out.csv"), "--model", str(tiny / "combined"), "--column", "title"]
    for options, message in cases:
        result = CliRunner().invoke(app, [*base, *options, "--no-progress"])
        assert result.exit_code == 1 and message in " ".join(result.output.split()), (options, result.output)
        assert not (tmp_path / "out.csv").exists()


def test_the_project_calibrates_and_the_benchmark_reports_confidence(small_project):
    calibration = json.loads((small_project / "metrics" / "cpu" / "calibration.json").read_text())
    combined = spacy.load(small_project / "training" / "cpu" / "combined")
    stored = combined.meta["titlecat"]["temperatures"]
    for task in TASKS:
        report = calibration["tasks"][task]
        assert set(report["sets"]) == {"test", "cv_dev", "ood"} and report["sets"]["cv_dev"]["n"] == 217
        if report["temperature"] != 1.0:  # used only when it lowers cv-dev's cross-validated ECE
            assert report["cv_dev_cross_validated"]["ece"] < report["sets"]["cv_dev"]["ece_before"]
        # spaCy reads meta.json with srsly's ujson, whose floats may be an ulp off (0.6849 -> 0.6849000000000001).
        assert stored.get(task, 1.0) == pytest.approx(report["temperature"], rel=1e-12)
        assert (small_project / "metrics" / "cpu" / f"reliability_{task}.png").stat().st_size > 1000
    benchmark = json.loads((small_project / "metrics" / "benchmark.json").read_text())
    for task in TASKS:
        found = benchmark["confidence"]["cpu"][task]
        sets = ("cv_dev", "ood", "dutch_dev") if task == "department" else ("cv_dev", "ood")  # Dutch: department only
        assert [(r["set"], r["set_aside"]) for r in found["coverage"]] == [
            (name, x) for name in sets for x in (0.0, 0.1, 0.25, 0.5)
        ]
        fallback_rows = found["llm_fallback"]
        assert [(r["budget"], r["sent"]) for r in fallback_rows] == [
            (0.0, 0),
            (0.1, 62),
            (0.25, 156),
            (0.5, 312),
            (1.0, 623),
        ]
        assert fallback_rows[-1]["llm_answers_taken"] == 622
        pipeline = next(
            r
            for r in benchmark["rows"]
            if (r["system"], r["task"], r["variant"]) == ("titlecat cpu", task, "augmented")
        )
        assert fallback_rows[0]["accuracy"] == pipeline["ood"]["accuracy"]  # budget 0 is the pipeline itself
    markdown = (small_project / "metrics" / "benchmark.md").read_text()
    assert "## Confidence (augmented pipelines)" in markdown and "| titlecat cpu | department | 25% | 156 |" in markdown
    assert (small_project / "metrics" / "coverage.png").stat().st_size > 1000
    (package,) = (small_project / "packages" / "cpu").glob("xx_titlecat_combined_cpu-*")
    meta = json.loads(next(package.rglob("meta.json")).read_text())
    assert meta["titlecat"]["temperatures"] == pytest.approx(stored, rel=1e-12)
