"""The real project commands, end to end, on a small subset of the real data."""

import filecmp
import json
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import spacy
import srsly
from conftest import (
    REPO,
    SMALL_RUN,
    asset_mirror,
    copy_project,
    load_wheel_in_fresh_venv,
    minor_series_of,
    run_project,
    users_pipeline_reloads,
    wheel_requirements,
)
from spacy.tokens import DocBin

import titlecat.components  # noqa: F401  (registers the architecture the CPU pipelines use)
from titlecat.corpus import WEIGHT_KEY, read_corpus_docs
from titlecat.labels import TASKS
from titlecat.readers import normalise_title

PIPELINES = [(task, variant) for task in TASKS for variant in ("base", "augmented")]


def test_corpora_have_the_protocol_splits_and_full_label_sets(small_project):
    for name, task in TASKS.items():
        report = json.loads((small_project / "corpus" / name / "report.json").read_text())
        counts = report["label_counts"]
        curated = {
            label: counts["train"][label] + counts["dev"][label] + counts["test"][label] for label in task.labels
        }
        total = sum(curated.values())
        # The per-label cap, on the CSV's own labels (5 for seniority: no Professional in the CSV);
        # the seniority convention then moves some Senior and Junior titles to Professional.
        assert total == 25 * (len(task.labels) - (name == "seniority"))
        assert report["counts"]["train"] == pytest.approx(0.7 * total, abs=len(task.labels))
        assert (report["counts"]["cv_dev"], report["counts"]["ood"]) == (217, 623)
        assert "ood" not in counts  # OOD's label mix is not shown where choices are made
        nlp = spacy.blank("xx")
        docs = list(DocBin().from_disk(small_project / "corpus" / name / "dev.spacy").get_docs(nlp.vocab))
        assert len(docs) == report["counts"]["dev"]
        assert all(list(doc.cats) == list(task.labels) and sum(doc.cats.values()) == 1.0 for doc in docs)
    seniority = json.loads((small_project / "corpus" / "seniority" / "report.json").read_text())
    # The curated CSV has no Professional: every one in train is a Senior or Junior without a marker.
    relabelled = seniority["relabelled_to_annotators_convention"]
    assert seniority["label_counts"]["train"]["Professional"] == relabelled["train"] > 0
    assert seniority["label_counts"]["cv_dev"]["Professional"] == 107
    department = json.loads((small_project / "corpus" / "department" / "report.json").read_text())
    assert set(department["relabelled_to_annotators_convention"].values()) == {0}


def test_augmented_train_adds_every_pseudo_label_with_its_weight(small_project):
    pseudo = (small_project / "corpus" / "pseudo_labels" / "recorded.jsonl").read_text().splitlines()
    weight = srsly.read_yaml(small_project / "project.yml")["vars"]["pseudo_label_weight"]
    assert weight == 3  # the value docs/quality.md chose on held-out CVs
    for name in TASKS:
        base = len(DocBin().from_disk(small_project / "corpus" / name / "train.spacy"))
        augmented_path = small_project / "corpus" / name / "train_augmented.spacy"
        augmented = read_corpus_docs(augmented_path, spacy.blank("xx"))
        report = json.loads(augmented_path.with_suffix(".json").read_text())
        # Then the ESCO names (docs/labels.md), each at its weight; curated titles and pseudo-labels weigh 1.
        esco = len(DocBin().from_disk(small_project / "corpus" / name / "esco.spacy"))
        assert report["esco_names"] == esco > 0 and len(augmented) == base + weight * len(pseudo) + esco
        assert {doc.user_data.get(WEIGHT_KEY) for doc in augmented[-esco:]} == {report["esco_weight"]} != {None}
        assert all(WEIGHT_KEY not in doc.user_data for doc in augmented[:-esco])
        # Each copy holds every pseudo-labelled title, in file order, with the same label.
        copies = [augmented[base + i * len(pseudo) : base + (i + 1) * len(pseudo)] for i in range(weight)]
        assert [(d.text, d.cats) for d in copies[0]] == [(d.text, d.cats) for d in copies[-1]]
        assert copies[0][0].text == normalise_title(json.loads(pseudo[0])["text"])
        assert (report["curated_train"], report["pseudo_label_weight"]) == (base, weight)
        # Pseudo-labels go into train in the annotators' convention (docs/labels.md).
        assert report["pseudo_labels_relabelled_to_annotators_convention"] > 0
        if name == "department":
            gemini = {json.loads(line)["department"] for line in pseudo if json.loads(line)["text"] == "Owner"}
            assert "Business Development" in gemini
            owners = [doc for doc in copies[0] if doc.text == "Owner"]
            assert owners and all(doc.cats["Other"] == 1.0 for doc in owners)


