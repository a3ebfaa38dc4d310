"""`titlecat predict` loses no row of any input: the inputs the fuzzer (benchmarks/fuzz_readers.py) found broke it,
each as a test of its own.

The pipeline is built, not trained (random weights: conftest's `model`): what is tested is what is read and written
around the answers.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_predict

from titlecat.predict import PredictOptions, predict_file
from titlecat.readers import DataError

REPO = Path(__file__).resolve().parent.parent


def output_rows(path: Path) -> list[dict]:
    """The rows of a JSONL output, each line read as strict JSON (no NaN or Infinity, which JSON has not)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text(encoding="utf-8").split("\n")[:-1]]


# What the fuzzer found


def test_a_jsonl_integer_longer_than_python_converts_keeps_its_row(nlp, tmp_path):
    """Python's int() refuses a number of more than 4,300 digits (ValueError, not a JSON error): such an id or title
    stopped the whole file with a traceback. It is read as any number is, and its digits are written back."""
    digits = "7" * 5000
    source = tmp_path / "people.jsonl"
    source.write_text(f'{{"id": {digits}, "title": "Head of Sales"}}\n{{"id": 2, "title": {digits}}}\n', "utf-8")
    predict_file(nlp, source, tmp_path / "out.jsonl", PredictOptions.of(column="title", id_column="id", progress=False))
    rows = output_rows(tmp_path / "out.jsonl")
    assert [(row["line"], row["id"], row["title"], row["status"]) for row in rows] == [
        (1, digits, "Head of Sales", "ok"),
        (2, "2", digits, "not_text"),
    ]


def test_nan_and_infinities_are_written_as_text_so_that_the_output_is_json(nlp, tmp_path):
    """Python's json reads NaN and Infinity (which JSON has not) and 1e400 (JSON, too large for a float) as floats; a
    JSONL output wrote them back as NaN and Infinity, which no strict JSON reader reads. They are written as text."""
    source = tmp_path / "people.jsonl"
    lines = ['{"title": NaN, "score": 1}', '{"title": "CFO", "score": -Infinity}', '{"title": 1e400, "score": 0.5}']
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    predict_file(
        nlp, source, tmp_path / "out.jsonl", PredictOptions.of(column="title", progress=False, keep_columns=["score"])
    )
    rows = output_rows(tmp_path / "out.jsonl")
    assert [(row["title"], row["score"], row["status"]) for row in rows] == [
        ("nan", 1, "not_text"),
        ("CFO", "-inf", "ok"),
        ("inf", 0.5, "not_text"),
    ]


def test_a_jsonl_line_of_whitespace_json_has_not_is_malformed_not_left_out(nlp, tmp_path):
    """A blank JSONL line is no row; a line of a form feed, U+2028, NEL or a file separator (whitespace to Python's
    str.strip, not to JSON) vanished from the output unsaid. It is a malformed row on its own line."""
    source = tmp_path / "people.jsonl"
    source.write_text('{"title": "CFO"}\n \t\n\x0c\n\u2028\n\x85\r\n\x1c\n{"title": "CTO"}\n', encoding="utf-8")
    summary = predict_file(nlp, source, tmp_path / "out.jsonl", PredictOptions.of(column="title", progress=False))
    rows = output_rows(tmp_path / "out.jsonl")
    assert [(row["line"], row["status"]) for row in rows] == [
        (1, "ok"),
        (3, "malformed"),
        (4, "malformed"),
        (5, "malformed"),
        (6, "malformed"),
        (7, "ok"),
    ]
    assert summary.total == 6


def titles_workbook(path: Path) -> None:
    """A workbook of three titles with their ids, as openpyxl writes it (cell A3 is id 2: <c r="A3" t="n">)."""
    from openpyxl import Workbook

    workbook = Workbook()
    for row in (["id", "title"], [1, "Head of Sales"], [2, "CFO"], [3, "CTO"]):
        workbook.active.append(row)
    workbook.save(path)


def rewrite_part(path: Path, part: str, change: Callable[[bytes], bytes]) -> None:
    """Change one part (file) of a workbook's zip archive."""
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    changed = change(parts[part])
    assert changed != parts[part]
    parts[part] = changed
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in parts.items():
            archive.writestr(name, content)


