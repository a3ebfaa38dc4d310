"""metrics/benchmark.md: every pipeline, a TF-IDF + logistic regression baseline on the same data and the reference
study's bag-of-words recipe, on cv-dev and OOD with confidence intervals, with training wall time and inference speed
(and their ratio to the TF-IDF baseline), all measured in this run on this machine."""

import gc
import json
import os
import platform
import time
from functools import partial
from pathlib import Path

import spacy
import typer

import titlecat.components  # noqa: F401  (registers the architectures the pipelines use)
from titlecat.baseline import train_reference_bow, train_tfidf_logreg
from titlecat.corpus import CV_SETS, TRAIN_FILES, casefold_set, curated_splits, oversample_to_largest, read_docbin
from titlecat.labels import TASKS
from titlecat.metrics import HEADLINE, bootstrap_intervals, classification_metrics, predict_labels, seen_unseen_metrics
from titlecat.predict import freeze_long_lived_objects
from titlecat.readers import read_pseudo_labels
from titlecat.reference import read_reference_results, reference_label

SPEED_TITLES = 20_000  # enough titles that start-up costs vanish from titles/second


def score(gold, predicted, task, texts, train_titles, seed) -> dict:
    scores = classification_metrics(gold, predicted, task)
    result = {k: scores[k] for k in HEADLINE if k in scores}
    result["ci95"] = bootstrap_intervals(gold, predicted, task, seed=seed)
    result.update(seen_unseen_metrics(gold, predicted, texts, train_titles, task))
    return result


def score_sets(predict, eval_sets, task, train_titles, seed) -> dict:
    """Scores on cv-dev and OOD of one system (`predict`: titles -> labels)."""
    return {
        name: score(gold, list(predict(texts)), task, texts, train_titles, seed)
        for name, (texts, gold) in eval_sets.items()
    }


def reference_bow_data(assets_dir: Path, corpus_dir: Path, pseudo_labels: Path, task, seed: int, max_per_label: int):
    """The reference recipe's data: the curated train split with the CSV's own labels plus every pseudo-label
    once, as the LLM gave it; department oversampled, as the study did."""
    splits, _ = curated_splits(assets_dir, task, seed, max_per_label)
    examples = splits["train"] + read_pseudo_labels(pseudo_labels, task)
    if task.name == "department":
        examples = oversample_to_largest(examples, seed)
    return [e.text.lower() for e in examples], [e.label for e in examples]


