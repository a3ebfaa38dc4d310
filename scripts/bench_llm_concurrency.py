"""Benchmark live pseudo-labelling by --concurrency against the local fake OpenAI server (fixed latency per answer).

The server runs in a process of its own (tests/fake_openai_server.py, 127.0.0.1); each row is one
`pseudo_label` run of the openai backend over distinct titles, without an answer store (every title is
asked), timed from the first request to the last answer. Writes a markdown table and a JSON file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from titlecat.llm.run import load_pipeline, pseudo_label
from titlecat.readers import Position

REPO = Path(__file__).resolve().parent.parent
app = typer.Typer(add_completion=False)


def run_once(base_url: str, titles: int, concurrency: int) -> dict:
    overrides = {
        "components.llm.model.base_url": base_url,
        "components.llm.model.model": "fake-model",
        "components.llm.model.api_key_env": "",
        "components.llm.model.concurrency": concurrency,
        "paths.store": None,
    }
    nlp = load_pipeline(REPO / "configs" / "llm_openai.cfg", overrides)
    positions = [Position(f"Benchmark Title {i}", i, 0, "ACTIVE") for i in range(titles)]
    start = time.perf_counter()
    _, rejects, counts = pseudo_label(nlp, positions, progress=False)
    seconds = time.perf_counter() - start
    if rejects or counts["requests"] != titles:
        raise RuntimeError(f"concurrency {concurrency}: {len(rejects)} rejects, {counts['requests']} requests")
    return {"concurrency": concurrency, "titles": titles, "seconds": seconds, "titles_per_second": titles / seconds}


@app.command()
def main(
    output: Annotated[Path, typer.Argument(help="Markdown table to write")] = Path("metrics/bench_llm_concurrency.md"),
    concurrency: Annotated[list[int] | None, typer.Option(help="Concurrency levels (repeat)")] = None,
    titles: Annotated[int, typer.Option(help="Titles per run")] = 1000,
    sequential_titles: Annotated[
        int | None, typer.Option(help="Titles for concurrency 1 (fewer: same titles/second, less waiting)")
    ] = None,
    latency: Annotated[float, typer.Option(help="Seconds the fake server waits before each answer")] = 0.05,
):
    levels = concurrency or [1, 2, 4, 8, 16]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fake_openai_server.py"), "--delay", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        base_url = server.stdout.readline().strip()
        if not base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the fake server did not start (said {base_url!r})")
        rows = [run_once(base_url, sequential_titles or titles if c == 1 else titles, c) for c in levels]
    finally:
        server.terminate()
        server.wait(timeout=10)
    base = next((row["titles_per_second"] for row in rows if row["concurrency"] == 1), None)
    for row in rows:
        row["speedup"] = row["titles_per_second"] / base if base else None
    lines = [
        f"Live pseudo-labelling against the fake OpenAI server, {latency * 1000:.0f} ms per answer "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})",
        "",
        "| concurrency | titles | seconds | titles/s | speed-up vs 1 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        speedup = f"{row['speedup']:.1f}×" if row["speedup"] else "n/a"
        lines.append(
            f"| {row['concurrency']} | {row['titles']} | {row['seconds']:.1f} | {row['titles_per_second']:.1f} "
            f"| {speedup} |"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    app()
