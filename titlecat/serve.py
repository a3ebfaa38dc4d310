"""`titlecat serve`: a labelling service over HTTP and a web page, one pipeline loaded per process.

- `POST /v1/label` labels a list of titles: the fields and statuses of `titlecat predict`, in input order.
- `POST /v1/label-file` labels an uploaded CSV/TSV/JSONL/Excel/text file with `predict_file`, sends it back.
- `GET /health`, `GET /v1/metadata` (labels, pipeline with its provenance, metrics), `GET /docs` (OpenAPI), `GET /`
  (the page, `titlecat/static/index.html`: no CDN, no build step).

Every response a client with the key (if any) gets carries `X-Titlecat-Pipeline: NAME@VERSION; sha256=<16 hex>`
(`PipelineHeader`, titlecat.provenance): which pipeline answered, and a fingerprint of its weights.

Requests from many clients wait together; a task takes what waits (up to `MAX_BATCH` titles, single titles
first) and labels it in one `nlp.pipe` on a thread of its own, so the event loop keeps reading and answering
requests while the pipeline runs, and a busy server labels many requests a batch. `--workers N` runs N such
processes (uvicorn workers, each calling `app_from_env`). `--api-key-env NAME` names the environment variable that
holds a key: then every route but `/health` and the page needs `Authorization: Bearer <key>` (`BearerKey`). Needs
the `serve` extra: pip install "titlecat[serve]".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import hmac
import ipaddress
import itertools
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, Field
from spacy.language import Language
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from . import __version__
from .combined import FACTORY as ANSWERS_FACTORY
from .predict import (
    MAX_CHARS,
    STATUSES,
    PredictOptions,
    ReadOptions,
    RunOptions,
    Summary,
    answers,
    check_review_below,
    check_title,
    column_names,
    load_pipeline,
    needs_review,
    output_fields,
    pipeline_tasks,
    predict_file,
)
from .provenance import HEADER as PIPELINE_HEADER
from .provenance import fingerprint, header_value, pipeline_provenance
from .readers import DataError
from .spreadsheet import FORMULA_CHARACTERS, parse_output_options
from .text_scoring import text_scorer

# Hosted enrichment APIs take 10-500 titles a request; 1,000 keeps one request's labelling under ~0.1 s here.
MAX_TITLES = 1000
MAX_BODY_BYTES = 4 * 2**20
MAX_UPLOAD_BYTES = 100 * 2**20
# Titles labelled in one nlp.pipe call at most (a larger request is labelled alone). A single title waits for
# the batch that is running: with 8 clients sending 100 titles, caps of 128, 256 and 1,000 gave about the same
# titles/s and single-title p50 latencies of 17-43, 48-60 and 69-94 ms on the loaded project machine.
MAX_BATCH = 128
# A batch of fewer titles than this takes no larger request.
SMALL_BATCH = 16
# Batching order: a request of n titles is due n ms after it came, so single titles go before requests of
# 100 that came up to 99 ms earlier, and a request that has waited long enough goes before anything newer.
SIZE_DELAY = 0.001
# The tokenizer caches nothing inside a memory zone: the first titles are labelled outside one to fill its
# bounded cache (10,000 entries) with common words, then every batch runs inside one so memory stays flat.
WARM_TITLES = 10_000
MODEL_ENV = "TITLECAT_SERVE_MODEL"
METRICS_ENV = "TITLECAT_SERVE_METRICS"
REVIEW_ENV = "TITLECAT_SERVE_REVIEW_BELOW"
# The NAME of the variable that holds the API key (--api-key-env), for the workers: the key itself stays where the
# user put it, in that variable, and never travels in argv or in another variable.
API_KEY_ENV = "TITLECAT_SERVE_API_KEY_ENV"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What needs no key: the health check, and the page, which holds no data and asks for the key itself.
OPEN_PATHS = frozenset({"/health", "/"})
SPLITS = ("test", "cv_dev", "ood")
ROW_FIELDS = ("line", "status")  # of predict's output rows: /v1/label answers in order, with no line
METRIC_KEYS = ("n", "accuracy", "macro_f1", "mae")
# The command-line options that predict's errors name, and the form fields of /v1/label-file that set them.
FORM_FIELDS = {
    "--format": "format",
    "--encoding": "encoding",
    "--delimiter": "delimiter",
    "--sheet": "sheet",
    "--id-column": "id_column",
    "--column": "column",
    "--output-delimiter": "output_delimiter",
    "--excel": "excel",
    "--neutralise-formulas": "neutralise_formulas",
    "--no-neutralise-formulas": "neutralise_formulas",
    "--keep-columns": "keep_columns",
    "--no-keep-title": "keep_title",
}
UPLOAD_FIELDS = {"file", "output", "all_scores", "review_below", *FORM_FIELDS.values()}
OPTION = re.compile("|".join(map(re.escape, FORM_FIELDS)) + r"\b")
OUTPUT_MEDIA = {
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "jsonl": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class PipelineChanged(Exception):
    """The pipeline's folder holds other weights than when the service started (uploads load their own copy)."""


