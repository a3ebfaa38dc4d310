"""Where `titlecat predict`'s time goes, and how fast it labels a million titles.

`files`: two million-row CSVs from a study's assets: every title distinct (`distinct.csv`: the curated and CV titles,
then two of them joined as a double role, "Sales Manager / Vertrieb", until a million are distinct), and an export as a
CRM gives one (`export.csv`: ids, a company and an e-mail column beside titles drawn by Zipf's law over the same
titles, so common ones repeat).
`stages`: one process, the first `--rows` rows of a file, each stage of `predict_file` run on its own over the whole
sample (reading, checking, tokenizing, each pipeline component, the answers, writing): seconds and share, a table.
`run`: `titlecat predict` on each file in a fresh process: titles/s with and without loading, and peak RSS.
"""

from __future__ import annotations

import csv
import json
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
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
)


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
    import itertools

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
    with tempfile.TemporaryDirectory() as folder:
        for model in models:
            for name, column, id_column in (("distinct", "text", None), ("export", "title", "contact_id")):
                for n in rows:
                    source = data_dir / f"{name}.csv"
                    if n:
                        source = Path(folder) / f"{name}_{n}.csv"
                        with (data_dir / f"{name}.csv").open(encoding="utf-8") as full, source.open("w") as part:
                            for index, line in enumerate(full):
                                if index > n:
                                    break
                                part.write(line)
                    out = Path(folder) / "out.csv"
                    command = [sys.executable, "-m", "titlecat", "predict", str(source), str(out), "-m", str(model),
                               "--column", column, "--n-process", str(n_process), "--no-progress"]  # fmt: skip
                    if id_column:
                        command += ["--id-column", id_column]
                    start = time.perf_counter()
                    result = subprocess.run([sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True)
                    wall = time.perf_counter() - start
                    if result.returncode:
                        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
                    rss = int(result.stdout.split()[-2]) / 1024
                    sidecar = json.loads(Path(f"{out}.json").read_text(encoding="utf-8"))
                    total = sidecar["rows"]["total"]
                    rates = sidecar["titles_per_second"]
                    lines.append(
                        f"| {model} | {name} | {total:,} | {n_process} | {wall:.1f} | {rates['with_loading']:,.0f} | "
                        f"{rates['without_loading']:,.0f} | {rss:,.0f} |"
                    )
                    typer.echo(lines[-1])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    app()
