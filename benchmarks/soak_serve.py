"""Soak of `titlecat serve` on loopback: concurrent clients for a bounded time, good and bad requests mixed.

Starts `titlecat serve` (a subprocess on a free 127.0.0.1 port, its temporary files in a folder of its own) on
--model, then --clients clients send requests back to back for --seconds, each drawn from a shuffled deck of
request kinds (KINDS, as many cards of each as its weight: every kind comes up in each round of 100 requests):
good single-title and batch requests, malformed JSON, fields of the wrong type, too many titles, bodies over the
server's limit (announced by Content-Length, chunked, and an upload), very long titles, bodies trickled slowly,
file uploads (CSV, TSV, JSONL, text, Excel) and bad ones, and, with --api-key-env, requests without the key.
Titles come from a pool of --distinct-titles generated ones (several languages, most with a token of their own),
so that the pipeline's memo of title pieces (titlecat.components.FeatureTable, bounded at 2^17 keys) fills during
the warm-up and growth after it means a leak; with 0 every title is new and the memo grows to its bound.

Every answer is checked against what its kind expects (status and, for 200, the rows); a request with no answer
within --timeout counts as unanswered, as does a connection closed without an answer, except for the oversized
kinds, whose connection the server may close by its own limits. The server's RSS, open files, CPU time and the
load average are sampled meanwhile. Writes a Markdown report to --out and the numbers (with the samples) as JSON
beside it, the server's log as .log; exits 1 where a request got a 5xx, an answer its kind does not expect or no
answer, or the server died or logged an error. The targets (issue 49) are reported, not enforced: no 5xx, RSS
growth after the warm-up at most 5%, p99 latency of single-title requests at most 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import itertools
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import typer
from bench_serve import cpu_model  # this folder: the scripts run as `python benchmarks/...`

from titlecat.predict import MAX_CHARS, check_title
from titlecat.serve import MAX_BODY_BYTES, MAX_TITLES, MAX_UPLOAD_BYTES, start_server

TARGET_RSS_GROWTH = 5.0  # % after the warm-up
TARGET_SINGLE_P99_MS = 50.0
# The oversized bodies offer this many times the limit: a server that read them whole would take all of it.
OVERSIZE_FACTOR = {"/v1/label": 8, "/v1/label-file": 2}
FILLER = b" " * 2**16
# onnxruntime (the multilingual pipelines' encoder) writes this to the temporary folder once, at its first run: a
# session id, not something a request left.
ONNXRUNTIME_SESSION_FILE = ".ses"
BOUNDARY = "titlecat-soak-boundary"
# Words of job titles in several languages and scripts; most titles add a token of their own (a region and a
# number), new to the server's vocab until the pool of titles has been seen.
LEVELS = ["Junior", "Senior", "Lead", "Head of", "Chief", "VP", "Leiterin", "Responsable", "Stagiaire", "Директор"]
LEVELS += ["Werkstudent", "Principal", "Assistant", "Geschäftsführer", "Jefe de", "主任", "مدير"]
FUNCTIONS = ["Sales", "Marketing", "Vertrieb", "Data Scientist", "Software Engineer", "Comptabilité", "Einkauf"]
FUNCTIONS += ["Human Resources", "Customer Success", "Projektmanagement", "по продажам", "营销", "المبيعات", "IT"]
REGIONS = ["DACH", "EMEA", "Nord", "Region", "Werk", "Zone", "APAC", "Sud"]


@dataclass
class Record:
    """One request: what it was, what it expected, what came back and when."""

    kind: str
    variant: str = ""
    expected: frozenset[int] = frozenset({200})
    may_close: bool = False  # an oversized body: the server may close the connection without an answer
    status: int | None = None
    failure: str | None = None  # no answer: "closed" (by the server), "timeout" (--timeout), "refused"
    problem: str | None = None  # an answer its kind does not expect
    seconds: float = 0.0
    titles: int = 0  # titles (or rows of a file) sent to be labelled
    sent: int | None = None  # bytes of an oversized body the client sent before the answer
    offered: int | None = None  # bytes of that body in all


@dataclass
class Samples:
    """The server process and the machine, every `interval` seconds: (seconds since the load began, value)."""

    rss: list[tuple[float, int]] = field(default_factory=list)  # bytes
    fds: list[tuple[float, int]] = field(default_factory=list)
    load: list[tuple[float, float]] = field(default_factory=list)  # 1-minute load average


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process: psutil where installed, else /proc/<pid>/status (VmRSS)."""
    try:
        import psutil
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise OSError(f"no VmRSS in /proc/{pid}/status") from None
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error as error:  # gone: as reading /proc would fail
        raise OSError(str(error)) from None


