"""Batch prediction: label a file of job titles with seniority and department, streaming in chunks.

The pieces are shared by `titlecat predict` (one machine) and `titlecat predict-ray`
(Ray actors), so both write the same rows: read (readers.read_titles) → check each title
(`check_records`) → label the good ones (`label_records`) → write (`PredictionWriter`).
`predict --n-process N` labels the chunks in a pool of N processes started once (`labelled_in_pool`).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import itertools
import json
import math
import multiprocessing
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import spacy
from spacy.language import Language
from spacy.tokens.underscore import Underscore
from spacy.util import minibatch
from tqdm import tqdm

# The pipelines' own functions, registered by importing them: spacy.load then finds them even where titlecat's
# entry points are not installed (a source tree on PYTHONPATH, as on an air-gapped GPU machine).
from . import combined, components, multilingual, piece_vectors, trf_textcat  # noqa: F401
from .labels import TASKS
from .preflight import check_gpu
from .provenance import Run, fingerprint, pipeline_folder, pipeline_provenance, sidecar_path, write_json_atomically
from .readers import SURROGATE, TitleRecord, normalise_title, read_titles, title_format
from .spreadsheet import TEXT_MARK, OutputOptions, formula_like, note_semicolons
from .text_scoring import TextScorer, text_scorer

# Row statuses: only "ok" rows are labelled; the others are written with empty answers and counted.
STATUSES = ("ok", "empty", "not_text", "too_long", "undecodable", "malformed")
# What a bad status means, for the hints printed after a run that had such rows.
STATUS_HINTS = {
    "too_long": "titles over --max-chars ({max_chars:,} characters), unlabelled: a larger --max-chars labels them",
    "undecodable": "rows whose title, id or kept columns hold bytes that are not text in the file's encoding, or "
    "lone surrogates (JSON '\\ud800'): unlabelled, those cells written with U+FFFD; a file that mixes encodings "
    "keeps them so; if the whole file is in another encoding, name it with --encoding (e.g. cp1252, latin-1)",
}
# The malformed hint depends on what the input was read as: a table (CSV, TSV) or JSONL.
MALFORMED_HINTS = {
    "table": "rows with more or fewer fields than the header, a quote inside a cell, or a quote never closed, which "
    "costs its own line only (a cell holding the separator or a quote must be quoted as a whole; --delimiter names "
    "the separator)",
    "jsonl": "lines that are not a JSON object (a file that is not JSONL: --format names its format)",
}
# Statuses that say the file was read wrongly (its encoding or separator), not that a title is bad: a run where
# they are most rows fails (exit status 1), its output written.
UNREAD_STATUSES = ("undecodable", "malformed")
MAX_CHARS = 500
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".xlsx": "xlsx"}
# What one Excel sheet holds (Excel's specifications and limits).
EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_CELL_CHARS = 32_767


def check_title(value: object, max_chars: int = MAX_CHARS) -> tuple[str, str]:
    """(status, whitespace-normalised title) of a raw input value; the title is '' unless status is ok."""
    if value is None:
        return "empty", ""
    if not isinstance(value, str):
        return "not_text", ""  # a JSON number, list, object or boolean; an Excel number or date
    if SURROGATE.search(value):
        return "undecodable", ""
    text = normalise_title(value)
    if not text:
        return "empty", ""
    if len(text) > max_chars:
        return "too_long", ""
    if not any(char.isalpha() for char in text):
        return "not_text", ""  # digits, punctuation or control characters only
    return "ok", text


def fail_on_statuses(value: str | None) -> tuple[str, ...]:
    """--fail-on: 'bad' (every bad status) or comma-separated bad statuses, e.g. 'undecodable,malformed'."""
    if not value:
        return ()
    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["bad"]:
        return STATUSES[1:]
    unknown = [name for name in names if name not in STATUSES[1:]]
    if unknown or not names:
        raise ValueError(
            f"--fail-on {value!r}: expected 'bad' (any bad row) or bad statuses, comma-separated, of "
            f"{', '.join(STATUSES[1:])}"
        )
    return tuple(names)


def plain(value: object) -> object:
    """A value as an output cell: JSON scalars as they are, other values as text, lone surrogates as U+FFFD
    (no UTF-8 writer can write them). NaN and the infinities (JSONL's `NaN`, `Infinity`, or a number too large for a
    float, `1e400`) are no JSON scalar: as text ('nan', 'inf'), else a JSONL output would not be JSON."""
    if value is None or isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (list, dict)) else str(value)
    return SURROGATE.sub("\ufffd", value)


def check_records(
    records: Iterable[TitleRecord],
    max_chars: int = MAX_CHARS,
    keep_title: bool = False,
    keep_columns: Sequence[str] = (),
) -> list[dict]:
    """One dict per record: line (where the input row starts), id, status and the title to label; with
    `keep_title` the title as read ("title"), with `keep_columns` those columns' values ("keep").

    A row whose id or kept cells are not text in the file's encoding is `undecodable`, whatever its title: those
    cells cannot be written as they are, and a row that no longer joins back to its input is no answer.
    """
    checked = []
    for record in records:
        status, text = (record.status, "") if record.status else check_title(record.value, max_chars)
        copied = (record.id, *record.extra)  # written to the output as read, besides the title
        if status != "malformed" and any(isinstance(cell, str) and SURROGATE.search(cell) for cell in copied):
            status, text = "undecodable", ""
        row = {"line": record.line, "id": plain(record.id), "status": status, "text": text}
        if keep_title:
            row["title"] = plain(record.value)
        if keep_columns:
            row["keep"] = dict(zip(keep_columns, map(plain, record.extra), strict=True))
        checked.append(row)
    return checked


def freeze_long_lived_objects() -> None:
    """Put everything the process holds so far (imports, torch among them, a loaded pipeline) out of the
    garbage collector's reach: a labelling job allocates and frees millions of Docs, and each full
    collection would otherwise walk those ~450,000 long-lived objects again (a 250 ms pause every
    ~30,000 titles on the project's machine, about a tenth of the time; docs/use.md)."""
    gc.collect()
    gc.freeze()


def load_pipeline(model: str | Path, gpu_id: int = -1) -> Language:
    """A pipeline folder or an installed package name; a folder is made absolute for remote workers.

    With gpu_id >= 0 the pipeline is loaded onto that GPU (checked first, so a missing GPU or a CPU
    build of torch fails with the fix, not mid-file). Its weights' fingerprint (titlecat.provenance.fingerprint)
    is computed now, from the folder as loaded, so loading's time holds it. Then the process's objects are frozen
    (`freeze_long_lived_objects`).
    """
    if gpu_id >= 0:
        check_gpu(gpu_id, option="--gpu-id", use="predict")
        spacy.require_gpu(gpu_id)
    path = Path(model)
    if not path.exists() and not spacy.util.is_package(str(model)):
        raise OSError(
            f"no pipeline {str(model)!r}: no such folder in {Path.cwd()} and no installed package of that name. "
            "The default, training/combined, is made by `spacy project run all` in the titlecat project folder: "
            "run there, or name a pipeline with --model: its folder, or the package name of an installed wheel "
            "(e.g. xx_titlecat_combined_cpu)"
        )
    nlp = spacy.load(path.resolve() if path.exists() else str(model))
    fingerprint(nlp)
    freeze_long_lived_objects()
    return nlp


def pipeline_tasks(nlp: Language) -> dict[str, tuple[str, ...]]:
    """The tasks a pipeline answers and their labels: textcats named after a task, or one `textcat`."""
    tasks = {name: tuple(nlp.get_pipe(name).labels) for name in TASKS if name in nlp.pipe_names}
    if not tasks and "textcat" in nlp.pipe_names:
        labels = tuple(nlp.get_pipe("textcat").labels)
        tasks = {name: labels for name, task in TASKS.items() if set(task.labels) == set(labels)}
    if not tasks:
        raise ValueError(f"the pipeline {nlp.pipe_names} has no textcat named 'seniority', 'department' or 'textcat'")
    return tasks


def output_fields(
    tasks: dict[str, tuple[str, ...]],
    all_scores: bool = False,
    with_id: bool = False,
    keep_title: bool = False,
    keep_columns: Sequence[str] = (),
) -> list[str]:
    """The output's columns; `keep_columns` are the kept columns' output names (see `kept_column_names`)."""
    repeated = sorted({name for name in keep_columns if list(keep_columns).count(name) > 1})
    if repeated:
        raise ValueError(f"--keep-columns lists {', '.join(map(repr, repeated))} more than once: name each column once")
    fields = ["line"] + (["id"] if with_id else []) + (["title"] if keep_title else []) + list(keep_columns)
    fields.append("status")
    for task, labels in tasks.items():
        fields += [task, f"{task}_score"] + ([f"{task}:{label}" for label in labels] if all_scores else [])
    clashes = sorted({name for name in fields if fields.count(name) > 1})
    if clashes:
        raise ValueError(
            f"--keep-columns {clashes} would write a column twice: these names are output columns already; keep a "
            "column under another name with NAME=NEW_NAME, e.g. --keep-columns 'status=crm_status'"
            + (" (or leave the title out: --no-keep-title)" if "title" in clashes and keep_title else "")
        )
    return fields


def column_names(names: str | None) -> list[str]:
    """--keep-columns 'email, company' → ['email', 'company']."""
    return [name.strip() for name in names.split(",") if name.strip()] if names else []  # "a," is ["a"]


def kept_column_names(keep_columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """(input names, output names) of --keep-columns: 'status=crm_status' keeps the input column 'status' as the
    output column 'crm_status' (one whose name is an output column already); 'email' keeps 'email' as it is."""
    inputs, outputs = [], []
    for kept in keep_columns:
        name, renamed, new_name = kept.partition("=")
        name, new_name = name.strip(), new_name.strip()
        if not name or (renamed and not new_name):
            raise ValueError(f"--keep-columns {kept!r}: expected NAME or NAME=NEW_NAME")
        inputs.append(name)
        outputs.append(new_name if renamed else name)
    return inputs, outputs


def answers(cats: dict[str, float], tasks: dict[str, tuple[str, ...]], all_scores: bool) -> dict:
    row = {}
    for task, labels in tasks.items():
        best = max(labels, key=cats.__getitem__)
        row[task] = best
        row[f"{task}_score"] = round(cats[best], 4)
        if all_scores:
            row.update({f"{task}:{label}": round(cats[label], 4) for label in labels})
    return row


def needs_review(row: dict, tasks: Sequence[str], review_below: float) -> bool | None:
    """The review flag of an output row: true where a task's model score is below `review_below`, None for a row
    that is not ok (its status says what is wrong). A task without a score (answered by the LLM) is not flagged."""
    if row["status"] != "ok":
        return None
    return any(row[f"{task}_score"] is not None and row[f"{task}_score"] < review_below for task in tasks)


def check_review_below(review_below: float | None) -> None:
    if review_below is not None and not 0.0 <= review_below <= 1.0:
        raise ValueError(f"--review-below must be between 0 and 1, not {review_below}")


class AnswerCache:
    """The answers of the titles a run labelled, so that a title is labelled once however often it comes: exports
    repeat their common titles ("Geschäftsführer", "Sales Manager") thousands of times. Emptied when it holds
    `max_titles`, so memory stays flat (about 25 MB at most with the default)."""

    def __init__(self, max_titles: int = 50_000):
        self.max_titles = max_titles
        self.answers: dict[str, dict] = {}

    def known(self, texts: Iterable[str]) -> dict[str, dict]:
        return {text: self.answers[text] for text in texts if text in self.answers}

    def add(self, answers_by_text: dict[str, dict]) -> None:
        if len(self.answers) + len(answers_by_text) > self.max_titles:
            self.answers = {}
        self.answers.update(itertools.islice(answers_by_text.items(), self.max_titles))


def label_records(
    nlp: Language,
    tasks: dict[str, tuple[str, ...]],
    checked: list[dict],
    all_scores: bool = False,
    batch_size: int | None = None,
    n_process: int = 1,
    memory_zone: bool = True,
    cache: AnswerCache | None = None,
) -> list[dict]:
    """Output rows (see output_fields) for checked records, in input order; bad rows keep empty answers.

    `memory_zone` frees the strings and lexemes the chunk added to the vocab, so memory stays flat over
    millions of distinct titles; docs are read inside it and never kept. The tokenizer caches nothing
    inside a zone, so callers label their first chunk outside one (`memory_zone=False`): that fills the
    tokenizer's bounded cache (10,000 entries) with the common words of job titles, and keeps what
    tokenization costs to about that of a plain `nlp.pipe`.
    """
    texts = [record["text"] for record in checked if record["status"] == "ok"]
    labelled = label_texts(nlp, tasks, texts, all_scores, batch_size, n_process, memory_zone, cache)
    return merge_answers(checked, labelled)


def label_texts(
    nlp: Language,
    tasks: dict[str, tuple[str, ...]],
    texts: list[str],
    all_scores: bool = False,
    batch_size: int | None = None,
    n_process: int = 1,
    memory_zone: bool = True,
    cache: AnswerCache | None = None,
) -> list[dict]:
    """The answers (see `answers`) for each text, read inside a memory zone (see `label_records`). Each distinct
    text goes through the pipeline once, and not at all if `cache` holds it; the answers `cache` lacked are added.
    A pipeline of titlecat's parts scores them without Docs (titlecat.text_scoring), others through `nlp.pipe`."""
    if not texts:
        return []
    known = cache.known(texts) if cache is not None else {}
    new = [text for text in dict.fromkeys(texts) if text not in known]
    scorer = text_scorer(nlp) if n_process == 1 else None
    if scorer is not None:
        rows = scored_answers(scorer, new, tasks, all_scores, batch_size or nlp.batch_size)
        labelled = dict(zip(new, rows, strict=True))
    else:
        with nlp.memory_zone() if memory_zone else contextlib.nullcontext():
            docs = nlp.pipe(new, batch_size=batch_size, n_process=n_process)
            labelled = {text: answers(doc.cats, tasks, all_scores) for text, doc in zip(new, docs, strict=True)}
    if cache is not None:
        cache.add(labelled)
    known.update(labelled)
    return [known[text] for text in texts]


def scored_answers(
    scorer: TextScorer, texts: list[str], tasks: dict[str, tuple[str, ...]], all_scores: bool, batch_size: int
) -> list[dict]:
    """`answers` of each text's cats, from the Doc-free scores: the best label of a task is the first of its
    highest scores (as `max` picks it), every score rounded by Python's `round`, so the rows are the same."""
    columns: dict[str, list] = {}
    for task, scores in scorer.task_scores(texts, batch_size, tasks).items():
        labels = tasks[task]
        best = scores.argmax(axis=1)
        columns[task] = np.asarray(labels, dtype=object)[best].tolist()
        columns[f"{task}_score"] = [round(score, 4) for score in scores[np.arange(len(texts)), best].tolist()]
        if all_scores:
            for label, label_column in zip(labels, scores.T.tolist(), strict=True):
                columns[f"{task}:{label}"] = [round(score, 4) for score in label_column]
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def merge_answers(checked: list[dict], labelled: list[dict]) -> list[dict]:
    """Output rows: each checked record's line, id, kept columns and status, with the next answer if it is ok."""
    answers_of_ok = iter(labelled)
    rows = []
    for record in checked:
        row = {"line": record["line"], "id": record["id"]}
        if "title" in record:
            row["title"] = record["title"]
        if "keep" in record:
            row.update(record["keep"])
        row["status"] = record["status"]
        if record["status"] == "ok":
            row.update(next(answers_of_ok))
        rows.append(row)
    return rows


# One labelling process of `titlecat predict --n-process N`: its pipeline and settings, set once when it starts.
_worker: dict = {}


def _start_worker(nlp: Language, tasks: dict, all_scores: bool, batch_size: int, underscore: tuple) -> None:
    # The Doc extensions of the parent, which a spawned process does not have (as spaCy's own nlp.pipe does).
    Underscore.load_state(underscore)
    _worker.update(nlp=nlp, tasks=tasks, all_scores=all_scores, batch_size=batch_size, chunks=0, cache=AnswerCache())
    freeze_long_lived_objects()


def _label_in_worker(texts: list[str]) -> list[dict]:
    # As in one process: the worker's first chunk outside a memory zone, to fill its tokenizer's cache.
    in_zone = _worker["chunks"] > 0
    _worker["chunks"] += 1
    worker = _worker
    return label_texts(
        worker["nlp"], worker["tasks"], texts, worker["all_scores"], worker["batch_size"], 1, in_zone, worker["cache"]
    )


def labelled_in_pool(
    pool, checked_chunks: Iterable[list[dict]], n_process: int
) -> Iterator[tuple[list[dict], list[dict]]]:
    """Each chunk's checked records and output rows, in order, labelled by the pool's processes; at most 2
    chunks per process are in flight, so memory stays flat however long the file."""
    pending: deque = deque()
    for checked in checked_chunks:
        texts = [record["text"] for record in checked if record["status"] == "ok"]
        pending.append((checked, pool.apply_async(_label_in_worker, (texts,))))
        if len(pending) > 2 * n_process:
            done, result = pending.popleft()
            yield done, merge_answers(done, result.get())
    while pending:
        done, result = pending.popleft()
        yield done, merge_answers(done, result.get())


class PredictionWriter:
    """CSV/TSV, JSONL or Excel rows, written to a hidden partial file and renamed into place on success.

    Any exception (Ctrl-C included) removes the partial file: the output is either complete or absent. With
    `sidecar` set (a function of the complete output's size in bytes, giving its provenance record), the record is
    written to a hidden partial file too once the output is complete, and both are renamed into place, the output
    first. A sidecar `OUT.json` (titlecat.provenance) is thus never partial, and never left describing an older
    OUT: on success the old one is removed first, with a sidecar or without (an interruption between the renames
    leaves OUT without one, never with a wrong one); a failed run leaves both as they were.
    `options` (titlecat.spreadsheet): formula-like text cells neutralised (counted in `neutralised`), CSV/TSV's
    separator and byte-order mark; `input_delimiter`, the input table's separator, is --excel's.
    """

    def __init__(
        self,
        path: Path | str,
        fields: list[str],
        options: OutputOptions = OutputOptions(),
        input_delimiter: str | None = None,
    ):
        self.path = Path(path)
        self.fields = fields
        self.options = options
        self.input_delimiter = input_delimiter
        self.cells_neutralised = 0
        self.format = OUTPUT_FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise ValueError(f"{self.path}: output must end in one of {sorted(OUTPUT_FORMATS)}")
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.sidecar: Callable[[int], dict] | None = None

    def __enter__(self) -> PredictionWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.format == "xlsx":
            self.file = ExcelSheetWriter(self.partial, self.fields, self.path.name, self.options.neutralise_formulas)
            self.write = self.file.write
            return self
        if self.format == "jsonl":
            self.file = self.partial.open("w", newline="", encoding="utf-8")
            self.write = self._write_jsonl
            return self
        delimiter, byte_order_mark = self.options.table_dialect(self.format, self.input_delimiter)
        self.file = self.partial.open("w", newline="", encoding="utf-8-sig" if byte_order_mark else "utf-8")
        self.csv = csv.writer(self.file, delimiter=delimiter)
        self.write = self._write_table
        self.write([dict(zip(self.fields, self.fields, strict=True))])  # the header: kept columns' names are input
        return self

    @property
    def neutralised(self) -> int:
        """The text cells written so far that a spreadsheet would have read as a formula."""
        return self.file.neutralised if self.format == "xlsx" else self.cells_neutralised

    def _write_table(self, rows: Iterable[dict]) -> None:
        self.csv.writerows(map(self._table_cells, rows))

    def _table_cells(self, row: dict) -> list:
        cells = [row.get(name) for name in self.fields]
        if self.options.neutralise_formulas:
            for index, cell in enumerate(cells):
                if isinstance(cell, str) and formula_like(cell):
                    cells[index] = TEXT_MARK + cell
                    self.cells_neutralised += 1
        return cells

    def _write_jsonl(self, rows: Iterable[dict]) -> None:
        fields = self.fields
        self.file.writelines(
            json.dumps({name: row.get(name) for name in fields}, ensure_ascii=False) + "\n" for row in rows
        )

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            (self.file.discard if self.format == "xlsx" else self.file.close)()
            self.partial.unlink(missing_ok=True)
            return
        sidecar_partial = None
        try:
            self.file.close()
            if self.sidecar is not None:
                record = self.sidecar(self.partial.stat().st_size)
                sidecar_partial = write_json_atomically(sidecar_path(self.path), record)
            sidecar_path(self.path).unlink(missing_ok=True)  # an older OUT's, with a sidecar or not
        except BaseException:
            self.partial.unlink(missing_ok=True)
            if sidecar_partial is not None:
                sidecar_partial.unlink(missing_ok=True)
            raise
        os.replace(self.partial, self.path)
        if sidecar_partial is not None:
            os.replace(sidecar_partial, sidecar_path(self.path))


class ExcelSheetWriter:
    """Rows into one sheet of a new .xlsx workbook, streamed (openpyxl's write-only mode: memory stays flat).

    Numbers and booleans stay numbers and booleans; text stays text, even when it starts with "=" (a title or
    kept cell is never a formula); with `neutralise`, such a formula-like cell also gets Excel's quote prefix, so
    that editing it keeps it text (counted in `neutralised`). Characters that an Excel cell cannot hold (control
    characters other than tab and line breaks) are written as U+FFFD. A cell over Excel's 32,767 characters, or a
    row past its 1,048,576, stops the run with the line: the output would be cut.
    """

    def __init__(self, path: Path, fields: list[str], name: str, neutralise: bool = True):
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        self.path, self.fields, self.name = path, fields, name  # name: the output as the user named it
        self.text_cell, self.illegal_characters = WriteOnlyCell, ILLEGAL_CHARACTERS_RE  # imported once, not a row
        self.workbook = Workbook(write_only=True)
        self.sheet = self.workbook.create_sheet("labels")
        self.rows = 0
        self.neutralise, self.neutralised = neutralise, 0
        self._append(dict(zip(fields, fields, strict=True)))

    def _append(self, row: dict) -> None:
        self.rows += 1
        if self.rows > EXCEL_MAX_ROWS:
            raise ValueError(
                f"{self.name}: line {row.get('line')}: an Excel sheet holds at most {EXCEL_MAX_ROWS:,} rows "
                "(the header included): write .csv, .tsv or .jsonl"
            )
        cells = []
        for name in self.fields:
            value = row.get(name)
            if isinstance(value, str):
                if len(value) > EXCEL_MAX_CELL_CHARS:
                    raise ValueError(
                        f"{self.name}: line {row.get('line')}, column {name!r}: {len(value):,} characters; an Excel "
                        f"cell holds at most {EXCEL_MAX_CELL_CHARS:,}: write .csv, .tsv or .jsonl, or leave the "
                        "column out"
                    )
                cell = self.text_cell(self.sheet, value=self.illegal_characters.sub("\ufffd", value))
                cell.data_type = "s"  # openpyxl takes a string starting with "=" for a formula
                if self.neutralise and formula_like(value):
                    cell.quotePrefix = True  # the style of a cell typed with a leading ': text, also once edited
                    self.neutralised += 1
                cells.append(cell)
            else:
                cells.append(value)
        self.sheet.append(cells)

    def write(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self._append(row)

    def close(self) -> None:
        self.workbook.save(self.path)

    def discard(self) -> None:
        """Finish the workbook in memory and drop it: a streamed sheet left open complains (a traceback on stderr)
        when the garbage collector closes it."""
        self.workbook.save(io.BytesIO())


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0  # reading, labelling and writing
    loading_seconds: float | None = None  # loading the pipeline (and starting Ray's actors), where the caller timed it
    first_lines: dict[str, int] = field(default_factory=dict)  # each bad status: the first line that had it
    max_chars: int = MAX_CHARS  # the run's limit, for the too_long hint
    input_format: str = "csv"  # for the malformed hint
    neutralised: int = 0  # formula-like text cells written as text (titlecat.spreadsheet)
    detected_encoding: str | None = None  # the encoding a file that is not UTF-8 was read in (readers.detect_encoding)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        """Titles (rows) a second, loading left out."""
        return self.total / self.seconds if self.seconds else 0.0

    @property
    def rate_with_loading(self) -> float | None:
        """Titles a second, loading the pipeline included (None where loading was not timed): on a small file
        loading is most of the time."""
        if self.loading_seconds is None:
            return None
        seconds = self.seconds + self.loading_seconds
        return self.total / seconds if seconds else 0.0

    def status_counts(self) -> dict[str, int]:
        """Each status's count, 0 included, in STATUSES' order."""
        return {status: self.counts[status] for status in STATUSES}

    def add(self, rows: list[dict]) -> None:
        counts = Counter(row["status"] for row in rows)
        self.counts.update(counts)
        if counts["ok"] < len(rows):
            for row in rows:
                if row["status"] != "ok" and row["status"] not in self.first_lines:
                    self.first_lines[row["status"]] = row["line"]

    def hints(self) -> list[str]:
        """What each bad status that occurred means, with its count and first line."""
        malformed = MALFORMED_HINTS["jsonl" if self.input_format == "jsonl" else "table"]
        return [
            f"{status} {self.counts[status]:,} (first on line {self.first_lines[status]}): "
            + hint.format(max_chars=self.max_chars)
            for status, hint in {**STATUS_HINTS, "malformed": malformed}.items()
            if self.counts[status]
        ]

    def bad_counts(self) -> str:
        """'empty 2, malformed 1': each bad status that occurred, with its count."""
        return ", ".join(f"{status} {self.counts[status]:,}" for status in STATUSES[1:] if self.counts[status])

    def failure(self, fail_on: Sequence[str] = ()) -> str | None:
        """Why the run failed though its output is written, or None: no row labelled, or most rows not read
        (undecodable or malformed: the file's encoding or separator, not its titles), or a row with a status in
        `fail_on` (--fail-on)."""
        if self.total and not self.counts["ok"]:
            return f"no row was labelled ({self.total:,} bad: {self.bad_counts()})"
        unread = sum(self.counts[status] for status in UNREAD_STATUSES)
        if 2 * unread > self.total:
            return f"most rows could not be read ({unread:,} of {self.total:,} undecodable or malformed)"
        failed = [status for status in fail_on if self.counts[status]]
        if failed:
            found = ", ".join(f"{s} {self.counts[s]:,} (first on line {self.first_lines[s]})" for s in failed)
            return f"rows with a status --fail-on names: {found}"
        return None

    def __str__(self) -> str:
        bad = self.bad_counts()
        cells = f"{self.neutralised:,} formula-like {'cell' if self.neutralised == 1 else 'cells'} neutralised"
        loading = ""
        if self.loading_seconds is not None:
            total = self.seconds + self.loading_seconds
            loading = f", {total:.1f} s with loading ({self.rate_with_loading:,.0f} titles/s)"
        return (
            f"{self.total:,} {'row' if self.total == 1 else 'rows'}: {self.counts['ok']:,} labelled, "
            f"{self.total - self.counts['ok']:,} bad"
            f"{f' ({bad})' if bad else ''}, in {self.seconds:.1f} s ({self.rate:,.0f} titles/s){loading}"
            f"{f'; {cells}' if self.neutralised else ''}"
            f"{f'; read as {self.detected_encoding} (detected: not UTF-8)' if self.detected_encoding else ''}"
        )


def write_predictions(
    output_path: Path | str,
    fields: list[str],
    chunks: Iterator[list[dict]],
    progress: bool,
    max_chars: int = MAX_CHARS,
    input_format: str = "csv",
    *,
    output_options: OutputOptions = OutputOptions(),
    input_delimiter: str | None = None,
    detected_encoding: str | None = None,
    loading_seconds: float | None = None,
    run: Run | None = None,
) -> Summary:
    """Write chunks of output rows atomically, with a progress bar (titles/s) and a status count; `output_options`
    and `input_delimiter` as `PredictionWriter`'s; `detected_encoding` (the input's, where it was not UTF-8) is said
    in the summary, and so is `loading_seconds` (the time the caller took to load the pipeline: titles/s with and
    without it). With `run` (titlecat.provenance.Run), its record goes into the sidecar `OUT.json`, written with
    OUT."""
    summary = Summary(
        max_chars=max_chars,
        input_format=input_format,
        detected_encoding=detected_encoding,
        loading_seconds=loading_seconds,
    )
    start = time.perf_counter()

    def finish() -> Summary:
        summary.seconds = time.perf_counter() - start
        summary.neutralised = writer.neutralised
        return summary

    # disable=None: tqdm draws no bar where stderr is no terminal (a log would get its carriage returns).
    bar = tqdm(unit=" titles", disable=None if progress else True)
    with PredictionWriter(output_path, fields, output_options, input_delimiter) as writer, bar:
        for rows in chunks:
            writer.write(rows)
            summary.add(rows)
            bar.update(len(rows))
        if run is not None:  # the record once the output is closed: its size, and the time its writing took
            writer.sidecar = lambda size: run.record(finish(), output_path, size)
    return summary if run is not None else finish()


def check_paths(input_path: Path | str, output_path: Path | str) -> None:
    """The output, and its sidecar OUT.json, must not be the input: writing them would replace the titles."""
    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.resolve() == output_path.resolve() or (output_path.exists() and input_path.samefile(output_path)):
        raise ValueError(f"{output_path}: the output is the input file; name another output path")
    sidecar = sidecar_path(output_path)
    if input_path.resolve() == sidecar.resolve() or (sidecar.exists() and input_path.samefile(sidecar)):
        raise ValueError(f"{output_path}: its provenance goes to {sidecar}, the input file; name another output path")


def read_input(
    input_path: Path | str,
    output_path: Path | str,
    column: str,
    id_column: str | None,
    input_format: str | None,
    output_options: OutputOptions,
    notify: Callable[[str], None] | None = None,
    **reading,
) -> tuple[Iterator[TitleRecord], dict]:
    """(records, what was found reading the input: "delimiter", the table's separator; "encoding", one detected) of
    `read_titles` (`reading`: its options). The header is read now, before the output is opened, so that --excel
    writes the input's separator; a ';' input that is to come back separated by ',' is said (`note_semicolons`)."""
    dialect: dict = {}
    records = read_titles(input_path, column, id_column, input_format, notify=notify, dialect=dialect, **reading)
    records = itertools.chain(list(itertools.islice(records, 1)), records)
    note_semicolons(notify, input_path, output_path, output_options, dialect.get("delimiter"))
    return records, dialect


def postprocessed(labelled: Iterable[tuple[list[dict], list[dict]]], postprocess=None) -> Iterator[list[dict]]:
    """The rows of each (checked records, rows) chunk, through `postprocess` (review flag, LLM fallback) if any."""
    for checked, rows in labelled:
        yield rows if postprocess is None else postprocess(rows, [record["text"] for record in checked])


@dataclass(frozen=True)
class ReadOptions:
    """What `predict_file` reads: the title's `column` (CSV/TSV/Excel) or field (JSONL), the one copied as `id`, the
    `input_format` (None: from the suffix), `encoding` (None: UTF-8, or the one detected), `delimiter` (None: found
    from the header), the Excel `sheet`, whether the title is copied to the output (`keep_title`) and which other
    columns are (`keep_columns`), and the longest title labelled (`max_chars`)."""

    column: str = "text"
    id_column: str | None = None
    input_format: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    keep_title: bool = True
    keep_columns: Sequence[str] = ()
    max_chars: int = MAX_CHARS


@dataclass(frozen=True)
class RunOptions:
    """How `predict_file` labels: every label's score (`all_scores`), in `n_process` processes (started by
    `start_method`, None: the platform's), `batch_size` titles a pipeline batch (None: the pipeline's), `chunk_size`
    rows read, labelled and written at a time, a progress bar (`progress`) and where notes go (`notify`)."""

    all_scores: bool = False
    n_process: int = 1
    batch_size: int | None = None
    chunk_size: int = 20000
    start_method: str | None = None
    progress: bool = True
    notify: Callable[[str], None] | None = None


@dataclass(frozen=True)
class PredictOptions:
    """Everything `predict_file` is told besides its pipeline and paths: what to read (`read`), how to label (`run`),
    how to write (`output`, titlecat.spreadsheet.OutputOptions), the `postprocess` of each chunk's rows
    (titlecat.confidence.RowPostprocess: review flag, LLM fallback), and for the provenance sidecar (`sidecar`) the
    pipeline as the user named it (`model`) and the time it took to load (`loading_seconds`)."""

    read: ReadOptions = ReadOptions()
    run: RunOptions = RunOptions()
    output: OutputOptions = OutputOptions()
    postprocess: object = None
    model: str | Path | None = None
    loading_seconds: float | None = None
    sidecar: bool = True

    @classmethod
    def of(cls, **settings) -> PredictOptions:
        """The options from flat names (`column="title", chunk_size=4, progress=False`), each put in its group;
        `output_options` is `output`. A name no group has is a TypeError naming it."""
        groups: dict[str, dict] = {"read": {}, "run": {}, "own": {}}
        for name, value in settings.items():
            if name in ReadOptions.__dataclass_fields__:
                groups["read"][name] = value
            elif name in RunOptions.__dataclass_fields__:
                groups["run"][name] = value
            elif name in ("postprocess", "model", "loading_seconds", "sidecar", "output_options"):
                groups["own"]["output" if name == "output_options" else name] = value
            else:
                raise TypeError(f"PredictOptions.of: no option named {name!r}")
        return cls(ReadOptions(**groups["read"]), RunOptions(**groups["run"]), **groups["own"])


def predict_file(
    nlp: Language, input_path: Path | str, output_path: Path | str, options: PredictOptions = PredictOptions()
) -> Summary:
    """Label every row of a file; see `titlecat predict --help` and `PredictOptions`.

    With `options.run.n_process` > 1 a pool of that many processes, started once for the file (each gets the pipeline
    once: inherited under `fork`, pickled under `spawn`/`forkserver`, `start_method`; default: the platform's), labels
    chunk after chunk while this process reads, checks and writes. `options.postprocess` adds its columns and changes
    each chunk's rows, given their checked titles. With `options.sidecar` (default) the run's provenance goes to
    `OUT.json` with OUT (titlecat.provenance: the pipeline, named by `options.model` as the user named it, else by its
    folder; the input; the counts; titles/s with and without `options.loading_seconds`).
    """
    read, run, postprocess = options.read, options.run, options.postprocess
    check_paths(input_path, output_path)
    fmt = title_format(input_path, read.input_format)
    tasks = pipeline_tasks(nlp)
    keep_columns, kept_names = kept_column_names(read.keep_columns)
    fields = output_fields(tasks, run.all_scores, read.id_column is not None, read.keep_title, kept_names)
    if postprocess is not None:
        fields = postprocess.fields(fields)
    reading = {
        "encoding": read.encoding,
        "delimiter": read.delimiter,
        "sheet": read.sheet,
        "keep_columns": keep_columns,
    }
    records, found = read_input(
        input_path, output_path, read.column, read.id_column, read.input_format, options.output, run.notify, **reading
    )
    writing = {
        "output_options": options.output,
        "input_delimiter": found.get("delimiter"),
        "detected_encoding": found.get("encoding"),
        "loading_seconds": options.loading_seconds,
    }
    if options.sidecar:
        named = options.model if options.model is not None else pipeline_folder(nlp)  # as the user named it
        writing["run"] = Run(
            pipeline_provenance(nlp),
            input_path,
            fmt,
            None if named is None else str(named),
            found.get("read_as"),
            bool(found.get("encoding")),
            postprocess,
        )
    checked_chunks = (
        check_records(chunk, read.max_chars, read.keep_title, kept_names)
        for chunk in minibatch(records, run.chunk_size)
    )
    write = partial(write_predictions, output_path, fields, progress=run.progress, max_chars=read.max_chars)

    if run.n_process > 1:
        # Started before the progress bar's thread: fork() in a threaded process may deadlock.
        context = multiprocessing.get_context(run.start_method)
        settings = (nlp, tasks, run.all_scores, run.batch_size, Underscore.get_state())
        with context.Pool(run.n_process, _start_worker, settings) as pool:
            labelled = labelled_in_pool(pool, checked_chunks, run.n_process)
            return write(postprocessed(labelled, postprocess), input_format=fmt, **writing)
    cache = AnswerCache()
    labelled = (
        (checked, label_records(nlp, tasks, checked, run.all_scores, run.batch_size, 1, index > 0, cache))
        for index, checked in enumerate(checked_chunks)
    )
    return write(postprocessed(labelled, postprocess), input_format=fmt, **writing)
