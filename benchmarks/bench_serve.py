"""Load benchmark of `titlecat serve` on loopback: titles/s and single-title latency, next to `titlecat predict`.

Starts `titlecat serve` (a subprocess on a free 127.0.0.1 port) with each --workers count, then, each phase
bounded by --seconds:
1. 1, 8 and 32 concurrent clients, each sending requests of --batch titles (100) back to back: titles/s;
2. 8 such clients plus one client sending single-title requests one after another: its p50 / p99 latency;
3. then, with no server running, `titlecat predict` on a CSV of --n-predict titles: the titles/s it reports.
Titles: the unlabelled CV titles, cycled. Every answer is checked (status code, one result per title); 5xx
answers and lost requests (no answer, a connection error) are counted. Writes a Markdown table.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer

from titlecat.readers import read_cv_positions
from titlecat.serve import start_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tally:
    def __init__(self):
        self.titles = 0
        self.requests = 0
        self.server_errors = 0  # 5xx
        self.other_errors = 0  # 4xx or a wrong number of results
        self.lost = 0  # no answer at all
        self.latencies: list[float] = []


async def client_loop(client: httpx.AsyncClient, url: str, bodies: list[bytes], n: int, stop: float, tally: Tally):
    """Send the bodies in turn until the clock passes `stop`; each holds n titles."""
    index = random.randrange(len(bodies))
    while time.perf_counter() < stop:
        body = bodies[index % len(bodies)]
        index += 1
        start = time.perf_counter()
        try:
            response = await client.post(url, content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError:
            tally.lost += 1
            continue
        tally.latencies.append(time.perf_counter() - start)
        tally.requests += 1
        if response.status_code >= 500:
            tally.server_errors += 1
        elif response.status_code != 200 or len(response.json()["results"]) != n:
            tally.other_errors += 1
        else:
            tally.titles += n


def request_bodies(titles: list[str], n: int, count: int = 64) -> list[bytes]:
    """Encoded up front, so the load generator spends its CPU on HTTP, not on building JSON."""
    return [
        json.dumps({"titles": [titles[(start * n + i) % len(titles)] for i in range(n)]}).encode()
        for start in range(count)
    ]


async def run_load(url: str, titles: list[str], clients: int, batch: int, seconds: float, single: bool) -> dict:
    """`clients` batch clients for `seconds` (after a short warm-up), plus one single-title client if `single`."""
    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        batches, singles = Tally(), Tally()
        batch_bodies = request_bodies(titles, batch)
        single_bodies = request_bodies(titles, 1, count=1000)
        warm = time.perf_counter() + 1.0
        await asyncio.gather(*(client_loop(client, url, batch_bodies, batch, warm, Tally()) for _ in range(clients)))
        start = time.perf_counter()
        stop = start + seconds
        loops = [client_loop(client, url, batch_bodies, batch, stop, batches) for _ in range(clients)]
        if single:
            loops.append(client_loop(client, url, single_bodies, 1, stop, singles))
        await asyncio.gather(*loops)
        elapsed = time.perf_counter() - start
    return {"batches": batches, "singles": singles, "seconds": elapsed}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def predict_rate(model: Path, titles: list[str], n: int, work_dir: Path) -> float:
    """titles/s that `titlecat predict` reports for n titles (labelling, not loading)."""
    path = work_dir / "serve_bench_titles.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text"])
        writer.writerows([titles[i % len(titles)]] for i in range(n))
    command = [sys.executable, "-m", "titlecat", "predict", str(path), str(work_dir / "serve_bench_out.csv")]
    result = subprocess.run([*command, "-m", str(model), "--no-progress"], capture_output=True, text=True, check=True)
    return float(re.search(r"\(([\d,]+) titles/s\)", result.stderr).group(1).replace(",", ""))


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def row(name: str, tally: Tally, seconds: float) -> str:
    p50, p99 = (percentile(tally.latencies, q) * 1000 for q in (50, 99))
    return (
        f"| {name} | {tally.requests:,} | {tally.titles / seconds:,.0f} | {p50:.1f} | {p99:.1f} "
        f"| {tally.server_errors} | {tally.other_errors} | {tally.lost} |"
    )


def bench_server(model: Path, workers: int, titles: list[str], batch: int, seconds: float, work_dir: Path) -> list:
    """(row name, tally, seconds) of each phase, against one server with `workers` processes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/label"
    server = start_server(model, port, work_dir / f"server_{workers}.log", ["--workers", str(workers)])
    rows = []
    try:
        for clients in (1, 8, 32):
            result = asyncio.run(run_load(url, titles, clients, batch, seconds, single=False))
            rows.append((f"{workers} | {clients} × {batch} titles", result["batches"], result["seconds"]))
            typer.echo(f"--workers {workers}, {clients} clients: {rows[-1][1].titles / rows[-1][2]:,.0f} titles/s")
        result = asyncio.run(run_load(url, titles, 8, batch, seconds, single=True))
        rows.append(
            (f"{workers} | 8 × {batch} titles + 1 × 1 title: the batches", result["batches"], result["seconds"])
        )
        rows.append(
            (
                f"{workers} | 8 × {batch} titles + 1 × 1 title: **the single titles**",
                result["singles"],
                result["seconds"],
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def main(
    model: Path = typer.Argument(Path("training/combined"), exists=True),
    cv_path: Path = typer.Option(Path("assets/linkedin-cvs-not-annotated.json"), exists=True),
    workers: list[int] = typer.Option([1, 2], "--workers", help="titlecat serve --workers; one server each"),
    batch: int = typer.Option(100, help="Titles a request for the batch clients"),
    seconds: float = typer.Option(10.0, help="Length of each phase (after a 1 s warm-up)"),
    n_predict: int = typer.Option(200_000, help="Titles for titlecat predict"),
    work_dir: Path = typer.Option(Path("metrics/bench_serve")),
    output_path: Path = typer.Option(Path("metrics/serve_benchmark.md")),
):
    work_dir.mkdir(parents=True, exist_ok=True)
    titles = [p.text for p in read_cv_positions(cv_path)[0]]
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = [row for count in workers for row in bench_server(model, count, titles, batch, seconds, work_dir)]
    rate = predict_rate(model, titles, n_predict, work_dir)
    load_after = os.getloadavg()
    lines = [
        f"# titlecat serve: load on loopback ({model})",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} "
        f"CPUs ({cpu_model()}), Python {platform.python_version()}. Load average (1 min) {load_before[0]:.1f} "
        f"before and {load_after[0]:.1f} after the run ({time.perf_counter() - started:.0f} s): other work on the "
        f"machine shares its CPUs. Each phase {seconds:g} s after a 1 s warm-up; the clients (httpx, one process) "
        "run on the same machine as the server. Titles: the unlabelled CV titles, cycled.",
        "",
        "| --workers | load (concurrent clients × titles a request) | requests | titles/s | p50 (ms) | p99 (ms) "
        "| 5xx | other errors | lost |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [row(name, tally, elapsed) for name, tally, elapsed in rows]
    lines.append(
        f"| | titlecat predict, {n_predict:,} titles, CSV to CSV (no server running) | | {rate:,.0f} | | | | | |"
    )
    errors = {
        name: sum(getattr(tally, name) for _, tally, _ in rows) for name in ("server_errors", "other_errors", "lost")
    }
    lines += [
        "",
        f"All phases: {errors['server_errors']} 5xx answers, {errors['other_errors']} other errors, "
        f"{errors['lost']} lost requests. p50 / p99: request latency as the client sees it.",
        "",
    ]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text("\n".join(lines))
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