def open_files(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return None


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of a process so far (Linux)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def new_title(rng: random.Random) -> str:
    title = f"{rng.choice(LEVELS)} {rng.choice(FUNCTIONS)}"
    return f"{title} {rng.choice(REGIONS)}{rng.randrange(10**6)}" if rng.random() < 0.7 else title


def json_body(data: object) -> bytes:
    return json.dumps(data).encode()  # ASCII: escapes carry any character


def multipart(filename: str, content: bytes, fields: dict[str, str]) -> bytes:
    """A multipart/form-data body: the form fields, then the file."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
    parts.append(f"{head}Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
JSON = {"Content-Type": "application/json"}


def table_file(kind: str, titles: list[str]) -> tuple[str, bytes, dict[str, str]]:
    """(file name, content, form fields) of an upload of `titles` in a format: csv, tsv, jsonl or text."""
    if kind == "jsonl":
        rows = "".join(json.dumps({"id": index, "title": title}) + "\n" for index, title in enumerate(titles))
        return "titles.jsonl", rows.encode(), {"column": "title", "id_column": "id"}
    if kind == "text":
        return "titles.txt", "".join(title + "\n" for title in titles).encode(), {}
    separator = "\t" if kind == "tsv" else ","
    lines = [f"id{separator}title"] + [f'{index}{separator}"{title}"' for index, title in enumerate(titles)]
    return f"titles.{kind}", ("\n".join(lines) + "\n").encode(), {"column": "title", "id_column": "id"}


def excel_files(rng: random.Random) -> list[tuple[bytes, int]]:
    """Workbooks of a few sizes, built up front (openpyxl would hold up the clients' event loop): (bytes, rows)."""
    from openpyxl import Workbook

    workbooks = []
    for rows in (3, 40, 250):
        workbook = Workbook()
        sheet = workbook.active
        sheet.append(["id", "title"])
        for index in range(rows):
            sheet.append([index, new_title(rng)])
        buffer = io.BytesIO()
        workbook.save(buffer)
        workbooks.append((buffer.getvalue(), rows))
    return workbooks


@dataclass
class Plan:
    """What the clients send: which kinds (name: (weight, send)), how many clients for how long, and with what."""

    kinds: dict[str, tuple[int, Send]]
    seconds: float
    clients: int
    timeout: float
    key: str | None
    seed: int
    distinct_titles: int  # the size of the pool titles are drawn from; 0: every title new


class Soak:
    """The clients' shared state: one HTTP connection pool, the deck of kinds, the prebuilt bodies, the records."""

    def __init__(self, client: httpx.AsyncClient, plan: Plan):
        self.client = client
        self.url = str(client.base_url)
        # The oversized kinds' blocking requests: one at a time a client.
        self.threads = ThreadPoolExecutor(plan.clients, thread_name_prefix="soak-blocking")
        self.timeout = plan.timeout
        self.auth = {"Authorization": f"Bearer {plan.key}"} if plan.key else {}
        self.key = plan.key
        rng = random.Random(plan.seed)
        deck = [name for name, (weight, _) in plan.kinds.items() for _ in range(weight)]
        rng.shuffle(deck)
        self.deck = itertools.cycle(deck)  # shared by the clients: one event loop, so drawing needs no lock
        self.kinds = plan.kinds
        self.excel = excel_files(rng)
        self.pool = [new_title(rng) for _ in range(plan.distinct_titles)]  # empty: every title new
        length = MAX_CHARS - 1
        # Long titles: exactly the limit (ok), one over, and far over (too_long), as long as a body allows.
        self.long_titles = [("Sales Manager " * MAX_CHARS)[:length] + "X", "S" * (MAX_CHARS + 1)]
        self.long_titles += ["Vertriebsleiter " * 1000, "Head of Sales " * 100_000]
        self.records: list[Record] = []

    def title(self, rng: random.Random) -> str:
        return rng.choice(self.pool) if self.pool else new_title(rng)

    async def post(self, record: Record, path: str, content, headers: dict[str, str]) -> httpx.Response:
        response = await self.client.post(path, content=content, headers={**self.auth, **headers})
        record.status = response.status_code
        return response

    async def run_one(self, name: str, rng: random.Random) -> Record:
        record = Record(name)
        _, send = self.kinds[name]
        start = time.perf_counter()
        try:
            await asyncio.wait_for(send(self, rng, record), self.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):  # the whole request, or one of its reads or writes
            record.failure = "timeout"
        except httpx.ConnectError:
            record.failure = "refused"
        except httpx.TransportError:  # RemoteProtocolError, ReadError, WriteError: the server closed it
            record.failure = "closed"
        except (ValueError, KeyError, TypeError) as error:  # a 200 whose body is not what /v1/label answers
            record.problem = f"{record.variant or name}: {record.status}, but {error!r}"
        record.seconds = time.perf_counter() - start
        if record.status is not None and record.status not in record.expected and record.problem is None:
            record.problem = f"{record.variant or name}: {record.status}, expected {sorted(record.expected)}"
        return record

    async def client_loop(self, rng: random.Random, stop: float) -> None:
        while time.perf_counter() < stop:
            self.records.append(await self.run_one(next(self.deck), rng))


def check_rows(record: Record, response: httpx.Response, titles: list[str], ids: list | None = None) -> None:
    """A 200 of /v1/label: one row per title, in order, with check_title's status (as predict) and the ids."""
    if response.status_code != 200:
        return
    rows = response.json()["results"]
    statuses = [row["status"] for row in rows]
    expected = [check_title(title)[0] for title in titles]
    if statuses != expected:
        record.problem = f"{record.kind}: statuses {Counter(statuses)}, expected {Counter(expected)}"
    elif ids is not None and [row["id"] for row in rows] != ids:
        record.problem = f"{record.kind}: the ids came back out of order"


def check_upload(record: Record, response: httpx.Response, rows: int) -> None:
    """A 200 of /v1/label-file: the counts of the summary header add up to the rows sent."""
    if response.status_code == 200:
        counts = json.loads(response.headers.get("x-titlecat-counts", "{}"))
        if sum(counts.values()) != rows:
            record.problem = f"{record.variant}: {sum(counts.values())} rows labelled of {rows}"


async def single(soak: Soak, rng: random.Random, record: Record) -> None:
    titles = [soak.title(rng)]
    record.titles = len(titles)
    check_rows(record, await soak.post(record, "/v1/label", json_body({"titles": titles}), JSON), titles)


async def batch(soak: Soak, rng: random.Random, record: Record) -> None:
    titles = [soak.title(rng) for _ in range(rng.randint(2, 200))]
    ids = [f"row-{index}" for index in range(len(titles))]
    record.titles = len(titles)
    body: dict = {"titles": titles, "ids": ids, "all_scores": rng.random() < 0.3}
    if rng.random() < 0.3:
        body["review_below"] = 0.5
    check_rows(record, await soak.post(record, "/v1/label", json_body(body), JSON), titles, ids)


BAD_JSON = {
    "truncated": b'{"titles": ["CEO"',
    "not UTF-8": b'{"titles": ["\xff"]}',
    "empty": b"",
    "nested deeply": b"[" * 100_000,
    "trailing text": b'{"titles": ["CEO"]} and more',
    "single quotes": b"{'titles': ['CEO']}",
}


async def bad_json(soak: Soak, rng: random.Random, record: Record) -> None:
    record.variant, body = rng.choice(list(BAD_JSON.items()))
    record.expected = frozenset({400})
    await soak.post(record, "/v1/label", body, JSON)


WRONG_TYPES = {
    "not an object": ["CEO"],
    "titles a string": {"titles": "CEO"},
    "a title a number": {"titles": ["CEO", 5]},
    "a title null": {"titles": [None]},
    "unknown field": {"title": ["CEO"]},
    "ids too short": {"titles": ["a", "b"], "ids": [1]},
    "an id an object": {"titles": ["a"], "ids": [{}]},
    "all_scores a string": {"titles": ["a"], "all_scores": "yes"},
    "review_below over 1": {"titles": ["a"], "review_below": 1.5},
    "review_below a string": {"titles": ["a"], "review_below": "0.5"},
}


async def wrong_type(soak: Soak, rng: random.Random, record: Record) -> None:
    record.variant, body = rng.choice(list(WRONG_TYPES.items()))
    record.expected = frozenset({422})
    await soak.post(record, "/v1/label", json_body(body), JSON)


async def too_many_titles(soak: Soak, rng: random.Random, record: Record) -> None:
    record.expected = frozenset({413})
    await soak.post(record, "/v1/label", json_body({"titles": ["CEO"] * (MAX_TITLES + 1)}), JSON)


def offer(record: Record, head: bytes, size: int) -> Iterator[bytes]:
    """`head`, then spaces up to `size` bytes, made as the client sends them; counts what was taken."""
    record.sent, record.offered = 0, size
    while record.sent < size:
        piece = head if record.sent == 0 else FILLER[: size - record.sent]
        record.sent += len(piece)
        yield piece


async def oversized(soak: Soak, record: Record, path: str, chunked: bool, head: bytes, headers: dict) -> None:
    """A body of OVERSIZE_FACTOR times the path's limit, sent by a blocking client on a thread of its own: asyncio
    drops what a connection holds unread once a write to it fails, so an async client sees the server's 413 (sent
    just before it closes the connection on the rest of the body) as a reset; a blocking one (requests, httpx's
    Client) reads it after the failed write, and curl reads it while it sends."""
    record.expected, record.may_close = frozenset({413}), True
    limit = MAX_UPLOAD_BYTES if path == "/v1/label-file" else MAX_BODY_BYTES
    size = OVERSIZE_FACTOR[path] * limit
    headers = {**soak.auth, **headers}
    if not chunked:  # httpx sends an iterator chunked unless the length is given
        headers["Content-Length"] = str(size)

    def send() -> int:
        with httpx.Client(base_url=soak.url, timeout=soak.timeout) as client:
            return client.post(path, content=offer(record, head, size), headers=headers).status_code

    record.status = await asyncio.get_running_loop().run_in_executor(soak.threads, send)


async def oversized_length(soak: Soak, rng: random.Random, record: Record) -> None:
    await oversized(soak, record, "/v1/label", False, b'{"titles": ["CEO"]}', JSON)


async def oversized_chunked(soak: Soak, rng: random.Random, record: Record) -> None:
    await oversized(soak, record, "/v1/label", True, b'{"titles": ["CEO"]}', JSON)


async def oversized_upload(soak: Soak, rng: random.Random, record: Record) -> None:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="titles.txt"\r\n\r\n'
    await oversized(soak, record, "/v1/label-file", False, head.encode(), MULTIPART)


async def long_titles(soak: Soak, rng: random.Random, record: Record) -> None:
    titles = [soak.title(rng), *rng.sample(soak.long_titles, rng.randint(1, 2))]
    record.titles = len(titles)
    check_rows(record, await soak.post(record, "/v1/label", json_body({"titles": titles}), JSON), titles)


async def trickle(body: bytes, pieces: int, pause: float) -> AsyncIterator[bytes]:
    step = -(-len(body) // pieces)
    for start in range(0, len(body), step):
        if start:
            await asyncio.sleep(pause)
        yield body[start : start + step]


async def slow_label(soak: Soak, rng: random.Random, record: Record) -> None:
    """A good body sent in 5-15 pieces, 0.1-0.2 s apart."""
    titles = [soak.title(rng) for _ in range(rng.randint(1, 20))]
    record.titles = len(titles)
    body = json_body({"titles": titles})
    content = trickle(body, rng.randint(5, 15), rng.uniform(0.1, 0.2))
    response = await soak.post(record, "/v1/label", content, {**JSON, "Content-Length": str(len(body))})
    check_rows(record, response, titles)


async def slow_upload(soak: Soak, rng: random.Random, record: Record) -> None:
    titles = [soak.title(rng) for _ in range(rng.randint(1, 50))]
    record.variant, record.titles = "csv", len(titles)
    body = multipart(*table_file("csv", titles))
    content = trickle(body, rng.randint(5, 15), rng.uniform(0.1, 0.2))
    response = await soak.post(record, "/v1/label-file", content, {**MULTIPART, "Content-Length": str(len(body))})
    check_upload(record, response, len(titles))


async def file_upload(soak: Soak, rng: random.Random, record: Record) -> None:
    record.variant = rng.choice(["csv", "tsv", "jsonl", "text", "xlsx"])
    if record.variant == "xlsx":
        content, rows = rng.choice(soak.excel)
        name, fields = "titles.xlsx", {"column": "title", "id_column": "id"}
    else:
        titles = [soak.title(rng) for _ in range(rng.choice([1, 10, 100, 300]))]
        name, content, fields = table_file(record.variant, titles)
        rows = len(titles)
    record.titles = rows
    output = rng.choice(["", "", "csv", "jsonl", "xlsx"])
    if output:
        fields["output"] = output
    response = await soak.post(record, "/v1/label-file", multipart(name, content, fields), MULTIPART)
    check_upload(record, response, rows)


BAD_UPLOADS = {
    # name: (file name, content, form fields, status), as tests/test_serve.py expects them
    "no such column": ("people.csv", b"id,name\n1,CEO\n", {"column": "title"}, 400),
    "unknown output": ("titles.csv", b"text\nCEO\n", {"output": "xml"}, 422),
    "not a workbook": ("fake.xlsx", b"id,title\n", {}, 400),
    "no title in any row": ("titles.csv", b"text\n\n  \n", {}, 422),
    "unknown encoding": ("titles.csv", b"text\nCEO\n", {"encoding": "nonsense"}, 422),
    "unknown form field": ("titles.jsonl", b'{"title": "CEO"}\n', {"field": "title"}, 422),
}


async def bad_upload(soak: Soak, rng: random.Random, record: Record) -> None:
    record.variant, (name, content, fields, status) = rng.choice(list(BAD_UPLOADS.items()))
    record.expected = frozenset({status})
    await soak.post(record, "/v1/label-file", multipart(name, content, fields), MULTIPART)


async def without_key(soak: Soak, rng: random.Random, record: Record) -> None:
    record.variant = rng.choice(["no header", "wrong key"])
    record.expected = frozenset({401})
    headers = {**JSON, "Authorization": f"Bearer {soak.key}x"} if record.variant == "wrong key" else JSON
    response = await soak.client.post("/v1/label", content=b'{"titles": ["CEO"]}', headers=headers)
    record.status = response.status_code


Send = Callable[[Soak, random.Random, Record], Awaitable[None]]
# name: (weight: cards in a deck of 100, send)
KINDS: dict[str, tuple[int, Send]] = {
    "single": (40, single),
    "batch": (14, batch),
    "bad_json": (6, bad_json),
    "wrong_type": (6, wrong_type),
    "too_many_titles": (2, too_many_titles),
    "oversized_length": (2, oversized_length),
    "oversized_chunked": (2, oversized_chunked),
    "oversized_upload": (2, oversized_upload),
    "long_titles": (5, long_titles),
    "slow_label": (3, slow_label),
    "slow_upload": (2, slow_upload),
    "file_upload": (10, file_upload),
    "bad_upload": (6, bad_upload),
}
KEYED_KINDS: dict[str, tuple[int, Send]] = {"without_key": (3, without_key)}


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else None


def window_median(samples: list[tuple[float, int]], start: float, end: float) -> int:
    """The median of the samples taken in [start, end]; the nearest sample to `start` where none was."""
    inside = [value for moment, value in samples if start <= moment <= end]
    if not inside:
        inside = [min(samples, key=lambda sample: abs(sample[0] - start))[1]]
    return int(statistics.median(inside))


async def sample(pid: int, samples: Samples, began: float, interval: float, done: asyncio.Event) -> None:
    while not done.is_set():
        moment = time.perf_counter() - began
        with contextlib.suppress(OSError):
            samples.rss.append((moment, rss_bytes(pid)))
        files = open_files(pid)
        if files is not None:
            samples.fds.append((moment, files))
        samples.load.append((moment, os.getloadavg()[0]))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), interval)


async def run_load(url: str, pid: int, plan: Plan) -> tuple[list[Record], Samples, float]:
    """(records, samples, seconds the load ran) of the plan's clients sending its kinds for its seconds."""
    clients = plan.clients
    limits = httpx.Limits(max_connections=2 * clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=plan.timeout) as client:
        soak = Soak(client, plan)
        samples = Samples()
        done = asyncio.Event()
        began = time.perf_counter()
        sampler = asyncio.create_task(sample(pid, samples, began, max(0.5, plan.seconds / 600), done))
        stop = began + plan.seconds
        rngs = [random.Random(plan.seed * 1000 + n) for n in range(clients)]
        await asyncio.gather(*(soak.client_loop(rng, stop) for rng in rngs))
        elapsed = time.perf_counter() - began
        done.set()
        await sampler
        soak.threads.shutdown()
    return soak.records, samples, elapsed


def summarise_kind(name: str, records: list[Record]) -> dict:
    answered = [record for record in records if record.status is not None]
    latencies = [record.seconds * 1000 for record in answered]
    outcomes = Counter(str(record.status) if record.status is not None else record.failure for record in records)
    # No answer: the client gave up, or the server closed the connection where its limits do not allow that.
    unanswered = [r for r in records if r.failure in ("timeout", "refused") or (r.failure and not r.may_close)]
    summary = {
        "requests": len(records),
        "outcomes": dict(sorted(outcomes.items())),
        "expected": sorted(set().union(*(record.expected for record in records))),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=None),
        "server_errors": sum(1 for record in answered if record.status >= 500),
        "unexpected": sum(1 for record in records if record.problem),
        "problems": sorted({record.problem for record in records if record.problem})[:5],
        "unanswered": len(unanswered),
    }
    sent = [(record.sent, record.offered) for record in records if record.offered]
    if sent:
        summary["sent_max"] = max(part for part, _ in sent)
        summary["offered"] = max(whole for _, whole in sent)
        summary["read_whole"] = sum(1 for part, whole in sent if part >= whole)
    return summary


