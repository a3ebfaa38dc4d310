"""Fuzz every input reader of `titlecat predict`: nothing lost, whatever comes in (issue 49).

Each case is a generated input file, CSV, TSV, ';'-separated, JSONL, one title a line (.txt) or Excel .xlsx, of job
titles mixed with what real exports hold: byte-order marks, mixed line endings (\\r\\n, \\r, \\n), NULs, quotes opened
and never closed, rows with too many or too few fields, lone surrogates (JSON escapes, undecodable bytes), huge
cells and lines, empty and header-only files, duplicated headers, other encodings and random bytes. The readers'
limits (`titlecat.readers.ROW_SPAN_CHARS`, `HELD_CHARS`, `JSONL_PROBE`, `XLSX_HEADER_SEARCH`) are shrunk in some
cases, so that their far paths are taken by small files too. `predict_file` labels each file in-process, and
`check_case` asserts the property:

- every input row is in the output exactly once, in order, with a status. What a row is, per format, is worked
  out here from the file itself, apart from the readers: the lines of a text file; the non-blank lines of a JSONL
  file; for a table, the file's lines after the header, each in exactly one row (a row over several lines only
  where a quoted cell holds the line breaks, a malformed row its first line alone); the rows of a sheet after its
  header row (compared with the sheet as openpyxl loads it whole). Each row's title, id, kept cells and status
  are checked too; files generated clean are also checked against the rows the generator wrote;
- a file is refused (DataError, naming the file, a message that can be printed) only where it cannot be read as a
  whole (no title column, a quote never closed in its header, not a workbook), and then nothing is left behind:
  no output, no partial file, no sidecar; a file that can be read is never refused;
- nothing else raises.

Run: python benchmarks/fuzz_readers.py --cases 10000 --seed 0 --out metrics/fuzz_readers.md
(tests/test_fuzz_readers.py runs a few hundred cases.)
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import random
import re
import shutil
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import typer

from titlecat import readers
from titlecat.predict import STATUSES, PredictOptions, ReadOptions, RunOptions, plain, predict_file
from titlecat.readers import DataError

# The kinds of input generated: (file suffix, the separator of a table's cells).
KINDS = {
    "csv": (".csv", ","),
    "tsv": (".tsv", "\t"),
    "semicolon": (".csv", ";"),
    "jsonl": (".jsonl", None),
    "text": (".txt", None),
    "xlsx": (".xlsx", None),
}

TITLES = [
    "Head of Sales",
    "Geschäftsführer",
    "Directeur général",
    "Einkäuferin",
    "CFO",
    "Senior Developer",
    "Responsable des achats",
    "Werkstudent IT-Support",
    "Leiterin Vertrieb DACH",
    "Ingeniero de sistemas en la nube",
    "Medewerker klantenservice",
    "营销经理",
    "مدير المبيعات",
    "Менеджер по продажам",
    "Sales - EMEA, Benelux",
    "Head of HR  (m/w/d)",
    '=HYPERLINK("http://x.example";"Buyer")',
]
# What a cell holds besides titles: separators, quotes, line breaks (CSV's and Unicode's), NUL and other control
# characters, a byte-order mark, other scripts, an emoji, a combining accent.
TRICKY = [",", ";", "\t", '"', "'", "\r", "\n", "\r\n", "\x00", "\x1f", "\x0b", "\x0c", "\x85", "\u2028", "\ufeff"]
TRICKY += ["é", "ß", "語", "م", "😀", "e\u0301", " ", "=", "\\", "sep=", "{", "}", "[", "]", ":"]
BLANKS = ["", " ", "  \t ", "12345", "---", "3.14", "\u00a0"]
LINE_ENDINGS = ["\n", "\r\n", "\r"]
BYTE_ORDER_MARKS = [b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00"]
# Encodings besides UTF-8, UTF-16 and cp1252: without a byte-order mark (read as what charset-normalizer detects), and
# UTF-32 with its mark (which starts as UTF-16's does).
OTHER_ENCODINGS = ["utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1250", "shift_jis", "gb18030", "koi8-r", "cp437"]
# Whole files too small to hold a table: byte-order marks, line breaks, a quote, a sep= line, a header cut short.
TINY_FILES = [b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff\x00", b"\n", b"\r", b"\r\n\r\n", b"\x00", b'"', b'"\n', b'""\n']
TINY_FILES += [b"sep=,", b"sep=;\n", b"sep=\n", b"\xef\xbb\xbftitle", b'title\n"', b"title\r", b"{", b"{}\n", b"[]"]
TINY_FILES += [b"PK\x03\x04"]
# Names of kept columns: none is an output column of predict (line, id, title, status, the tasks' columns).
EXTRA_COLUMNS = ["email", "company", "Firma", "note"]
TITLE_COLUMNS = ["title", "Position", "Jobtitel", "text", "Funktion / Rolle", "job title"]


@dataclass
class Case:
    """One generated input file and how `predict_file` is to read it."""

    kind: str
    data: bytes
    column: str = "text"
    id_column: str | None = None
    keep_columns: tuple[str, ...] = ()
    input_format: str | None = None  # --format; None: from the suffix
    delimiter: str | None = None  # --delimiter
    max_chars: int = 500
    chunk_size: int = 20000
    limits: dict = field(default_factory=dict)  # titlecat.readers' limits shrunk for this case
    # The rows the generator wrote, where it is sure how they read (a clean file): (line, title or None), in order;
    # for a table, also the separator it wrote. None: only the property is checked.
    known_rows: list[tuple[int, object]] | None = None
    known_separator: str | None = None
    description: list[str] = field(default_factory=list)  # what was done to the file, for a failure's report

    @property
    def suffix(self) -> str:
        return KINDS[self.kind][0]

    @property
    def wanted(self) -> list[str]:
        return [name for name in (self.column, self.id_column, *self.keep_columns) if name]

    def options(self) -> list[str]:
        """The case's settings as options of `titlecat predict` (its limits aside)."""
        options = ["--column", self.column, "--max-chars", str(self.max_chars), "--chunk-size", str(self.chunk_size)]
        options += ["--id-column", self.id_column] if self.id_column else []
        options += ["--keep-columns", ",".join(self.keep_columns)] if self.keep_columns else []
        options += ["--format", self.input_format] if self.input_format else []
        return options + (["--delimiter", self.delimiter] if self.delimiter else [])