def titles_per_second(predict, texts, budget_seconds: float = 3.0) -> float:
    """Titles/second predicting batches of 1,000 titles, for a few seconds or SPEED_TITLES titles.

    With the process's objects frozen out of the garbage collector's reach, as `titlecat predict` runs
    (titlecat.predict.freeze_long_lived_objects): otherwise a full collection over the imports' objects lands in
    one of the batches or not, and moves the figure by a fifth from run to run.
    """
    batch = (texts * (1000 // len(texts) + 1))[:1000]
    freeze_long_lived_objects()
    try:
        done, start = 0, time.perf_counter()
        while done < SPEED_TITLES and (done == 0 or time.perf_counter() - start < budget_seconds):
            predict(batch)
            done += len(batch)
        return done / (time.perf_counter() - start)
    finally:
        gc.unfreeze()


def main(
    corpus_dir: Path = typer.Option(Path("corpus")),
    pseudo_labels: Path = typer.Option(
        Path("corpus/pseudo_labels/recorded.jsonl"), help="The pseudo-labels the augmented pipelines were trained with"
    ),
    training_dir: Path = typer.Option(Path("training")),
    assets_dir: Path = typer.Option(Path("assets")),
    output_path: Path = typer.Option(Path("metrics/benchmark.md")),
    gpu_id: int = typer.Option(-1),
    seed: int = typer.Option(42),
    max_per_label: int = typer.Option(0, help="As in corpora: the reference recipe rebuilds its curated split"),
):
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    # Every config trained so far (cpu, trf, ...), so that they sit side by side.
    configs = sorted(d.name for d in training_dir.iterdir() if (d / "seniority" / "base" / "model-best").exists())
    rows = []
    for task in TASKS.values():
        eval_sets = {name: read_docbin(corpus_dir / task.name / file, task) for name, file in CV_SETS.items()}
        ood_texts = eval_sets["ood"][0]
        for variant, train_file in TRAIN_FILES.items():
            train_texts, train_gold = read_docbin(corpus_dir / task.name / train_file, task)
            train_titles = casefold_set(train_texts)
            for config in configs:
                model_dir = training_dir / config / task.name / variant
                nlp = spacy.load(model_dir / "model-best")
                predict = partial(predict_labels, nlp)
                rows.append(
                    {
                        "system": f"titlecat {config}",
                        "task": task.name,
                        "variant": variant,
                        **score_sets(predict, eval_sets, task, train_titles, seed),
                        "train_seconds": json.loads((model_dir / "train_time.json").read_text())["seconds"],
                        "titles_per_second": titles_per_second(predict, ood_texts),
                    }
                )
                typer.echo(f"✔ titlecat {config} {task.name} {variant}")
            baselines = [("TF-IDF + logistic regression", train_tfidf_logreg, train_texts, train_gold)]
            if variant == "augmented":
                texts, gold = reference_bow_data(assets_dir, corpus_dir, pseudo_labels, task, seed, max_per_label)
                baselines.append(("reference bag-of-words recipe, retrained", train_reference_bow, texts, gold))
            for system, train_baseline, texts, gold in baselines:
                start = time.perf_counter()
                baseline = train_baseline(texts, gold, seed)
                train_seconds = time.perf_counter() - start
                rows.append(
                    {
                        "system": system,
                        "task": task.name,
                        "variant": variant,
                        **score_sets(baseline.predict, eval_sets, task, casefold_set(texts), seed),
                        "train_seconds": train_seconds,
                        "titles_per_second": titles_per_second(baseline.predict, ood_texts),
                    }
                )
                typer.echo(f"✔ {system} {task.name} {variant}")
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


def _cv_dev(scores: dict) -> str:
    values = [scores["accuracy"], scores["macro_f1"]] + ([scores["mae"]] if "mae" in scores else [])
    return " / ".join(f"{value:.3f}" for value in values)


def render(result: dict) -> str:
    lines = [
        "# Benchmark",
        "",
        "cv-dev = the 217 positions of the annotated CVs with no ACTIVE position (made every choice; never trained "
        "on): accuracy / macro-F1 (/ MAE). OOD = the 623 ACTIVE positions (evaluation only; decided nothing). "
        "95% bootstrap intervals (1,000 resamples) in brackets. Seen/unseen: OOD titles that do / do not occur "
        "verbatim (ignoring case) in that system's training data. Wall time and speed measured in this run on "
        f"{result['machine']}; speed = titles/second predicting batches of 1,000 titles (up to {SPEED_TITLES:,} "
        "titles or 3 s), one process, its objects frozen out of the garbage collector's reach as `titlecat "
        "predict` runs; ×: the ratio to the TF-IDF baseline of the same variant. The reference "
        "bag-of-words recipe is retrained here on the curated train split with the CSV's labels plus every "
        "pseudo-label once (department oversampled), as the study built it.",
        "",
    ]
    for task in TASKS:
        lines += [
            f"## {task}",
            "",
            "| system | variant | cv-dev | OOD accuracy | OOD macro-F1 | OOD MAE | seen acc (n) | unseen acc (n) "
            "| train s (×) | titles/s (×) |",
            "|---|---|---|---|---|---|---|---|---:|---:|",
        ]
        task_rows = [r for r in result["rows"] if r["task"] == task]
        tfidf = {r["variant"]: r for r in task_rows if r["system"] == "TF-IDF + logistic regression"}
        for row in task_rows:
            ood, base = row["ood"], tfidf.get(row["variant"], row)
            lines.append(
                f"| {row['system']} | {row['variant']} | {_cv_dev(row['cv_dev'])} | {_metric(ood, 'accuracy')} | "
                f"{_metric(ood, 'macro_f1')} | {_metric(ood, 'mae')} | "
                f"{_subset(ood['seen_in_train'])} | {_subset(ood['unseen_in_train'])} | "
                f"{row['train_seconds']:.0f} ({row['train_seconds'] / base['train_seconds']:.1f}×) | "
                f"{row['titles_per_second']:,.0f} ({row['titles_per_second'] / base['titles_per_second']:.2f}×) |"
            )
        for ref in (r for r in result["reference"] if r["target"] == task):
            mae = f"{ref['mae']:.3f}" if ref["mae"] is not None else ""
            lines.append(
                f"| {reference_label(ref)} | | | {ref['accuracy']:.3f} | {ref['macro_f1']:.3f} | {mae} | | | | |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    typer.run(main)
