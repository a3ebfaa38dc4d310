"""Where `titlecat predict`'s time goes, and how fast it labels a million titles.

`files`: two million-row CSVs from a study's assets: every title distinct (`distinct.csv`: the curated and CV titles,
then two of them joined as a double role, "Sales Manager / Vertrieb", until a million are distinct), and an export as a
CRM gives one (`export.csv`: ids, a company and an e-mail column beside titles drawn by Zipf's law over the same
titles, so common ones repeat).
`stages`: one process, the first `--rows` rows of a file, each stage of `predict_file` run on its own over the whole
sample (reading, checking, tokenizing, each pipeline component, the answers, writing): seconds and share, a table.
`run`: `titlecat predict` on each file in a fresh process: titles/s with and without loading, and peak RSS.
`table`: the benchmark table of issue 48 in one run: `titlecat predict` on both files, `nlp.pipe` on the distinct
titles and peak RSS for each pipeline given, beside the reference study's bag-of-words recipe (trained here on the
curated CSVs) labelling the same files the same way (read, both tasks, written), each in a fresh process.
"""

from __future__ import annotations

import csv
import itertools
import json
import pickle
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import typer

app = typer.Typer(help=__doc__, no_args_is_help=True)

# A fresh wrapper process: RUSAGE_CHILDREN then holds that one run's peak RSS and CPU seconds.
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stdout.write(done.stdout)\n"
    "sys.stderr.write(done.stderr[-3000:])\n"
    "if done.returncode:\n"
    "    sys.exit(done.returncode)\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
)


# `nlp.pipe` over a CSV column in a fresh process, the objects of the loaded process frozen out of the garbage
# collector's reach (as `titlecat predict` does; docs/use.md): prints titles/s after loading.
PIPE_JOB = (
    "import csv, gc, sys, time, spacy\n"
    "nlp = spacy.load(sys.argv[1])\n"
    "gc.freeze()\n"
    "start = time.perf_counter()\n"
    "rows = csv.DictReader(open(sys.argv[2], newline='', encoding='utf-8'))\n"
    "n = sum(1 for _ in nlp.pipe((row[sys.argv[3]] for row in rows), batch_size=1000))\n"
    "print(n / (time.perf_counter() - start))\n"
)

# The reference recipe as a file job: read the CSV, both tasks' labels a block of 10,000 titles at a time, write
# id, title and labels; prints the titles and titles/s after loading.
REFERENCE_JOB = (
    "import csv, pickle, sys, time\n"
    "models = pickle.load(open(sys.argv[1], 'rb'))\n"
    "start = time.perf_counter()\n"
    "rows = csv.DictReader(open(sys.argv[2], newline='', encoding='utf-8'))\n"
    "column, id_column, n = sys.argv[4], sys.argv[5], 0\n"
    "with open(sys.argv[3], 'w', newline='', encoding='utf-8') as file:\n"
    "    writer = csv.writer(file)\n"
    "    writer.writerow(['line', 'id', 'title', *models])\n"
    "    def flush(block):\n"
    "        titles = [row[column] for row in block]\n"
    "        labels = [models[task].predict(titles) for task in models]\n"
    "        for index, row in enumerate(block):\n"
    "            writer.writerow([n + index + 2, row.get(id_column, ''), row[column], *(l[index] for l in labels)])\n"
    "    block = []\n"
    "    for row in rows:\n"
    "        block.append(row)\n"
    "        if len(block) == 10000:\n"
    "            flush(block); n += len(block); block = []\n"
    "    if block:\n"
    "        flush(block); n += len(block)\n"
    "print(n, n / (time.perf_counter() - start))\n"
)

FILES = (("distinct", "text", None), ("export", "title", "contact_id"))


def first_rows(source: Path, n: int, folder: Path) -> Path:
    """The header and the first `n` rows of a CSV (every row for n = 0), as a file in `folder`."""
    if not n:
        return source
    part_path = folder / f"{source.stem}_{n}.csv"
    if not part_path.exists():
        with source.open(encoding="utf-8") as full, part_path.open("w", encoding="utf-8") as part:
            part.writelines(itertools.islice(full, n + 1))
    return part_path


def measured(command: list[str]) -> tuple[str, float]:
    """A command's stdout and its peak RSS in MiB (its largest process), run under a fresh wrapper process."""
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    *output, usage = result.stdout.strip().splitlines()
    return "\n".join(output), int(usage.split()[0]) / 1024