# Generating


def random_text(rng: random.Random, length: int) -> str:
    """Pieces of titles and tricky characters, at least `length` characters."""
    pieces: list[str] = []
    while sum(map(len, pieces)) < length:
        pieces.append(rng.choice(TRICKY) if rng.random() < 0.45 else rng.choice(TITLES)[: rng.randint(1, 8)])
    return "".join(pieces)


def random_cell(rng: random.Random, huge: bool = False) -> str:
    """A title, a blank or digits, a mix of titles and tricky characters, or (with `huge`) a pasted document."""
    if huge:
        return rng.choice(TITLES) + " " + "word " * rng.randint(200, 40_000)
    roll = rng.random()
    if roll < 0.5:
        return rng.choice(TITLES)
    if roll < 0.6:
        return rng.choice(BLANKS)
    return random_text(rng, rng.randint(1, 30))


def quoted(cell: str, separator: str, quote_all: bool) -> str:
    """A cell as a CSV writer writes it: quoted where it holds the separator, a quote or a line break."""
    if quote_all or any(char in cell for char in (separator, '"', "\r", "\n")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def encode(rng: random.Random, text: str, case: Case) -> tuple[bytes, bool]:
    """The text in an encoding people save in; whether it reads back as written (UTF-8 or UTF-16 with its mark)."""
    roll = rng.random()
    if roll < 0.6:  # a first character U+FEFF is read as a byte-order mark
        return text.encode("utf-8", "surrogatepass"), not readers.SURROGATE.search(text) and text[:1] != "\ufeff"
    if roll < 0.75:
        case.description.append("UTF-8 byte-order mark")
        return b"\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass"), not readers.SURROGATE.search(text)
    if roll < 0.83:
        case.description.append("UTF-16 with its byte-order mark")
        return text.encode("utf-16", "surrogatepass"), not readers.SURROGATE.search(text)
    if roll < 0.93:
        case.description.append("cp1252")
        return text.encode("cp1252", "replace"), False
    encoding = rng.choice(OTHER_ENCODINGS)
    case.description.append(encoding)
    return text.encode(encoding, "replace"), False


def mutate_bytes(rng: random.Random, data: bytes, case: Case) -> bytes:
    """Damage as files get it: bytes flipped, inserted or dropped, a NUL run, a stray byte-order mark, cut short."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        what = rng.choice(["flip", "insert", "drop", "nul", "mark", "cut", "random"])
        at = rng.randint(0, len(data))
        if what == "flip":
            at = min(at, len(data) - 1)
            if data:
                data[at] = rng.randrange(256)
        elif what == "insert":
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif what == "drop":
            del data[at : at + rng.randint(1, 8)]
        elif what == "nul":
            data[at:at] = b"\x00" * rng.randint(1, 6)
        elif what == "mark":
            data[at:at] = rng.choice(BYTE_ORDER_MARKS)
        elif what == "cut":
            del data[at:]
        else:
            data[at:at] = rng.choice([b"\x80", b"\xc3", b"\xe2\x80", b"\xed\xa0\x80", b"\xf0\x9f", b"\xff"])
        case.description.append(f"bytes: {what} at {at}")
    return bytes(data)


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))


def line_ending(rng: random.Random, style: str) -> str:
    return rng.choice(LINE_ENDINGS) if style == "mixed" else style


def merged_line_breaks(lines: Sequence[str]) -> bool:
    """Whether a line ending in \r is followed by one starting with \n: the two are one \r\n, one line fewer than
    written (so the generator is no longer sure which line each row is on)."""
    return any(line.endswith("\r") and after.startswith("\n") for line, after in zip(lines, lines[1:], strict=False))


def shrink_limits(rng: random.Random, case: Case) -> None:
    """Some cases run with the readers' limits small, so that small files reach what only huge ones would."""
    if rng.random() < 0.2:
        case.limits = {
            "ROW_SPAN_CHARS": rng.choice([0, 5, 40, 300]),
            "HELD_CHARS": rng.choice([0, 3, 30, 1000]),
            "JSONL_PROBE": rng.choice([1, 2, 5]),
            "XLSX_HEADER_SEARCH": rng.choice([1, 2, 3]),
        }
        case.description.append(f"limits {case.limits}")


