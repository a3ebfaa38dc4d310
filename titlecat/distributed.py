"""`titlecat predict-ray`: the rows of `titlecat predict`, computed by a pool of Ray actors.

The driver streams the file through titlecat's own reader and title check (so line numbers, bad
rows and input errors are those of `titlecat predict`; a missing column stops the run before Ray
starts), a pool of Ray actors labels the blocks (each actor loads the pipeline once), and the
driver writes the rows in input order with the same atomic writer, and the same sidecar OUT.json
(titlecat.provenance): every actor must have loaded the driver's weights (the same sha256), so that the sidecar
names the pipeline that answered every row. Only Ray core calls
(`ray.remote`, `ray.get`): Ray Data's actor pools log an error at every start (their actors
restart with arguments in the object store, ray-project/ray#57733), and turning restarts off there
takes the deprecated `ray_remote_args`. Needs the `distributed` extra: pip install 'titlecat[distributed]'.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import ray
from spacy.util import minibatch

from .predict import (
    AnswerCache,
    PredictOptions,
    Summary,
    check_paths,
    check_records,
    kept_column_names,
    label_records,
    load_pipeline,
    output_fields,
    pipeline_tasks,
    postprocessed,
    read_input,
    write_predictions,
)
from .provenance import Run, fingerprint, pipeline_provenance
from .readers import read_titles, title_format


class Labeller:
    """Ray actor: loads the pipeline once, then labels block after block of checked rows."""

    def __init__(self, model: str, all_scores: bool, batch_size: int | None):
        self.nlp = load_pipeline(model)
        self.tasks = pipeline_tasks(self.nlp)
        self.all_scores = all_scores
        self.batch_size = batch_size
        self.blocks = 0
        self.cache = AnswerCache()

    def fingerprint(self) -> str:
        """The sha256 of the weights this actor loaded (titlecat.provenance.fingerprint)."""
        return fingerprint(self.nlp)

    def label(self, checked: list[dict]) -> list[dict]:
        # The first block outside a memory zone, as in titlecat predict: it warms the tokenizer's cache.
        in_zone = self.blocks > 0
        self.blocks += 1
        return label_records(self.nlp, self.tasks, checked, self.all_scores, self.batch_size, 1, in_zone, self.cache)


def check_input(path: Path | str, column: str, id_column: str | None, fmt: str, **reading) -> None:
    """Read the header (CSV/TSV) or the first record, so that a missing column stops the run in one line
    before Ray starts, as in `titlecat predict`. `reading`: read_titles' options."""
    records = read_titles(path, column, id_column, fmt, **reading)
    try:
        next(records, None)
    finally:
        records.close()


def quiet_console() -> None:
    """Ray's start-up notes go to the session's log files (/tmp/ray/session_*/logs) only; errors still print.

    titlecat reports progress and the result itself: on success the console shows nothing from Ray.
    """
    for handler in logging.getLogger("ray").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


def check_fingerprints(model: str, driver: str, actors: list[str]) -> None:
    """ValueError where an actor loaded other weights than the driver (a node with another wheel or folder under
    the same name): the output and its sidecar would name a pipeline that did not answer every row."""
    others = sorted({sha256 for sha256 in actors if sha256 != driver})
    if others:
        found = ", ".join(f"sha256 {sha256[:16]}" for sha256 in others)
        raise ValueError(
            f"--model {model}: {sum(sha256 != driver for sha256 in actors)} of {len(actors)} workers loaded other "
            f"weights ({found}) than this machine (sha256 {driver[:16]}): install the same pipeline on every node"
        )


def label_in_order(
    actors: list, blocks: Iterable[list[dict]], in_flight: int
) -> Iterator[tuple[list[dict], list[dict]]]:
    """Each block to the next actor in turn, at most `in_flight` blocks out at a time; (block, its rows) in input
    order.

    The bound keeps the driver's memory flat however long the file is.
    """
    pending: deque = deque()
    for index, block in enumerate(blocks):
        if len(pending) >= in_flight:
            done, rows = pending.popleft()
            yield done, ray.get(rows)
        pending.append((block, actors[index % len(actors)].label.remote(block)))
    while pending:
        done, rows = pending.popleft()
        yield done, ray.get(rows)


