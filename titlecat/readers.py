"""Readers of every input format of the study, with errors that say where.

Rows with an empty or missing title (or missing label) are skipped and
returned as `Skipped` records so that reports can count them; anything
malformed (bad CSV/JSON, missing columns, a label outside the task's set)
raises `DataError` naming the file, the row and the value.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from .labels import Task, seniority_from_ordinal

ACTIVE = "ACTIVE"


class DataError(ValueError):
    """An input file that cannot be read as documented: names file and row."""

    def __init__(self, path: Path | str, where: str | None, message: str):
        # where: None for the file as a whole ("x.xlsx: not an Excel .xlsx workbook")
        super().__init__(f"{path}: {message}" if where is None else f"{path}: {where}: {message}")
        self.path = str(path)
        self.where = where


@dataclass(frozen=True)
class Example:
    """One job title with its gold (or pseudo) label, and where it came from."""

    text: str
    label: str
    source: str  # file name
    row: int  # CSV line, JSONL line, or running index of a CV position


@dataclass(frozen=True)
class Skipped:
    source: str
    row: int
    reason: str
    cv: int | None = None  # the CV of a skipped CV position


@dataclass(frozen=True)
class Position:
    """One position of a CV file, as in linkedin-cvs-*.json."""

    text: str
    row: int  # running index over all positions of the file, in file order
    cv: int
    status: str
    department: str | None = None
    seniority: str | None = None


def normalise_title(text: str | None) -> str:
    """Whitespace-normalised title; '' for missing."""
    return " ".join(str(text).split()) if text is not None else ""


def _check_label(label: str, task: Task, path: Path, where: str) -> str:
    if label not in task.labels:
        raise DataError(path, where, f"{task.name} label {label!r} is not one of {list(task.labels)}")
    return label


def read_curated_csv(path: Path | str, task: Task) -> tuple[list[Example], list[Skipped]]:
    """The curated `text,label` CSV of a task."""
    path = Path(path)
    examples: list[Example] = []
    skipped: list[Skipped] = []
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.reader(file, strict=True)
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != ["text", "label"]:
                raise DataError(path, "line 1", f"expected header 'text,label', found {header!r}")
            for fields in reader:
                line = reader.line_num
                if fields == []:
                    continue
                if len(fields) != 2:
                    raise DataError(
                        path, f"line {line}", f"expected 2 fields (text,label), found {len(fields)}: {fields!r}"
                    )
                text, label = normalise_title(fields[0]), fields[1].strip()
                if not text:
                    skipped.append(Skipped(path.name, line, "empty title"))
                elif not label:
                    skipped.append(Skipped(path.name, line, "missing label"))
                else:
                    _check_label(label, task, path, f"line {line}, field 'label'")
                    examples.append(Example(text, label, path.name, line))
    except csv.Error as error:
        raise DataError(path, f"line {reader.line_num}", f"malformed CSV: {error}") from error
    except UnicodeDecodeError as error:
        raise DataError(path, f"byte {error.start}", "not UTF-8 text") from error
    return examples, skipped


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(path, f"line {error.lineno}, column {error.colno}", f"malformed JSON: {error.msg}") from error


def read_cv_positions(path: Path | str, labelled: bool = False) -> tuple[list[Position], list[Skipped]]:
    """Every position of a CV file (a JSON list of CVs, each a list of positions).

    `row` is the running index over all positions in file order: the
    recorded LLM answers (gemini_synthetic.csv) use the same numbering.
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(path, "top level", f"expected a list of CVs, found {type(data).__name__}")
    positions: list[Position] = []
    skipped: list[Skipped] = []
    row = 0
    for cv_index, cv in enumerate(data):
        if not isinstance(cv, list):
            raise DataError(path, f"CV {cv_index}", f"expected a list of positions, found {type(cv).__name__}")
        for position_index, position in enumerate(cv):
            where = f"CV {cv_index}, position {position_index}"
            if not isinstance(position, dict):
                raise DataError(path, where, f"expected an object, found {type(position).__name__}")
            text = normalise_title(position.get("position"))
            if not text:
                skipped.append(Skipped(path.name, row, "empty title", cv_index))
            else:
                labels = {}
                if labelled:
                    for field in ("department", "seniority"):
                        if not isinstance(position.get(field), str):
                            raise DataError(
                                path, f"{where}, field {field!r}", f"missing label (found {position.get(field)!r})"
                            )
                        labels[field] = position[field]
                positions.append(Position(text, row, cv_index, str(position.get("status", "")), **labels))
            row += 1
    return positions, skipped


def _annotated_examples(path: Path, task: Task, cv_dev: bool) -> tuple[list[Example], list[Skipped]]:
    """OOD (ACTIVE positions) or cv-dev (every position of the CVs with no ACTIVE one), and the skipped
    positions of the CVs each draws on."""
    positions, skipped = read_cv_positions(path, labelled=True)
    cvs_with_active = {p.cv for p in positions if p.status == ACTIVE}
    examples = [
        Example(
            p.text,
            _check_label(getattr(p, task.name), task, path, f"position row {p.row}, field {task.name!r}"),
            path.name,
            p.row,
        )
        for p in positions
        if (p.cv not in cvs_with_active if cv_dev else p.status == ACTIVE)
    ]
    return examples, [s for s in skipped if (s.cv not in cvs_with_active) == cv_dev]