def table_case(rng: random.Random, kind: str) -> Case:
    """A CSV/TSV/';' table: a header (maybe after a `sep=` line) and rows, good and bad."""
    separator = KINDS[kind][1]
    case = Case(kind, b"", column=rng.choice(TITLE_COLUMNS))
    extras = rng.sample(EXTRA_COLUMNS, rng.randint(0, 3))
    header = [case.column] + (["id"] if rng.random() < 0.6 else []) + extras
    rng.shuffle(header)
    if "id" in header and rng.random() < 0.7:
        case.id_column = "id"
    case.keep_columns = tuple(name for name in extras if rng.random() < 0.5)
    if rng.random() < 0.1:  # a duplicated header: harmless, or (the title or a kept column twice) refused
        duplicate = rng.choice(header)
        header.insert(rng.randint(0, len(header)), duplicate)
        case.description.append(f"column {duplicate!r} twice")
    if rng.random() < 0.15:
        case.delimiter = rng.choice([separator, "tab" if separator == "\t" else separator, ",", "|", " ", '"', "\x00"])
        case.description.append(f"--delimiter {case.delimiter!r}")
    index = header.index(case.column)
    width = len(header)
    style = rng.choice(LINE_ENDINGS + ["mixed"])
    quote_all = rng.random() < 0.2
    huge_row = rng.randrange(40) if rng.random() < 0.05 else None
    sure = True  # whether the rows read as written (else only the property is checked)
    lines: list[str] = []
    known: list[tuple[int, object]] = []
    line_number = 1

    def add(text: str, title: object) -> None:
        nonlocal line_number
        lines.append(text)
        known.append((line_number, title))
        line_number += len(split_lines(text))

    declared_line = rng.random() < 0.1
    if declared_line:
        declared = separator if rng.random() < 0.7 else rng.choice(TRICKY + ["|", "x"])[:1]
        sure &= declared == separator
        lines.append(rng.choice([f"sep={declared}", f'"sep={declared}"']) + line_ending(rng, style))
        line_number += 1
        case.description.append(f"sep={declared!r} line")
    lines.append(separator.join(quoted(name, separator, quote_all) for name in header) + line_ending(rng, style))
    line_number += 1
    for row in range(rng.choice([0, 0, 1, 2, 3, 5, 10, 25, 40])):
        cells = [random_cell(rng, huge=row == huge_row) for _ in header]
        if case.id_column:
            cells[header.index("id")] = str(row)
        end = line_ending(rng, style)
        roll = rng.random()
        if roll < 0.6:  # a good row, its cells quoted as needed (line breaks in a quoted cell: one row, many lines)
            if width == 1 and "\x1f" in cells[0]:
                sure = False  # the unit separator is what splits a one-column table's lines (readers.ONE_COLUMN)
            text = separator.join(quoted(cell, separator, quote_all) for cell in cells)
            add(text + end, cells[index] if text else None)  # one empty cell unquoted: a blank line
        elif roll < 0.68:
            add(end, None)  # a blank line
        elif roll < 0.8:  # a field too many or too few, on one line
            cells = cells + [random_cell(rng)] if rng.random() < 0.5 or width == 1 else cells[: rng.randrange(width)]
            cells = [cell.replace("\r", " ").replace("\n", " ") for cell in cells]
            text = separator.join(quoted(cell, separator, quote_all) for cell in cells)
            sure &= width > 1  # a one-column table's line is one cell, however many separators it holds
            add(text + end, ("malformed", cells[index] if index < len(cells) else None) if text else None)
        elif roll < 0.87:  # a quote opened and never closed
            cells[index] = '"' + cells[index].replace('"', "")
            lines.append(separator.join(cells) + end)
            sure = False
        elif roll < 0.94:  # a quote in the middle of a cell
            cells[index] = rng.choice(['"Head of" Sales', 'Head of" Sales', 'CFO "interim"', '""x'])
            lines.append(separator.join(cells) + end)
            sure = False
        else:
            lines.append(random_text(rng, rng.randint(1, 60)) + end)
            sure = False
    if rng.random() < 0.003:  # a line of 5 million characters: one cell
        lines.append(separator.join(["word " * 1_000_000] * width) + "\n")
        known.append((line_number, "word " * 1_000_000))
        case.description.append("a line of 5M characters a cell")
    if rng.random() < 0.003:  # a quote never closed, then 5 million characters: past ROW_SPAN_CHARS, lines not held
        lines.append('"never closed' + line_ending(rng, style))
        lines.extend(f"{row}{separator}{'x' * 5000}{line_ending(rng, style)}" for row in range(1000))
        sure = False
        case.description.append("a quote never closed before 5M characters")
    if lines and lines[-1].strip("\r\n") and rng.random() < 0.3:
        lines[-1] = lines[-1].rstrip("\r\n")  # no line break at the end of the file (a blank line keeps its own)
    sure &= not merged_line_breaks(lines)
    text = "".join(lines)
    data, sure_encoding = encode(rng, text, case)
    sure &= sure_encoding
    if rng.random() < 0.2:
        data = mutate_bytes(rng, data, case)
        sure = False
    case.data = data
    shrink_limits(rng, case)
    forced = readers.parse_delimiter(case.delimiter)
    if sure and not case.limits and forced in (None, separator):
        case.known_rows = known
        # a header of one column names no separator (unless a sep= line or --delimiter does)
        case.known_separator = separator if width > 1 or forced or declared_line else readers.ONE_COLUMN
    return case


def json_value(rng: random.Random) -> str:
    """A JSON value as text, of any type, including what Python's json module reads beyond JSON (NaN)."""
    roll = rng.random()
    if roll < 0.55:
        return json.dumps(random_cell(rng, huge=rng.random() < 0.01), ensure_ascii=rng.random() < 0.5)
    return rng.choice(
        [
            "null",
            "42",
            "-0.5",
            "true",
            "1e400",  # a float too large: infinity
            "NaN",
            "-Infinity",
            "1" * rng.choice([10, 4301, 6000]),  # past Python's 4,300 digits for an int
            '"Eng\\ud800ineer"',  # a lone surrogate
            '"\\udc00"',
            '"Head of \\u00e9\\ud83d\\ude00"',  # a surrogate pair: one emoji
            '["Head of Sales", 1]',
            '{"en": "Head of Sales"}',
            '"\\u0000"',
        ]
    )


def jsonl_case(rng: random.Random) -> Case:
    """JSONL: objects with a title field (of any JSON type), blank lines, lines that are not objects."""
    case = Case("jsonl", b"", column=rng.choice(["title", "position", "text"]))
    extras = rng.sample(EXTRA_COLUMNS, rng.randint(0, 2))
    if rng.random() < 0.5:
        case.id_column = "id"
    case.keep_columns = tuple(name for name in extras if rng.random() < 0.5)
    style = rng.choice(LINE_ENDINGS + ["mixed"])
    lines: list[str] = []
    known: list[tuple[int, object]] = []
    sure = True
    for row in range(rng.choice([0, 1, 2, 5, 10, 30])):
        fields = {case.column: None, "id": None, **dict.fromkeys(extras)}
        names = list(fields)
        rng.shuffle(names)
        parts = []
        for name in names:
            if rng.random() < (0.05 if name == case.column else 0.1):
                continue  # the field missing (in every object of a short file: refused, as a missing column is)
            value = json.dumps(str(row)) if name == "id" else json_value(rng)
            parts.append(f"{json.dumps(name)}: {value}")
        text = "{" + ", ".join(parts) + "}"
        end = line_ending(rng, style)
        roll = rng.random()
        if roll < 0.7:
            lines.append(text + end)
            known.append((len(lines), "object"))
        elif roll < 0.78:
            lines.append(rng.choice(["", " ", "\t", "  "]) + end)  # blank: not a row
        elif roll < 0.83:
            lines.append(rng.choice(["\x0c", "\u2028", "\x85", "\x1c", "\ufeff", "\x00"]) + end)
            sure = False
        elif roll < 0.9:
            lines.append(text[: rng.randint(1, len(text) - 1)] + end)  # cut short (to "{" at least: not blank)
            known.append((len(lines), "malformed"))
        elif roll < 0.95:
            lines.append(rng.choice(["not json", "[1, 2]", '"CFO"', "42", "null", "{", "}"]) + end)
            known.append((len(lines), "malformed"))
        else:  # one object over two lines: each line alone is not one
            cut = text.index(":") + 1
            lines.extend([text[:cut] + end, text[cut:] + end])
            known.extend([(len(lines) - 1, "malformed"), (len(lines), "malformed")])
    if lines and rng.random() < 0.3:
        lines[-1] = lines[-1].rstrip("\r\n")
    sure &= not merged_line_breaks(lines)
    text = "".join(lines)
    data, sure_encoding = encode(rng, text, case)
    sure &= sure_encoding
    if rng.random() < 0.15:
        data = mutate_bytes(rng, data, case)
        sure = False
    if rng.random() < 0.02:
        data = random_bytes(rng)
        case.description.append("random bytes")
        sure = False
    case.data = data
    shrink_limits(rng, case)
    if sure and not case.limits:
        case.known_rows = known
    return case