def json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


def parse_review_below(value: object) -> float | None:
    """A review threshold from a request: a number between 0 and 1, or None; BadRequest naming the field."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        found = repr(value) if isinstance(value, int | float) and not isinstance(value, bool) else json_type(value)
        raise BadRequest(422, f"review_below: expected a number between 0 and 1, found {found}")
    return float(value)


def parse_label_request(body: bytes, max_titles: int = MAX_TITLES) -> tuple[list[str], list | None, dict]:
    """(titles, ids, options) of a /v1/label body, options being all_scores and review_below (None where the
    request has none); BadRequest naming the field otherwise."""
    if not body.strip():
        raise BadRequest(400, 'body: empty; expected a JSON object like {"titles": [...]}')
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest(400, "body: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise BadRequest(400, f"body: malformed JSON at {where}: {error.msg}") from None
    except RecursionError:
        raise BadRequest(400, "body: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest(422, f'body: expected a JSON object like {{"titles": [...]}}, found {json_type(data)}')
    unknown = sorted(set(data) - {"titles", "ids", "all_scores", "review_below"})
    if unknown:
        raise BadRequest(422, f"{unknown[0]}: unknown field (expected titles, ids, all_scores, review_below)")
    if "titles" not in data:
        raise BadRequest(422, "titles: missing (a list of job titles)")
    titles = data["titles"]
    if not isinstance(titles, list):
        raise BadRequest(422, f"titles: expected a list of strings, found {json_type(titles)}")
    if len(titles) > max_titles:
        raise BadRequest(413, f"titles: {len(titles):,} titles, more than the limit of {max_titles:,} a request")
    for index, title in enumerate(titles):
        if not isinstance(title, str):
            raise BadRequest(422, f"titles[{index}]: expected a string, found {json_type(title)}")
    ids = data.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or len(ids) != len(titles):
            found = f"{len(ids)}" if isinstance(ids, list) else json_type(ids)
            raise BadRequest(422, f"ids: expected a list as long as titles ({len(titles)}), found {found}")
        for index, value in enumerate(ids):
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise BadRequest(422, f"ids[{index}]: expected a string or an integer, found {json_type(value)}")
    all_scores = data.get("all_scores", False)
    if not isinstance(all_scores, bool):
        raise BadRequest(422, f"all_scores: expected true or false, found {json_type(all_scores)}")
    return titles, ids, {"all_scores": all_scores, "review_below": parse_review_below(data.get("review_below"))}


@dataclass(order=True)
class Job:
    """One request's titles, checked, waiting to be labelled; jobs are taken in the order of `due`."""

    due: float
    sequence: int
    checked: list[tuple[str, str]] = field(compare=False)  # (status, title) from check_title
    ids: list | None = field(compare=False)
    all_scores: bool = field(compare=False)
    future: asyncio.Future = field(compare=False, repr=False)


