"""Speed, CPU and memory of `titlecat predict` (1 and 2 processes) against plain nlp.pipe, and Ray with 1 vs 2 workers.

Titles: the unlabelled CV titles, repeated up to --n-titles. Each run is a separate process,
started by a fresh wrapper process, so the peak RSS is that run's alone (its largest process).
"""

import csv
import subprocess
import sys
import time
from pathlib import Path

import typer

from titlecat.readers import read_cv_positions

PIPE_ONLY = (
    "import csv, sys, spacy\n"
    "nlp = spacy.load(sys.argv[1])\n"
    "titles = (row['text'] for row in csv.DictReader(open(sys.argv[2], newline='', encoding='utf-8')))\n"
    "for doc in nlp.pipe(titles, batch_size=1000):\n"
    "    pass\n"
)


# Runs a command and prints the peak RSS (KiB) of its processes and the CPU seconds they used: RUSAGE_CHILDREN
# of a fresh wrapper holds that one run (its processes and theirs), not every run so far.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
)


def timed(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MiB) and CPU seconds of a command run in its own process."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], check=True, capture_output=True, text=True)
    rss, cpu = result.stdout.split()[-2:]
    return time.perf_counter() - start, int(rss) / 1024, float(cpu)


def main(
    model: Path = typer.Argument(Path("training/combined"), exists=True),
    cv_path: Path = typer.Option(Path("assets/linkedin-cvs-not-annotated.json"), exists=True),
    n_titles: int = typer.Option(1_000_000),
    n_ray: int = typer.Option(200_000, help="Titles for the Ray 1-vs-2-worker ratio"),
    work_dir: Path = typer.Option(Path("metrics/bench_predict")),
    output_path: Path = typer.Option(Path("metrics/predict_benchmark.md")),
    ray: bool = typer.Option(True, help="Also time predict-ray with 1 and 2 workers"),
):
    work_dir.mkdir(parents=True, exist_ok=True)
    titles = [p.text for p in read_cv_positions(cv_path)[0]]
    inputs = {}
    for n in (n_titles, n_ray) if ray else (n_titles,):
        inputs[n] = work_dir / f"titles_{n}.csv"
        with inputs[n].open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["text"])
            writer.writerows([titles[i % len(titles)]] for i in range(n))
    titlecat = [sys.executable, "-m", "titlecat"]
    rows = []
    seconds, rss, cpu = timed([sys.executable, "-c", PIPE_ONLY, str(model), str(inputs[n_titles])])
    rows.append(("nlp.pipe (reading the CSV, no output)", n_titles, seconds, rss, cpu))
    outputs = {}
    for processes in (1, 2):
        outputs[processes] = work_dir / f"out_{processes}.csv"
        command = [*titlecat, "predict", str(inputs[n_titles]), str(outputs[processes]), "-m", str(model)]
        seconds, rss, cpu = timed([*command, "--n-process", str(processes), "--no-progress"])
        what = (
            "titlecat predict" if processes == 1 else f"titlecat predict --n-process {processes} (RSS: largest process)"
        )
        rows.append((what, n_titles, seconds, rss, cpu))
    # The processes must not change a byte of the output.
    same = outputs[1].read_bytes() == outputs[2].read_bytes()
    for workers in (1, 2) if ray else ():
        seconds, rss, cpu = timed(
            [
                *titlecat,
                "predict-ray",
                str(inputs[n_ray]),
                str(work_dir / "ray.csv"),
                "-m",
                str(model),
                "--workers",
                str(workers),
                "--no-progress",
            ]
        )
        what = f"titlecat predict-ray, {workers} worker(s), incl. Ray start (RSS: driver; CPU: driver)"
        rows.append((what, n_ray, seconds, rss, cpu))
    lines = [
        "| run | titles | seconds | titles/s | peak RSS (MiB) | CPU seconds (all processes) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {name} | {n:,} | {s:.1f} | {n / s:,.0f} | {r:,.0f} | {c:.1f} |" for name, n, s, r, c in rows]
    overhead = rows[1][2] / rows[0][2] - 1
    processes = rows[1][2] / rows[2][2]
    summary = (
        f"predict overhead over nlp.pipe: {overhead:+.1%}; predict speed-up 2 vs 1 process: {processes:.2f}x "
        f"(outputs {'byte-identical' if same else 'DIFFERENT'})"
    )
    if ray:
        summary += f"; Ray speed-up 2 vs 1 worker: {rows[3][2] / rows[4][2]:.2f}x"
    lines += ["", summary, ""]
    output_path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