def text_case(rng: random.Random) -> Case:
    """One title a line, any line ending; --format text, or the .txt suffix (a tab in the first line: a table)."""
    case = Case("text", b"", input_format="text" if rng.random() < 0.5 else None)
    style = rng.choice(LINE_ENDINGS + ["mixed"])
    huge_line = rng.randrange(30) if rng.random() < 0.05 else None
    titles = [random_cell(rng, huge=row == huge_line) for row in range(rng.choice([0, 1, 2, 5, 10, 30]))]
    if titles and rng.random() < 0.2:
        titles[0] = "Position\tFirma"  # an Excel "Text (Tab delimited)" export
        case.column = "Position"
    # A title's own line breaks make more lines: the rows are the lines
    text = "".join(title + line_ending(rng, style) for title in titles)
    if text and rng.random() < 0.3:
        text = text.rstrip("\r\n")
    data, sure = encode(rng, text, case)
    if rng.random() < 0.15:
        data = mutate_bytes(rng, data, case)
        sure = False
    if rng.random() < 0.05:
        data = random_bytes(rng)
        case.description.append("random bytes")
        sure = False
    case.data = data
    shrink_limits(rng, case)
    if sure and case.input_format == "text":
        case.known_rows = [(number, line.rstrip("\r\n")) for number, line in enumerate(split_lines(text), 1)]
    return case


# Excel: characters no .xlsx cell holds (XML 1.0 forbids them) are left out of generated values.
XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xlsx_value(rng: random.Random, huge: bool = False) -> object:
    roll = rng.random()
    if roll < 0.6 or huge:
        return XML_ILLEGAL.sub("", random_cell(rng, huge))
    return rng.choice(
        [None, 42, -0.5, 1e300, True, datetime.datetime(2026, 1, 31, 12, 0), datetime.date(1900, 1, 1), "=1+2", " "]
    )


def xlsx_case(rng: random.Random) -> Case:
    """An .xlsx workbook written by openpyxl, or its sheet's XML written here (odd cells, as exporters write them);
    maybe a report's title rows above the table, blank rows, rows longer or shorter than the header, damage."""
    case = Case("xlsx", b"", column=rng.choice(TITLE_COLUMNS))
    extras = rng.sample(EXTRA_COLUMNS, rng.randint(0, 2))
    header: list[object] = [case.column] + (["id"] if rng.random() < 0.6 else []) + extras
    rng.shuffle(header)
    if "id" in header and rng.random() < 0.7:
        case.id_column = "id"
    case.keep_columns = tuple(name for name in extras if rng.random() < 0.5)
    if rng.random() < 0.1:
        duplicate = rng.choice(header)
        header.insert(rng.randint(0, len(header)), duplicate)
        case.description.append(f"column {duplicate!r} twice")
    if rng.random() < 0.05:
        header[header.index(case.column)] = f" {case.column} "  # spaces around a header cell: the reader strips them
    rows: list[list[object]] = []
    for _ in range(rng.choice([0, 0, 0, 1, 3])):  # a report's title rows above the table
        rows.append(rng.choice([[], ["Kontakte, Export 2026"], ["Stand: 1.12.2026", None, "intern"]]))
    rows.append(header)
    huge_row = rng.randrange(20) if rng.random() < 0.05 else None
    for row in range(rng.choice([0, 1, 2, 5, 10, 25])):
        roll = rng.random()
        if roll < 0.1:
            rows.append([])
        else:
            width = len(header) + (rng.choice([-2, -1, 1, 2]) if roll < 0.2 else 0)
            rows.append([xlsx_value(rng, huge=row == huge_row) for _ in range(max(width, 0))])
    if rng.random() < 0.35:
        data = raw_workbook(rng, rows, case)
    else:
        data = openpyxl_workbook(rng, rows, case)
    if rng.random() < 0.1:
        data = mutate_bytes(rng, data, case)
    if rng.random() < 0.03:
        data = random_bytes(rng)
        case.description.append("random bytes")
    case.data = data
    shrink_limits(rng, case)
    return case