@pytest.mark.parametrize(
    "cell_xml, error",
    [
        (b'<c r="A3" t="d"><v>not a date</v></c>', "ValueError: Invalid datetime value not a date"),
        (b'<c r="A3" t="s"><v>7</v></c>', "IndexError"),  # a shared string that is not there
        (b'<c r="A3"><v>2 of 3</v></c>', "ValueError"),  # a number that is not one
        (b'<c r="A3" t="inlineStr"><is><t>2&#1;</t></is></c>', "ParseError"),  # not XML 1.0
    ],
)
def test_a_sheet_openpyxl_cannot_read_on_is_refused_naming_where(nlp, tmp_path, cell_xml, error):
    """A cell that openpyxl cannot convert, or XML it cannot parse, stopped predict with a traceback after the rows
    before it (ValueError, IndexError, ParseError), none of them naming the file. The rows after it cannot be read:
    the file is refused, naming the sheet and the last line read, and no output is left."""
    source = tmp_path / "crm.xlsx"
    titles_workbook(source)
    # the cell A3 (row 3, id 2) replaced
    rewrite_part(source, "xl/worksheets/sheet1.xml", lambda xml: xml.replace(b'<c r="A3" t="n"><v>2</v></c>', cell_xml))
    with pytest.raises(DataError, match=r"crm\.xlsx: sheet 'Sheet', after line 2: the sheet cannot be read on \(") as e:
        predict_file(
            nlp, source, tmp_path / "out.csv", PredictOptions.of(column="title", id_column="id", progress=False)
        )
    assert error in str(e.value)
    assert [path.name for path in tmp_path.iterdir()] == ["crm.xlsx"]


def test_a_workbook_with_no_sheets_is_refused_as_such(nlp, tmp_path):
    """A workbook that lists no sheet (no Excel writes one, a hand-made export may) raised IndexError."""
    source = tmp_path / "export.xlsx"
    titles_workbook(source)
    rewrite_part(source, "xl/workbook.xml", lambda xml: re.sub(rb"<sheets>.*</sheets>", b"<sheets/>", xml))
    with pytest.raises(DataError, match=r"export\.xlsx: the workbook has no sheets"):
        predict_file(nlp, source, tmp_path / "out.csv", PredictOptions.of(column="title", progress=False))
    assert [path.name for path in tmp_path.iterdir()] == ["export.xlsx"]


# The fuzzer


def load_fuzzer():
    """benchmarks/fuzz_readers.py, which is no package: imported from its path."""
    spec = importlib.util.spec_from_file_location("fuzz_readers", REPO / "benchmarks" / "fuzz_readers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up as they are made
    spec.loader.exec_module(module)
    return module


fuzz_readers = load_fuzzer()
FUZZ_SEED = 49
FUZZ_CASES = 60 * len(fuzz_readers.KINDS)


def test_no_row_of_a_fuzzed_input_is_lost(nlp):
    """A few hundred generated files of every format (bad bytes, marks, line breaks, quotes, fields, surrogates, huge
    cells, empty files...): each row in the output once, in order, with its status; a file refused only where it
    cannot be read as a whole, leaving nothing behind; nothing else raised (see benchmarks/fuzz_readers.py)."""
    report = fuzz_readers.run_cases(nlp, FUZZ_CASES, seed=FUZZ_SEED)
    shown = "\n".join(
        f"case {failure.index} ({failure.kind}; {'; '.join(failure.description) or 'clean'}): {failure.problems[:3]}"
        for failure in report.failures[:5]
    )
    assert not report.failures, (
        f"{len(report.failures)} failing; make one again with python benchmarks/fuzz_readers.py --seed {FUZZ_SEED} "
        f"--start INDEX --cases 1 --keep-failures DIR\n{shown}"
    )
    # Every format was generated, and rows of each were read and checked, not only files refused.
    assert all(report.cases[kind] == 60 and report.rows[kind] > 100 for kind in fuzz_readers.KINDS), report.table()
    assert 0 < sum(report.refused.values()) < FUZZ_CASES / 3, report.table()


def test_titlecat_predict_on_fuzzed_inputs_exits_cleanly(model, tmp_path):
    """The command people run, on a few dozen generated files: exit status 0, or 1 with a message (a refusal naming
    the file, with no output left; or a run that labelled too little, its output written); never a traceback, never
    a partial file."""
    statuses = []
    for index in range(6 * len(fuzz_readers.KINDS)):
        case = fuzz_readers.generate_case(FUZZ_SEED, index)
        folder = tmp_path / str(index)
        folder.mkdir()
        source = folder / f"input{case.suffix}"
        source.write_bytes(case.data)
        result = run_predict(source, folder / "out.csv", "-m", model, *case.options())
        statuses.append(result.exit_code)
        where = f"case {index} ({case.kind}; {'; '.join(case.description)}): {result.output[-500:]}"
        assert result.exit_code in (0, 1) and isinstance(result.exception, (SystemExit, type(None))), where
        left = sorted(path.name for path in folder.iterdir())
        if result.exit_code == 1 and "the output is written" not in result.stderr:
            assert left == [source.name] and f"✘ {source}: " in result.stderr, where
        else:
            assert left == [source.name, "out.csv", "out.csv.json"], where
    assert statuses.count(0) > statuses.count(1) > 0, statuses
