"""`titlecat predict-ray`: the rows of `titlecat predict`, computed on a Ray cluster with Ray Data.

A read task streams the file through titlecat's own reader and title check (so line numbers
and bad rows are those of `titlecat predict`), an actor pool labels the batches (each actor
loads the pipeline once), and the driver writes the rows in input order with the same
atomic writer. Needs the `distributed` extra: pip install 'titlecat[distributed]'.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pyarrow as pa
import ray
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata
from spacy.util import minibatch

from .predict import (
    MAX_CHARS,
    Summary,
    check_records,
    label_records,
    load_pipeline,
    output_fields,
    pipeline_tasks,
    write_predictions,
)
from .readers import read_titles, title_format

CHECKED_SCHEMA = pa.schema([("line", pa.int64()), ("id", pa.string()), ("status", pa.string()), ("text", pa.string())])


def output_schema(fields: list[str]) -> pa.Schema:
    return pa.schema(
        [
            (
                name,
                pa.int64()
                if name == "line"
                else pa.float64()
                if ":" in name or name.endswith("_score")
                else pa.string(),
            )
            for name in fields
        ]
    )


def read_blocks(path: str, column: str, id_column: str | None, fmt: str, max_chars: int, rows_per_block: int):
    for chunk in minibatch(read_titles(path, column, id_column, fmt), rows_per_block):
        yield pa.Table.from_pylist(check_records(chunk, max_chars), schema=CHECKED_SCHEMA)


class TitleDatasource(Datasource):
    """One read task per input file, streaming checked rows in blocks."""

    def __init__(self, path: Path, column: str, id_column: str | None, fmt: str, max_chars: int, rows_per_block: int):
        self.path = str(Path(path).resolve())
        self.read = partial(read_blocks, self.path, column, id_column, fmt, max_chars, rows_per_block)

    def estimate_inmemory_data_size(self) -> int:
        return Path(self.path).stat().st_size

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        metadata = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(self.path,))
        return [ReadTask(self.read, metadata, schema=CHECKED_SCHEMA)]


class Labeller:
    """Ray actor: loads the pipeline once, then labels batch after batch."""

    def __init__(self, model: str, fields: list[str], all_scores: bool, batch_size: int):
        self.nlp = load_pipeline(model)
        self.tasks = pipeline_tasks(self.nlp)
        self.schema = output_schema(fields)
        self.all_scores = all_scores
        self.batch_size = batch_size
        self.batches = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        # The first batch outside a memory zone, as in titlecat predict: it warms the tokenizer's cache.
        in_zone = self.batches > 0
        self.batches += 1
        rows = label_records(self.nlp, self.tasks, batch.to_pylist(), self.all_scores, self.batch_size, 1, in_zone)
        return pa.Table.from_pylist(rows, schema=self.schema)


def predict_ray(
    input_path: Path | str,
    output_path: Path | str,
    model: str = "training/combined",
    column: str = "text",
    id_column: str | None = None,
    input_format: str | None = None,
    all_scores: bool = False,
    workers: int = 2,
    batch_size: int = 1000,
    max_chars: int = MAX_CHARS,
    address: str | None = None,
    progress: bool = True,
    rows_per_block: int = 5000,
) -> Summary:
    fmt = title_format(input_path, input_format)
    # The driver loads the pipeline too: a wrong model fails here, before any worker starts.
    tasks = pipeline_tasks(load_pipeline(model))
    fields = output_fields(tasks, all_scores, id_column is not None)
    model = str(Path(model).resolve()) if Path(model).exists() else model
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ray.data.DataContext.get_current().enable_progress_bars = False
    # The read task takes no CPU slot: with one actor per CPU it would otherwise never be scheduled.
    dataset = ray.data.read_datasource(
        TitleDatasource(input_path, column, id_column, fmt, max_chars, rows_per_block), ray_remote_args={"num_cpus": 0}
    ).map_batches(
        Labeller,
        fn_constructor_kwargs={"model": model, "fields": fields, "all_scores": all_scores, "batch_size": batch_size},
        batch_size=rows_per_block,
        batch_format="pyarrow",
        concurrency=workers,
        num_cpus=1,
    )
    chunks = (batch.to_pylist() for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
    return write_predictions(output_path, fields, chunks, progress)