def openpyxl_workbook(rng: random.Random, rows: list[list[object]], case: Case) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    if rng.random() < 0.2:
        workbook.create_sheet("More").append(["title", "other sheet"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    case.description.append("openpyxl workbook")
    return buffer.getvalue()


def column_letter(number: int) -> str:
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def raw_cell(rng: random.Random, value: object, reference: str | None, shared: list[str]) -> str:
    """One <c> element for `value`, as some exporter may write it: an inline or shared string, a number, a boolean,
    a date, an error; sometimes odd (a shared string index out of range, a number that is not one)."""
    where = f" r={quoteattr(reference)}" if reference else ""
    if value is None:
        return f"<c{where}/>" if rng.random() < 0.5 else ""
    if isinstance(value, bool):
        return f'<c{where} t="b"><v>{int(value)}</v></c>'
    if isinstance(value, (int, float)):
        return f"<c{where}><v>{value!r}</v></c>"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f'<c{where} t="d"><v>{value.isoformat()}</v></c>'
    text = str(value)
    roll = rng.random()
    if roll < 0.4:
        return f'<c{where} t="inlineStr"><is><t xml:space="preserve">{escape(text)}</t></is></c>'
    if roll < 0.8:
        shared.append(text)
        return f'<c{where} t="s"><v>{len(shared) - 1}</v></c>'
    if roll < 0.86:
        return f'<c{where} t="str"><f>A1</f><v>{escape(text)}</v></c>'  # a formula's cached text
    return rng.choice(
        [
            f'<c{where} t="e"><v>#N/A</v></c>',
            f'<c{where} t="s"><v>{len(shared) + 5}</v></c>',  # a shared string that is not there
            f'<c{where} t="s"><v>x</v></c>',
            f"<c{where}><v>{escape(text[:10])}</v></c>",  # a number that is not one
            f'<c{where} t="b"><v>yes</v></c>',
            f'<c{where} t="d"><v>not a date</v></c>',
            f'<c{where} t="inlineStr"><is><r><t>Head of</t></r><r><t xml:space="preserve"> Sales</t></r></is></c>',
            f'<c{where} t="inlineStr"><is><t>Head_x0009_of_x0000_Sales</t></is></c>',  # OOXML's escapes
            f'<c{where} t="inlineStr"><is><t>Head&#1;of Sales</t></is></c>',  # not XML 1.0
            f'<c{where} t="n"></c>',
        ]
    )


def raw_workbook(rng: random.Random, rows: list[list[object]], case: Case) -> bytes:
    """A minimal .xlsx whose sheet XML is written here: row and cell references given or left out, sometimes a
    wrong sheet size (<dimension>), rows out of order."""
    shared: list[str] = []
    row_elements = []
    number = 0
    omit_references = rng.random() < 0.2
    for row in rows:
        number += 1 if rng.random() < 0.9 else rng.randint(2, 4)  # a gap: rows the sheet does not write
        cells = "".join(
            raw_cell(rng, value, None if omit_references else f"{column_letter(col)}{number}", shared)
            for col, value in enumerate(row, 1)
        )
        reference = "" if omit_references else f' r="{number}"'
        row_elements.append(f"<row{reference}>{cells}</row>")
    # Rows (and a row's cells) are written in ascending order, as Office requires (MS-OI29500: "In Office, rows
    # must appear in ascending order"): openpyxl's read-only mode drops a row that comes after a later one.
    dimension = rng.choice(["", '<dimension ref="A1"/>', '<dimension ref="A1:B2"/>', '<dimension ref="A1:ZZ9999"/>'])
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    relationships = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    sheet = (
        f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{main}">{dimension}'
        f"<sheetData>{''.join(row_elements)}</sheetData></worksheet>"
    )
    strings = "".join(f'<si><t xml:space="preserve">{escape(text)}</t></si>' for text in shared)
    package = "application/vnd.openxmlformats-"
    sheets = '<sheet name="Export" sheetId="1" r:id="rId1"/>'
    if rng.random() < 0.03:
        sheets = ""
        case.description.append("no sheets")
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" '
            f'ContentType="{package}officedocument.spreadsheetml.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" '
            f'ContentType="{package}officedocument.spreadsheetml.worksheet+xml"/>'
            f'<Override PartName="/xl/sharedStrings.xml" '
            f'ContentType="{package}officedocument.spreadsheetml.sharedStrings+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{relationships}/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"
        ),
        "xl/workbook.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{main}" xmlns:r="{relationships}">'
            f"<sheets>{sheets}</sheets></workbook>"
        ),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{relationships}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{relationships}/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>"
        ),
        "xl/worksheets/sheet1.xml": sheet,
        "xl/sharedStrings.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{main}" count="{len(shared)}">{strings}</sst>'
        ),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in parts.items():
            archive.writestr(name, content.encode("utf-8"))
    case.description.append("sheet XML written here" + (", no cell references" if omit_references else ""))
    return buffer.getvalue()


GENERATORS: dict[str, Callable[[random.Random], Case]] = {
    "csv": lambda rng: table_case(rng, "csv"),
    "tsv": lambda rng: table_case(rng, "tsv"),
    "semicolon": lambda rng: table_case(rng, "semicolon"),
    "jsonl": jsonl_case,
    "text": text_case,
    "xlsx": xlsx_case,
}


def generate_case(seed: int, index: int, kinds: Sequence[str] = tuple(KINDS)) -> Case:
    """Case `index` of a run: the kinds in turn, its content from a generator seeded by (seed, index) alone, so that
    any case can be made again by itself."""
    rng = random.Random(f"{seed}:{index}")
    kind = kinds[index % len(kinds)]
    case = GENERATORS[kind](rng)
    if rng.random() < 0.02:
        case.data = b""
        case.known_rows = [] if kind in ("jsonl", "text") else None
        case.description.append("empty file")
    elif rng.random() < 0.03:
        case.data = rng.choice(TINY_FILES)
        case.known_rows = None
        case.description.append(f"the whole file {case.data!r}")
    case.max_chars = rng.choice([500, 500, 500, 20, 100_000])
    case.chunk_size = rng.choice([1, 3, 20000])
    return case


# Checking


