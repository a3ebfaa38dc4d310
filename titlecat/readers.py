"""Readers of every input format of the study, with errors that say where.

Rows with an empty or missing title (or missing label) are skipped and
returned as `Skipped` records so that reports can count them; anything
malformed (bad CSV/JSON, missing columns, a label outside the task's set)
raises `DataError` naming the file, the row and the value.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from .labels import Task, seniority_from_ordinal

ACTIVE = "ACTIVE"


class DataError(ValueError):
    """An input file that cannot be read as documented: names file and row."""

    def __init__(self, path: Path | str, where: str, message: str):
        super().__init__(f"{path}: {where}: {message}")
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
TITLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text"}


@dataclass(frozen=True)
class TitleRecord:
    """One input row to label: its line in the file, its id (if the input has one) and the raw value.

    `value` is what the file holds, unchecked: None (missing), any JSON value, or a string.
    """

    line: int
    id: str | None
    value: object


def title_format(path: Path | str, fmt: str | None = None) -> str:
    """The input format: `fmt` if given, else from the suffix (.csv, .tsv, .jsonl/.ndjson, .txt)."""
    fmt = fmt or TITLE_FORMATS.get(Path(path).suffix.lower())
    if fmt not in set(TITLE_FORMATS.values()):
        raise DataError(path, "file name", f"unknown format {fmt!r}: expected one of {sorted(TITLE_FORMATS)}")
    return fmt


def read_titles(
    path: Path | str, column: str = "text", id_column: str | None = None, fmt: str | None = None
) -> Iterator[TitleRecord]:
    """Stream the titles of a CSV/TSV (`column`), JSONL (`column` = field) or plain-text file (one a line).

    Lazy, one row at a time, so memory does not grow with the file. A row that holds a bad title
    (empty, not text) is yielded for the caller to report; a file that cannot be read as its
    format (bad CSV quoting, a row with too many fields, malformed JSON, a missing column,
    not UTF-8) raises DataError naming the line.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as file:
        yield from iter_titles(file, path, column, id_column, title_format(path, fmt))


def iter_titles(
    file: TextIO, path: Path | str, column: str = "text", id_column: str | None = None, fmt: str = "csv"
) -> Iterator[TitleRecord]:
    """`read_titles` on an open text file (opened with newline=""); `path` names it in errors."""
    line = 0
    try:
        if fmt == "text":
            for line, text in enumerate(file, start=1):
                yield TitleRecord(line, None, text.rstrip("\r\n"))
        elif fmt == "jsonl":
            for line, record in jsonl_records(file, path):
                record_id = record.get(id_column) if id_column else None
                yield TitleRecord(line, None if record_id is None else str(record_id), record.get(column))
        else:
            reader = csv.reader(file, delimiter="\t" if fmt == "tsv" else ",", strict=True)
            header = next(reader, None) or []
            missing = [name for name in (column, id_column) if name and name not in header]
            if missing:
                raise DataError(path, "line 1", f"no column {missing[0]!r} in the header {header!r}")
            index = header.index(column)
            id_index = header.index(id_column) if id_column else None
            line = reader.line_num
            for fields in reader:
                start, line = line + 1, reader.line_num
                if fields and len(fields) != len(header):
                    raise DataError(
                        path, f"line {start}", f"expected {len(header)} fields as in the header, found {len(fields)}"
                    )
                yield TitleRecord(
                    start,
                    fields[id_index] if fields and id_index is not None else None,
                    fields[index] if fields else None,
                )
    except csv.Error as error:
        raise DataError(path, f"line {line + 1}", f"malformed {fmt.upper()}: {error}") from error
    except UnicodeDecodeError as error:
        raise DataError(path, f"after line {line}", "not UTF-8 text") from error


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
    "title_format",
    "TitleRecord",
    "write_jsonl",
    "seniority_from_ordinal",
]