class Labeller:
    """Labels the titles of concurrent requests together: one pipeline thread, batches of what waits.

    Each request's titles are checked as `titlecat predict` checks them; only `ok` titles reach the pipeline.
    Waiting requests are taken by arrival time plus `SIZE_DELAY` per title, up to `max_batch` titles a batch:
    a single title overtakes waiting requests of 100 titles and waits for at most the batch that is running,
    and no request waits forever, since every later one is due later.
    """

    def __init__(self, nlp: Language, max_batch: int | None = None):
        self.nlp = nlp
        self.tasks = pipeline_tasks(nlp)
        # `answers` reads doc.cats itself: the pipeline's own answer component would do the same work again.
        for name in nlp.pipe_names:
            if nlp.get_pipe_meta(name).factory == ANSWERS_FACTORY:
                nlp.disable_pipe(name)
        self.max_batch = max_batch or MAX_BATCH
        self.titles_seen = 0
        self.stats = {"requests": 0, "batches": 0, "titles": 0}  # since start; in /health
        # Only this thread ever runs the pipeline: spaCy pipelines and memory zones are not thread-safe.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="titlecat-label")
        # The answer fields of a row that is not ok, all None (as `titlecat predict` leaves them empty).
        self.no_answers = {
            all_scores: dict.fromkeys(name for name in output_fields(self.tasks, all_scores) if name not in ROW_FIELDS)
            for all_scores in (False, True)
        }
        self.waiting: list[Job] = []  # a heap
        self.sequence = itertools.count()
        self.arrived: asyncio.Event | None = None
        self.worker: asyncio.Task | None = None

    async def start(self) -> None:
        self.arrived = asyncio.Event()
        self.worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def label(self, titles: Sequence[str], ids: list | None = None, all_scores: bool = False) -> list[dict]:
        """One row per title, in order: [id,] status and, per task, the label and its score (None unless ok)."""
        if not titles:
            return []
        loop = asyncio.get_running_loop()
        checked = [check_title(title) for title in titles]
        due = loop.time() + len(checked) * SIZE_DELAY
        job = Job(due, next(self.sequence), checked, ids, all_scores, loop.create_future())
        heapq.heappush(self.waiting, job)
        self.arrived.set()
        return await job.future

    def _next_batch(self) -> tuple[list[Job], int]:
        """The jobs due first, up to max_batch titles; a batch led by small jobs takes small jobs only, so that
        a few titles typed on the page are answered in a millisecond's batch, not with the next 100-title one."""
        jobs, count = [], 0
        while self.waiting:
            size = len(self.waiting[0].checked)
            if jobs and (count + size > self.max_batch or count < SMALL_BATCH <= count + size):
                break
            job = heapq.heappop(self.waiting)
            if not job.future.done():  # a cancelled request needs no labels
                jobs.append(job)
                count += len(job.checked)
        return jobs, count

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.waiting:
                self.arrived.clear()
                await self.arrived.wait()
            jobs, count = self._next_batch()
            if not jobs:
                continue
            self.stats["requests"] += len(jobs)
            self.stats["batches"] += 1
            self.stats["titles"] += count
            try:
                results = await loop.run_in_executor(self.executor, self._label_jobs, jobs)
            except Exception as error:  # a bug, not a bad request: answer every waiting request with it
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            for job, rows in zip(jobs, results, strict=True):
                if not job.future.done():  # a client that went away leaves a cancelled future
                    job.future.set_result(rows)

    def _label_jobs(self, jobs: list[Job]) -> list[list[dict]]:
        texts = [text for job in jobs for status, text in job.checked if status == "ok"]
        zone = self.nlp.memory_zone() if self.titles_seen >= WARM_TITLES else contextlib.nullcontext()
        self.titles_seen += len(texts)
        results = []
        with zone:
            # A pipeline of titlecat's parts is scored without Docs (titlecat.text_scoring), the same scores.
            scorer = text_scorer(self.nlp)
            if scorer is not None:
                all_cats = iter(scorer.cats(texts, self.max_batch))
            else:
                all_cats = (doc.cats for doc in self.nlp.pipe(texts, batch_size=self.max_batch))
            for job in jobs:
                rows = []
                for index, (status, _) in enumerate(job.checked):
                    row = {"id": job.ids[index]} if job.ids is not None else {}
                    row["status"] = status
                    if status == "ok":
                        row.update(answers(next(all_cats), self.tasks, job.all_scores))
                    else:
                        row.update(self.no_answers[job.all_scores])
                    rows.append(row)
                results.append(rows)
        return results


def split_metrics(scores: dict) -> dict:
    return {key: scores[key] for key in METRIC_KEYS if scores.get(key) is not None}