@contextlib.contextmanager
def limits_set(limits: dict) -> Iterator[None]:
    saved = {name: getattr(readers, name) for name in limits}
    for name, value in limits.items():
        setattr(readers, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(readers, name, value)


# A line and its line break, as Python's universal newlines split text (\r\n, \r or \n), written out.
LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def split_lines(text: str) -> list[str]:
    return LINE.findall(text)


def expected_status(value: object, max_chars: int) -> str:
    """A cell's status as `titlecat predict --help` documents it (the row not malformed)."""
    if value is None:
        return "empty"
    if not isinstance(value, str):
        return "not_text"
    if readers.SURROGATE.search(value):
        return "undecodable"
    words = value.split()
    if not words:
        return "empty"
    if len(" ".join(words)) > max_chars:
        return "too_long"
    return "ok" if any(char.isalpha() for char in value) else "not_text"


def same_cell(written: object, read: object) -> bool:
    """Whether an output cell is the input's cell as the writer writes it (NaN equal to itself)."""
    return json.dumps(written, sort_keys=True) == json.dumps(plain(read), sort_keys=True)


def strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@dataclass
class Outcome:
    """What one case did: its problems (none: the property held), whether the file was refused as a whole, the rows
    checked."""

    problems: list[str] = field(default_factory=list)
    refused: bool = False
    rows: int = 0


@dataclass
class Expected:
    """The rows of an input as worked out here, each (line, malformed, title, id, kept cells); `refuse`: why the file
    cannot be read as a whole; `problem`: why the output's rows cannot be the input's; `rows` None where they cannot
    be worked out; `trailing_from`: a sheet's blank rows from this line on, which may be read or not."""

    rows: list[tuple[int, bool, object, object, tuple]] | None = None
    refuse: str | None = None
    problem: str | None = None
    trailing_from: int | None = None


def decoded(data: bytes, read_as: str) -> str:
    """The file's text as the reader reads it, given the codec it chose (a UTF-8 byte-order mark skipped)."""
    return data.decode("utf-8-sig" if read_as == "utf-8" else read_as, errors="surrogateescape")


def expected_text_rows(text: str) -> Expected:
    lines = split_lines(text)
    return Expected([(number, False, line.rstrip("\r\n"), None, ()) for number, line in enumerate(lines, 1)])


def json_integer(digits: str) -> int | Decimal:
    """A JSON integer as predict documents it: one longer than int() converts (4,300 digits) is a number still."""
    try:
        return int(digits)
    except ValueError:
        return Decimal(digits)


def expected_jsonl_rows(case: Case, text: str) -> Expected:
    """A row for each line that is not JSON whitespace alone; malformed where it is not a JSON object."""
    rows, objects, missing, probed = [], 0, set(case.wanted), False
    for number, line in enumerate(split_lines(text), 1):
        if not line.strip(" \t\r\n"):
            continue
        try:
            record = json.loads(line, parse_int=json_integer)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            rows.append((number, True, None, None, tuple(None for _ in case.keep_columns)))
            continue
        if not probed:  # a field asked for must be in one of the first JSONL_PROBE objects
            objects += 1
            missing -= set(record)
            probed = not missing or objects == readers.JSONL_PROBE
        record_id = record.get(case.id_column) if case.id_column else None
        kept = tuple(record.get(name) for name in case.keep_columns)
        rows.append((number, False, record.get(case.column), None if record_id is None else str(record_id), kept))
    if missing and objects:
        return Expected(refuse=f"no object of the first {objects} has {sorted(missing)}")
    return Expected(rows)


def csv_records(text: str, delimiter: str) -> list[list[str]] | None:
    """The records csv reads in `text`, quotes strict; None where it cannot read them."""
    try:
        return list(csv.reader(split_lines(text), delimiter=delimiter, strict=True))
    except csv.Error:
        return None


def lenient_cells(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter, strict=False), [])
    except csv.Error:
        return []


def expected_table_rows(case: Case, text: str, delimiter: str, output_lines: list[int]) -> Expected:
    """A table's rows, given the lines the output's rows start on, which must partition the file's lines after the
    header: a row over several lines must be one record of the header's width (a quoted cell holding line breaks);
    a malformed row is one line that csv cannot read alone as such a record, with the cells it has read leniently;
    any other row's one line is such a record, or blank."""
    lines = split_lines(text)
    start = 1 if lines and readers.SEP_LINE.fullmatch(lines[0].removeprefix("\ufeff").rstrip("\r\n")) else 0
    consumed = 0

    def counted() -> Iterator[str]:
        nonlocal consumed
        for line in lines[start:]:
            consumed += 1
            yield line

    try:
        header = next(csv.reader(counted(), delimiter=delimiter, strict=True), None) or []
    except csv.Error:
        return Expected(refuse="a quote never closed in the header")
    if header:
        header[0] = header[0].removeprefix("\ufeff")
    unusable = [name for name in case.wanted if header.count(name) != 1]
    if unusable:
        return Expected(refuse=f"columns {unusable} missing or repeated in the header {header!r}")
    first = start + consumed + 1  # the first line after the header
    if first > len(lines):
        return Expected([])
    if not output_lines or output_lines[0] != first or output_lines[-1] > len(lines):
        return Expected(problem=f"lines {first}..{len(lines)} after the header, rows on lines {output_lines}")
    width = len(header)
    index, id_index = header.index(case.column), header.index(case.id_column) if case.id_column else None
    keep_index = [header.index(name) for name in case.keep_columns]
    rows = []
    for row_start, row_end in zip(output_lines, [*output_lines[1:], len(lines) + 1], strict=True):
        segment = "".join(lines[row_start - 1 : row_end - 1])
        records = csv_records(segment, delimiter)
        one_record = records is not None and len(records) == 1 and (records[0] == [] or len(records[0]) == width)
        if one_record and (records[0] or row_end - row_start == 1):
            cells, malformed = records[0], False
        elif row_end - row_start == 1:
            cells, malformed = lenient_cells(segment, delimiter), True
        else:
            return Expected(problem=f"lines {row_start}..{row_end - 1}, one row, are not one record: {segment!r:.200}")
        rows.append(
            (
                row_start,
                malformed,
                cells[index] if index < len(cells) else None,
                cells[id_index] if id_index is not None and id_index < len(cells) else None,
                tuple(cells[i] if i < len(cells) else None for i in keep_index),
            )
        )
    return Expected(rows)


def expected_sheet_rows(case: Case, path: Path) -> Expected:
    """The rows of the first sheet after its header row, from the workbook loaded whole (openpyxl's other reader,
    not the streaming one `titlecat.readers` uses)."""
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, data_only=True)
        values = list(workbook.worksheets[0].iter_rows(values_only=True))
    except Exception:  # noqa: BLE001 (not a workbook, however it fails to load): the reader may refuse it
        return Expected(refuse="not a workbook openpyxl loads")
    non_empty = [(number, row) for number, row in enumerate(values, 1) if any(v is not None for v in row)]
    header_row, header = 0, []
    for number, row in non_empty[: readers.XLSX_HEADER_SEARCH]:
        cells = ["" if value is None else str(value).strip() for value in row]
        if case.column in cells:
            header_row, header = number, cells
            break
    unusable = [name for name in case.wanted if header.count(name) != 1]
    if unusable:
        return Expected(refuse=f"columns {unusable} missing or repeated in the header {header!r}")
    last = max((number for number, _ in non_empty), default=header_row)
    index, id_index = header.index(case.column), header.index(case.id_column) if case.id_column else None
    keep_index = [header.index(name) for name in case.keep_columns]

    def cell(row: tuple, at: int | None) -> object:
        return row[at] if at is not None and at < len(row) else None

    rows = []
    for number in range(header_row + 1, last + 1):
        row = values[number - 1]
        record_id = cell(row, id_index)
        kept = tuple(cell(row, at) for at in keep_index)
        rows.append((number, False, cell(row, index), None if record_id is None else str(record_id), kept))
    return Expected(rows, trailing_from=max(last, header_row) + 1)