def test_every_pipeline_is_evaluated_and_summarised(small_project):
    for task, variant in PIPELINES:
        metrics = json.loads((small_project / "metrics" / "cpu" / f"{task}_{variant}.json").read_text())
        for split in ("test", "cv_dev", "ood"):
            assert 0.0 <= metrics[split]["accuracy"] <= 1.0
            assert set(metrics[split]["per_class"]) == set(TASKS[task].labels)
            assert ("mae" in metrics[split]) == (task == "seniority")
            assert (small_project / "metrics" / "cpu" / f"{task}_{variant}_{split}_confusion.png").stat().st_size > 1000
        ood = metrics["ood"]
        assert ood["n"] == 623 == sum(map(sum, ood["confusion"]))
        assert ood["seen_in_train"]["n"] + ood["unseen_in_train"]["n"] == 623
    benchmark = json.loads((small_project / "metrics" / "benchmark.json").read_text())
    systems = {(row["system"], row["task"], row["variant"]) for row in benchmark["rows"]}
    ours = ("titlecat cpu", "titlecat multilingual", "TF-IDF + logistic regression")
    assert systems == {(s, t, v) for s in ours for t, v in PIPELINES} | {
        ("reference bag-of-words recipe, retrained", t, "augmented") for t in TASKS
    }
    for row in benchmark["rows"]:
        for split, n in (("cv_dev", 217), ("ood", 623)):
            low, high = row[split]["ci95"]["accuracy"]
            assert low <= row[split]["accuracy"] <= high and row[split]["n"] == n
        assert row["train_seconds"] > 0 and row["titles_per_second"] > 0
    summary = (small_project / "metrics" / "summary.md").read_text()
    # Four CPU pipelines, each a row of its task's table and of the multilingual dev set's by-language table
    assert summary.count("| titlecat cpu:") == 8
    assert "gemini-2.0-flash zero-shot, recomputed (622 of 623 answered) | | | | | | 0.7961 |" in summary
    # department's table has the Dutch and the multilingual dev set's columns
    assert "reference: Transformer-Fine-Tuned-augmented | | | | | | 0.6886 | 0.6374" in summary
    assert "Multilingual dev set by language" in summary and "| de | es | fr | it | nl | pl | pt |" in summary
    assert "reference: Rule-based (scored on the 380 CVs with exactly one ACTIVE position" in summary


def test_default_pipeline_per_task_is_the_augmented_one(small_project):
    for task in TASKS:
        nlp = spacy.load(small_project / "training" / "cpu" / task)
        doc = nlp("Leiterin Vertrieb DACH")
        assert set(doc.cats) == set(TASKS[task].labels)
        assert sum(doc.cats.values()) == pytest.approx(1.0, abs=1e-4)
        best = spacy.load(small_project / "training" / "cpu" / task / "augmented" / "model-best")
        assert best("Leiterin Vertrieb DACH").cats == doc.cats


def test_rerun_skips_what_is_up_to_date(small_project, data_dir, tiny_encoder_dir):
    mirror, encoder = asset_mirror(data_dir), str(tiny_encoder_dir)
    result = run_project(
        small_project, "all", ".", "--vars.asset_mirror", mirror, "--vars.encoder", encoder, *SMALL_RUN
    )
    # Every step but preflight (no outputs: it always runs), evaluate included (it once wrote metrics/summary.md,
    # which later steps rewrote, so it ran again on every rerun).
    steps = srsly.read_yaml(small_project / "project.yml")["workflows"]["all"]
    skipped = set(re.findall(r"Skipping '([\w-]+)'", result.stdout))
    assert skipped == set(steps) - {"preflight"}, result.stdout