def read_ood(path: Path | str, task: Task) -> tuple[list[Example], list[Skipped]]:
    """The out-of-distribution evaluation set: every ACTIVE annotated position.

    Evaluation only: nothing may be trained, stopped, selected or tuned on it.
    """
    return _annotated_examples(Path(path), task, cv_dev=False)


def read_cv_dev(path: Path | str, task: Task) -> tuple[list[Example], list[Skipped]]:
    """cv-dev: every position of the annotated CVs that have no ACTIVE position (131 CVs, 217 positions).

    For choices (selection, stopping, weights, conventions), never for training; it shares no person
    with OOD. The non-ACTIVE positions of CVs that also have an ACTIVE one are dropped here unused:
    they share people with OOD, so nothing may learn or choose from them.
    """
    return _annotated_examples(Path(path), task, cv_dev=True)


def read_recorded_answers(path: Path | str) -> dict[int, dict[str, str]]:
    """Recorded LLM answers (gemini_synthetic.csv): row_id -> position, department, seniority.

    Values are returned as written, unvalidated: validation belongs to the
    pseudo-labelling step, which reports invalid answers instead of dropping them.
    """
    path = Path(path)
    answers: dict[int, dict[str, str]] = {}
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = {"row_id", "position", "department", "seniority"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(path, "line 1", f"missing columns {sorted(missing)}")
        for record in reader:
            try:
                row_id = int(record["row_id"])
            except (TypeError, ValueError):
                raise DataError(
                    path, f"line {reader.line_num}, field 'row_id'", f"not an integer: {record['row_id']!r}"
                ) from None
            answers[row_id] = {k: record[k] or "" for k in ("position", "department", "seniority")}
    return answers


def read_jsonl(path: Path | str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file."""
    path = Path(path)
    with path.open(encoding="utf-8") as file:
        yield from jsonl_records(file, path)


def jsonl_records(lines: Iterable[str], path: Path | str) -> Iterator[tuple[int, dict]]:
    """`read_jsonl` on an open file or any iterable of lines; `path` names it in errors."""
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(path, f"line {line_number}", f"malformed JSON: {error.msg}") from error
        if not isinstance(record, dict):
            raise DataError(path, f"line {line_number}", f"expected a JSON object, found {type(record).__name__}")
        yield line_number, record


def write_jsonl(path: Path | str, records: Iterable[dict]) -> None:
    """Write next to the target, then rename: a killed run never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with partial.open("w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, path)


# The pseudo-label file that the augment step reads: one JSON object per
# unlabelled position that got a valid answer.
PSEUDO_LABEL_FIELDS = ("row_id", "text", "department", "seniority", "backend", "raw_answer")


def read_pseudo_labels(path: Path | str, task: Task) -> list[Example]:
    """Pseudo-labelled CV titles for one task; a bad record is an error naming its line."""
    path = Path(path)
    examples = []
    for line_number, record in read_jsonl(path):
        missing = [field for field in PSEUDO_LABEL_FIELDS if field not in record]
        if missing:
            raise DataError(path, f"line {line_number}", f"missing fields {missing}")
        text = normalise_title(record["text"])
        if not text:
            raise DataError(path, f"line {line_number}, field 'text'", "empty title")
        label = _check_label(record[task.name], task, path, f"line {line_number}, field {task.name!r}")
        examples.append(Example(text, label, path.name, line_number))
    return examples


# Inputs of `titlecat predict`, by file suffix.
TITLE_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "text",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
# The column separators `titlecat predict` recognises in a CSV/TSV header, and how it names them.
DELIMITERS = {",": "','", ";": "';'", "\t": "tab"}
DELIMITER_NAMES = {",": ",", "comma": ",", ";": ";", "semicolon": ";", "tab": "\t", "\\t": "\t", "\t": "\t"}
# csv's default cap (131,072 characters a field) would reject a whole file for one pasted document;
# such a cell is read and gets status too_long like any long title. 2^31 - 1 fits every platform's C long.
csv.field_size_limit(2**31 - 1)


@dataclass(frozen=True)
class TitleRecord:
    """One input row to label: its line in the file, its id (if the input has one) and the raw value.

    `value` is what the file holds, unchecked: None (missing), any JSON or Excel value, or a string
    (undecodable bytes in it are lone surrogates, see `read_titles`). `extra` holds the values of the
    columns asked for (`keep_columns`), in that order. `status` is set by the reader for a row it could not
    split into fields (`malformed`).
    """

    line: int
    id: str | None
    value: object
    extra: tuple = ()
    status: str | None = None


def title_format(path: Path | str, fmt: str | None = None) -> str:
    """The input format: `fmt` if given, else from the suffix (.csv, .tsv, .jsonl/.ndjson, .txt, .xlsx)."""
    formats = sorted(set(TITLE_FORMATS.values()))
    if fmt is not None and fmt not in formats:
        raise DataError(path, "--format", f"unknown format {fmt!r}: expected one of {', '.join(formats)}")
    fmt = fmt or TITLE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None and Path(path).suffix.lower() == ".xls":
        raise DataError(path, "file name", "an Excel 97-2003 .xls workbook: save it as .xlsx (or as CSV UTF-8)")
    if fmt is None:
        raise DataError(
            path,
            "file name",
            f"no format for the suffix {Path(path).suffix!r}: name one with --format ({', '.join(formats)}), or use "
            f"a file ending in {', '.join(TITLE_FORMATS)}",
        )
    return fmt


def parse_delimiter(delimiter: str | None, option: str = "--delimiter") -> str | None:
    """',', ';' or a tab from what a user types: the character itself, 'tab', '\\t', 'comma' or 'semicolon';
    `option` names the option in the error."""
    if delimiter is None:
        return None
    if delimiter.lower() in DELIMITER_NAMES:
        return DELIMITER_NAMES[delimiter.lower()]
    if len(delimiter) == 1:
        return delimiter
    raise ValueError(f"{option} {delimiter!r}: expected one character, or 'tab'")


def input_encoding(path: Path, encoding: str | None) -> str:
    """The codec to read a text input with: `encoding`, else UTF-16 for a file that starts with its
    byte-order mark (Excel's "Unicode Text"), else UTF-8; UTF-8 skips a byte-order mark (Excel's "CSV UTF-8").
    (`read_titles` names a file's detected encoding here, `detect_encoding`.)"""
    if encoding is None:
        encoding = "utf-16" if byte_order_mark(path) == "utf-16" else "utf-8"
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(
            f"--encoding {encoding!r}: not an encoding Python knows (e.g. utf-8, cp1252, latin-1)"
        ) from None
    return "utf-8-sig" if name == "utf-8" else name


def read_titles(
    path: Path | str,
    column: str = "text",
    id_column: str | None = None,
    fmt: str | None = None,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | None = None,
    keep_columns: Sequence[str] = (),
    notify: Callable[[str], None] | None = None,
    dialect: dict | None = None,
) -> Iterator[TitleRecord]:
    """Stream the titles of a CSV/TSV (`column`), JSONL (`column` = field), Excel workbook (`column` in the
    header row of `sheet`, a name or 1-based number, default the first) or plain-text file (one a line).

    Lazy, one row at a time, so memory does not grow with the file. Text is decoded with `encoding`
    (default UTF-8, a byte-order mark skipped; a file that is not UTF-8 in the encoding `detect_encoding` finds,
    said through `notify` and in `dialect["encoding"]`) by the `surrogateescape` error handler: a byte that is not
    text in it becomes a lone surrogate in its row's strings, which `titlecat.predict` reports as status
    `undecodable` on the row's own line, and the file goes on. A CSV/TSV's delimiter is `delimiter`, else
    the one of ',', ';' and tab that finds the columns in the header (said through `notify`); once the header
    is read, `dialect["delimiter"]` is it (None for a one-column table), for an output written like the input;
    `dialect["read_as"]` is the encoding a text file is read in (named, detected, or UTF-8/UTF-16 by default).

    A `.txt` file (format from its suffix) whose first line holds a tab is a table (Excel's "Text (Tab
    delimited)" and "Unicode Text" exports): read as TSV, said through `notify`.

    A row with more or fewer fields than the header (with the id, title and kept cells it has), a quote in the
    middle of a cell or one never closed (that line alone: reading goes on at the next, see `RowLines`), or a JSONL
    line that is not a JSON object, is yielded with status `malformed`. A file that cannot be read at all (a
    missing or duplicated column, a quote never closed in the header, not a workbook) raises DataError naming the
    line.
    """
    path = Path(path)
    named_format, fmt = fmt, title_format(path, fmt)
    if fmt == "xlsx":
        yield from _xlsx_titles(path, column, id_column, sheet, keep_columns, notify)
        return
    named_encoding = encoding
    detected = detect_encoding(path) if encoding is None and byte_order_mark(path) is None else None
    encoding = input_encoding(path, encoding or detected)
    if named_encoding is not None:
        check_named_encoding(path, encoding)
    if dialect is not None:  # the codec it is read with, for the record (titlecat.provenance)
        dialect["read_as"] = "utf-8" if encoding == "utf-8-sig" else encoding
    if detected is not None:
        if dialect is not None:
            dialect["encoding"] = encoding
        if notify is not None:
            notify(
                f"{path}: not UTF-8: read as {encoding}, the encoding detected in its start (--encoding names another)"
            )
    if fmt == "text" and named_format is None and "\t" in _first_line(path, encoding):
        # Excel saves "Text (Tab delimited)" and "Unicode Text" as .txt: a table, not one title a line.
        fmt = "tsv"
        if notify is not None:
            notify(f"{path}: a tab in the first line: read as a tab-separated table (--format text: one title a line)")
    if fmt == "text" and keep_columns:
        raise DataError(path, "--keep-columns", "a text file (one title a line) has no columns to keep")
    try:
        with path.open(newline="", encoding=encoding, errors="surrogateescape") as file:
            yield from iter_titles(file, path, column, id_column, fmt, delimiter, keep_columns, notify, dialect)
    except UnicodeError as error:
        # Only codecs whose errors surrogateescape cannot carry get here: UTF-16's odd bytes, or its missing
        # byte-order mark (--encoding utf-16 on a file without one).
        byte_order = " (UTF-16 without a byte-order mark: utf-16-le or utf-16-be)" if encoding == "utf-16" else ""
        raise DataError(
            path,
            None,
            f"not {encoding} text ({getattr(error, 'reason', error)}): name the file's encoding with --encoding"
            + byte_order,
        ) from error


BYTE_ORDER_MARKS = {b"\xef\xbb\xbf": "utf-8", b"\xff\xfe": "utf-16", b"\xfe\xff": "utf-16"}


def byte_order_mark(path: Path) -> str | None:
    """The Unicode encoding whose byte-order mark the file starts with ("utf-8", "utf-16"), else None."""
    with path.open("rb") as file:
        return mark_of(file.read(3))


def mark_of(start: bytes) -> str | None:
    return next((unicode for mark, unicode in BYTE_ORDER_MARKS.items() if start.startswith(mark)), None)


# How much of a file's start the --encoding checks and the detection of its encoding read (once).
ENCODING_PROBE_BYTES = 1 << 20
# The code page Windows writes text in across Western Europe and the Americas (Excel's "CSV" there).
WINDOWS_WESTERN = "cp1252"


def detect_encoding(path: Path) -> str | None:
    """The encoding of a file that is not UTF-8, as charset-normalizer finds it in the file's first MiB; None where
    UTF-8 stays: a start that is UTF-8 (ASCII included), or that holds a line of UTF-8 text beside bytes that are
    not (a file mixing encodings: its rows in another encoding stay `undecodable`, each on its line), or one the
    detector finds nothing for. Where cp1252 reads the start as cleanly as the detector's first choice (no more
    "chaos", charset-normalizer's measure of implausible text), cp1252: for Western text the detector often names a
    Central European, DOS or (on a line or two) East Asian code page first, one that reads ä alike but è as č or ñ
    as ń; unless its first choice is another Windows code page that fits the text's language better (cp1254 for
    Turkish, say: charset-normalizer's "coherence")."""
    with path.open("rb") as file:
        start = file.read(ENCODING_PROBE_BYTES)
        whole = not file.read(1)
    if not whole and b"\n" in start:
        start = start[: start.rindex(b"\n") + 1]  # the line cut at the probe's end is left out
    try:
        codecs.getincrementaldecoder("utf-8")().decode(start, final=whole)  # a character cut at the end is fine
        return None
    except UnicodeDecodeError:
        pass
    if any(not raw.isascii() and utf8_text(raw) for raw in start.splitlines()):
        return None
    from charset_normalizer import from_bytes

    matches = from_bytes(start)
    best = matches.best()
    if best is None:
        return None
    western = next((match for match in matches if WINDOWS_WESTERN in match.could_be_from_charset), None)
    western = western or from_bytes(start, cp_isolation=[WINDOWS_WESTERN]).best()
    other_windows = best.encoding.startswith("cp125") and WINDOWS_WESTERN not in best.could_be_from_charset
    if western is None or western.chaos > best.chaos or (other_windows and best.coherence > western.coherence):
        return codecs.lookup(best.encoding).name
    return WINDOWS_WESTERN


def utf8_text(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_named_encoding(path: Path, encoding: str) -> None:
    """A one-byte code page (cp1252, latin-1) named with --encoding for a file that is Unicode text is refused:
    every umlaut would come out as mojibake in rows that look fine and get labels ('GeschÃ¤ftsfÃ¼hrer'). A
    byte-order mark makes it certain; so does a first MiB that decodes as UTF-8 with multi-byte characters, which
    text in a one-byte code page almost never does (its accented letters are single bytes that UTF-8 rejects).
    A UTF-16 encoding named for a file that is not UTF-16 is refused too (`check_utf16`)."""
    if encoding.startswith("utf") and not encoding.startswith("utf-16"):
        return
    with path.open("rb") as file:
        start = file.read(ENCODING_PROBE_BYTES)
    if encoding.startswith("utf-16"):
        check_utf16(path, start, encoding)
        return
    unicode = mark_of(start)
    if unicode is not None:
        raise DataError(
            path,
            "--encoding",
            f"the file starts with a {unicode.upper()} byte-order mark, so it is {unicode.upper()} text, not "
            f"{encoding}: drop --encoding",
        )
    sample = first_utf8_line(start)
    if sample is not None:
        line, text = sample
        misread = text.encode("utf-8").decode(encoding, errors="replace")
        raise DataError(
            path,
            "--encoding",
            f"the file reads as UTF-8 text (line {line}: {text!r}, which {encoding} reads as {misread!r}): it was "
            f"saved as UTF-8, not {encoding}: drop --encoding",
        )


def check_utf16(path: Path, start: bytes, encoding: str) -> None:
    """UTF-16 writes a line break as two bytes, one of them 0: a file whose `start` has line breaks and no 0 byte
    is not UTF-16 (read as such, it becomes CJK-looking garbage), so --encoding utf-16 for it is refused."""
    if b"\n" in start and b"\x00" not in start:
        raise DataError(
            path,
            "--encoding",
            f"the file has line breaks but no 0 byte, so it is not {encoding} text (UTF-16 writes every line break "
            "with a 0 byte): drop --encoding (UTF-8 is the default), or name its code page (e.g. cp1252)",
        )


def first_utf8_line(start: bytes) -> tuple[int, str] | None:
    """(line number, text: up to 60 characters) of the first line with a multi-byte UTF-8 character, if a file's
    `start` decodes as UTF-8 and has one; else None."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(start, final=False)  # a character cut at the end is fine
    except UnicodeDecodeError:
        return None
    for number, raw in enumerate(start.splitlines(), start=1):
        if not raw.isascii():
            return number, raw.decode("utf-8", errors="ignore").strip()[:60]  # "ignore": a line cut at the probe
    return None


def _first_line(path: Path, encoding: str) -> str:
    with path.open(newline="", encoding=encoding, errors="surrogateescape") as file:
        try:
            return file.readline()
        except UnicodeError:
            return ""  # read_titles says what is wrong with the file


# A lone surrogate: an undecodable byte as `surrogateescape` keeps it, or a JSON "\\ud800" escape. Not text,
# and no UTF-8 writer can write it.
SURROGATE = re.compile("[\ud800-\udfff]")


# The first line Excel reads as the delimiter's name (and never shows), as some exporters write it.
SEP_LINE = re.compile(r'sep=(.)|"sep=(.)"')


# The "delimiter" of a file whose header is one column: ASCII's unit separator, which no title holds, so each line
# is one cell (quotes still honoured), and a title with a comma in it is that title, not two cells.
ONE_COLUMN = "\x1f"


def choose_delimiter(header_line: str, wanted: Sequence[str], default: str) -> str:
    """The delimiter that splits the header into cells holding every wanted column, else into the most cells;
    on a tie the format's own (',' for CSV, tab for TSV). `ONE_COLUMN` where none splits it."""
    best = default
    best_key = (False, 0)
    for candidate in (default, *DELIMITERS):
        cells = next(csv.reader([header_line], delimiter=candidate), [])
        key = (all(name in cells for name in wanted), len(cells))
        if key > best_key:
            best, best_key = candidate, key
    return best if best_key[1] > 1 else ONE_COLUMN


def check_header(path: Path, header: list[str], wanted: Sequence[str], where: str, hint: str = "") -> None:
    """Every wanted column is in the header, once; `wanted[0]` is the title column."""
    for name in wanted:
        count = header.count(name)
        if count == 0:
            shown = [SURROGATE.sub("\ufffd", cell) for cell in header]  # an undecodable byte as U+FFFD, not '\udcdf'
            found = f"columns found: {shown!r}" if header else "the header is empty"
            if shown != header:
                hint += "; the header is not text in this encoding: name the file's encoding with --encoding"
            elif any("\x00" in cell for cell in header):
                hint += (
                    "; the header holds NUL characters (U+0000), as UTF-16 text without a byte-order mark read as "
                    "UTF-8 does: name its encoding with --encoding (utf-16-le)"
                )
            near = [cell for cell in header if cell.strip().casefold() == name.strip().casefold()]
            if near:
                hint += f"; the header has {near[0]!r} (names must match exactly, spaces and case included)"
            elif name == wanted[0] and header:  # the title column, by default 'text': users forget to name theirs
                hint += "; --column names the column that holds the titles"
            raise DataError(path, where, f"no column {name!r} in the header; {found}{hint}")
        if count > 1:
            raise DataError(path, where, f"column {name!r} appears {count} times in the header {header!r}: rename one")


def iter_titles(
    file: TextIO,
    path: Path | str,
    column: str = "text",
    id_column: str | None = None,
    fmt: str = "csv",
    delimiter: str | None = None,
    keep_columns: Sequence[str] = (),
    notify: Callable[[str], None] | None = None,
    dialect: dict | None = None,
) -> Iterator[TitleRecord]:
    """`read_titles` on an open text file (opened with newline=""); `path` names it in errors."""
    if fmt == "text":
        for line, text in enumerate(file, start=1):
            yield TitleRecord(line, None, text.rstrip("\r\n"))
    elif fmt == "jsonl":
        wanted = [name for name in (column, id_column, *keep_columns) if name]
        yield from fields_seen_early(path, jsonl_title_records(file, column, id_column, keep_columns), wanted)
    else:
        header_line = file.readline()
        wanted = [name for name in (column, id_column, *keep_columns) if name]
        chosen = parse_delimiter(delimiter)
        # Excel's "sep=;" first line names the delimiter; the header follows it.
        declared = SEP_LINE.fullmatch(header_line.removeprefix("\ufeff").rstrip("\r\n"))
        skipped = 1 if declared else 0
        if declared:
            header_line = file.readline()
            if chosen is None:
                chosen = declared.group(1) or declared.group(2)
                if notify is not None:
                    notify(f"{path}: columns separated by {DELIMITERS.get(chosen, repr(chosen))} (line 1: sep=)")
        if chosen is None:
            chosen = choose_delimiter(header_line, wanted, "\t" if fmt == "tsv" else ",")
            if notify is not None and header_line.strip():  # an empty file has no header to find one in
                notify(
                    f"{path}: one column in the header, so each line is one title, commas and semicolons included "
                    "(--delimiter forces a separator)"
                    if chosen == ONE_COLUMN
                    else f"{path}: columns separated by {DELIMITERS.get(chosen, repr(chosen))} (found in the header; "
                    "--delimiter forces one)"
                )
        if dialect is not None:
            dialect["delimiter"] = None if chosen == ONE_COLUMN else chosen
        lines = RowLines(file, [header_line])
        reader = csv.reader(lines, delimiter=chosen, strict=True)
        try:
            header = next(reader, None) or []
        except csv.Error as error:
            unclosed = (
                ": a quote opened in this row is never closed, so every line after it would be read into one cell "
                "(close the quote, or quote the whole cell)"
                if str(error).startswith(UNCLOSED_QUOTE)
                else ""
            )
            raise DataError(path, f"line {skipped + 1}", f"malformed {fmt.upper()}: {error}{unclosed}") from error
        if header:
            header[0] = header[0].removeprefix("\ufeff")
        hint = ""
        # Where no separator splits the header (one column), a cell holding one was quoted: no --delimiter hint.
        other_separators = [d for d in DELIMITERS if d != chosen] if chosen != ONE_COLUMN else []
        crowded = [cell for cell in header if any(d in cell for d in other_separators)]
        if crowded:
            other = next(d for d in DELIMITERS if d != chosen and d in crowded[0])
            hint = (
                f"; the cell {crowded[0]!r} holds {DELIMITERS[other]}: the file may be separated by it "
                f"(--delimiter {'tab' if other == chr(9) else repr(other)})"
            )
        if column not in header and len(header) <= 2 and not crowded and not any("\x00" in c for c in header):
            hint += "; a list of titles with no header line is read with --format text (one title a line)"
        check_header(path, header, wanted, f"line {1 + skipped}", hint)
        index = header.index(column)
        id_index = header.index(id_column) if id_column else None
        keep_index = [header.index(name) for name in keep_columns]
        for start, fields, malformed in table_rows(reader, lines, len(header)):
            if not fields and not malformed:  # a blank line
                yield TitleRecord(skipped + start, None, None, tuple(None for _ in keep_index))
                continue
            width = len(fields)  # a malformed row keeps the cells it has where they are (its id and title, say)
            yield TitleRecord(
                skipped + start,
                fields[id_index] if id_index is not None and id_index < width else None,
                fields[index] if index < width else None,
                tuple(fields[i] if i < width else None for i in keep_index),
                "malformed" if malformed else None,
            )


# A row whose quoted cell runs on over this many characters of further lines is taken for a quote that is never
# closed (as the end of the file would be): memory stays bounded however much of the file such a quote would
# swallow (the csv module holds a cell as 4 bytes a character), and a real multi-line cell is far shorter (an Excel
# cell holds 32,767 characters).
ROW_SPAN_CHARS = 1 << 22
# The further lines of a row that are held to be read again if it breaks; past this many characters, a file
# position is taken instead (where the file can seek).
HELD_CHARS = 1 << 16


class RowLines:
    """The lines of an open text file as csv.reader takes them (one at a time), counted, able to go back to the
    line after a row's first line.

    A quote opened in a row and never closed swallows every line after it into one cell: such a row (one that runs
    past its first line and then breaks, or comes out with the wrong number of fields) is its first line alone, and
    reading goes on at the next line (`rewind`). For that, the further lines of a row that runs on are held, up to
    `HELD_CHARS` characters; past that, the file position after them is taken (`tell`) and seeked back to, so memory
    stays flat (a file that cannot seek, a pipe, holds them all). A row that would run past `ROW_SPAN_CHARS`
    characters of further lines is ended there, as at the end of the file.
    """

    def __init__(self, file: TextIO, read: Sequence[str] = ()):
        self.file = file
        self.readline = file.readline
        self.queue = deque(read)  # lines to hand out before the file's next: the header, or held lines again
        self.can_tell = True
        self.number = 0  # lines handed out
        self.begin_row()

    def begin_row(self) -> None:
        self.row_start = self.number  # lines handed out before the row being read
        self.first = ""  # the row's first line
        self.spanned = False  # whether the row went on past its first line
        self.span = 0  # characters of the row's further lines
        self.held: list[str] = []  # its further lines, to read again
        self.holding = True
        self.resume: int | None = None  # the file position after the held lines, where they stopped being held

    def __iter__(self) -> RowLines:
        return self

    def __next__(self) -> str:
        if self.number > self.row_start:  # the row goes on past its first line
            self.spanned = True
            if self.span > ROW_SPAN_CHARS:
                raise StopIteration
        line = self.queue.popleft() if self.queue else self.readline()
        if not line:
            raise StopIteration
        self.number += 1
        if self.number == self.row_start + 1:
            self.first = line
        else:
            self.span += len(line)
            if self.holding:
                self.held.append(line)
                if self.span > HELD_CHARS and self.can_tell and not self.queue:
                    try:
                        self.resume, self.holding = self.file.tell(), False
                    except (OSError, ValueError):  # a pipe; or a file read with next(), which disables tell()
                        self.can_tell = False
        return line

    def rewind(self) -> None:
        """Go back to the line after the row's first line: the next row starts there."""
        if self.resume is not None:
            self.file.seek(self.resume)
        self.queue.extendleft(reversed(self.held))
        self.number = self.row_start + 1


def table_rows(reader, lines: RowLines, width: int) -> Iterator[tuple[int, list[str], bool]]:
    """(line, fields, malformed) of each row a csv reader over `lines` reads after the header; line counts from the
    header's first line as 1. A row that cannot be split (a quote in the middle of a cell, `1;"Head of" Sales`)
    or that has more or fewer than `width` fields is malformed, with the fields its first line gives when read
    leniently (where a row ran on past its first line); a row that ran past its first line and then broke (a quote
    never closed) is its first line alone, and the next row starts on the next line: every line of the file is in
    exactly one row."""
    while True:
        lines.begin_row()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error:
            fields = None
        start = lines.row_start + 1
        if fields is not None and (not fields or len(fields) == width):
            yield start, fields, False
        elif fields is not None and not lines.spanned:
            yield start, fields, True
        else:
            first = lines.first
            if lines.spanned:
                lines.rewind()
            yield start, lenient_fields(first, reader.dialect), True


def lenient_fields(line: str, dialect) -> list[str]:
    """The fields of one line, read without csv's strict checks: an open quote runs to the line's end, a quote in the
    middle of a cell is dropped (`1;"Head of" Sales` is ['1', 'Head of Sales'])."""
    try:
        return next(csv.reader([line.rstrip("\r\n")], dialect, strict=False), [])
    except csv.Error:
        return []


# The whitespace of JSON (RFC 8259): a line of nothing else is blank.
JSON_WHITESPACE = " \t\r\n"


def json_integer(digits: str) -> int | Decimal:
    """A JSON integer; one longer than Python converts (`sys.get_int_max_str_digits()`, 4,300 digits by default: int()
    raises ValueError) as a Decimal, which keeps its line a row and is written back as its digits."""
    try:
        return int(digits)
    except ValueError:
        return Decimal(digits)


def jsonl_title_records(
    lines: Iterable[str], column: str, id_column: str | None, keep_columns: Sequence[str]
) -> Iterator[tuple[TitleRecord, dict | None]]:
    """Each non-blank JSONL line as (record, its object), the object None for a line that is not one (malformed). A
    blank line holds JSON's whitespace alone: a line of a form feed, U+2028 or NEL (Python's whitespace, not JSON's)
    is no JSON value, so it is a malformed row, not left out unsaid."""
    nothing_kept = tuple(None for _ in keep_columns)  # a line that is not an object has no fields to keep
    for line, text in enumerate(lines, start=1):
        if not text.strip(JSON_WHITESPACE):
            continue
        try:
            record = json.loads(text, parse_int=json_integer)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            yield TitleRecord(line, None, None, nothing_kept, "malformed"), None
            continue
        record_id = record.get(id_column) if id_column else None
        extra = tuple(record.get(name) for name in keep_columns)
        yield TitleRecord(line, None if record_id is None else str(record_id), record.get(column), extra), record


# A field asked for that none of a JSONL file's first JSONL_PROBE objects has is an error (as a missing CSV column is).
JSONL_PROBE = 1000


def fields_seen_early(
    path: Path | str, records: Iterable[tuple[TitleRecord, dict | None]], wanted: Sequence[str]
) -> Iterator[TitleRecord]:
    """The records, once every wanted field has turned up in one of the first `JSONL_PROBE` objects; a field that
    none of them has (a typo in --field) raises DataError listing the fields found, instead of a file of rows
    that look empty."""
    missing, found, objects, held = set(wanted), {}, 0, []
    records = iter(records)
    for record, obj in records:
        held.append(record)
        if obj is not None:
            objects += 1
            missing.difference_update(obj)
            found.update(dict.fromkeys(obj))
        if not missing or objects == JSONL_PROBE:
            break
    if missing and objects:
        name = next(name for name in wanted if name in missing)
        within = f"the first {objects:,} objects" if objects == JSONL_PROBE else f"the file's {objects:,} objects"
        raise DataError(path, f"field {name!r}", f"none of {within} has it; fields found: {list(found)[:20]!r}")
    yield from held
    yield from (record for record, _ in records)


# How csv says that a quote was never closed: the reader has swallowed every line after it into one cell.
UNCLOSED_QUOTE = "unexpected end of data"


# How many non-empty rows of a sheet are searched for the header (a report's title rows may precede it).
XLSX_HEADER_SEARCH = 20


def _xlsx_titles(
    path: Path,
    column: str,
    id_column: str | None,
    sheet: str | None,
    keep_columns: Sequence[str],
    notify: Callable[[str], None] | None = None,
) -> Iterator[TitleRecord]:
    """The rows of one sheet, streamed (openpyxl's read-only mode); a row's line is its row number in the sheet."""
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # zipfile.BadZipFile, KeyError, openpyxl's InvalidFileException: all mean the same
        raise DataError(path, None, f"not an Excel .xlsx workbook ({type(error).__name__}: {error})") from error
    try:
        names = workbook.sheetnames
        if not names:  # Excel writes none such, but a hand-made workbook may list no sheet
            raise DataError(path, None, "the workbook has no sheets")
        if sheet is None:
            name = names[0]
        elif sheet in names:
            name = sheet
        elif sheet.isdigit() and 1 <= int(sheet) <= len(names):
            name = names[int(sheet) - 1]
        else:
            raise DataError(
                path, f"--sheet {sheet!r}", f"no such sheet; the sheets are {names!r} (a name or 1..{len(names)})"
            )
        worksheet = workbook[name]
        # Some exporters write a wrong sheet size, which read-only mode would trust and cut rows or columns at.
        worksheet.reset_dimensions()
        rows = sheet_rows(path, name, worksheet)
        # The header is the first non-empty row, or the first of the next few that holds the title column: a
        # report's own title rows above the table are skipped (and said).
        first, widest, header_row, header = (0, []), (0, []), 0, []
        for scanned, (number, values) in enumerate(row for row in rows if any(v is not None for v in row[1])):
            cells = ["" if value is None else str(value).strip() for value in values]
            if scanned == 0:
                first = (number, cells)
            if sum(map(bool, cells)) > sum(map(bool, widest[1])):
                widest = (number, cells)
            if column in cells:
                header_row, header = number, cells
                break
            if scanned + 1 == XLSX_HEADER_SEARCH:
                break
        hint = ""
        if not header:
            header_row, header = first
            if widest[0] != first[0]:  # a report's title above the table: show the table's likely header too
                hint = f"; line {widest[0]}, the row with the most cells, holds {[c for c in widest[1] if c]!r}"
        elif header_row != first[0] and notify is not None:
            notify(f"{path}: sheet {name!r}: the header is line {header_row}; the rows above it are skipped")
        where = f"sheet {name!r}, line {header_row or 1}"
        wanted = [name for name in (column, id_column, *keep_columns) if name]
        check_header(path, header, wanted, where, hint)
        index = header.index(column)
        id_index = header.index(id_column) if id_column else None
        keep_index = [header.index(name) for name in keep_columns]
        width = len(header)
        for row, values in rows:
            if len(values) < width:
                values = (*values, *(None,) * (width - len(values)))
            record_id = values[id_index] if id_index is not None else None
            yield TitleRecord(
                row,
                None if record_id is None else str(record_id),
                values[index],
                tuple(values[i] for i in keep_index),
            )
    finally:
        workbook.close()


def sheet_rows(path: Path, name: str, worksheet) -> Iterator[tuple[int, tuple]]:
    """(row number, values) of each row of a read-only worksheet. Where openpyxl cannot read the sheet on past some
    row (a cell it cannot convert: a date or number that is not one, a shared string that is not there; XML that is
    not XML 1.0; a damaged zip entry) it stops with DataError naming the sheet and the last line read: the rows after
    it cannot be reached, so the file is refused as a whole, not labelled in part."""
    rows = worksheet.iter_rows(values_only=True)
    number = 0
    while True:
        try:
            values = next(rows)
        except StopIteration:
            return
        except Exception as error:  # ValueError, IndexError, XML's ParseError, zlib.error, ...: all mean the same
            raise DataError(
                path,
                f"sheet {name!r}, after line {number}",
                f"the sheet cannot be read on ({type(error).__name__}: {error}): the file is damaged, or "
                "not written as Excel writes it (Excel's Open and Repair may mend it)",
            ) from error
        number += 1
        yield number, values


def as_dicts(items: Iterable[object]) -> list[dict]:
    return [asdict(item) for item in items]


__all__ = [
    "DataError",
    "Example",
    "Position",
    "Skipped",
    "normalise_title",
    "read_curated_csv",
    "read_cv_positions",
    "read_ood",
    "read_cv_dev",
    "read_recorded_answers",
    "read_pseudo_labels",
    "read_jsonl",
    "read_titles",
    "iter_titles",
    "parse_delimiter",
    "title_format",
    "TitleRecord",
    "write_jsonl",
    "seniority_from_ordinal",
]


MULTILINGUAL_DEV_COLUMNS = ("title", "lang", "seniority", "department")


def read_multilingual_dev(path: Path | str, task: Task) -> tuple[list[Example], list[str], list[Skipped]]:
    """The multilingual dev set (data/multilingual_dev.csv): each title with its `task` label, its language, and the
    rows skipped (an empty title). An unknown label or a missing column stops with the file, line and field."""
    path = Path(path)
    examples: list[Example] = []
    languages: list[str] = []
    skipped: list[Skipped] = []
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file, strict=True)
            missing = [column for column in MULTILINGUAL_DEV_COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise DataError(path, "line 1", f"columns {missing} missing; header: {reader.fieldnames}")
            for row in reader:
                line = reader.line_num
                text = normalise_title(row["title"])
                if not text:
                    skipped.append(Skipped(path.name, line, "empty title"))
                    continue
                label = _check_label((row[task.name] or "").strip(), task, path, f"line {line}, field {task.name!r}")
                examples.append(Example(text, label, path.name, line))
                languages.append((row["lang"] or "").strip() or "?")
    except csv.Error as error:
        raise DataError(path, f"line {reader.line_num}", f"malformed CSV: {error}") from error
    except UnicodeDecodeError as error:
        raise DataError(path, f"byte {error.start}", "not UTF-8 text") from error
    return examples, languages, skipped