def reading_of(case: Case, path: Path) -> dict:
    """What the reader chose for a text file: the codec it reads it in ("read_as") and, for a table, the separator
    ("delimiter"), known once the header is read."""
    dialect: dict = {}
    try:
        records = readers.read_titles(
            path, case.column, case.id_column, case.input_format, delimiter=case.delimiter,
            keep_columns=case.keep_columns, dialect=dialect,
        )  # fmt: skip
        next(records, None)
        records.close()
    except Exception:  # noqa: BLE001, S110 (predict_file's run has met it already: only its choices are wanted here)
        pass
    return dialect


def expected_rows(case: Case, path: Path, dialect: dict, output_lines: list[int]) -> Expected:
    if case.kind == "xlsx":
        return expected_sheet_rows(case, path)
    if "read_as" not in dialect:
        return Expected(refuse="no codec chosen")
    try:
        text = decoded(case.data, dialect["read_as"])
    except UnicodeError:
        return Expected(refuse=f"not {dialect['read_as']} text")
    if "delimiter" in dialect:
        return expected_table_rows(case, text, dialect["delimiter"] or readers.ONE_COLUMN, output_lines)
    if case.kind == "jsonl":
        return expected_jsonl_rows(case, text)
    return expected_text_rows(text)


def check_rows(case: Case, rows: list[dict], expected: Expected, problems: list[str]) -> None:
    """Each output row against the row worked out from the input: its line, status, title, id and kept cells."""
    if expected.problem is not None:
        problems.append(expected.problem)
    if expected.rows is None:
        return
    wanted = expected.rows
    extra = rows[len(wanted) :]
    if len(rows) < len(wanted) or (extra and expected.trailing_from is None):
        problems.append(f"{len(rows)} output rows, {len(wanted)} input rows: lines {[row['line'] for row in rows]}")
    elif extra:
        blank = [(row["line"], row["status"], row["title"]) for row in extra]
        if blank != [(expected.trailing_from + i, "empty", None) for i in range(len(extra))]:
            problems.append(f"rows past the sheet's last non-empty row: {blank}")
    for row, (line, malformed, title, record_id, kept) in zip(rows, wanted, strict=False):
        if row["line"] != line:
            problems.append(f"the row of line {line} has line {row['line']}")
            return
        if malformed:
            status = "malformed"
        else:
            status = expected_status(title, case.max_chars)
            if any(isinstance(cell, str) and readers.SURROGATE.search(cell) for cell in (record_id, *kept)):
                status = "undecodable"
        if row["status"] != status:
            problems.append(f"line {line}: status {row['status']!r}, expected {status!r} (title {title!r:.80})")
        if not same_cell(row["title"], title):
            problems.append(f"line {line}: title {row['title']!r:.80}, expected {plain(title)!r:.80}")
        if case.id_column and not same_cell(row["id"], record_id):
            problems.append(f"line {line}: id {row['id']!r:.80}, expected {plain(record_id)!r:.80}")
        for name, cell in zip(case.keep_columns, kept, strict=True):
            if not same_cell(row[name], cell):
                problems.append(f"line {line}: {name} {row[name]!r:.80}, expected {plain(cell)!r:.80}")


def check_known_rows(case: Case, rows: list[dict], dialect: dict, problems: list[str]) -> None:
    """A clean generated file: its rows as the generator wrote them, counted apart from any reader."""
    known = case.known_rows
    if known is None:
        return
    if case.known_separator is not None and dialect.get("delimiter", None) not in (case.known_separator, None):
        problems.append(f"written separated by {case.known_separator!r}, read by {dialect.get('delimiter')!r}")
    lines = [row["line"] for row in rows]
    if lines != [line for line, _ in known]:
        problems.append(f"generated rows on lines {[line for line, _ in known]}, output lines {lines}")
        return
    for row, (line, title) in zip(rows, known, strict=True):
        if case.kind == "jsonl":
            if (row["status"] == "malformed") != (title == "malformed"):
                problems.append(f"line {line}: status {row['status']!r}, generated {title}")
        elif isinstance(title, tuple):  # a row with a field too many or too few
            if row["status"] != "malformed" or not same_cell(row["title"], title[1]):
                problems.append(f"line {line}: {row['status']} {row['title']!r:.60}, generated malformed {title[1]!r}")
        elif row["status"] == "malformed" or not same_cell(row["title"], title):
            problems.append(f"line {line}: {row['status']} {row['title']!r:.60}, generated {title!r:.60}")


