"""`titlecat predict`: label a file of job titles with a trained pipeline (console script)."""

from __future__ import annotations

from pathlib import Path

import typer

from .predict import MAX_CHARS, load_pipeline, predict_file
from .preflight import PreflightError
from .readers import DataError

app = typer.Typer(help="Seniority and department of job titles.", no_args_is_help=True, add_completion=False)

MODEL = typer.Option(
    "training/combined",
    "--model",
    "-m",
    help="Pipeline folder or installed wheel's package name (e.g. xx_titlecat_combined_cpu). The default is made "
    "by `spacy project run all` in the project folder",
)
COLUMN = typer.Option("text", "--column", "--field", help="CSV/TSV column or JSONL field holding the title")
ID_COLUMN = typer.Option(None, "--id-column", "--id-field", help="Column/field copied to the output as 'id'")
FORMAT = typer.Option(None, "--format", help="csv, tsv, jsonl or text; default: from the input's suffix")
ALL_SCORES = typer.Option(False, "--all-scores", help="Add the score of every label")
BATCH_SIZE = typer.Option(1000, help="Titles per nlp.pipe batch")
MAX_LENGTH = typer.Option(MAX_CHARS, "--max-chars", help="Longer titles get status too_long")


def fail(error: Exception) -> None:
    typer.secho(f"✘ {error}", fg="red", err=True)
    raise typer.Exit(1)


@app.command()
def predict(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV, TSV, JSONL or text (one a line)"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Output .csv, .tsv or .jsonl"),
    model: str = MODEL,
    column: str = COLUMN,
    id_column: str | None = ID_COLUMN,
    input_format: str | None = FORMAT,
    all_scores: bool = ALL_SCORES,
    n_process: int = typer.Option(1, help="Processes for nlp.pipe"),
    batch_size: int = BATCH_SIZE,
    chunk_size: int = typer.Option(20000, help="Rows read, labelled and written at a time (memory stays flat)"),
    max_chars: int = MAX_LENGTH,
    progress: bool = typer.Option(True, help="Progress bar with titles/s on stderr"),
    gpu_id: int = typer.Option(-1, help="GPU to predict on (a trf pipeline needs one to be fast); -1: CPU"),
):
    """Label every title of a file: line, [id], status, seniority, its score, department, its score.

    Bad rows (empty, not text, too long) get a status and empty answers and are counted at the end;
    a malformed file stops with its line. The output appears only when complete.
    """
    if gpu_id >= 0 and n_process != 1:
        fail(ValueError(f"--gpu-id {gpu_id} predicts in one process: drop --n-process {n_process}"))
    try:
        summary = predict_file(
            load_pipeline(model, gpu_id),
            input_path,
            output_path,
            column,
            id_column,
            input_format,
            all_scores,
            n_process,
            batch_size,
            chunk_size,
            max_chars,
            progress,
        )
    except (DataError, PreflightError, ValueError, OSError) as error:
        fail(error)
    typer.secho(f"✔ {output_path}: {summary}", fg="green", err=True)


@app.command("predict-ray")
def predict_ray_command(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="On storage every worker can read"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Output .csv, .tsv or .jsonl, written by the driver"),
    model: str = MODEL,
    column: str = COLUMN,
    id_column: str | None = ID_COLUMN,
    input_format: str | None = FORMAT,
    all_scores: bool = ALL_SCORES,
    workers: int = typer.Option(2, help="Ray actors, each loading the pipeline once"),
    batch_size: int = BATCH_SIZE,
    max_chars: int = MAX_LENGTH,
    address: str | None = typer.Option(None, help="Ray cluster address (e.g. 'auto'); default: a local cluster"),
    progress: bool = typer.Option(True, help="Progress bar with titles/s on stderr"),
):
    """The same rows as `predict`, computed on a Ray cluster (pip install 'titlecat[distributed]')."""
    from .distributed import predict_ray

    try:
        summary = predict_ray(
            input_path,
            output_path,
            model,
            column,
            id_column,
            input_format,
            all_scores,
            workers,
            batch_size,
            max_chars,
            address,
            progress,
        )
    except (DataError, ValueError, OSError) as error:
        fail(error)
    typer.secho(f"✔ {output_path}: {summary}", fg="green", err=True)
