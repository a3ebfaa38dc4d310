"""`titlecat predict` on the files people have: encodings, delimiters, Excel, bad rows, processes, empty titles.

The pipeline here is built, not trained: both titlecat textcats with random weights (seeded) and
`titlecat_answers`, so every title gets a real, title-dependent answer in milliseconds.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_predict
from typer.testing import CliRunner

import titlecat.combined  # noqa: F401  (registers titlecat_answers)
import titlecat.components  # noqa: F401  (registers the architecture)
from titlecat import predict as predict_module
from titlecat import readers
from titlecat.cli import app
from titlecat.labels import TASKS
from titlecat.predict import PredictOptions, check_title, predict_file
from titlecat.readers import DataError, read_titles

TITLES = ["Head of Sales", "Werkstudent IT-Support", "Directeur commercial", "Einkäuferin", "Senior Developer"]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def expected(nlp, title: str) -> tuple[str, str]:
    doc = nlp(title)
    return doc._.seniority, doc._.department


# Encodings


def test_a_utf8_byte_order_mark_is_skipped(nlp, model, tmp_path):
    source = tmp_path / "excel.csv"
    source.write_text("title,id\n" + "".join(f"{t},{i}\n" for i, t in enumerate(TITLES)), encoding="utf-8-sig")
    assert source.read_bytes().startswith(b"\xef\xbb\xbftitle")
    result = run_predict(source, tmp_path / "out.csv", "-m", model, "--column", "title", "--id-column", "id")
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "out.csv")
    assert [(row["id"], row["status"]) for row in rows] == [(str(i), "ok") for i in range(len(TITLES))]
    assert [(row["seniority"], row["department"]) for row in rows] == [expected(nlp, t) for t in TITLES]
    jsonl = tmp_path / "excel.jsonl"
    jsonl.write_text(json.dumps({"title": TITLES[3]}, ensure_ascii=False) + "\n", encoding="utf-8-sig")
    assert [r.value for r in read_titles(jsonl, "title")] == [TITLES[3]]


def test_the_progress_bar_stays_out_of_logs(model, tmp_path):
    """Where stderr is no terminal (a log file, a pipe, a CI job), no progress bar is drawn: its carriage returns
    would run into titlecat's own messages on one line. The summary and notes are written as ever. A forgotten
    --column is named."""
    source = tmp_path / "titles.csv"
    source.write_text("id;title\n1;Head of Sales\n2;Koch\n", encoding="utf-8")
    arguments = ["predict", str(source), str(tmp_path / "out.csv"), "-m", str(model)]
    result = CliRunner().invoke(app, arguments)
    # No --column: the default 'text' is not there, and the error says which option names the title column.
    assert result.exit_code == 1 and "no column 'text' in the header" in result.stderr
    assert "; --column names the column that holds the titles" in result.stderr
    result = CliRunner().invoke(app, [*arguments, "--column", "title"])
    assert result.exit_code == 0, result.output
    assert "titles/s]" not in result.stderr and "\r" not in result.stderr
    assert "columns separated by ';'" in result.stderr and "✔" in result.stderr


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_another_encoding_is_named_with_the_option(nlp, model, tmp_path, encoding):
    source = tmp_path / "titles.csv"
    source.write_bytes("title\nDirecteur général\nHead of Sales\nGeschäftsführer\n".encode(encoding))
    output = tmp_path / "out.csv"
    # Not UTF-8, so its encoding is detected (cp1252: these bytes are the same in latin-1), said, and every row read.
    result = run_predict(source, output, "-m", model, "--column", "title", "--keep-title")
    assert result.exit_code == 0, result.output
    assert "titles.csv: not UTF-8: read as cp1252, the encoding detected in its start" in result.stderr
    assert "; read as cp1252 (detected: not UTF-8)" in result.stderr
    assert [row["title"] for row in read_csv(output)] == ["Directeur général", "Head of Sales", "Geschäftsführer"]
    assert [row["status"] for row in read_csv(output)] == ["ok"] * 3
    # --encoding overrides: read as UTF-8, the rows with é/ä are undecodable, on their own lines; the rest is
    # labelled; the hint names the option. Most rows unread: the run fails (exit status 1, so that a script
    # notices), its output written.
    result = run_predict(source, output, "-m", model, "--column", "title", "--keep-title", "--encoding", "utf-8")
    assert result.exit_code == 1, result.output
    assert "detected" not in result.stderr
    assert "✘ most rows could not be read (2 of 3 undecodable or malformed): the output is written" in result.stderr
    assert [(row["line"], row["status"]) for row in read_csv(output)] == [
        ("2", "undecodable"),
        ("3", "ok"),
        ("4", "undecodable"),
    ]
    assert read_csv(output)[0]["title"] == "Directeur g\ufffdn\ufffdral"
    assert "undecodable 2 (first on line 2)" in result.stderr and "--encoding" in result.stderr
    result = run_predict(source, output, "-m", model, "--column", "title", "--keep-title", "--encoding", encoding)
    assert result.exit_code == 0, result.output
    assert "reads as UTF-8" not in result.stderr and "detected" not in result.stderr
    rows = read_csv(output)
    assert [row["title"] for row in rows] == ["Directeur général", "Head of Sales", "Geschäftsführer"]
    assert [row["status"] for row in rows] == ["ok"] * 3
    assert rows[0]["department"] == expected(nlp, "Directeur général")[1]
    # A header that is not text in the encoding is an error naming the option; detected, it is read.
    (tmp_path / "header.csv").write_bytes("Fonction occupée\nHead of Sales\n".encode(encoding))
    result = run_predict(tmp_path / "header.csv", output, "-m", model, "--column", "Fonction occupée")
    assert result.exit_code == 0 and [row["status"] for row in read_csv(output)] == ["ok"], result.output
    arguments = ["-m", model, "--column", "Fonction occupée", "--encoding", "utf-8"]
    result = run_predict(tmp_path / "header.csv", output, *arguments)
    assert result.exit_code == 1 and "header.csv: line 1: no column 'Fonction occupée'" in result.stderr
    assert "columns found: ['Fonction occup\ufffde']" in result.stderr  # the bad byte shown as U+FFFD, not \udce9
    assert "name the file's encoding with --encoding" in result.stderr
    # The option named on a file saved as UTF-8 (no byte-order mark) is refused: the umlauts would be mojibake
    # in rows marked ok.
    (tmp_path / "utf8.csv").write_text("title\nHead of Sales\nGeschäftsführer\n", encoding="utf-8")
    fresh = tmp_path / "fresh.csv"
    result = run_predict(tmp_path / "utf8.csv", fresh, "-m", model, "--column", "title", "--encoding", encoding)
    assert result.exit_code == 1 and not fresh.exists(), result.output
    name = codecs.lookup(encoding).name
    assert (
        f"utf8.csv: --encoding: the file reads as UTF-8 text (line 3: 'Geschäftsführer', which {name} reads as "
        f"'GeschÃ¤ftsfÃ¼hrer'): it was saved as UTF-8, not {name}: drop --encoding"
    ) in result.stderr
    # A byte-order mark makes the mistake certain: UTF-8 or UTF-16 text named as a one-byte code page is refused.
    for unicode in ("utf-8-sig", "utf-16"):
        (tmp_path / "bom.csv").write_text("title\nGeschäftsführer\n", encoding=unicode)
        result = run_predict(tmp_path / "bom.csv", output, "-m", model, "--column", "title", "--encoding", encoding)
        assert result.exit_code == 1, result.output
        mark = "UTF-8" if unicode == "utf-8-sig" else "UTF-16"
        assert f"bom.csv: --encoding: the file starts with a {mark} byte-order mark" in result.stderr
        assert "drop --encoding" in result.stderr
        result = run_predict(tmp_path / "bom.csv", output, "-m", model, "--column", "title", "--keep-title")
        assert result.exit_code == 0 and read_csv(output)[0]["title"] == "Geschäftsführer"
    result = run_predict(source, output, "-m", model, "--column", "title", "--encoding", "klingon")
    assert result.exit_code == 1 and "--encoding 'klingon'" in result.stderr


def test_fail_on_gives_exit_status_1_when_a_row_has_a_status_it_names(model, tmp_path):
    """A few undecodable rows (a UTF-8 file with a line in cp1252: a file mixing encodings is read as UTF-8, not
    detected as another) do not fail a run unless --fail-on asks."""
    source = tmp_path / "titles.csv"
    lines = ["title", "Einkäuferin", "Geschäftsführer", "CFO", "", "CTO"]
    source.write_bytes(
        b"".join(f"{t}\n".encode("cp1252" if number == 3 else "utf-8") for number, t in enumerate(lines, 1))
    )
    output = tmp_path / "out.csv"
    result = run_predict(source, output, "-m", model, "--column", "title")
    assert result.exit_code == 0 and "undecodable 1 (first on line 3)" in result.stderr, result.output
    assert "detected" not in result.stderr and "a file that mixes encodings keeps them so" in result.stderr
    for fail_on, failed in [("undecodable", "undecodable 1 (first on line 3)"), ("malformed,empty", "empty 1")]:
        output.unlink()
        result = run_predict(source, output, "-m", model, "--column", "title", "--fail-on", fail_on)
        assert result.exit_code == 1, result.output
        assert f"✘ rows with a status --fail-on names: {failed}" in result.stderr
        assert [row["status"] for row in read_csv(output)] == ["ok", "undecodable", "ok", "empty", "ok"]
    result = run_predict(source, output, "-m", model, "--column", "title", "--fail-on", "bad")
    assert result.exit_code == 1 and "empty 1 (first on line 5), undecodable 1 (first on line 3)" in result.stderr
    assert run_predict(source, output, "-m", model, "--column", "title", "--fail-on", "too_long").exit_code == 0
    result = run_predict(source, tmp_path / "never.csv", "-m", model, "--column", "title", "--fail-on", "undecoded")
    assert result.exit_code == 1 and not (tmp_path / "never.csv").exists()
    assert "--fail-on 'undecoded': expected 'bad' (any bad row) or bad statuses" in result.stderr


def test_a_kept_cell_in_another_encoding_makes_its_row_undecodable(nlp, tmp_path):
    """A cp1252 file read as UTF-8 whose titles are ASCII but whose kept columns are not: those rows are not
    written as labelled rows with U+FFFD in their columns (they would no longer join back), but as undecodable,
    counted with the --encoding hint; named, the encoding gives every row its answer and its cells as written."""
    source = tmp_path / "people.csv"
    source.write_bytes(
        "id;title;company\n1;Head of Sales;Müller GmbH\n2;CFO;ACME\nZürich-3;CTO;Vogel\n4;;Groß AG\n".encode("cp1252")
    )
    output = tmp_path / "out.csv"
    summary = predict_file(
        nlp,
        source,
        output,
        PredictOptions.of(column="title", id_column="id", progress=False, keep_columns=["company"], encoding="utf-8"),
    )
    rows = read_csv(output)
    assert [(row["line"], row["status"], row["company"]) for row in rows] == [
        ("2", "undecodable", "M\ufffdller GmbH"),
        ("3", "ok", "ACME"),
        ("4", "undecodable", "Vogel"),
        ("5", "undecodable", "Gro\ufffd AG"),  # an empty title too: what is written is not what was read
    ]
    assert rows[0]["department"] == rows[2]["department"] == "" and rows[1]["department"]
    assert summary.counts["undecodable"] == 3 and summary.first_lines["undecodable"] == 2
    assert "--encoding" in summary.hints()[0] and "kept columns" in summary.hints()[0]
    for encoding in ("cp1252", None):  # named, or detected
        summary = predict_file(
            nlp,
            source,
            output,
            PredictOptions.of(
                column="title", id_column="id", progress=False, keep_columns=["company"], encoding=encoding
            ),
        )
        rows = read_csv(output)
        assert [(row["id"], row["status"], row["company"]) for row in rows] == [
            ("1", "ok", "Müller GmbH"),
            ("2", "ok", "ACME"),
            ("Zürich-3", "ok", "Vogel"),
            ("4", "empty", "Groß AG"),
        ]
        assert [(row["seniority"], row["department"]) for row in rows[:3]] == [
            expected(nlp, t) for t in ("Head of Sales", "CFO", "CTO")
        ]
        assert summary.detected_encoding == (None if encoding else "cp1252")


def test_a_file_that_is_not_utf8_is_read_in_the_encoding_detected_and_said(nlp, model, tmp_path):
    """No --encoding: a cp1252 export (Excel's "CSV" in Germany) is read whole, every row ok, its umlauts intact,
    the encoding said when reading starts and in the summary; UTF-8 and ASCII files stay UTF-8, unsaid."""
    titles = ["Geschäftsführer", "Einkäuferin", "Leiter Qualitätssicherung", "Bürokauffrau", "Head of Sales"]
    source = tmp_path / "export.csv"
    source.write_bytes(("id;title\n" + "".join(f"{i};{t}\n" for i, t in enumerate(titles))).encode("cp1252"))
    output = tmp_path / "out.csv"
    result = run_predict(source, output, "-m", model, "--column", "title", "--id-column", "id")
    assert result.exit_code == 0, result.output
    assert "export.csv: not UTF-8: read as cp1252, the encoding detected in its start (--encoding names another)" in (
        result.stderr
    )
    assert "5 rows: 5 labelled, 0 bad" in result.stderr and "; read as cp1252 (detected: not UTF-8)" in result.stderr
    rows = read_csv(output)
    assert [(row["title"], row["status"]) for row in rows] == [(t, "ok") for t in titles]
    assert [(row["seniority"], row["department"]) for row in rows] == [expected(nlp, t) for t in titles]
    for text, encoding in [("id;title\n1;Einkäuferin\n2;Head of Sales\n", "utf-8"), ("title\nCEO\nCFO\n", "ascii")]:
        source.write_bytes(text.encode(encoding))
        result = run_predict(source, output, "-m", model, "--column", "title")
        assert result.exit_code == 0 and "not UTF-8" not in result.stderr and "detected" not in result.stderr
        assert {row["status"] for row in read_csv(output)} == {"ok"}


@pytest.mark.parametrize(
    "encoding, titles",
    [
        ("cp1252", ["Directeur général", "Chargée de clientèle", "Responsable marché", "Contrôleur de gestion"]),
        ("cp1252", ["Director de ventas", "Ingeniero de diseño", "Técnico de mantenimiento", "Jefe de compras"]),
        ("cp1250", ["Dyrektor sprzedaży", "Kierownik działu", "Księgowa", "Główny inżynier", "Młodszy analityk"]),
        ("cp1251", ["Генеральный директор", "Менеджер по продажам", "Бухгалтер", "Инженер"]),
    ],
)
def test_the_detected_encoding_reads_each_letter_as_written(tmp_path, encoding, titles):
    """French and Spanish in cp1252 (charset-normalizer alone names cp1250, which reads è as č and ñ as ń), in CSV,
    JSONL and plain text; Polish in cp1250 and Russian in cp1251, as charset-normalizer names them (in a file this
    small it may not: Polish JSONL of these five titles comes out as cp1257)."""
    found: dict = {}
    source = tmp_path / "titles.csv"
    source.write_bytes(("id,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(titles))).encode(encoding))
    assert [r.value for r in read_titles(source, "title", dialect=found)] == titles
    assert found["encoding"] == encoding
    if encoding != "cp1252":
        return
    source = tmp_path / "titles.jsonl"
    objects = [json.dumps({"id": i, "title": t}, ensure_ascii=False) for i, t in enumerate(titles)]
    source.write_bytes("".join(line + "\n" for line in objects).encode(encoding))
    assert [r.value for r in read_titles(source, "title")] == titles
    source = tmp_path / "titles.txt"
    source.write_bytes("".join(f"{t}\n" for t in titles * 2).encode(encoding))
    assert [r.value for r in read_titles(source)] == titles * 2


def test_the_encoding_is_detected_in_the_first_mib_only(nlp, tmp_path):
    """A file whose first MiB is UTF-8 (ASCII here) is read as UTF-8 without reading the rest for it: a cp1252 line
    further on is undecodable on its line."""
    lines = ["title"] + ["Head of Sales"] * 90_000 + ["Geschäftsführer", "CFO"]
    data = b"".join(f"{t}\n".encode("cp1252" if t == "Geschäftsführer" else "ascii") for t in lines)
    assert data.index(b"Gesch") > readers.ENCODING_PROBE_BYTES
    (tmp_path / "titles.csv").write_bytes(data)
    summary = predict_file(
        nlp, tmp_path / "titles.csv", tmp_path / "out.csv", PredictOptions.of(column="title", progress=False)
    )
    assert summary.detected_encoding is None and summary.counts["undecodable"] == 1
    assert summary.first_lines["undecodable"] == len(lines) - 1 and summary.total == len(lines) - 1


def test_an_undecodable_row_is_reported_on_its_true_line_deep_in_a_file(nlp, tmp_path):
    lines = ["title"] + [TITLES[i % len(TITLES)] for i in range(30_000)]
    bad = {5, 25_002}  # 1-based file lines
    data = b"".join(
        (b"Bad \xe9\xff byte" if number in bad else line.encode("utf-8")) + b"\n"
        for number, line in enumerate(lines, start=1)
    )
    (tmp_path / "titles.csv").write_bytes(data)
    summary = predict_file(
        nlp, tmp_path / "titles.csv", tmp_path / "out.csv", PredictOptions.of(column="title", progress=False)
    )
    rows = read_csv(tmp_path / "out.csv")
    assert len(rows) == 30_000 and summary.counts["undecodable"] == 2
    assert {int(row["line"]) for row in rows if row["status"] == "undecodable"} == bad
    assert summary.first_lines["undecodable"] == 5


def test_a_utf16_file_with_its_byte_order_mark_is_read_as_utf16(tmp_path):
    source = tmp_path / "unicode.txt"
    source.write_text("Einkäuferin\nHead of Sales\n", encoding="utf-16")
    assert [r.value for r in read_titles(source)] == ["Einkäuferin", "Head of Sales"]
    # UTF-16 text without a byte-order mark: named utf-16, the error names the byte-order codecs; read as UTF-8,
    # the header's 0 characters say what it is.
    (tmp_path / "bare.csv").write_bytes("title\nCEO\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=r"bare\.csv: not utf-16 text \(UTF-16 stream does not start with BOM\)"):
        list(read_titles(tmp_path / "bare.csv", "title", encoding="utf-16"))
    with pytest.raises(DataError, match="utf-16-le or utf-16-be"):
        list(read_titles(tmp_path / "bare.csv", "title", encoding="utf-16"))
    with pytest.raises(DataError, match=r"holds NUL characters \(U\+0000\), as UTF-16 text without a byte-order"):
        list(read_titles(tmp_path / "bare.csv", "title"))
    # A UTF-16 encoding named for a UTF-8 file: line breaks without a 0 byte cannot be UTF-16, refused before the
    # header turns into CJK-looking characters.
    (tmp_path / "plain.csv").write_text("title\nCEO\n", encoding="utf-8")
    for encoding in ("utf-16", "utf-16-le", "utf-16-be"):
        with pytest.raises(DataError, match=f"plain\\.csv: --encoding: .* not {encoding} text .*drop --encoding"):
            list(read_titles(tmp_path / "plain.csv", "title", encoding=encoding))
    assert [r.value for r in read_titles(tmp_path / "bare.csv", "title", encoding="utf-16-le")] == ["CEO"]


# Delimiters


@pytest.mark.parametrize("delimiter,name", [(",", "','"), (";", "';'"), ("\t", "tab")])
def test_the_delimiter_is_found_in_the_header_and_said(nlp, model, tmp_path, delimiter, name):
    source = tmp_path / "titles.csv"
    source.write_text(
        f"id{delimiter}title{delimiter}abteilung\n"
        + "".join(f'{i}{delimiter}{t}{delimiter}"x, y; z"\n' for i, t in enumerate(TITLES)),
        encoding="utf-8",
    )
    result = run_predict(source, tmp_path / "out.csv", "-m", model, "--column", "title", "--id-column", "id")
    assert result.exit_code == 0, result.output
    assert f"columns separated by {name}" in result.stderr
    rows = read_csv(tmp_path / "out.csv")
    assert [(row["seniority"], row["department"]) for row in rows] == [expected(nlp, t) for t in TITLES]


def test_a_forced_delimiter_that_finds_no_column_suggests_the_one_in_the_header(model, tmp_path):
    source = tmp_path / "german.csv"
    source.write_text("title;abteilung\nVertriebsleiter;Vertrieb\n", encoding="utf-8")
    result = run_predict(source, tmp_path / "out.csv", "-m", model, "--column", "title", "--delimiter", ",")
    assert result.exit_code == 1
    assert "german.csv: line 1: no column 'title' in the header; columns found: ['title;abteilung']" in result.stderr
    assert "--delimiter ';'" in result.stderr
    result = run_predict(source, tmp_path / "out.csv", "-m", model, "--column", "Titel")
    assert result.exit_code == 1 and "columns found: ['title', 'abteilung']" in result.stderr
    result = run_predict(source, tmp_path / "out.csv", "-m", model, "--column", "title", "--delimiter", "semicolon")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / ".out.csv.partial").exists()


def test_an_empty_file_is_an_error_naming_it_with_no_delimiter_said(model, tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    result = run_predict(tmp_path / "empty.csv", tmp_path / "out.csv", "-m", model, "--column", "title")
    assert result.exit_code == 1 and not (tmp_path / "out.csv").exists()
    assert "empty.csv: line 1: no column 'title' in the header; the header is empty" in result.stderr
    assert "columns separated" not in result.stderr


def test_a_sep_line_names_the_delimiter_and_lines_keep_their_numbers(nlp, model, tmp_path):
    """Excel's `sep=;` first line: the delimiter it names, the header on line 2, each row on its own line
    number; --delimiter still wins, and a missing column names line 2."""
    source = tmp_path / "export.csv"
    lines = ["sep=;", "Position;Firma", "Head of Sales, EMEA;ACME", ";Leer AG", "CFO;x;y"]
    source.write_text("".join(line + "\r\n" for line in lines), encoding="utf-8")
    output = tmp_path / "out.csv"
    result = run_predict(source, output, "-m", model, "--column", "Position", "--keep-columns", "Firma")
    assert result.exit_code == 0, result.output
    assert "export.csv: columns separated by ';' (line 1: sep=)" in result.stderr
    rows = read_csv(output)
    assert [(row["line"], row["Firma"], row["status"]) for row in rows] == [
        ("3", "ACME", "ok"),
        ("4", "Leer AG", "empty"),
        ("5", "x", "malformed"),  # a field too many: its cells where they are
    ]
    assert (rows[0]["seniority"], rows[0]["department"]) == expected(nlp, "Head of Sales, EMEA")
    result = run_predict(source, output, "-m", model, "--column", "Titel")
    assert result.exit_code == 1 and "export.csv: line 2: no column 'Titel'" in result.stderr
    result = run_predict(source, output, "-m", model, "--column", "Position;Firma", "--delimiter", "tab")
    assert result.exit_code == 0 and [row["status"] for row in read_csv(output)] == ["ok", "ok", "ok"]
    source.write_text('"sep=;"\nPosition;Firma\nCFO;ACME\n', encoding="utf-8")  # as a CSV writer quotes it
    result = run_predict(source, output, "-m", model, "--column", "Position", "--keep-columns", "Firma")
    assert result.exit_code == 0 and [(row["line"], row["Firma"]) for row in read_csv(output)] == [("3", "ACME")]


def test_a_one_column_csv_reads_each_line_as_one_title(nlp, model, tmp_path):
    """A header of one column names no separator: a title holding a comma or a semicolon is that title, quoted or
    not, and said; --delimiter still splits, and then the hint for malformed rows names the fix."""
    source = tmp_path / "titles.csv"
    source.write_text('Position\nHead of Sales, EMEA\n"Director, Finance"\nCEO; Founder\n\nCTO\n', encoding="utf-8")
    output = tmp_path / "out.csv"
    result = run_predict(source, output, "-m", model, "--column", "Position", "--keep-title")
    assert result.exit_code == 0, result.output
    assert "titles.csv: one column in the header, so each line is one title" in result.stderr
    rows = read_csv(output)
    titles = ["Head of Sales, EMEA", "Director, Finance", "CEO; Founder", "", "CTO"]
    assert [(row["line"], row["title"]) for row in rows] == [(str(line), t) for line, t in enumerate(titles, 2)]
    assert [row["status"] for row in rows] == ["ok", "ok", "ok", "empty", "ok"]
    assert (rows[0]["seniority"], rows[0]["department"]) == expected(nlp, "Head of Sales, EMEA")
    result = run_predict(source, output, "-m", model, "--column", "Position", "--delimiter", ",")
    assert [row["status"] for row in read_csv(output)] == ["malformed", "ok", "ok", "empty", "ok"]
    assert "a cell holding the separator or a quote must be quoted as a whole" in result.stderr
    result = run_predict(source, output, "-m", model, "--column", "Position", "--id-column", "id")
    assert result.exit_code == 1 and "no column 'id' in the header; columns found: ['Position']" in result.stderr
    # A list of titles with no header line: the error says how to read it.
    (tmp_path / "list.csv").write_text("Head of Sales\nCFO\n", encoding="utf-8")
    result = run_predict(tmp_path / "list.csv", output, "-m", model)
    assert result.exit_code == 1 and "no column 'text' in the header" in result.stderr
    assert "with no header line is read with --format text" in result.stderr
    result = run_predict(tmp_path / "list.csv", output, "-m", model, "--format", "text")
    assert result.exit_code == 0 and [row["status"] for row in read_csv(output)] == ["ok", "ok"]
    # Its first title holding a comma, unquoted (two cells) or quoted (one): the same hint, no --delimiter one.
    for first in ("Head of Sales, EMEA", '"Head of Sales, EMEA"'):
        (tmp_path / "list.csv").write_text(f"{first}\nCFO\n", encoding="utf-8")
        result = run_predict(tmp_path / "list.csv", output, "-m", model)
        assert result.exit_code == 1 and "with no header line is read with --format text" in result.stderr
        assert "(--delimiter ','" not in result.stderr
    # A header cell that differs in spaces or case only is named.
    (tmp_path / "spaced.csv").write_text("Titel ,Firma\nCFO,ACME\n", encoding="utf-8")
    result = run_predict(tmp_path / "spaced.csv", output, "-m", model, "--column", "titel")
    assert result.exit_code == 1 and "the header has 'Titel ' (names must match exactly" in result.stderr
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    result = run_predict(tmp_path / "old.xls", output, "-m", model)
    assert (
        result.exit_code == 1
        and "old.xls: file name: an Excel 97-2003 .xls workbook: save it as .xlsx" in result.stderr
    )


def test_a_stray_quote_makes_its_row_malformed_and_the_file_goes_on(nlp, tmp_path):
    """`1;"Head of" Sales` cannot be split; the rows after it can. The row keeps the id it has."""
    source = tmp_path / "crm.csv"
    source.write_text('id;title\n1;"Head of" Sales\n2;CFO\n3;"Director\nFinance"\n4;CTO\n', encoding="utf-8")
    output = tmp_path / "out.csv"
    summary = predict_file(nlp, source, output, PredictOptions.of(column="title", id_column="id", progress=False))
    assert [(row["line"], row["id"], row["status"]) for row in read_csv(output)] == [
        ("2", "1", "malformed"),
        ("3", "2", "ok"),
        ("4", "3", "ok"),  # a quoted line break: one row over two lines
        ("6", "4", "ok"),
    ]
    assert summary.first_lines["malformed"] == 2


def test_a_quote_never_closed_costs_its_line_alone_and_the_rest_is_labelled(nlp, model, tmp_path):
    """A quote opened on line 3 and never closed would swallow every line after it into one cell: that line is
    malformed (with the id it has), and reading goes on at line 4; every row is in the output once, in order.
    --fail-on malformed still makes it exit status 1."""
    source = tmp_path / "crm.csv"
    source.write_text('id,title\n1,CEO\n3,"Head of Sales\n4,CFO\n5,Einkäuferin\n6,CTO\n', encoding="utf-8")
    output = tmp_path / "out.csv"
    result = run_predict(source, output, "-m", model, "--column", "title", "--id-column", "id", "--keep-title")
    assert result.exit_code == 0, result.output
    rows = read_csv(output)
    assert [(row["line"], row["id"], row["title"], row["status"]) for row in rows] == [
        ("2", "1", "CEO", "ok"),
        ("3", "3", "Head of Sales", "malformed"),  # what its line holds, read leniently; no answer
        ("4", "4", "CFO", "ok"),
        ("5", "5", "Einkäuferin", "ok"),
        ("6", "6", "CTO", "ok"),
    ]
    assert rows[1]["seniority"] == "" and (rows[2]["seniority"], rows[2]["department"]) == expected(nlp, "CFO")
    assert "malformed 1 (first on line 3)" in result.stderr and "a quote never closed" in result.stderr
    result = run_predict(source, output, "-m", model, "--column", "title", "--fail-on", "malformed")
    assert result.exit_code == 1 and "✘ rows with a status --fail-on names: malformed 1 (first on line 3)" in (
        result.stderr
    )
    assert len(read_csv(output)) == 5
    # Each quote never closed is closed, for csv, by the next quote in the file; the row between breaks, and is
    # its first line alone again. The last line too, and CRLF line ends. A quoted line break is still one row.
    source.write_bytes(
        b'id;title\r\n1;"CEO\r\n2;CFO\r\n3;"Director, Finance"\r\n4;"Head\r\nof Sales"\r\n5;"CTO\r\n6;COO\r\n7;"Buyer'
    )
    predict_file(
        nlp, source, output, PredictOptions.of(column="title", id_column="id", progress=False, keep_title=True)
    )
    assert [(row["line"], row["id"], row["title"], row["status"]) for row in read_csv(output)] == [
        ("2", "1", "CEO", "malformed"),
        ("3", "2", "CFO", "ok"),
        ("4", "3", "Director, Finance", "ok"),
        ("5", "4", "Head\r\nof Sales", "ok"),
        ("7", "5", "CTO", "malformed"),
        ("8", "6", "COO", "ok"),
        ("9", "7", "Buyer", "malformed"),
    ]
    # A quote never closed in the header leaves no header to read: the file stops, as ever.
    source.write_text('id,"title\n1,CEO\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"crm\.csv: line 1: malformed CSV: unexpected end of data: a quote opened"):
        predict_file(nlp, source, output, PredictOptions.of(column="title", id_column="id", progress=False))


def test_a_quote_never_closed_is_cut_short_and_memory_stays_bounded(tmp_path, monkeypatch):
    """A quoted cell that runs on past ROW_SPAN_CHARS characters of further lines is taken for a quote never closed
    (the csv module would hold the rest of the file in one cell); a shorter multi-line cell is read as one. Past
    HELD_CHARS the row's further lines are not held: reading goes back to its second line by seeking."""
    monkeypatch.setattr(readers, "ROW_SPAN_CHARS", 100)
    monkeypatch.setattr(readers, "HELD_CHARS", 20)
    seeks = []
    monkeypatch.setattr(readers.RowLines, "rewind", lambda lines: seeks.append(lines.resume) or REWIND(lines))
    source = tmp_path / "notes.csv"
    notes = "\n".join(f"note {i}" for i in range(10))  # 64 characters over 9 further lines: one cell
    source.write_text(
        f'id,title,notes\n1,CEO,"{notes}"\n2,"CFO,x\n' + "".join(f"{i},CTO {i},x\n" for i in range(3, 40)),
        encoding="utf-8",
    )
    records = list(read_titles(source, "title", "id", keep_columns=["notes"]))
    assert [(r.line, r.id, r.status) for r in records[:4]] == [
        (2, "1", None),
        (12, "2", "malformed"),
        (13, "3", None),
        (14, "4", None),
    ]
    assert records[0].extra == (notes,) and len(records) == 2 + 37
    assert len(seeks) == 1 and seeks[0] is not None  # once, to a file position
    # The same file read with every further line held: the same rows.
    monkeypatch.setattr(readers, "HELD_CHARS", 1000)
    assert [(r.line, r.id, r.value, r.status) for r in read_titles(source, "title", "id")] == [
        (r.line, r.id, r.value, r.status) for r in records
    ]
    assert seeks[1] is None


REWIND = readers.RowLines.rewind


def test_a_file_that_cannot_seek_recovers_from_a_quote_never_closed_the_same_way(tmp_path, monkeypatch):
    """A pipe (no tell/seek): the lines of a row that runs on are held, past HELD_CHARS too, and read again."""
    monkeypatch.setattr(readers, "HELD_CHARS", 5)
    data = 'id,title\n1,CEO\n3,"Head of Sales\n4,CFO\n5,"Director\nFinance"\n6,CTO\n'
    (tmp_path / "crm.csv").write_text(data, encoding="utf-8")
    read, write = os.pipe()
    os.write(write, data.encode("utf-8"))
    os.close(write)
    with open(read, newline="", encoding="utf-8") as pipe:
        assert not pipe.seekable()
        piped = [(r.line, r.id, r.value, r.status) for r in readers.iter_titles(pipe, "pipe", "title", "id")]
    assert piped == [(r.line, r.id, r.value, r.status) for r in read_titles(tmp_path / "crm.csv", "title", "id")]
    assert piped == [
        (2, "1", "CEO", None),
        (3, "3", "Head of Sales", "malformed"),
        (4, "4", "CFO", None),
        (5, "5", "Director\nFinance", None),
        (7, "6", "CTO", None),
    ]


def test_the_service_reads_an_upload_as_predict_does(model, tmp_path):
    """/v1/label-file (in-process): a cp1252 upload with a quote never closed is labelled, that line malformed, the
    encoding detected and said in the summary header; a file of that line alone has no row labelled (422)."""
    import asyncio
    import io

    import httpx

    from titlecat.serve import create_app

    app = create_app(model)

    async def upload(content: bytes) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://titlecat") as client:
            form = {"column": "title", "id_column": "id"}
            return await client.post("/v1/label-file", files={"file": ("crm.csv", content)}, data=form, timeout=60)

    content = 'id;title\n1;Geschäftsführer\n2;"Einkäuferin\n3;Leiter Qualitätssicherung\n4;CFO\n'.encode("cp1252")
    response = asyncio.run(upload(content))
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert [(row["id"], row["title"], row["status"]) for row in rows] == [
        ("1", "Geschäftsführer", "ok"),
        ("2", "Einkäuferin", "malformed"),
        ("3", "Leiter Qualitätssicherung", "ok"),
        ("4", "CFO", "ok"),
    ]
    assert response.headers["x-titlecat-summary"].endswith("; read as cp1252 (detected: not UTF-8)")
    response = asyncio.run(upload(b'id,title\n1,"Sales\n'))
    assert response.status_code == 422
    assert response.json()["detail"].startswith("file: crm.csv: no row was labelled (1 bad: malformed 1)")


def test_a_jsonl_field_no_object_has_is_an_error_listing_the_fields(nlp, tmp_path, monkeypatch):
    """As a missing CSV column: a typo in --field is not a file of rows that look empty."""
    source = tmp_path / "people.jsonl"
    source.write_text('{"name": "A", "job": "CEO"}\nnot json\n{"name": "B", "job": "CFO"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"people\.jsonl: field 'title': none of the file's 2 objects has it; "):
        list(read_titles(source, "title"))
    with pytest.raises(DataError, match=r"fields found: \['name', 'job'\]"):
        list(read_titles(source, "job", "id"))
    assert [r.value for r in read_titles(source, "job")] == ["CEO", None, "CFO"]
    # Past the first JSONL_PROBE objects a field may still be missing on a line: that title is empty.
    monkeypatch.setattr(readers, "JSONL_PROBE", 2)
    source.write_text('{"a": 1}\n{"a": 2}\n{"title": "CEO"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="none of the first 2 objects has it"):
        list(read_titles(source, "title"))
    source.write_text('{"title": "CEO"}\n{"a": 2}\n{"a": 3}\n', encoding="utf-8")
    assert [r.value for r in read_titles(source, "title")] == ["CEO", None, None]


def test_a_run_that_labels_no_row_fails_with_its_output_written(model, tmp_path):
    """Exit status 1 when no row could be labelled, so that a script notices; the output is still written, each
    row with its status. A file with no rows at all is not a failure."""
    source = tmp_path / "titles.csv"
    source.write_text("id,title\n1,\n2,---\n", encoding="utf-8")
    output = tmp_path / "out.csv"
    result = run_predict(source, output, "-m", model, "--column", "title")
    assert result.exit_code == 1, result.output
    assert "✘ no row was labelled (2 bad: empty 1, not_text 1): the output is written" in result.stderr
    assert [row["status"] for row in read_csv(output)] == ["empty", "not_text"]
    source.write_text("id,title\n", encoding="utf-8")
    result = run_predict(source, output, "-m", model, "--column", "title")
    assert result.exit_code == 0 and "0 rows: 0 labelled" in result.stderr and read_csv(output) == []


@pytest.mark.parametrize("encoding", ["cp1252", "utf-16"])
def test_an_excel_text_export_is_read_as_a_table(nlp, model, tmp_path, encoding):
    """Excel's "Text (Tab delimited)" (cp1252) and "Unicode Text" (UTF-16 with its byte-order mark) are .txt
    tables: read as TSV and said so; --format text still reads one title a line."""
    source = tmp_path / "export.txt"
    lines = ["Vorname\tPosition\tFirma", "Uwe\tGeschäftsführer\tMüller GmbH", "Eva\tHead of Sales\tACME"]
    source.write_bytes("".join(line + "\r\n" for line in lines).encode(encoding))  # utf-16: one byte-order mark
    options = ["--encoding", "cp1252"] if encoding == "cp1252" else []
    output = tmp_path / "out.csv"
    result = run_predict(source, output, "-m", model, "--column", "Position", "--keep-columns", "Firma", *options)
    assert result.exit_code == 0, result.output
    assert "export.txt: a tab in the first line: read as a tab-separated table" in result.stderr
    rows = read_csv(output)
    assert [(row["Firma"], row["status"]) for row in rows] == [("Müller GmbH", "ok"), ("ACME", "ok")]
    assert [(row["seniority"], row["department"]) for row in rows] == [
        expected(nlp, "Geschäftsführer"),
        expected(nlp, "Head of Sales"),
    ]
    result = run_predict(source, output, "-m", model, "--format", "text", *options)
    assert result.exit_code == 0 and len(read_csv(output)) == 3 and "a tab in the first line" not in result.stderr


def test_a_malformed_jsonl_line_with_kept_fields_is_malformed_and_the_file_goes_on(nlp, tmp_path):
    source = tmp_path / "people.jsonl"
    source.write_text('{"title": "Sales Rep", "company": "X"}\nnot json\n[1, 2]\n{"title": "CFO"}\n', encoding="utf-8")
    summary = predict_file(
        nlp, source, tmp_path / "out.csv", PredictOptions.of(column="title", progress=False, keep_columns=["company"])
    )
    rows = read_csv(tmp_path / "out.csv")
    assert [(row["line"], row["status"], row["company"]) for row in rows] == [
        ("1", "ok", "X"),
        ("2", "malformed", ""),
        ("3", "malformed", ""),
        ("4", "ok", ""),
    ]
    assert summary.counts["malformed"] == 2


def test_a_duplicated_column_is_an_error_naming_it(model, tmp_path):
    source = tmp_path / "dup.csv"
    source.write_text("id,title,title\n1,Sales,Head of Sales\n", encoding="utf-8")
    result = run_predict(source, tmp_path / "out.csv", "-m", model, "--column", "title")
    assert result.exit_code == 1
    assert "dup.csv: line 1: column 'title' appears 2 times in the header ['id', 'title', 'title']" in result.stderr
    assert not (tmp_path / "out.csv").exists()


# Excel


def write_workbook(path: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    notes = workbook.active
    notes.title = "Notes"
    notes.append(["exported from the CRM"])
    people = workbook.create_sheet("People")
    people.append(["id", "Name", "title"])
    people.append([101, "Ann", "Head of Sales"])
    people.append([102, "Bo", None])
    people.append([])  # a blank row: still a line of the sheet
    people.append([104, "Cy", 42])
    people.append([105, "Di", "Einkäuferin"])
    workbook.save(path)


def test_an_excel_sheet_is_read_by_name_or_number_with_its_row_numbers(nlp, model, tmp_path):
    source = tmp_path / "export.xlsx"
    write_workbook(source)
    output = tmp_path / "out.jsonl"
    for sheet in ("People", "2"):
        args = ["--column", "title", "--id-column", "id", "--sheet", sheet, "--keep-columns", "Name"]
        result = run_predict(source, output, "-m", model, *args)
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        assert [(r["line"], r["id"], r["Name"], r["status"]) for r in rows] == [
            (2, "101", "Ann", "ok"),
            (3, "102", "Bo", "empty"),
            (4, None, None, "empty"),
            (5, "104", "Cy", "not_text"),
            (6, "105", "Di", "ok"),
        ]
        assert (rows[4]["seniority"], rows[4]["department"]) == expected(nlp, "Einkäuferin")
    # The first sheet by default: it has no column 'title', and says what it has.
    result = run_predict(source, output, "-m", model, "--column", "title")
    assert result.exit_code == 1
    assert "export.xlsx: sheet 'Notes', line 1: no column 'title' in the header" in result.stderr
    assert "['exported from the CRM']" in result.stderr
    result = run_predict(source, output, "-m", model, "--column", "title", "--sheet", "3")
    assert result.exit_code == 1 and "the sheets are ['Notes', 'People']" in result.stderr
    (tmp_path / "fake.xlsx").write_text("id,title\n")
    with pytest.raises(DataError, match="not an Excel .xlsx workbook"):
        list(read_titles(tmp_path / "fake.xlsx", "title"))


def test_a_report_title_above_an_excel_table_is_skipped_and_said(tmp_path, monkeypatch):
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    for row in (["Kontakte, Export 2026"], [], ["Stand: 1.12.2026", None, "intern"], ["id", "Position"], [7, "CFO"]):
        sheet.append(row)
    workbook.save(tmp_path / "report.xlsx")
    notes = []
    records = list(read_titles(tmp_path / "report.xlsx", "Position", "id", notify=notes.append))
    assert [(r.line, r.id, r.value) for r in records] == [(5, "7", "CFO")]
    assert notes == [f"{tmp_path / 'report.xlsx'}: sheet 'Sheet': the header is line 4; the rows above it are skipped"]
    # A column no row holds: the error names the first non-empty row, and the row with the most cells.
    with pytest.raises(
        DataError, match=r"sheet 'Sheet', line 1: no column 'Titel'.*\['Kontakte, Export 2026'\]"
    ) as error:
        list(read_titles(tmp_path / "report.xlsx", "Titel"))
    assert "line 3, the row with the most cells, holds ['Stand: 1.12.2026', 'intern']" in str(error.value)
    monkeypatch.setattr(readers, "XLSX_HEADER_SEARCH", 2)  # the header is past the rows searched
    with pytest.raises(DataError, match="line 1: no column 'Position'"):
        list(read_titles(tmp_path / "report.xlsx", "Position"))


# Bad rows


def test_every_bad_row_gets_a_status_and_the_file_goes_on(nlp, model, tmp_path):
    source = tmp_path / "titles.csv"
    document = "word " * 36_000  # 180,000 characters pasted into one cell
    source.write_text(
        f'id,title\n1,Head of Sales\n2,"{document}"\n3,Sales,extra\n4,   \n5,12345\n6,Einkäuferin\n', encoding="utf-8"
    )
    result = run_predict(source, tmp_path / "out.csv", "-m", model, "--column", "title", "--id-column", "id")
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "out.csv")
    assert [(row["line"], row["id"], row["status"]) for row in rows] == [
        ("2", "1", "ok"),
        ("3", "2", "too_long"),
        ("4", "3", "malformed"),  # a field too many: its id and title where they are
        ("5", "4", "empty"),
        ("6", "5", "not_text"),
        ("7", "6", "ok"),
    ]
    assert rows[2]["title"] == "Sales" and rows[2]["department"] == ""
    assert "malformed 1 (first on line 4)" in result.stderr and "--delimiter names the separator" in result.stderr
    assert "too_long 1 (first on line 3): titles over --max-chars (500 characters)" in result.stderr
    result = run_predict(source, tmp_path / "out.csv", "-m", model, "--column", "title", "--max-chars", "200000")
    assert result.exit_code == 0 and read_csv(tmp_path / "out.csv")[1]["status"] == "ok"
    jsonl = tmp_path / "titles.jsonl"
    jsonl.write_text(
        '{"id": "a", "title": "Eng\\ud800ineer"}\n'
        '{"id": "b\\udc00", "title": "Engineer"}\n'
        '{"id": "c", "title": \n'
        '["not", "an", "object"]\n'
        '{"id": "e", "title": "Head of Sales"}\n',
        encoding="utf-8",
    )
    for output in (tmp_path / "out.jsonl", tmp_path / "out.tsv"):
        result = run_predict(jsonl, output, "-m", model, "--field", "title", "--id-field", "id", "--keep-title")
        assert result.exit_code == 1 and "most rows could not be read (4 of 5" in result.stderr, result.output
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["line"], r["id"], r["title"], r["status"]) for r in rows] == [
        (1, "a", "Eng\ufffdineer", "undecodable"),
        (2, "b\ufffd", "Engineer", "undecodable"),  # an id that cannot be written as read joins back to nothing
        (3, None, None, "malformed"),
        (4, None, None, "malformed"),
        (5, "e", "Head of Sales", "ok"),
    ]
    assert len((tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()) == 6


def test_check_title_marks_lone_surrogates_undecodable():
    assert check_title("Eng\ud800ineer")[0] == check_title("Directeur g\udce9n\udce9ral")[0] == "undecodable"
    assert check_title("Engineer 😀") == ("ok", "Engineer 😀")


# Output


def test_the_output_may_not_be_the_input(model, tmp_path):
    source = tmp_path / "titles.csv"
    source.write_text("text\nHead of Sales\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    for output in (source, tmp_path / "sub" / ".." / "titles.csv"):
        result = run_predict(source, output, "-m", model)
        assert result.exit_code == 1 and "the output is the input file" in result.stderr
    (tmp_path / "link.csv").symlink_to(source)
    result = run_predict(tmp_path / "link.csv", source, "-m", model)
    assert result.exit_code == 1 and "the output is the input file" in result.stderr
    assert source.read_text(encoding="utf-8") == "text\nHead of Sales\n"


def test_the_title_and_chosen_columns_are_carried_into_the_output(nlp, model, tmp_path):
    source = tmp_path / "crm.csv"
    source.write_text(
        "email,title,company\n" + "".join(f"p{i}@x.org,{t},Firm {i}\n" for i, t in enumerate(TITLES)), encoding="utf-8"
    )
    output = tmp_path / "out.csv"
    # The title beside its answers by default, as read; --no-keep-title leaves it out.
    result = run_predict(source, output, "-m", model, "--column", "title")
    assert result.exit_code == 0, result.output
    assert [(row["line"], row["title"], row["status"]) for row in read_csv(output)] == [
        (str(line), title, "ok") for line, title in enumerate(TITLES, 2)
    ]
    result = run_predict(source, output, "-m", model, "--column", "title", "--no-keep-title")
    assert result.exit_code == 0 and list(read_csv(output)[0])[:2] == ["line", "status"], result.output
    args = ["--column", "title", "--keep-title", "--keep-columns", "email, company"]
    result = run_predict(source, output, "-m", model, *args)
    assert result.exit_code == 0, result.output
    rows = read_csv(output)
    assert list(rows[0])[:5] == ["line", "title", "email", "company", "status"]
    assert [(r["title"], r["email"], r["company"]) for r in rows] == [
        (t, f"p{i}@x.org", f"Firm {i}") for i, t in enumerate(TITLES)
    ]
    # A kept column named like the title column: keep it under another name, or leave the title out.
    result = run_predict(source, output, "-m", model, "--column", "title", "--keep-columns", "title")
    assert result.exit_code == 1 and "--keep-columns ['title'] would write a column twice" in result.stderr
    assert "(or leave the title out: --no-keep-title)" in result.stderr
    result = run_predict(source, output, "-m", model, "--column", "title", "--keep-columns", "phone")
    assert result.exit_code == 1 and "no column 'phone' in the header" in result.stderr
    result = run_predict(source, output, "-m", model, "--column", "title", "--keep-columns", "company,status")
    assert result.exit_code == 1 and "--keep-columns ['status']" in result.stderr
    assert "keep a column under another name with NAME=NEW_NAME" in result.stderr
    # NAME=NEW_NAME keeps a column whose name is an output column already under another name.
    crm = tmp_path / "status.csv"
    crm.write_text("title,status\nHead of Sales,Lead\nCFO,Kunde\n", encoding="utf-8")
    result = run_predict(crm, output, "-m", model, "--column", "title", "--keep-columns", "status = crm_status")
    assert result.exit_code == 0, result.output
    rows = read_csv(output)
    assert [(row["crm_status"], row["status"]) for row in rows] == [("Lead", "ok"), ("Kunde", "ok")]
    assert list(rows[0])[:4] == ["line", "title", "crm_status", "status"]
    result = run_predict(crm, output, "-m", model, "--column", "title", "--keep-columns", "status=")
    assert result.exit_code == 1 and "--keep-columns 'status=': expected NAME or NAME=NEW_NAME" in result.stderr
    # A trailing or doubled comma names no column.
    result = run_predict(crm, output, "-m", model, "--column", "title", "--keep-columns", ",status=s,,")
    assert result.exit_code == 0 and list(read_csv(output)[0])[:4] == ["line", "title", "s", "status"], result.output
    with pytest.raises(ValueError, match="--keep-columns '': expected NAME"):
        predict_file(nlp, crm, output, PredictOptions.of(column="title", progress=False, keep_columns=[""]))
    result = run_predict(crm, output, "-m", model, "--column", "title", "--chunk-size", "0")
    assert result.exit_code == 2 and "--chunk-size" in result.output
    result = run_predict(source, output, "-m", model, "--column", "title", "--keep-columns", "company,company")
    assert result.exit_code == 1 and "--keep-columns lists 'company' more than once" in result.stderr
    assert "output columns" not in result.stderr
    one_row = tmp_path / "one.csv"
    one_row.write_text("title\nHead of Sales\n", encoding="utf-8")
    result = run_predict(one_row, output, "-m", model, "--column", "title")
    assert result.exit_code == 0 and "1 row: 1 labelled, 0 bad" in result.stderr
    (tmp_path / "titles.txt").write_text("Head of Sales\n", encoding="utf-8")
    result = run_predict(tmp_path / "titles.txt", output, "-m", model, "--keep-columns", "email")
    assert result.exit_code == 1 and "titles.txt: --keep-columns: a text file" in result.stderr


def test_an_excel_output_holds_the_rows_of_the_csv_one_with_numbers_as_numbers(nlp, model, tmp_path):
    """OUT.xlsx: the same rows as OUT.csv, scores and lines as numbers, the review flag as booleans; a cell
    that starts with "=" stays text (a title or a kept CRM cell is never a formula); control characters that a
    cell cannot hold become U+FFFD; a cell over Excel's limit stops the run with its line, and no file is left."""
    from openpyxl import load_workbook

    source = tmp_path / "crm.csv"
    cells = [('=HYPERLINK("http://x.example";"Head of Sales")', "=cmd|' /C calc'!A0"), ("Einkäuferin", "Vogel\x0bAG")]
    cells += [(title, f"Firm {i}") for i, title in enumerate(TITLES)] + [("", "Empty Ltd")]
    with source.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([("title", "company"), *cells])
    args = ["-m", model, "--column", "title", "--keep-title", "--keep-columns", "company", "--review-below", "0.5"]
    # The CSV with its cells as read, as the workbook holds them (in CSV a formula-like cell gets a leading ').
    assert run_predict(source, tmp_path / "out.csv", *args, "--no-neutralise-formulas").exit_code == 0
    result = run_predict(source, tmp_path / "out.xlsx", *args)
    assert result.exit_code == 0, result.output
    sheet = load_workbook(tmp_path / "out.xlsx")["labels"]
    header, *rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    expected_rows = read_csv(tmp_path / "out.csv")
    assert header == list(expected_rows[0]) and len(rows) == len(cells)
    for row, want in zip(rows, expected_rows, strict=True):
        got = dict(zip(header, row, strict=True))
        assert isinstance(got["line"], int) and str(got["line"]) == want["line"]
        for name in ("title", "status", "seniority", "department"):
            assert (got[name] or "") == want[name].replace("\x0b", "\ufffd")
        for name in ("seniority_score", "department_score"):
            assert got[name] == (float(want[name]) if want[name] else None)
        assert got["needs_review"] in (True, False, None) and str(got["needs_review"]) == (
            want["needs_review"] or "None"
        )
    assert [row[header.index("company")] for row in rows[:2]] == ["=cmd|' /C calc'!A0", "Vogel\ufffdAG"]
    assert sheet.cell(2, header.index("title") + 1).data_type == "s"  # text, not a formula
    long_title = "Sales " * 6000  # 36,000 characters, under --max-chars below: ok, and kept
    source.write_text(f"title,company\nHead of Sales,A\n{long_title},B\n", encoding="utf-8")
    result = run_predict(source, tmp_path / "long.xlsx", *args, "--max-chars", "40000")
    assert result.exit_code == 1
    assert "long.xlsx: line 3, column 'title': 36,000 characters; an Excel cell holds at most 32,767" in result.stderr
    assert sorted(path.name for path in tmp_path.glob("*long*")) == []
    # In a process of its own, as people run it: the error alone, no traceback from the unfinished workbook.
    result = subprocess.run(
        [sys.executable, "-m", "titlecat", "predict", str(source), str(tmp_path / "long.xlsx"), *args, "--max-chars",
         "40000", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1 and "an Excel cell holds at most 32,767" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


def test_help_texts_print_what_the_source_says():
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert "line, [id], title, [kept" in result.stdout
    result = CliRunner().invoke(app, ["predict-ray", "--help"])
    assert "'titlecat[distributed]'" in " ".join(result.stdout.split())


# Processes


def label_and_note_the_process(texts: list[str]) -> list[dict]:
    """titlecat.predict._label_in_worker that also notes which process ran it (module level: pickled by name)."""
    with open(os.environ["TITLECAT_TEST_PIDS"], "a") as file:
        file.write(f"{os.getpid()}\n")
    return LABEL_IN_WORKER(texts)


LABEL_IN_WORKER = predict_module._label_in_worker


def test_the_processes_start_once_for_the_whole_file(nlp, tmp_path, monkeypatch):
    source = tmp_path / "titles.csv"
    source.write_text("text\n" + "".join(f"{TITLES[i % len(TITLES)]}\n" for i in range(2000)), encoding="utf-8")
    monkeypatch.setenv("TITLECAT_TEST_PIDS", str(tmp_path / "pids"))
    monkeypatch.setattr(predict_module, "_label_in_worker", label_and_note_the_process)
    predict_file(
        nlp,
        source,
        tmp_path / "out.csv",
        PredictOptions.of(chunk_size=100, n_process=2, start_method="fork", progress=False),
    )
    pids = (tmp_path / "pids").read_text().split()
    assert len(pids) == 20 and len(set(pids)) == 2 and str(os.getpid()) not in pids


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_two_processes_write_the_bytes_of_one(nlp, tmp_path, start_method):
    source = tmp_path / "titles.csv"
    with source.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "text"])
        writer.writerows([i, f"{TITLES[i % len(TITLES)]} {i % 97}" if i % 13 else ""] for i in range(3000))
    kwargs = {"id_column": "id", "chunk_size": 250, "progress": False, "all_scores": True}
    predict_file(nlp, source, tmp_path / "one.csv", PredictOptions.of(n_process=1, **kwargs))
    summary = predict_file(
        nlp, source, tmp_path / "two.csv", PredictOptions.of(n_process=2, start_method=start_method, **kwargs)
    )
    assert summary.total == 3000 and summary.counts["empty"] == 231
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()


# nlp.pipe(n_process=2) under the start methods that pickle the pipeline, in a fresh interpreter.
PIPE_UNDER = (
    "import json, multiprocessing, sys, spacy\n"
    "if __name__ == '__main__':\n"
    "    nlp = spacy.load(sys.argv[1])\n"
    "    texts = json.loads(sys.argv[2])\n"
    "    def answers(docs):\n"
    "        return [(doc.cats, doc._.seniority, doc._.department) for doc in docs]\n"
    "    one = answers(nlp.pipe(texts))\n"
    "    for method in ('spawn', 'forkserver'):\n"
    "        multiprocessing.set_start_method(method, force=True)\n"
    "        assert answers(nlp.pipe(texts, n_process=2, batch_size=2)) == one, method\n"
    "    print(json.dumps(one))\n"
)


def test_the_pipeline_labels_in_processes_under_spawn_and_forkserver(nlp, model):
    texts = TITLES * 3
    result = subprocess.run(
        [sys.executable, "-c", PIPE_UNDER, str(model), json.dumps(texts)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [tuple(answer[1:]) for answer in json.loads(result.stdout)] == [expected(nlp, t) for t in texts]


# Empty titles


def test_an_empty_title_gets_no_answer_alone_or_in_a_batch(nlp):
    for text in ("", "   ", "\t\n"):
        alone = nlp(text)
        batch = list(nlp.pipe(["Head of Sales", text, "Einkäuferin"]))
        for doc in (alone, batch[1]):
            assert doc._.seniority is doc._.department is None
            assert doc._.seniority_score is doc._.department_score is None
            assert set(doc.cats) == {label for task in TASKS.values() for label in task.labels}
            assert set(doc.cats.values()) == {0.0}
        assert batch[0]._.seniority is not None and batch[2]._.department is not None
        assert check_title(text)[0] == "empty"


def test_predict_options_put_each_flat_name_in_its_group_and_name_an_unknown_one():
    from titlecat.predict import ReadOptions, RunOptions
    from titlecat.spreadsheet import OutputOptions

    excel = OutputOptions(excel=True)
    options = PredictOptions.of(column="title", chunk_size=4, output_options=excel, sidecar=False, model="m")
    assert options.read == ReadOptions(column="title") and options.run == RunOptions(chunk_size=4)
    assert (options.output, options.sidecar, options.model, options.postprocess) == (excel, False, "m", None)
    with pytest.raises(TypeError, match="no option named 'colum'"):
        PredictOptions.of(colum="title")