def predict_ray(
    input_path: Path | str,
    output_path: Path | str,
    options: PredictOptions = PredictOptions(model="training/combined"),
    workers: int = 2,
    address: str | None = None,
    rows_per_block: int = 5000,
) -> Summary:
    """`titlecat predict-ray`: `options` as `titlecat.predict.predict_file`'s (the pipeline is `options.model`, each
    worker an actor that loads it; `options.run`'s processes and chunks are the actors and `rows_per_block`).
    `options.postprocess` (review flag, LLM fallback) runs on the driver, on each block's rows and checked titles,
    as `titlecat predict` runs it on each chunk. The driver reads the file and writes it as `titlecat predict`."""
    read, labelling, postprocess = options.read, options.run, options.postprocess
    model = str(options.model or "training/combined")
    if workers < 1:
        raise ValueError(f"--workers {workers}: at least one worker is needed")
    check_paths(input_path, output_path)
    fmt = title_format(input_path, read.input_format)
    keep_columns, kept_names = kept_column_names(read.keep_columns)
    reading = {"encoding": read.encoding, "delimiter": read.delimiter, "sheet": read.sheet}
    reading["keep_columns"] = keep_columns
    check_input(input_path, read.column, read.id_column, fmt, **reading)
    # The driver loads the pipeline too: a wrong model fails here, before any worker starts. Loading (the driver's,
    # Ray's start and its actors') is timed apart from labelling, for the summary's titles/s with and without it.
    started = time.perf_counter()
    nlp = load_pipeline(model)
    tasks, pipeline = pipeline_tasks(nlp), pipeline_provenance(nlp)
    del nlp  # the driver labels nothing
    loading_seconds = time.perf_counter() - started
    fields = output_fields(tasks, labelling.all_scores, read.id_column is not None, read.keep_title, kept_names)
    if postprocess is not None:
        fields = postprocess.fields(fields)
    records, found = read_input(
        input_path, output_path, read.column, read.id_column, fmt, options.output, labelling.notify, **reading
    )
    named, model = model, str(Path(model).resolve()) if Path(model).exists() else model
    started = time.perf_counter()
    if not ray.is_initialized():  # a caller's own Ray session keeps its logging as it is
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        quiet_console()
    remote = ray.remote(num_cpus=1)(Labeller)
    actors = [remote.remote(model, labelling.all_scores, labelling.batch_size) for _ in range(workers)]
    try:
        # Waits for every actor to have loaded the pipeline (their start is loading, not labelling).
        check_fingerprints(named, pipeline["sha256"], ray.get([actor.fingerprint.remote() for actor in actors]))
    except BaseException:
        for actor in actors:
            ray.kill(actor)
        raise
    loading_seconds += time.perf_counter() - started
    run = Run(pipeline, input_path, fmt, named, found.get("read_as"), bool(found.get("encoding")), postprocess)
    blocks = (
        check_records(chunk, read.max_chars, read.keep_title, kept_names)
        for chunk in minibatch(records, rows_per_block)
    )
    # Two blocks per actor: one being labelled, one waiting, so no actor idles while the driver writes.
    labelled = postprocessed(label_in_order(actors, blocks, 2 * workers), postprocess)
    try:
        return write_predictions(
            output_path,
            fields,
            labelled,
            labelling.progress,
            read.max_chars,
            fmt,
            output_options=options.output,
            input_delimiter=found.get("delimiter"),
            detected_encoding=found.get("encoding"),
            loading_seconds=loading_seconds,
            run=run,
        )
    finally:
        for actor in actors:
            ray.kill(actor)
