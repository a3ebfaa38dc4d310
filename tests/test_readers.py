import json

import pytest

from titlecat.labels import TASKS, one_hot, seniority_from_ordinal
from titlecat.readers import (
    DataError,
    read_curated_csv,
    read_cv_dev,
    read_cv_positions,
    read_ood,
    read_pseudo_labels,
    read_recorded_answers,
)

DEPARTMENT = TASKS["department"]
SENIORITY = TASKS["seniority"]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_curated_csv_skips_and_counts_empty_titles_and_missing_labels(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\nSales Manager,Sales\n"  ",Sales\nIT-Leiter,\nBerater,Consulting\n')
    examples, skipped = read_curated_csv(path, DEPARTMENT)
    assert [(e.text, e.label, e.row) for e in examples] == [("Sales Manager", "Sales", 2), ("Berater", "Consulting", 5)]
    assert [(s.row, s.reason) for s in skipped] == [(3, "empty title"), (4, "missing label")]


def test_curated_csv_unknown_label_names_file_line_and_value(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\nSales Manager,Sales\nKoch,Kitchen\n")
    with pytest.raises(DataError, match=r"d\.csv: line 3, field 'label': department label 'Kitchen'"):
        read_curated_csv(path, DEPARTMENT)


def test_curated_csv_wrong_header_and_wrong_field_count(tmp_path):
    with pytest.raises(DataError, match=r"line 1: expected header 'text,label'"):
        read_curated_csv(write(tmp_path / "a.csv", "title,department\nx,Sales\n"), DEPARTMENT)
    with pytest.raises(DataError, match=r"b\.csv: line 3: expected 2 fields"):
        read_curated_csv(write(tmp_path / "b.csv", "text,label\nx,Sales\ny,Sales,extra\n"), DEPARTMENT)
    with pytest.raises(DataError, match=r"c\.csv: line \d+: malformed CSV"):
        read_curated_csv(write(tmp_path / "c.csv", 'text,label\n"unterminated,Sales\n'), DEPARTMENT)


def test_cv_positions_numbering_skips_and_errors(tmp_path):
    cvs = [
        [{"position": "CEO", "status": "ACTIVE"}, {"position": "", "status": "ACTIVE"}],
        [{"position": None, "status": "INACTIVE"}, {"position": " Head  of Sales ", "status": "ACTIVE"}],
    ]
    positions, skipped = read_cv_positions(write(tmp_path / "cvs.json", json.dumps(cvs)))
    # Rows keep the running index of the file, so they match the recorded answers' row_id.
    assert [(p.text, p.row, p.cv) for p in positions] == [("CEO", 0, 0), ("Head of Sales", 3, 1)]
    assert [(s.row, s.reason) for s in skipped] == [(1, "empty title"), (2, "empty title")]
    with pytest.raises(DataError, match=r"bad\.json: line 1, column \d+: malformed JSON"):
        read_cv_positions(write(tmp_path / "bad.json", "[[{"))
    with pytest.raises(DataError, match=r"CV 0: expected a list of positions"):
        read_cv_positions(write(tmp_path / "flat.json", json.dumps([{"position": "CEO"}])))


def test_ood_is_active_positions_with_validated_labels(tmp_path):
    cvs = [
        [
            {"position": "CEO", "status": "ACTIVE", "department": "Other", "seniority": "Management"},
            {"position": "Trainee", "status": "INACTIVE", "department": "Sales", "seniority": "Junior"},
        ]
    ]
    examples, _ = read_ood(write(tmp_path / "a.json", json.dumps(cvs)), SENIORITY)
    assert [(e.text, e.label) for e in examples] == [("CEO", "Management")]
    cvs[0][0]["seniority"] = "Boss"
    with pytest.raises(DataError, match=r"field 'seniority'.*'Boss'"):
        read_ood(write(tmp_path / "b.json", json.dumps(cvs)), SENIORITY)
    del cvs[0][1]["department"]
    with pytest.raises(DataError, match=r"CV 0, position 1, field 'department'.*missing label"):
        read_ood(write(tmp_path / "c.json", json.dumps(cvs)), DEPARTMENT)


def test_pseudo_labels_reader_validates_each_line(tmp_path):
    good = {
        "row_id": 0,
        "text": "Bookkeeper",
        "department": "Administrative",
        "seniority": "Professional",
        "backend": "recorded",
        "raw_answer": "{}",
    }
    path = write(tmp_path / "p.jsonl", json.dumps(good) + "\n\n" + json.dumps({**good, "seniority": "7"}) + "\n")
    assert [(e.text, e.label, e.row) for e in read_pseudo_labels(path, DEPARTMENT)] == [
        ("Bookkeeper", "Administrative", 1),
        ("Bookkeeper", "Administrative", 3),
    ]
    with pytest.raises(DataError, match=r"p\.jsonl: line 3, field 'seniority'"):
        read_pseudo_labels(path, SENIORITY)
    with pytest.raises(DataError, match=r"q\.jsonl: line 1: malformed JSON"):
        read_pseudo_labels(write(tmp_path / "q.jsonl", "{not json\n"), SENIORITY)
    with pytest.raises(DataError, match=r"missing fields \['backend', 'raw_answer'\]"):
        read_pseudo_labels(write(tmp_path / "r.jsonl", json.dumps({k: good[k] for k in list(good)[:4]})), SENIORITY)


def test_recorded_answers_and_ordinal_mapping(data_dir):
    answers = read_recorded_answers(data_dir / "gemini_synthetic.csv")
    assert len(answers) == 1886
    assert answers[0] == {"position": "Bookkeeper", "department": "Administrative", "seniority": "2.0"}
    assert [seniority_from_ordinal(v) for v in ("1.0", 2, "6")] == ["Junior", "Professional", "Director"]
    for bad in ("0", "2.5", "7.0"):
        with pytest.raises(ValueError):
            seniority_from_ordinal(bad)


def test_one_hot_has_the_full_label_set():
    cats = one_hot("Professional", SENIORITY.labels)
    assert list(cats) == list(SENIORITY.labels) and cats["Professional"] == 1.0 and sum(cats.values()) == 1.0
    with pytest.raises(ValueError):
        one_hot("Chef", SENIORITY.labels)


def test_cv_dev_is_every_position_of_the_cvs_without_an_active_one(data_dir):
    path = data_dir / "linkedin-cvs-annotated.json"
    positions, _ = read_cv_positions(path, labelled=True)
    cv_of_row = {p.row: p.cv for p in positions}
    for task in TASKS.values():
        cv_dev, _ = read_cv_dev(path, task)
        ood, _ = read_ood(path, task)
        assert (len(cv_dev), len(ood)) == (217, 623)
        cv_dev_cvs, ood_cvs = {cv_of_row[e.row] for e in cv_dev}, {cv_of_row[e.row] for e in ood}
        assert len(cv_dev_cvs) == 131 and not cv_dev_cvs & ood_cvs  # no person in both
        # Every position of those CVs, and nothing else: the other non-ACTIVE positions stay unread.
        assert sorted(e.row for e in cv_dev) == sorted(p.row for p in positions if p.cv in cv_dev_cvs)


def test_cv_dev_skips_empty_titles_of_its_own_cvs_only(tmp_path):
    cvs = [
        [{"position": "CEO", "status": "ACTIVE", "department": "Other", "seniority": "Management"}],
        [{"position": " ", "status": "INACTIVE", "department": "Other", "seniority": "Professional"}],
        [
            {"position": "Praktikant", "status": "UNKNOWN", "department": "Other", "seniority": "Junior"},
            {"position": "", "status": "INACTIVE", "department": "Sales", "seniority": "Junior"},
        ],
    ]
    path = write(tmp_path / "cvs.json", json.dumps(cvs))
    examples, skipped = read_cv_dev(path, SENIORITY)
    assert [(e.text, e.label, e.row) for e in examples] == [("Praktikant", "Junior", 2)]
    assert [(s.row, s.cv, s.reason) for s in skipped] == [(1, 1, "empty title"), (3, 2, "empty title")]
    ood, ood_skipped = read_ood(path, SENIORITY)
    assert [(e.text, e.row) for e in ood] == [("CEO", 0)] and ood_skipped == []