def check_case(nlp, case: Case, folder: Path) -> Outcome:
    """Label the case's file with `predict_file` in `folder` (emptied first) and check the property."""
    for entry in folder.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    source = folder / f"input{case.suffix}"
    source.write_bytes(case.data)
    output = folder / "out.jsonl"
    outcome = Outcome()
    problems = outcome.problems
    notes: list[str] = []
    with limits_set(case.limits):
        try:
            read = ReadOptions(
                case.column,
                case.id_column,
                case.input_format,
                delimiter=case.delimiter,
                keep_title=True,
                keep_columns=case.keep_columns,
                max_chars=case.max_chars,
            )
            run = RunOptions(chunk_size=case.chunk_size, progress=False, notify=notes.append)
            summary = predict_file(nlp, source, output, PredictOptions(read, run))
            refusal = None
        except DataError as error:
            refusal = error
        except Exception:  # noqa: BLE001 (whatever it is, it is what the fuzzer looks for)
            problems.append("raised " + traceback.format_exc(limit=-6).strip())
            return outcome
        problems.extend(f"a note that cannot be printed: {note!r}" for note in notes if not printable(note))
        left = sorted(entry.name for entry in folder.iterdir())
        dialect = reading_of(case, source) if case.kind != "xlsx" else {}
        if refusal is not None:
            outcome.refused = True
            if left != [source.name]:
                problems.append(f"refused, and left {left}")
            if str(source) not in str(refusal) or not printable(str(refusal)):
                problems.append(f"a refusal that does not name the file or cannot be printed: {str(refusal)!r:.300}")
            if expected_rows(case, source, dialect, []).refuse is None:
                problems.append(f"refused a file that can be read: {str(refusal)[:300]}")
            return outcome
        if left != sorted([source.name, output.name, output.name + ".json"]):
            problems.append(f"left {left}")
            return outcome
        try:
            # "\n" alone ends a JSONL line (str.splitlines would also split at U+2028, which JSON holds as is)
            rows = [strict_json(line) for line in output.read_text(encoding="utf-8").split("\n")[:-1]]
        except ValueError as error:
            problems.append(f"the output is not JSONL: {error}")
            return outcome
        outcome.rows = len(rows)
        lines = [row["line"] for row in rows]
        if any(later <= earlier for earlier, later in zip(lines, lines[1:], strict=False)):
            problems.append(f"lines out of order or repeated: {lines}")
        if summary.total != len(rows):
            problems.append(f"the summary counts {summary.total} rows, the output has {len(rows)}")
        for row in rows:
            if row["status"] not in STATUSES:
                problems.append(f"line {row['line']}: unknown status {row['status']!r}")
            answered = row["seniority"] is not None and row["department"] is not None
            if answered != (row["status"] == "ok"):
                problems.append(f"line {row['line']}: status {row['status']}, answers {row['seniority']!r}")
        expected = expected_rows(case, source, dialect, lines)
        if expected.refuse is not None:
            problems.append(f"read a file that cannot be read as a whole ({expected.refuse}): {len(rows)} rows")
        check_rows(case, rows, expected, problems)
        check_known_rows(case, rows, dialect, problems)
    return outcome


def printable(message: str) -> bool:
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Running


@dataclass
class Failure:
    index: int
    kind: str
    description: list[str]
    problems: list[str]


@dataclass
class Report:
    cases: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    rows: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        lines = [
            "| format | cases | rows checked | refused as a whole (clean error) | failures |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind in KINDS:
            if self.cases[kind]:
                lines.append(
                    f"| {kind} | {self.cases[kind]:,} | {self.rows[kind]:,} | {self.refused[kind]:,} | "
                    f"{self.failed[kind]:,} |"
                )
        total = sum(self.cases.values())
        lines.append(
            f"| all | {total:,} | {sum(self.rows.values()):,} | {sum(self.refused.values()):,} | "
            f"{sum(self.failed.values()):,} |"
        )
        return "\n".join(lines)


def build_pipeline():
    """Both titlecat textcats, weights as initialised: a title costs microseconds, and the readers are what is
    tested."""
    import spacy

    import titlecat.components  # noqa: F401  (registers the architecture)
    from titlecat.labels import TASKS

    nlp = spacy.blank("xx")
    for task in TASKS.values():
        config = {"model": {"@architectures": "titlecat.TitleNgramClassifier.v2", "length": 2**12}}
        textcat = nlp.add_pipe("textcat", name=task.name, config=config)
        for label in task.labels:
            textcat.add_label(label)
    nlp.initialize()
    return nlp


def run_cases(
    nlp,
    cases: int,
    seed: int = 0,
    kinds: Sequence[str] = tuple(KINDS),
    keep_failures: Path | None = None,
    progress: Callable[[int, Report], None] | None = None,
    start: int = 0,
) -> Report:
    """Generate and check cases `start` to `start + cases - 1`; failing inputs are copied to `keep_failures`
    (case-<index><suffix>)."""
    report = Report()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-readers-") as temporary:
        folder = Path(temporary)
        for index in range(start, start + cases):
            case = generate_case(seed, index, kinds)
            outcome = check_case(nlp, case, folder)
            report.cases[case.kind] += 1
            report.rows[case.kind] += outcome.rows
            report.refused[case.kind] += outcome.refused
            if outcome.problems:
                report.failed[case.kind] += 1
                report.failures.append(Failure(index, case.kind, case.description, outcome.problems))
                if keep_failures is not None:
                    keep_failures.mkdir(parents=True, exist_ok=True)
                    (keep_failures / f"case-{index}{case.suffix}").write_bytes(case.data)
            if progress is not None:
                progress(index, report)
    report.seconds = time.perf_counter() - started
    return report


def main(
    cases: int = typer.Option(1000, min=1, help="Files to generate and check, the formats in turn"),
    seed: int = typer.Option(0, help="Seed of the generator: the same seed, the same files"),
    out: Path | None = typer.Option(None, help="Write the table here (Markdown), e.g. metrics/fuzz_readers.md"),
    kinds: str = typer.Option(",".join(KINDS), help=f"Formats, comma-separated, of {', '.join(KINDS)}"),
    keep_failures: Path | None = typer.Option(None, help="Copy each failing input here, named by its case"),
    show: int = typer.Option(10, help="Failures to print in full"),
    start: int = typer.Option(0, min=0, help="The first case's index: --start 123 --cases 1 makes case 123 again"),
) -> None:
    """Fuzz titlecat predict's input readers; exit status 1 if any case breaks the property."""
    chosen = [kind.strip() for kind in kinds.split(",") if kind.strip()]
    unknown = [kind for kind in chosen if kind not in KINDS]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown formats {unknown}: expected {', '.join(KINDS)}", param_hint="--kinds")
    nlp = build_pipeline()

    def progress(index: int, report: Report) -> None:
        if (index + 1 - start) % 500 == 0:
            typer.echo(f"{index + 1 - start:,} cases, {len(report.failures)} failing", err=True)

    report = run_cases(nlp, cases, seed, chosen, keep_failures, progress, start)
    for failure in report.failures[:show]:
        typer.echo(f"\ncase {failure.index} ({failure.kind}; {'; '.join(failure.description) or 'clean'}):")
        for problem in failure.problems[:5]:
            typer.echo(f"  {problem}")
    summary = (
        f"titlecat predict's readers fuzzed: {sum(report.cases.values()):,} generated files, seed {seed}, "
        f"{report.seconds:.0f} s\n\n{report.table()}\n"
    )
    typer.echo("\n" + summary)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(summary, encoding="utf-8")
    if report.failures:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