def pipeline_metadata(nlp: Language, metrics_paths: Sequence[Path | str] = ()) -> dict:
    """Labels, name, version, provenance (titlecat.provenance.pipeline_provenance: sha256 of the weights, what it was
    trained on; as `titlecat predict` writes it beside its output) and the test / cv-dev / OOD metrics of a pipeline.

    Metrics come from evaluate's JSON files where given (`--metrics`), else from the meta that
    scripts/package.py writes into a wheel (`titlecat.tasks.<task>.metrics`, or `performance`).
    """
    tasks = pipeline_tasks(nlp)
    meta = nlp.meta
    packaged = (meta.get("titlecat") or {}).get("tasks") or {}
    performance = meta.get("performance") or {}
    metrics: dict[str, dict] = {}
    for task in tasks:
        if isinstance(packaged.get(task), dict) and isinstance(packaged[task].get("metrics"), dict):
            metrics[task] = packaged[task]["metrics"]
        else:
            found = {split: {key: performance.get(f"{task}_{split}_{key}") for key in METRIC_KEYS} for split in SPLITS}
            metrics[task] = {split: split_metrics(scores) for split, scores in found.items() if any(scores.values())}
    for path in metrics_paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"--metrics {path}: not the JSON of scripts/evaluate.py: {error}") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(split, {}), dict) for split in SPLITS):
            raise ValueError(f"--metrics {path}: expected evaluate's object with task, test, cv_dev and ood")
        if data.get("task") in tasks:  # a metrics file of a task this pipeline does not answer is left out
            metrics[data["task"]] = {split: split_metrics(data[split]) for split in SPLITS if split in data}
    return {
        "pipeline": {**pipeline_provenance(nlp), "pipes": nlp.pipe_names},
        "tasks": {task: {"labels": list(labels), "metrics": metrics[task]} for task, labels in tasks.items()},
        "statuses": list(STATUSES),
        "limits": {
            "max_titles": MAX_TITLES,
            "max_chars": MAX_CHARS,
            "max_body_bytes": MAX_BODY_BYTES,
            "max_upload_bytes": MAX_UPLOAD_BYTES,
        },
        "titlecat_version": __version__,
    }


