"""Evaluate one pipeline on test (in-distribution), cv-dev (for choices) and OOD (ACTIVE annotated CV positions)."""

import json
import time
from pathlib import Path

import spacy
import typer

import titlecat.components  # noqa: F401  (registers the architectures the pipelines use)
import titlecat.trf_textcat  # noqa: F401
from titlecat.corpus import CV_SETS, LANG_KEY, casefold_set, read_docbin, read_user_data
from titlecat.labels import get_task
from titlecat.metrics import (
    classification_metrics,
    per_language_metrics,
    plot_confusion,
    predict_labels,
    seen_unseen_metrics,
)


def main(
    task_name: str = typer.Argument(..., metavar="TASK"),
    model_path: Path = typer.Argument(..., exists=True, file_okay=False),
    corpus_dir: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="Holds test.spacy, cv_dev.spacy and ood.spacy"
    ),
    train_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="The pipeline's training corpus"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Metrics JSON; PNGs go beside it"),
    gpu_id: int = typer.Option(-1),
    splits: str = typer.Option(
        ",".join(("test", *CV_SETS)),
        help="Comma-separated corpus files to score; a recipe comparison scores dev,cv_dev and never ood",
    ),
):
    task = get_task(task_name)
    names = [split.strip() for split in splits.split(",") if split.strip()]
    missing = [split for split in names if not (corpus_dir / f"{split}.spacy").exists()]
    if not names or missing:
        raise typer.BadParameter(f"no corpus file {corpus_dir}/{(missing or ['?'])[0]}.spacy", param_hint="--splits")
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    nlp = spacy.load(model_path)
    train_titles = casefold_set(read_docbin(train_path, task, nlp)[0])
    name = output_path.stem
    result = {
        "task": task.name,
        "pipeline": name,
        "config": output_path.parent.name,
        "model": str(model_path),
        "train_corpus": str(train_path),
    }
    for split in names:
        texts, gold = read_docbin(corpus_dir / f"{split}.spacy", task, nlp)
        start = time.perf_counter()
        predicted = predict_labels(nlp, texts)
        seconds = time.perf_counter() - start
        scores = classification_metrics(gold, predicted, task)
        scores["titles_per_second"] = len(texts) / seconds if seconds else None
        scores.update(seen_unseen_metrics(gold, predicted, texts, train_titles, task))
        languages = read_user_data(corpus_dir / f"{split}.spacy", LANG_KEY, None, nlp)
        if any(languages):  # the multilingual and Dutch dev sets: each title's language rides with it
            scores["per_language"] = per_language_metrics(gold, predicted, languages, task)
        result[split] = scores
        plot_confusion(
            scores["confusion"], task.labels, f"{name} on {split}", output_path.parent / f"{name}_{split}_confusion.png"
        )
        typer.echo(
            f"{name} {split}: accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}"
            + (f", MAE {scores['mae']:.4f}" if "mae" in scores else "")
        )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