def source_titles(assets: Path) -> list[str]:
    """The distinct titles of the curated CSVs and the unlabelled CVs, in a seeded order."""
    from titlecat.labels import get_task
    from titlecat.readers import read_curated_csv, read_cv_positions

    titles = [e.text for task in ("seniority", "department") for e in read_curated_csv(
        assets / get_task(task).curated_asset, get_task(task))[0]]  # fmt: skip
    titles += [p.text for p in read_cv_positions(assets / "linkedin-cvs-not-annotated.json")[0]]
    titles = sorted({t.strip() for t in titles if t.strip()})
    random.Random(0).shuffle(titles)
    return titles


def distinct_titles(titles: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    seen = dict.fromkeys(titles[:n])
    while len(seen) < n:
        first, second = rng.choice(titles), rng.choice(titles)
        seen.setdefault(f"{first} / {second.split(' ')[0]}")
    return list(seen)


@app.command()
def files(
    assets: Path = typer.Option(Path("assets"), exists=True, help="A study's assets folder"),
    out_dir: Path = typer.Option(Path("metrics/bench_million")),
    rows: int = typer.Option(1_000_000),
    zipf_exponent: float = typer.Option(1.1, help="Of the export's title ranks"),
    seed: int = typer.Option(0),
):
    """Write distinct.csv and export.csv (see the module's help)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    titles = source_titles(assets)
    with (out_dir / "distinct.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text"])
        writer.writerows([title] for title in distinct_titles(titles, rows, seed))
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(zipf_exponent, size=rows * 2)
    ranks = ranks[ranks <= len(titles)][:rows] - 1
    companies = [f"Firma {i} GmbH" for i in range(5000)]
    with (out_dir / "export.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["contact_id", "title", "company", "email"])
        for index, rank in enumerate(ranks.tolist()):
            writer.writerow([f"C{index:07d}", titles[rank], companies[index % 5000], f"person{index}@example.com"])
    distinct_in_export = len(set(titles[r] for r in ranks.tolist()))
    typer.echo(f"{out_dir}: distinct.csv and export.csv ({rows:,} rows, {distinct_in_export:,} distinct titles)")


def timed_stages(nlp, path: Path, column: str, id_column: str | None, rows: int, batch_size: int) -> dict[str, float]:
    """Seconds of each stage of labelling the first `rows` rows of `path` in one process, each over the whole sample."""
    from titlecat.predict import answers, check_records, pipeline_tasks
    from titlecat.readers import read_titles
    from titlecat.text_scoring import text_scorer

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    records = list(itertools.islice(read_titles(path, column, id_column), rows))
    seconds["reading"] = time.perf_counter() - start
    start = time.perf_counter()
    checked = check_records(records, keep_title=True)
    seconds["checking"] = time.perf_counter() - start
    texts = [record["text"] for record in checked if record["status"] == "ok"]
    if text_scorer(nlp) is not None:
        labelled = doc_free_stages(nlp, texts, batch_size, seconds)
        return written_stages(checked, labelled, pipeline_tasks(nlp), id_column, seconds, len(records))
    start = time.perf_counter()
    docs = [nlp.make_doc(text) for text in texts]
    seconds["tokenizing"] = time.perf_counter() - start
    for name, pipe in nlp.pipeline:
        start = time.perf_counter()
        docs = list(pipe.pipe(docs, batch_size=batch_size)) if hasattr(pipe, "pipe") else [pipe(d) for d in docs]
        seconds[f"component {name}"] = time.perf_counter() - start
    tasks = pipeline_tasks(nlp)
    start = time.perf_counter()
    labelled = [answers(doc.cats, tasks, False) for doc in docs]
    seconds["answers"] = time.perf_counter() - start
    return written_stages(checked, labelled, tasks, id_column, seconds, len(records))


def doc_free_stages(nlp, texts: list[str], batch_size: int, seconds: dict[str, float]) -> list[dict]:
    """The Doc-free path's stages (titlecat.text_scoring), timed from inside: the title vectors, the n-gram
    features, the linear layers and softmax (the rest of the scoring), the answer rows."""
    from titlecat import text_scoring
    from titlecat.components import TitleFeatures
    from titlecat.predict import pipeline_tasks, scored_answers

    timed = {"title vectors (doc-free)": 0.0, "n-gram features (doc-free)": 0.0}

    def timing(function, stage):
        def timed_function(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timed[stage] += time.perf_counter() - start

        return timed_function

    scorer = text_scoring.text_scorer(nlp)
    title_vectors, of_texts, scores = text_scoring.title_vectors, TitleFeatures.of_texts, scorer.scores
    text_scoring.title_vectors = timing(title_vectors, "title vectors (doc-free)")
    TitleFeatures.of_texts = timing(of_texts, "n-gram features (doc-free)")
    scorer.scores = timing(scores, "scores")
    timed["scores"] = 0.0
    try:
        start = time.perf_counter()
        labelled = scored_answers(scorer, texts, pipeline_tasks(nlp), False, batch_size)
        total = time.perf_counter() - start
    finally:
        text_scoring.title_vectors, TitleFeatures.of_texts = title_vectors, of_texts
        del scorer.scores
    seconds["title vectors (doc-free)"] = timed["title vectors (doc-free)"]
    seconds["n-gram features (doc-free)"] = timed["n-gram features (doc-free)"]
    seconds["linear layers, softmax (doc-free)"] = (
        timed["scores"] - timed["title vectors (doc-free)"] - timed["n-gram features (doc-free)"]
    )
    seconds["answer rows (doc-free)"] = total - timed["scores"]
    return labelled


def written_stages(checked, labelled, tasks, id_column, seconds: dict[str, float], n_records: int) -> dict:
    """`seconds` with merging the answers into rows ("answers", added to what is there) and writing them."""
    from titlecat.predict import OutputOptions, PredictionWriter, merge_answers, output_fields

    start = time.perf_counter()
    rows_out = merge_answers(checked, labelled)
    seconds["answers"] = seconds.get("answers", 0.0) + time.perf_counter() - start
    fields = output_fields(tasks, False, id_column is not None, True, [])
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        with PredictionWriter(Path(folder) / "out.csv", fields, OutputOptions()) as writer:
            writer.write(rows_out)
        seconds["writing"] = time.perf_counter() - start
    seconds["(rows)"] = n_records
    return seconds


@app.command()
def stages(
    models: list[Path] = typer.Argument(..., exists=True),
    data_dir: Path = typer.Option(Path("metrics/bench_million")),
    rows: int = typer.Option(200_000, help="Rows of each file to profile"),
    batch_size: int = typer.Option(1000),
    output: Path = typer.Option(Path("metrics/predict_profile.md")),
):
    """The share of each stage, for each pipeline on both files' first `--rows` rows: a pipeline the Doc-free path
    scores (titlecat.text_scoring) is timed on it, by its own stages, unless TITLECAT_DOC_FREE=0."""
    import spacy

    lines = ["| pipeline | file | stage | seconds | share | titles/s of the stage |", "|---|---|---|---:|---:|---:|"]
    record = {}
    for model in models:
        nlp = spacy.load(model)
        for name, column, id_column in (("distinct", "text", None), ("export", "title", "contact_id")):
            nlp(" warm up")
            seconds = timed_stages(nlp, data_dir / f"{name}.csv", column, id_column, rows, batch_size)
            n = seconds.pop("(rows)")
            total = sum(seconds.values())
            record[f"{model}:{name}"] = {"rows": n, "seconds": seconds}
            for stage, value in [*seconds.items(), ("total", total)]:
                lines.append(f"| {model} | {name} | {stage} | {value:.2f} | {value / total:.0%} | {n / value:,.0f} |")
            typer.echo(f"{model} {name}: {n / total:,.0f} titles/s over the stages")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output.with_suffix(".json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    typer.echo("\n".join(lines))


def predict_run(model: Path, source: Path, column: str, id_column: str | None, n_process: int, folder: Path) -> dict:
    """`titlecat predict` of a file in a fresh process: its rows, titles/s with and without loading (the sidecar's)
    and peak RSS."""
    out = folder / "out.csv"
    command = [sys.executable, "-m", "titlecat", "predict", str(source), str(out), "-m", str(model),
               "--column", column, "--n-process", str(n_process), "--no-progress"]  # fmt: skip
    if id_column:
        command += ["--id-column", id_column]
    start = time.perf_counter()
    _, rss = measured(command)
    wall = time.perf_counter() - start
    sidecar = json.loads(Path(f"{out}.json").read_text(encoding="utf-8"))
    rates = sidecar["titles_per_second"]
    return {"rows": sidecar["rows"]["total"], "seconds": wall, "with_loading": rates["with_loading"],
            "without_loading": rates["without_loading"], "rss": rss}  # fmt: skip


@app.command()
def run(
    models: list[Path] = typer.Argument(..., exists=True),
    data_dir: Path = typer.Option(Path("metrics/bench_million")),
    rows: list[int] = typer.Option([1_000_000], help="Rows of each file (the first N; 0: all)"),
    n_process: int = typer.Option(1),
    output: Path = typer.Option(Path("metrics/predict_million.md")),
):
    """`titlecat predict` on each file (its first N rows, for each N) in a fresh process: titles/s and peak RSS."""
    lines = [
        "| pipeline | file | rows | processes | seconds | titles/s with loading | titles/s without | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for model in models:
            for name, column, id_column in FILES:
                for n in rows:
                    source = first_rows(data_dir / f"{name}.csv", n, folder)
                    done = predict_run(model, source, column, id_column, n_process, folder)
                    lines.append(
                        f"| {model} | {name} | {done['rows']:,} | {n_process} | {done['seconds']:.1f} | "
                        f"{done['with_loading']:,.0f} | {done['without_loading']:,.0f} | {done['rss']:,.0f} |"
                    )
                    typer.echo(lines[-1])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n", encoding="utf-8")


def reference_models(assets: Path, folder: Path) -> Path:
    """The reference study's bag-of-words recipe (titlecat.baseline.train_reference_bow) for each task, trained on
    its curated CSV, pickled for a fresh process. Trained for speed: its quality is the study benchmark's."""
    from titlecat.baseline import train_reference_bow
    from titlecat.labels import get_task
    from titlecat.readers import read_curated_csv

    models = {}
    for task in ("seniority", "department"):
        examples = read_curated_csv(assets / get_task(task).curated_asset, get_task(task))[0]
        models[task] = train_reference_bow([e.text for e in examples], [e.label for e in examples])
    path = folder / "reference_bow.pkl"
    path.write_bytes(pickle.dumps(models))
    return path


@app.command()
def table(
    models: list[Path] = typer.Argument(..., exists=True, help="Combined pipelines (the fast one, the default)"),
    assets: Path = typer.Option(Path("assets"), exists=True, help="Where the reference recipe's curated CSVs are"),
    data_dir: Path = typer.Option(Path("metrics/bench_million")),
    rows: int = typer.Option(1_000_000, help="Rows of each file (the first N; 0: all)"),
    encoder_rows: int = typer.Option(30_000, help="Rows of the distinct titles for a pipeline with a title encoder"),
    output: Path = typer.Option(Path("metrics/predict_million.md")),
):
    """Issue 48's table, one run: for each pipeline and the reference bag-of-words recipe, titles/s through
    `titlecat predict` (the recipe: the same file job) on both files, `nlp.pipe` on the distinct titles, peak RSS."""
    from titlecat.multilingual import ENCODER_FACTORY

    header = [
        "| pipeline | predict: distinct rows | titles/s | peak RSS MiB | predict: export rows | titles/s "
        "| peak RSS MiB | `nlp.pipe` titles/s (distinct) | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines, record = list(header), {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for model in models:
            # The default's encoder labels ~600 titles/s here: a million distinct would take half an hour.
            with_encoder = f'"{ENCODER_FACTORY}"' in (model / "config.cfg").read_text(encoding="utf-8")
            runs = {}
            for name, column, id_column in FILES:
                n = encoder_rows if with_encoder and name == "distinct" else rows
                source = first_rows(data_dir / f"{name}.csv", n, folder)
                runs[name] = predict_run(model, source, column, id_column, 1, folder)
                typer.echo(f"{model} predict {name}: {runs[name]}")
            source = first_rows(data_dir / "distinct.csv", encoder_rows if with_encoder else rows, folder)
            rate, rss = measured([sys.executable, "-c", PIPE_JOB, str(model), str(source), "text"])
            runs["nlp.pipe"] = {"rows": runs["distinct"]["rows"], "without_loading": float(rate), "rss": rss}
            typer.echo(f"{model} nlp.pipe: {runs['nlp.pipe']}")
            record[str(model)] = runs
        reference = reference_models(assets, folder)
        runs = {}
        for name, column, id_column in FILES:
            source = first_rows(data_dir / f"{name}.csv", rows, folder)
            command = [sys.executable, "-c", REFERENCE_JOB, str(reference), str(source), str(folder / "reference.csv"),
                       column, id_column or ""]  # fmt: skip
            printed, rss = measured(command)
            n, rate = printed.split()
            runs[name] = {"rows": int(n), "without_loading": float(rate), "rss": rss}
            typer.echo(f"reference bag-of-words {name}: {runs[name]}")
        record["reference bag-of-words recipe"] = runs
    for system, runs in record.items():
        distinct, export = runs["distinct"], runs["export"]
        pipe = runs.get("nlp.pipe")
        lines.append(
            f"| {system} | {distinct['rows']:,} | {distinct['without_loading']:,.0f} | {distinct['rss']:,.0f} | "
            f"{export['rows']:,} | {export['without_loading']:,.0f} | {export['rss']:,.0f} | "
            + (f"{pipe['without_loading']:,.0f} | {pipe['rss']:,.0f} |" if pipe else "| |")
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    app()