class PipelineHeader:
    """ASGI middleware: every HTTP response carries `X-Titlecat-Pipeline` (titlecat.provenance.header_value)."""

    def __init__(self, app, value: str):
        self.app = app
        self.header = (PIPELINE_HEADER.lower().encode("ascii"), value.encode("ascii"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


class BodyLimit:
    """ASGI middleware: a request body over its path's limit gets 413 before the app parses it, and the connection
    is closed: on its Content-Length, before any of the body is read; a chunked body, once more than the limit has
    arrived (else uvicorn would read and drop the rest of it, however long, to keep the connection)."""

    def __init__(self, app, limits: dict[str, int], default: int):
        self.app = app
        self.limits = limits
        self.default = default

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        message = f"body: over the limit of {limit:,} bytes for {scope['path']}"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            body = json.dumps({"detail": message}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 413, "headers": headers + [(b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def limited_receive():
            # A chunked body has no length up front: count it as it arrives. The HTTPException is raised where
            # the app reads the body, inside FastAPI's exception handling, which answers 413.
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > limit:
                raise HTTPException(413, message)
            return event

        async def send_closing_when_over(event):
            if event["type"] == "http.response.start" and received > limit:
                event = {**event, "headers": [*event.get("headers", []), (b"connection", b"close")]}
            await send(event)

        await self.app(scope, limited_receive, send_closing_when_over)


def api_key_from_env(name: str) -> str:
    """The API key held by the environment variable `name` (--api-key-env); ValueError naming the variable, never
    the key, where `name` is not a variable's name (perhaps the key itself: not repeated) or the variable is unset,
    empty, or holds what an Authorization header cannot carry as is."""
    if not ENV_NAME.fullmatch(name):
        raise ValueError(
            "--api-key-env: expected the name of the environment variable that holds the key (letters, digits and "
            "_, e.g. TITLECAT_API_KEY), not the key itself"
        )
    key = os.environ.get(name, "")
    if not key:
        raise ValueError(
            f"--api-key-env {name}: the environment variable {name} is {'empty' if name in os.environ else 'unset'}; "
            f'set it to the key (e.g. export {name}="$(openssl rand -hex 32)") or leave --api-key-env out'
        )
    if not all("!" <= character <= "~" for character in key):
        raise ValueError(
            f"--api-key-env {name}: the key holds a space, a control or a non-ASCII character, which an "
            "Authorization header does not carry as is; use printable ASCII (e.g. openssl rand -hex 32)"
        )
    return key


class BearerKey:
    """ASGI middleware: every path but OPEN_PATHS needs `Authorization: Bearer <key>`, the key compared in constant
    time (hmac.compare_digest); 401 otherwise, in the service's error shape, before the app reads the body."""

    def __init__(self, app, key: str):
        self.app = app
        self.key = key.encode("ascii")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization")
        scheme, _, token = (header or b"").strip().partition(b" ")
        if header is None:
            message = "authorization: missing; this service needs the header 'Authorization: Bearer <key>'"
        elif scheme.lower() != b"bearer":
            message = "authorization: expected 'Bearer <key>'"
        elif not hmac.compare_digest(token.strip(), self.key):
            message = "authorization: wrong key"
        else:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="titlecat"'),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class LabelRequest(BaseModel):
    """The body of POST /v1/label (documentation; the endpoint checks the body itself to name the bad field)."""

    titles: list[str] = Field(
        max_length=MAX_TITLES,
        description=f"Job titles, any language; at most {MAX_TITLES} a request (413), each up to {MAX_CHARS} "
        "characters after whitespace normalisation (longer ones get status too_long)",
        examples=[["Leiterin Vertrieb DACH", "Junior Data Scientist"]],
    )
    ids: list[str | int] | None = Field(None, description="Copied to each result as 'id'; as long as titles")
    all_scores: bool = Field(False, description="Add every label's score as '<task>:<label>'")
    review_below: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Add needs_review: true where a task's score is below this (null for rows not ok); "
        "default: the server's --review-below, if any",
    )


class LabelResult(BaseModel):
    model_config = {"extra": "allow"}
    id: str | int | None = Field(None, description="Only when the request had ids")
    status: str = Field(description="ok, empty, not_text (no letter), too_long or undecodable (a lone surrogate)")
    seniority: str | None = Field(None, description="Only for a pipeline that answers seniority; None unless ok")
    seniority_score: float | None = None
    department: str | None = Field(None, description="Only for a pipeline that answers department; None unless ok")
    department_score: float | None = None
    needs_review: bool | None = Field(None, description="Only when review_below applies: a score below it")


class LabelResponse(BaseModel):
    results: list[LabelResult]


class ErrorResponse(BaseModel):
    detail: str = Field(description="The field, then what is wrong with it")


LABEL_SCHEMA = LabelRequest.model_json_schema()
ERRORS = {status: {"model": ErrorResponse} for status in (400, 413, 422)}


def create_app(
    model: str | Path,
    metrics_paths: Sequence[Path | str] = (),
    review_below: float | None = None,
    api_key: str | None = None,
) -> FastAPI:
    """The service for one pipeline (a folder or an installed package name), loaded here, once. `review_below`
    is the review threshold of requests that name none (None: no needs_review unless a request asks); `api_key`,
    the key every route but /health and the page needs (None: none)."""
    check_review_below(review_below)
    if api_key is not None and not api_key:  # "Bearer " with nothing after it would be the key
        raise ValueError("api_key: empty; None serves with no key")
    default_review_below = review_below  # the upload handler's own `review_below` field shadows the name
    nlp = load_pipeline(model)
    labeller = Labeller(nlp)
    metadata = pipeline_metadata(nlp, metrics_paths)
    metadata["review_below"] = review_below  # the default of requests that name no threshold
    page = resources.files("titlecat").joinpath("static", "index.html").read_text(encoding="utf-8")
    # Files are labelled on their own copy of the pipeline, loaded at the first upload, on their own thread:
    # a large upload slows /v1/label down (the two share the CPUs) but never stops it.
    files = {"executor": ThreadPoolExecutor(1, thread_name_prefix="titlecat-file"), "nlp": None}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await labeller.start()
        yield
        await labeller.stop()
        files["executor"].shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="titlecat",
        version=__version__,
        description="Seniority and department of job titles in any language. "
        f"Pipeline: {metadata['pipeline']['name']} {metadata['pipeline']['version']}.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limits={"/v1/label-file": MAX_UPLOAD_BYTES}, default=MAX_BODY_BYTES)
    # Outside BodyLimit (its 413 carries the header too), inside BearerKey (a 401 names no pipeline).
    app.add_middleware(PipelineHeader, value=header_value(metadata["pipeline"]))
    if api_key is not None:  # added last, so it runs first: a request without the key learns nothing, not even 413
        app.add_middleware(BearerKey, key=api_key)

    def error(status: int, message: str) -> Response:
        return Response(json.dumps({"detail": message}), status_code=status, media_type="application/json")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "form")) or "body"
        return error(422, f"{where}: {first['msg']}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        """The service is up and its pipeline loaded; this process's labelling so far (requests, nlp.pipe batches)."""
        return {"status": "ok", "pipeline": metadata["pipeline"]["name"], "pid": os.getpid(), **labeller.stats}

    @app.get("/v1/metadata")
    async def get_metadata() -> dict:
        """The pipeline's name, version, tasks with their labels and test / cv-dev / OOD metrics, and the limits."""
        return metadata

    @app.post(
        "/v1/label",
        response_model=LabelResponse,
        responses=ERRORS,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": LABEL_SCHEMA}}}},
    )
    async def label(request: Request) -> Response:
        """Label titles: one result per title, in order, with the fields and statuses of `titlecat predict`.

        Bad requests: malformed JSON (400), a body over 4 MiB or more than 1,000 titles (413), a field of the
        wrong type (422); the message names the field. A bad title is not a bad request: its row gets a status.
        """
        try:
            titles, ids, options = parse_label_request(await request.body())
        except BadRequest as bad:
            return error(bad.status, bad.message)
        rows = await labeller.label(titles, ids, options["all_scores"])
        threshold = default_review_below if options["review_below"] is None else options["review_below"]
        if threshold is not None:
            for row in rows:
                row["needs_review"] = needs_review(row, labeller.tasks, threshold)
        # ASCII output: an id may hold a lone surrogate, which only an escape can carry.
        return Response(json.dumps({"results": rows}, separators=(",", ":")), media_type="application/json")

    def predict_upload(input_path: Path, output_path: Path, options: PredictOptions) -> Summary:
        if files["nlp"] is None:
            nlp = load_pipeline(model)
            if fingerprint(nlp) != metadata["pipeline"]["sha256"]:
                # The header and /v1/metadata name the weights loaded at the start: an upload gets those or none.
                raise PipelineChanged(
                    f"pipeline: {model} holds other weights (sha256 {fingerprint(nlp)[:16]}) than when the service "
                    f"started (sha256 {metadata['pipeline']['sha256'][:16]}): restart the service"
                )
            files["nlp"] = nlp
            zone = contextlib.nullcontext()  # the first upload fills the tokenizer's cache (see WARM_TITLES)
        else:
            # predict_file labels a file's first chunk outside a memory zone; this outer zone frees what it adds
            # too, so that upload after upload leaves nothing in the vocab.
            zone = files["nlp"].memory_zone()
        with zone:
            return predict_file(files["nlp"], input_path, output_path, options)

    @app.post("/v1/label-file", response_class=FileResponse, responses=ERRORS)
    async def label_file(
        request: Request,
        file: UploadFile = File(description="CSV, TSV, JSONL, Excel .xlsx or text (one title a line), by its suffix"),
        column: str = Form("text", description="CSV/TSV/Excel column or JSONL field holding the title"),
        id_column: str = Form("", description="Column/field copied to the output as 'id'"),
        input_format: str = Form("", alias="format", description="csv, tsv, jsonl, xlsx or text; default: the suffix"),
        encoding: str = Form(
            "", description="The file's text encoding (e.g. cp1252); default UTF-8, or one detected where it is not"
        ),
        delimiter: str = Form("", description="CSV/TSV separator (',', ';' or 'tab'); default: found from the header"),
        sheet: str = Form("", description="Excel sheet: its name or number (1 = the first); default the first"),
        keep_title: bool = Form(True, description="Copy each row's title, as read, into the output ('title')"),
        keep_columns: str = Form(
            "",
            description="Comma-separated columns/fields to copy into the output, e.g. 'email,company'; NAME=NEW_NAME "
            "writes one under another name, e.g. 'status=crm_status'",
        ),
        output: str = Form("", description="csv, tsv, jsonl or xlsx; default: the input's, or csv"),
        all_scores: bool = Form(False, description="Add the score of every label"),
        neutralise_formulas: bool = Form(
            True,
            description=f"A copied text cell (id, kept column) starting with {FORMULA_CHARACTERS} (a formula to a "
            "spreadsheet): written with a leading ' in CSV/TSV, marked as text in xlsx; false: as read",
        ),
        excel: bool = Form(
            False, description="CSV/TSV for Excel: a UTF-8 byte-order mark and, in CSV, the upload's separator"
        ),
        output_delimiter: str = Form("", description="CSV/TSV separator of the answer (',', ';', 'tab'); default ','"),
        review_below: float | None = Form(
            None, ge=0.0, le=1.0, description="Add needs_review (a score below this); default: the server's"
        ),
    ) -> Response:
        """Label an uploaded file as `titlecat predict` does and send it back (line, [id], title, [kept columns],
        status, answers).

        Up to 100 MiB; a malformed file gets 400 naming its line, and one where no row could be labelled, or most
        rows could not be read (undecodable, malformed), 422 saying why. Large files: use `titlecat predict`.
        """
        unknown = sorted(set((await request.form()).keys()) - UPLOAD_FIELDS)  # the form as FastAPI parsed it
        if unknown:
            return error(422, f"{unknown[0]}: unknown form field (expected {', '.join(sorted(UPLOAD_FIELDS))})")
        name = Path(file.filename or "titles.csv").name
        suffix = Path(name).suffix.lower()
        output = output or {".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".xlsx": "xlsx"}.get(suffix, "csv")
        if output not in OUTPUT_MEDIA:
            return error(422, f"output: expected csv, tsv, jsonl or xlsx, found {output!r}")
        folder = Path(tempfile.mkdtemp(prefix="titlecat-serve-"))
        input_path = folder / f"input{suffix}"
        output_name = f"{Path(name).stem or 'titles'}.labelled.{output}"
        output_path = folder / output_name
        try:
            with input_path.open("wb") as target:
                await asyncio.to_thread(shutil.copyfileobj, file.file, target)
            read = ReadOptions(
                column=column,
                id_column=id_column or None,
                input_format=input_format or None,
                encoding=encoding or None,
                delimiter=delimiter or None,
                sheet=sheet or None,
                keep_title=keep_title,
                keep_columns=column_names(keep_columns),
            )
            output_options = parse_output_options(neutralise_formulas, excel, output_delimiter)
            postprocess = None
            threshold = default_review_below if review_below is None else review_below
            if threshold is not None:
                from .confidence import RowPostprocess  # scikit-learn: loaded at the first upload that asks

                postprocess = RowPostprocess(threshold)
            # No sidecar: the answer is the file, its provenance in the X-Titlecat-Pipeline header.
            run = RunOptions(all_scores, progress=False)
            options = PredictOptions(read, run, output_options, postprocess, sidecar=False)
            summary = await asyncio.get_running_loop().run_in_executor(
                files["executor"], partial(predict_upload, input_path, output_path, options)
            )
        except (DataError, ValueError, OSError) as bad:
            shutil.rmtree(folder, ignore_errors=True)
            message = str(bad).replace(str(input_path), name)
            option = OPTION.match(message)
            if option:  # a bad form value ("--encoding 'nonsense': ..."): named by its field
                reason = in_form_terms(message[option.end() :].lstrip(": "))
                return error(422, f"{FORM_FIELDS[option.group()]}: {reason}")
            return error(400, "file: " + in_form_terms(message))
        except PipelineChanged as changed:
            shutil.rmtree(folder, ignore_errors=True)
            return error(503, str(changed))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        failure = summary.failure()
        if failure:
            shutil.rmtree(folder, ignore_errors=True)
            return error(422, "file: " + in_form_terms("; ".join([f"{name}: {failure}", *summary.hints()])))
        return FileResponse(
            output_path,
            media_type=OUTPUT_MEDIA[output],
            filename=output_name,
            headers={"X-Titlecat-Summary": str(summary), "X-Titlecat-Counts": json.dumps(dict(summary.counts))},
            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
        )

    app.state.labeller = labeller
    app.state.files = files
    return app


def in_form_terms(message: str) -> str:
    """predict's error for an upload, with each command-line option it names as the form field that sets it."""
    return OPTION.sub(lambda match: f"the form field {FORM_FIELDS[match.group()]!r}", message)


def app_from_env() -> FastAPI:
    """The app factory of each `--workers` process: the model, metrics and the name of the key's variable come from
    the environment."""
    metrics = [path for path in os.environ.get(METRICS_ENV, "").split(os.pathsep) if path]
    review_below = os.environ.get(REVIEW_ENV)
    key_env = os.environ.get(API_KEY_ENV)
    api_key = api_key_from_env(key_env) if key_env else None
    return create_app(os.environ[MODEL_ENV], metrics, float(review_below) if review_below else None, api_key)


def is_loopback(host: str) -> bool:
    """Whether every address `host` stands for is a loopback one (127.0.0.0/8, ::1; a name as it resolves)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def check_address(host: str, port: int) -> None:
    """OSError naming --host/--port where the service could not listen, found before the pipeline loads (uvicorn
    would fail only after it, with a traceback). Bound as uvicorn binds, then released."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror as error:
            raise OSError(f"--host {host}: not an address of this machine ({error.strerror})") from None
        except OSError as error:
            hint = "another process listens there: stop it, or choose another --port"
            if error.errno != errno.EADDRINUSE:
                hint = "choose another --port or --host"
            raise OSError(f"--port {port}: cannot listen on {host}:{port} ({error.strerror}); {hint}") from None


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    metrics_paths: Sequence[Path] = (),
    access_log: bool = False,
    log_level: str = "info",
    review_below: float | None = None,
    api_key_env: str | None = None,
) -> None:
    """Run the service until interrupted. One worker loads the pipeline here; N workers load it in each process.
    `api_key_env`: the name of the environment variable that holds the API key (None: no key; a warning on stderr
    where the service listens on more than loopback)."""
    api_key = None if api_key_env is None else api_key_from_env(api_key_env)
    check_address(host, port)
    if api_key is None and not is_loopback(host):
        print(
            f"⚠ --host {host}: listening beyond this machine with no key, anyone who can reach port {port} can use "
            "the service; --api-key-env NAME asks every request for the key held by the environment variable NAME "
            "(or serve it behind a proxy that authenticates)",
            file=sys.stderr,
            flush=True,
        )
    import uvicorn

    path = Path(model)
    model = str(path.resolve()) if path.exists() else model
    options = {"host": host, "port": port, "access_log": access_log, "log_level": log_level}
    check_review_below(review_below)
    if workers == 1:
        uvicorn.run(create_app(model, metrics_paths, review_below, api_key), **options)
        return
    os.environ[MODEL_ENV] = model
    os.environ[REVIEW_ENV] = "" if review_below is None else repr(review_below)
    os.environ[API_KEY_ENV] = api_key_env or ""  # the variable's name: each worker reads the key from it
    os.environ[METRICS_ENV] = os.pathsep.join(str(Path(p).resolve()) for p in metrics_paths)
    uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **options)


def start_server(
    model: Path | str,
    port: int,
    log: Path,
    options: Sequence[str] = (),
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
):
    """`titlecat serve` in a subprocess on 127.0.0.1:port, returned once /health answers (for the load
    benchmark, the soak and the page check); `env`: its environment (None: this process's). Its log goes to a
    file: a pipe nobody reads would block it once full."""
    import subprocess
    import sys
    import time

    import httpx

    command = [sys.executable, "-m", "titlecat", "serve", "--model", str(model), "--port", str(port), *options]
    with Path(log).open("w") as file:
        server = subprocess.Popen(command, stdout=file, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"titlecat serve exited: {Path(log).read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"titlecat serve did not answer /health within {timeout:.0f} s")