def summarise(
    records: list[Record], samples: Samples, elapsed: float, warmup: float, server: dict, settings: dict
) -> dict:
    kinds = {
        name: summarise_kind(name, [r for r in records if r.kind == name]) for name in dict.fromkeys(settings["kinds"])
    }
    rss = samples.rss
    warm = window_median(rss, warmup * elapsed, (warmup + 0.05) * elapsed)
    end = window_median(rss, 0.95 * elapsed, elapsed)
    after = [value for moment, value in rss if moment >= warmup * elapsed] or [warm]
    memory = {
        "start_bytes": rss[0][1],
        "warm_bytes": warm,
        "end_bytes": end,
        "peak_after_warmup_bytes": max(after),
        "growth_percent": 100 * (end - warm) / warm,
        "peak_growth_percent": 100 * (max(after) - warm) / warm,
        "samples": [[round(moment, 2), value] for moment, value in rss],
    }
    single = kinds.get("single", {})
    oversized = [summary for name, summary in kinds.items() if "offered" in summary]
    checks = {
        "no_5xx": all(summary["server_errors"] == 0 for summary in kinds.values()),
        "answers_as_expected": all(summary["unexpected"] == 0 for summary in kinds.values()),
        "all_answered": all(summary["unanswered"] == 0 for summary in kinds.values()),
        "oversized_refused_before_read_whole": all(
            summary["read_whole"] == 0 and set(summary["outcomes"]) <= {"413", "closed"} for summary in oversized
        ),
        "server_ok": server["alive_after"]
        and server["stopped_on_sigterm"]
        and server["log_errors"] == 0
        and server["temp_left"] == 0,
        "rss_growth_within_target": memory["growth_percent"] <= TARGET_RSS_GROWTH,
        "single_p99_within_target": single.get("p99_ms") is not None and single["p99_ms"] <= TARGET_SINGLE_P99_MS,
    }
    load = [value for _, value in samples.load]
    return {
        **settings,
        "seconds_run": elapsed,
        "requests": len(records),
        "requests_per_second": len(records) / elapsed,
        "titles_labelled": sum(record.titles for record in records if record.status == 200),
        "kinds": kinds,
        "rss": memory,
        "open_files": {"first": samples.fds[0][1], "last": samples.fds[-1][1]} if samples.fds else None,
        "load_average": {
            "before": server["load_before"],
            "mean_during": statistics.mean(load),
            "max_during": max(load),
        },
        "server": server,
        "checks": checks,
    }


