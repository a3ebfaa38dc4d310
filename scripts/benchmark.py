"""metrics/benchmark.md: every pipeline and a TF-IDF + logistic regression baseline, with OOD confidence intervals,
training wall time and inference speed, all measured in this run on this machine."""

import json
import os
import platform
import time
from functools import partial
from pathlib import Path

import spacy
import typer

import titlecat.components  # noqa: F401  (registers the architectures the pipelines use)
from titlecat.baseline import train_tfidf_logreg
from titlecat.corpus import TRAIN_FILES, casefold_set, read_docbin
from titlecat.labels import TASKS
from titlecat.metrics import HEADLINE, bootstrap_intervals, classification_metrics, predict_labels, seen_unseen_metrics
from titlecat.reference import read_reference_results

SPEED_TITLES = 20_000  # enough titles that start-up costs vanish from titles/second


def score(gold, predicted, task, texts, train_titles, seed) -> dict:
    scores = classification_metrics(gold, predicted, task)
    result = {k: scores[k] for k in HEADLINE if k in scores}
    result["ci95"] = bootstrap_intervals(gold, predicted, task, seed=seed)
    result.update(seen_unseen_metrics(gold, predicted, texts, train_titles, task))
    return result


def titles_per_second(predict, texts, budget_seconds: float = 3.0) -> float:
    """Titles/second predicting batches of 1,000 titles, for a few seconds or SPEED_TITLES titles."""
    batch = (texts * (1000 // len(texts) + 1))[:1000]
    done, start = 0, time.perf_counter()
    while done < SPEED_TITLES and (done == 0 or time.perf_counter() - start < budget_seconds):
        predict(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def main(
    corpus_dir: Path = typer.Option(Path("corpus")),
    training_dir: Path = typer.Option(Path("training")),
    assets_dir: Path = typer.Option(Path("assets")),
    output_path: Path = typer.Option(Path("metrics/benchmark.md")),
    gpu_id: int = typer.Option(-1),
    seed: int = typer.Option(42),
):
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    # Every config trained so far (cpu, trf, ...), so that they sit side by side.
    configs = sorted(d.name for d in training_dir.iterdir() if (d / "seniority" / "base" / "model-best").exists())
    rows = []
    for task in TASKS.values():
        ood_texts, ood_gold = read_docbin(corpus_dir / task.name / "ood.spacy", task)
        for variant, train_file in TRAIN_FILES.items():
            train_texts, train_gold = read_docbin(corpus_dir / task.name / train_file, task)
            train_titles = casefold_set(train_texts)
            for config in configs:
                model_dir = training_dir / config / task.name / variant
                nlp = spacy.load(model_dir / "model-best")
                rows.append(
                    {
                        "system": f"titlecat {config}",
                        "task": task.name,
                        "variant": variant,
                        "ood": score(ood_gold, predict_labels(nlp, ood_texts), task, ood_texts, train_titles, seed),
                        "train_seconds": json.loads((model_dir / "train_time.json").read_text())["seconds"],
                        "titles_per_second": titles_per_second(partial(predict_labels, nlp), ood_texts),
                    }
                )
                typer.echo(f"✔ titlecat {config} {task.name} {variant}")
            start = time.perf_counter()
            baseline = train_tfidf_logreg(train_texts, train_gold, seed)
            train_seconds = time.perf_counter() - start
            rows.append(
                {
                    "system": "TF-IDF + logistic regression",
                    "task": task.name,
                    "variant": variant,
                    "ood": score(ood_gold, list(baseline.predict(ood_texts)), task, ood_texts, train_titles, seed),
                    "train_seconds": train_seconds,
                    "titles_per_second": titles_per_second(baseline.predict, ood_texts),
                }
            )
            typer.echo(f"✔ TF-IDF baseline {task.name} {variant}")
    references = read_reference_results(assets_dir / "all_results.csv")
    result = {
        "machine": f"{platform.machine()}, {_cpu_count()} cores",
        "configs": configs,
        "rows": rows,
        "reference": references,
    }
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    output_path.write_text(render(result))
    typer.echo(f"✔ {output_path}")


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def _metric(scores: dict, name: str) -> str:
    if name not in scores:
        return ""
    low, high = scores["ci95"][name]
    return f"{scores[name]:.3f} [{low:.3f}, {high:.3f}]"


def _subset(scores: dict) -> str:
    return f"{scores['accuracy']:.3f} ({scores['n']})" if scores["n"] else "– (0)"


def render(result: dict) -> str:
    lines = [
        "# Benchmark",
        "",
        f"OOD = 623 ACTIVE annotated CV positions (evaluation only). 95% bootstrap intervals (1,000 resamples) "
        f"in brackets. Seen/unseen: OOD titles that do / do not occur verbatim (ignoring case) in that "
        f"pipeline's training data. Wall time and speed measured in this run on {result['machine']}; "
        f"speed = titles/second predicting batches of 1,000 titles (up to {SPEED_TITLES:,} titles or 3 s), "
        "one process.",
        "",
    ]
    for task in TASKS:
        lines += [
            f"## {task}",
            "",
            "| system | variant | OOD accuracy | OOD macro-F1 | OOD MAE | seen acc (n) | unseen acc (n) "
            "| train s | titles/s |",
            "|---|---|---|---|---|---|---|---:|---:|",
        ]
        for row in (r for r in result["rows"] if r["task"] == task):
            ood = row["ood"]
            lines.append(
                f"| {row['system']} | {row['variant']} | {_metric(ood, 'accuracy')} | "
                f"{_metric(ood, 'macro_f1')} | {_metric(ood, 'mae')} | "
                f"{_subset(ood['seen_in_train'])} | {_subset(ood['unseen_in_train'])} | "
                f"{row['train_seconds']:.0f} | {row['titles_per_second']:,.0f} |"
            )
        for ref in (r for r in result["reference"] if r["target"] == task):
            mae = f"{ref['mae']:.3f}" if ref["mae"] is not None else ""
            lines.append(
                f"| reference: {ref['model']} | | {ref['accuracy']:.3f} | {ref['macro_f1']:.3f} | {mae} | | | | |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    typer.run(main)