def test_same_seed_same_corpora_and_metrics(small_project, tmp_path, data_dir, tiny_encoder_dir):
    again = copy_project(tmp_path / "again")
    run_project(again, "assets", ".", "--vars.asset_mirror", asset_mirror(data_dir))
    for command in ("corpora", "pseudo-label", "augment", "encoder", "train-department-base"):
        run_project(again, command, ".", *SMALL_RUN, "--vars.encoder", str(tiny_encoder_dir))
    for name in ("train", "dev", "test", "cv_dev", "ood", "train_augmented"):
        assert filecmp.cmp(
            small_project / "corpus" / "seniority" / f"{name}.spacy",
            again / "corpus" / "seniority" / f"{name}.spacy",
            shallow=False,
        )
    output = again / "metrics" / "department_base.json"
    subprocess.run(
        [
            sys.executable,
            "scripts/evaluate.py",
            "department",
            "training/cpu/department/base/model-best",
            "corpus/department",
            "corpus/department/train.spacy",
            str(output),
        ],
        cwd=again,
        check=True,
        capture_output=True,
    )
    first = json.loads((small_project / "metrics" / "cpu" / "department_base.json").read_text())
    second = json.loads(output.read_text())
    for split in ("test", "cv_dev", "ood"):
        assert second[split]["confusion"] == first[split]["confusion"]
        assert second[split]["macro_f1"] == first[split]["macro_f1"]