def megabytes(value: float) -> str:
    return f"{value / 2**20:,.1f}"


def milliseconds(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"


# The checks that make the soak fail (exit 1), as the report names them; the targets are reported beside them.
CHECKS = {
    "no_5xx": "no 5xx answer",
    "answers_as_expected": "every answer as its kind expects",
    "all_answered": "every request answered (or, oversized, closed by the server) within the timeout",
    "oversized_refused_before_read_whole": "oversized bodies refused (413) before read whole",
    "server_ok": "server alive after the run and stopped by SIGTERM, no error in its log, no temporary file left",
}


def mark(passed: bool) -> str:
    return "✓" if passed else "✗"


def report(result: dict) -> str:
    checks, memory, server, load = result["checks"], result["rss"], result["server"], result["load_average"]
    single_p99 = result["kinds"].get("single", {}).get("p99_ms")
    lines = [
        f"# titlecat serve: soak on loopback ({result['model']})",
        "",
        f"{result['started_utc']} UTC, {result['machine']}. {result['clients']} clients for {result['seconds']:g} s "
        f"({result['seconds_run']:.0f} s with the last answers), timeout {result['timeout']:g} s a request. "
        f"Load average (1 min) {load['before']:.1f} before, {load['mean_during']:.1f} on average during the run (at "
        f"most {load['max_during']:.1f}): other work on the machine "
        "shares its CPUs; the clients (httpx, one process) run beside the server. Latency: as the client sees it, "
        "the slow kinds' including their trickle. Titles: "
        + (
            f"drawn from {result['distinct_titles']:,} generated ones."
            if result["distinct_titles"]
            else "every one new."
        ),
        "",
        "| request kind | requests | answers (status: count) | expected | p50 (ms) | p99 (ms) | max (ms) | unexpected "
        "| unanswered |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, summary in result["kinds"].items():
        outcomes = ", ".join(f"{outcome}: {count:,}" for outcome, count in summary["outcomes"].items())
        lines.append(
            f"| {name} | {summary['requests']:,} | {outcomes} | {', '.join(map(str, summary['expected']))} "
            f"| {milliseconds(summary['p50_ms'])} | {milliseconds(summary['p99_ms'])} "
            f"| {milliseconds(summary['max_ms'])} | {summary['unexpected']} | {summary['unanswered']} |"
        )
    lines += [
        f"| **all** | {result['requests']:,} ({result['requests_per_second']:,.1f}/s) | | | | | | "
        f"{sum(s['unexpected'] for s in result['kinds'].values())} | "
        f"{sum(s['unanswered'] for s in result['kinds'].values())} |",
        "",
        f"Titles (and rows of files) labelled: {result['titles_labelled']:,} "
        f"({result['titles_labelled'] / result['seconds_run']:,.0f}/s). The server's CPU time: "
        f"{server['cpu_seconds'] or 0:,.0f} s, {(server['cpu_seconds'] or 0) / result['seconds_run']:.2f} of "
        f"{os.cpu_count()} CPUs on average, beside the clients and whatever else the load average counts.",
        "",
        "Oversized bodies, sent by the client before the server's answer (the most of any one) of what each offered:",
        "",
    ]
    for name, summary in result["kinds"].items():
        if "offered" in summary:
            lines.append(
                f"- {name}: at most {megabytes(summary['sent_max'])} MiB of {megabytes(summary['offered'])} MiB; "
                f"{summary['read_whole']} sent whole"
            )
    problems = [problem for summary in result["kinds"].values() for problem in summary["problems"]]
    if problems:
        lines += ["", "Unexpected answers (up to 5 a kind):", "", *(f"- {problem}" for problem in problems)]
    files = result["open_files"]
    lines += [
        "",
        f"Server RSS: {megabytes(memory['start_bytes'])} MiB when the load began, {megabytes(memory['warm_bytes'])} "
        f"MiB after the warm-up (the first {result['warmup']:.0%} of the run; the median of the samples in the next "
        f"5%), {megabytes(memory['end_bytes'])} MiB at the end (the median of the last 5%): growth "
        f"**{memory['growth_percent']:+.1f}%**; peak after the warm-up {megabytes(memory['peak_after_warmup_bytes'])}"
        f" MiB ({memory['peak_growth_percent']:+.1f}%); {len(memory['samples'])} samples. Open files "
        + (f"{files['first']} at the start, {files['last']} at the end. " if files else "not sampled. ")
        + f"Server alive after the run: {server['alive_after']}; stopped by SIGTERM: {server['stopped_on_sigterm']}; "
        f"errors in its log: {server['log_errors']}; "
        f"temporary files left: {server['temp_left']}.",
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {text} | {mark(checks[name])} |" for name, text in CHECKS.items()),
        f"| target: RSS growth after the warm-up ≤ {TARGET_RSS_GROWTH:g}% | {memory['growth_percent']:+.1f}% "
        f"{mark(checks['rss_growth_within_target'])} |",
        f"| target: p99 of single-title requests ≤ {TARGET_SINGLE_P99_MS:g} ms "
        f"| {milliseconds(single_p99)} ms {mark(checks['single_p99_within_target'])} |",
        "",
    ]
    return "\n".join(lines)


def stop_server(process: subprocess.Popen) -> bool:
    """Whether the server stopped on SIGTERM within 30 s (uvicorn shuts down, then dies of the signal it caught);
    else it is killed."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False


def log_errors(log: str) -> int:
    """Lines of the server's log that report an error (uvicorn's ERROR lines, tracebacks)."""
    return sum(1 for line in log.splitlines() if line.startswith(("ERROR", "Traceback")))


def main(
    model: Path = typer.Option(Path("training/combined"), "--model", "-m", exists=True, help="The pipeline to serve"),
    seconds: float = typer.Option(600.0, min=1, help="How long the clients send requests"),
    clients: int = typer.Option(8, min=1, help="Concurrent clients, each sending one request after another"),
    api_key_env: str | None = typer.Option(
        None, metavar="NAME", help="Serve with --api-key-env NAME (the variable holds the key); adds keyless requests"
    ),
    out: Path = typer.Option(Path("metrics/soak_serve.md"), help="The Markdown report; the JSON and log beside it"),
    timeout: float = typer.Option(30.0, min=1, help="Seconds a request may take before it counts as unanswered"),
    warmup: float = typer.Option(0.2, min=0, max=0.9, help="The part of the run before RSS growth is measured"),
    seed: int = typer.Option(0, help="Seeds the deck of kinds and each client's choices"),
    only: list[str] = typer.Option(
        [], "--kind", help=f"Send only this kind (repeat for more; to find which one leaks): {', '.join(KINDS)}"
    ),
    distinct_titles: int = typer.Option(
        10_000,
        min=0,
        help="Draw titles from a pool of this many, so that the pipeline's bounded memos of title pieces fill "
        "during the warm-up; 0: every title new (the memos then grow to their bound, hundreds of MiB, over a long run)",
    ),
):
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise typer.BadParameter(f"the environment variable {api_key_env} holds no key", param_hint="--api-key-env")
    kinds = {**KINDS, **(KEYED_KINDS if key else {})}
    unknown = sorted(set(only) - set(kinds))
    if unknown:
        raise typer.BadParameter(f"{unknown[0]}: expected one of {', '.join(kinds)}", param_hint="--kind")
    kinds = {name: kind for name, kind in kinds.items() if name in only or not only}
    plan = Plan(kinds, seconds, clients, timeout, key, seed, distinct_titles)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_suffix(".log")
    # The server's temporary files (uploads) in a folder of its own: what the load left there leaked.
    temp = Path(tempfile.mkdtemp(prefix="titlecat-soak-"))
    port = free_port()
    options = ["--api-key-env", api_key_env] if api_key_env else []
    load_before = os.getloadavg()[0]
    server = start_server(model, port, log_path, options, env={**os.environ, "TMPDIR": str(temp)})
    started = datetime.datetime.now(datetime.timezone.utc)
    temp_before = set(temp.rglob("*"))  # what loading left (torch's compile cache), before any request
    try:
        records, samples, elapsed = asyncio.run(run_load(f"http://127.0.0.1:{port}", server.pid, plan))
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            alive = httpx.get(f"http://127.0.0.1:{port}/health", headers=headers, timeout=10).status_code == 200
        except httpx.TransportError:
            alive = False
        cpu = cpu_seconds(server.pid)
    finally:
        stopped = stop_server(server)
    left = set(temp.rglob("*")) - temp_before - {temp / ONNXRUNTIME_SESSION_FILE}
    temp_left = sorted(str(path.relative_to(temp)) for path in left)
    shutil.rmtree(temp, ignore_errors=True)
    log = log_path.read_text(errors="replace")
    server_state = {
        "alive_after": alive,
        "stopped_on_sigterm": stopped,
        "log_errors": log_errors(log),
        "temp_left": len(temp_left),
        "temp_left_names": temp_left[:10],
        "cpu_seconds": cpu,
        "load_before": load_before,
    }
    settings = {
        "model": str(model),
        "seconds": seconds,
        "clients": clients,
        "timeout": timeout,
        "warmup": warmup,
        "distinct_titles": distinct_titles,
        "keyed": key is not None,
        "kinds": list(kinds),
        "started_utc": f"{started:%Y-%m-%d %H:%M}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}",
    }
    result = summarise(records, samples, elapsed, warmup, server_state, settings)
    text = report(result)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    typer.echo(text)
    if not all(result["checks"][name] for name in CHECKS):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
