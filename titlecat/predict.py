"""Batch prediction: label a file of job titles with seniority and department, streaming in chunks.

The pieces are shared by `titlecat predict` (one machine) and `titlecat predict-ray`
(Ray Data), so both write the same rows: read (readers.read_titles) → check each title
(`check_records`) → label the good ones (`label_records`) → write (`PredictionWriter`).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import spacy
from spacy.language import Language
from spacy.util import minibatch
from tqdm import tqdm

# The pipelines' own functions, registered by importing them: spacy.load then finds them even where titlecat's
# entry points are not installed (a source tree on PYTHONPATH, as on an air-gapped GPU machine).
from . import combined, components  # noqa: F401
from .labels import TASKS
from .preflight import check_gpu
from .readers import TitleRecord, normalise_title, read_titles

# Row statuses: only "ok" rows are labelled; the others are written with empty answers and counted.
STATUSES = ("ok", "empty", "not_text", "too_long")
MAX_CHARS = 500
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def check_title(value: object, max_chars: int = MAX_CHARS) -> tuple[str, str]:
    """(status, whitespace-normalised title) of a raw input value; the title is '' unless status is ok."""
    if value is None:
        return "empty", ""
    if not isinstance(value, str):
        return "not_text", ""  # a JSON number, list, object or boolean
    text = normalise_title(value)
    if not text:
        return "empty", ""
    if len(text) > max_chars:
        return "too_long", ""
    if not any(char.isalpha() for char in text):
        return "not_text", ""  # digits, punctuation or control characters only
    return "ok", text


def check_records(records: Iterable[TitleRecord], max_chars: int = MAX_CHARS) -> list[dict]:
    """One dict per record: line (where the input row starts), id, status and the title to label."""
    checked = []
    for record in records:
        status, text = check_title(record.value, max_chars)
        checked.append({"line": record.line, "id": record.id, "status": status, "text": text})
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
    build of torch fails with the fix, not mid-file). Then the process's objects are frozen
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


def output_fields(tasks: dict[str, tuple[str, ...]], all_scores: bool = False, with_id: bool = False) -> list[str]:
    fields = ["line"] + (["id"] if with_id else []) + ["status"]
    for task, labels in tasks.items():
        fields += [task, f"{task}_score"] + ([f"{task}:{label}" for label in labels] if all_scores else [])
    return fields


def answers(cats: dict[str, float], tasks: dict[str, tuple[str, ...]], all_scores: bool) -> dict:
    row = {}
    for task, labels in tasks.items():
        best = max(labels, key=cats.__getitem__)
        row[task] = best
        row[f"{task}_score"] = round(cats[best], 4)
        if all_scores:
            row.update({f"{task}:{label}": round(cats[label], 4) for label in labels})
    return row


def label_records(
    nlp: Language,
    tasks: dict[str, tuple[str, ...]],
    checked: list[dict],
    all_scores: bool = False,
    batch_size: int = 1000,
    n_process: int = 1,
    memory_zone: bool = True,
) -> list[dict]:
    """Output rows (see output_fields) for checked records, in input order; bad rows keep empty answers.

    `memory_zone` frees the strings and lexemes the chunk added to the vocab, so memory stays flat over
    millions of distinct titles; docs are read inside it and never kept. The tokenizer caches nothing
    inside a zone, so callers label their first chunk outside one (`memory_zone=False`): that fills the
    tokenizer's bounded cache (10,000 entries) with the common words of job titles, and keeps what
    tokenization costs to about that of a plain `nlp.pipe`.
    """
    texts = [record["text"] for record in checked if record["status"] == "ok"]
    rows = []
    with nlp.memory_zone() if memory_zone else contextlib.nullcontext():
        docs = iter(nlp.pipe(texts, batch_size=batch_size, n_process=n_process) if texts else ())
        for record in checked:
            row = {"line": record["line"], "id": record["id"], "status": record["status"]}
            if record["status"] == "ok":
                row.update(answers(next(docs).cats, tasks, all_scores))
            rows.append(row)
    return rows


class PredictionWriter:
    """CSV/TSV or JSONL rows, written to a hidden partial file and renamed into place on success.

    Any exception (Ctrl-C included) removes the partial file: the output is either complete or absent.
    """

    def __init__(self, path: Path | str, fields: list[str]):
        self.path = Path(path)
        self.fields = fields
        self.format = OUTPUT_FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise ValueError(f"{self.path}: output must end in one of {sorted(OUTPUT_FORMATS)}")
        self.partial = self.path.with_name(f".{self.path.name}.partial")

    def __enter__(self) -> PredictionWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.partial.open("w", newline="", encoding="utf-8")
        if self.format == "jsonl":
            self.write = self._write_jsonl
        else:
            self.csv = csv.DictWriter(
                self.file, self.fields, delimiter="\t" if self.format == "tsv" else ",", extrasaction="ignore"
            )
            self.csv.writeheader()
            self.write = self.csv.writerows
        return self

    def _write_jsonl(self, rows: Iterable[dict]) -> None:
        fields = self.fields
        self.file.writelines(
            json.dumps({name: row.get(name) for name in fields}, ensure_ascii=False) + "\n" for row in rows
        )

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.file.close()
        if exc_type is None:
            os.replace(self.partial, self.path)
        else:
            self.partial.unlink(missing_ok=True)


@dataclass
class Summary:
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, rows: list[dict]) -> None:
        self.counts.update(row["status"] for row in rows)

    def __str__(self) -> str:
        bad = ", ".join(f"{status} {self.counts[status]:,}" for status in STATUSES[1:] if self.counts[status])
        rate = self.total / self.seconds if self.seconds else 0.0
        return (
            f"{self.total:,} rows: {self.counts['ok']:,} labelled, {self.total - self.counts['ok']:,} bad"
            f"{f' ({bad})' if bad else ''}, in {self.seconds:.1f} s ({rate:,.0f} titles/s)"
        )


def write_predictions(
    output_path: Path | str, fields: list[str], chunks: Iterator[list[dict]], progress: bool
) -> Summary:
    """Write chunks of output rows atomically, with a progress bar (titles/s) and a status count."""
    summary = Summary()
    start = time.perf_counter()
    with PredictionWriter(output_path, fields) as writer, tqdm(unit=" titles", disable=not progress) as bar:
        for rows in chunks:
            writer.write(rows)
            summary.add(rows)
            bar.update(len(rows))
    summary.seconds = time.perf_counter() - start
    return summary


def predict_file(
    nlp: Language,
    input_path: Path | str,
    output_path: Path | str,
    column: str = "text",
    id_column: str | None = None,
    input_format: str | None = None,
    all_scores: bool = False,
    n_process: int = 1,
    batch_size: int = 1000,
    chunk_size: int = 20000,
    max_chars: int = MAX_CHARS,
    progress: bool = True,
) -> Summary:
    """Label every row of a file; see `titlecat predict --help`."""
    tasks = pipeline_tasks(nlp)
    records = read_titles(input_path, column, id_column, input_format)
    chunks = (
        label_records(nlp, tasks, check_records(chunk, max_chars), all_scores, batch_size, n_process, index > 0)
        for index, chunk in enumerate(minibatch(records, chunk_size))
    )
    return write_predictions(output_path, output_fields(tasks, all_scores, id_column is not None), chunks, progress)