def test_wheel_installs_in_a_fresh_venv_and_loads_by_name(small_project, tmp_path):
    wheels = sorted((small_project / "packages" / "cpu").glob("*/dist/*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == [
        "xx_titlecat_combined_cpu",
        "xx_titlecat_department_augmented_cpu",
        "xx_titlecat_department_base_cpu",
        "xx_titlecat_seniority_augmented_cpu",
        "xx_titlecat_seniority_base_cpu",
    ]
    output = load_wheel_in_fresh_venv(wheels[3], tmp_path, "xx_titlecat_seniority_augmented_cpu", "Head of Marketing")
    assert set(output["cats"]) == set(TASKS["seniority"].labels)
    meta = output["meta"]
    assert meta["version"] == "0.1.0"
    (seniority,) = meta["titlecat"]["tasks"].values()
    assert seniority["labels"] == list(TASKS["seniority"].labels)
    assert {split: scores["n"] for split, scores in seniority["metrics"].items()}["ood"] == 623
    assert 0 <= seniority["metrics"]["cv_dev"]["accuracy"] <= 1
    assert {s["name"] for s in meta["sources"]} >= {"seniority-v2.csv", "gemini_synthetic.csv"}


def test_a_users_pipeline_with_titlecat_components_reloads_wherever_the_wheels_are_installed(small_project, tmp_path):
    """A user sources titlecat textcats from two wheels (both declaring the same architecture) and the combined
    wheel's answer component into a pipeline of their own, saves it, and loads it in a new process with no import:
    the wheels' entry points (`spacy_architectures`, `spacy_factories`) make it load, titlecat installed or not."""
    wheels = [
        next((small_project / "packages" / "cpu").glob(f"xx_titlecat_{name}_cpu-*/dist/*.whl"))
        for name in ("department_augmented", "seniority_base", "combined")
    ]
    pipes = [
        # The textcats read the piece vectors their title_encoder sets; both wheels' are the same.
        ["xx_titlecat_department_augmented_cpu", "title_encoder", "title_encoder"],
        ["xx_titlecat_department_augmented_cpu", "textcat", "department"],
        ["xx_titlecat_seniority_base_cpu", "textcat", "seniority"],
        ["xx_titlecat_combined_cpu", "titlecat_answers", "titlecat_answers"],
    ]
    titles = ["Leiterin Vertrieb DACH", "", "   ", "Head of Marketing"]
    answers = users_pipeline_reloads(tmp_path, wheels, pipes, titles)
    assert answers["pipe_names"] == ["sentencizer", "title_encoder", "department", "seniority", "titlecat_answers"]
    department = spacy.load(small_project / "training" / "cpu" / "department" / "augmented" / "model-best")
    expected = department(titles[0]).cats
    no_answer = {"cats": dict.fromkeys([*TASKS["department"].labels, *TASKS["seniority"].labels], 0.0)}
    no_answer |= {"department": [None, None], "seniority": [None, None]}
    for run in ("alone", "batch"):
        title, empty, blank, _ = answers[run]
        assert {label: title["cats"][label] for label in expected} == pytest.approx(expected, abs=1e-6)
        assert title["department"] == [max(expected, key=expected.get), pytest.approx(max(expected.values()))]
        assert title["seniority"][0] in TASKS["seniority"].labels
        assert empty == blank == no_answer  # a title with no text: no score, no answer, alone and in a batch


def test_wheel_requires_any_patch_of_the_spacy_minor_series_it_was_built_with(tmp_path):
    """`spacy package` alone would require the exact patch release it ran with (spacy>=3.8.18,<3.9.0)."""
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet

    nlp = spacy.blank("xx")
    textcat = nlp.add_pipe("textcat")
    for label in TASKS["seniority"].labels:
        textcat.add_label(label)
    nlp.initialize()
    nlp.to_disk(tmp_path / "model")
    scores = {"n": 10, "accuracy": 0.5, "macro_f1": 0.5, "mae": 1.0}
    metrics = {"task": "seniority", "test": scores, "cv_dev": scores, "ood": scores}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "package.py"),
            str(tmp_path / "model"),
            str(tmp_path / "packages"),
            "--name",
            "titlecat_requirement_test",
            "--metrics",
            str(tmp_path / "metrics.json"),
            "--project-file",
            str(REPO / "project.yml"),
            "--code",
            str(REPO / "titlecat" / "components.py"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = (tmp_path / "packages").glob("*/dist/*.whl")
    requirements = wheel_requirements(wheel)
    assert requirements == {"spacy": minor_series_of("spacy")}  # titlecat (found in --code's registry) is out
    spacy_range = SpecifierSet(requirements["spacy"])
    major, minor = (int(part) for part in version("spacy").split(".")[:2])
    assert f"{major}.{minor}.0" in spacy_range and version("spacy") in spacy_range
    assert f"{major}.{minor + 1}.0" not in spacy_range
    # The pipeline's own meta says the same, so spacy.load on an older patch warns about nothing (W095).
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = (name for name in archive.namelist() if name.endswith("-0.1.0/meta.json"))
        assert SpecifierSet(json.loads(archive.read(meta))["spacy_version"]) == spacy_range


def test_asset_checksum_mismatch_and_missing_file_are_named(tmp_path, data_dir):
    mirror = tmp_path / "mirror"
    shutil.copytree(data_dir, mirror)
    with (mirror / "seniority-v2.csv").open("a") as file:
        file.write("Chef,Lead\n")
    project = copy_project(tmp_path / "project")
    result = run_project(project, "assets", ".", "--vars.asset_mirror", str(mirror), check=False)
    assert result.returncode != 0
    assert "seniority-v2.csv: sha256 mismatch" in result.stderr
    assert not (project / "assets" / "seniority-v2.csv").exists()
    (mirror / "seniority-v2.csv").unlink()
    result = run_project(project, "assets", ".", "--vars.asset_mirror", str(mirror), check=False)
    assert "seniority-v2.csv: not found in the asset mirror" in result.stderr


def test_unknown_label_in_curated_csv_stops_corpora_naming_the_row(tmp_path, data_dir):
    project = copy_project(tmp_path / "project")
    run_project(project, "assets", ".", "--vars.asset_mirror", asset_mirror(data_dir))
    csv_path = project / "assets" / "department-v2.csv"
    csv_path.write_text(csv_path.read_text() + "Küchenchef,Kitchen\n")
    result = run_project(project, "corpora", ".", check=False)
    assert result.returncode != 0
    assert "department-v2.csv: line 10147, field 'label': department label 'Kitchen'" in result.stderr
