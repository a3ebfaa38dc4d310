"""Two pipelines of one task on the same held-out titles: B minus A in accuracy and macro-F1, with paired bootstrap
intervals (titlecat.metrics.paired_difference_intervals), as a Markdown table. For the choice sets (cv-dev, the Dutch
dev set): whether they can tell two recipes apart at all."""

import json
from pathlib import Path

import spacy
import typer

import titlecat.components  # noqa: F401  (registers the architectures the pipelines use)
import titlecat.multilingual  # noqa: F401
import titlecat.trf_textcat  # noqa: F401
from titlecat.corpus import read_docbin
from titlecat.labels import get_task
from titlecat.metrics import paired_difference_intervals, predict_labels


def main(
    task_name: str = typer.Argument(..., metavar="TASK"),
    model_a: Path = typer.Argument(..., exists=True, file_okay=False, help="Pipeline A (the reference)"),
    model_b: Path = typer.Argument(..., exists=True, file_okay=False, help="Pipeline B (compared with A)"),
    corpus_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="The task's corpus folder"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Markdown table; a JSON of the same beside it"),
    splits: str = typer.Option(
        "cv_dev,dutch_dev,multilingual_dev", help="Comma-separated corpus files; those missing are skipped"
    ),
    resamples: int = typer.Option(1000),
    seed: int = typer.Option(42),
):
    task = get_task(task_name)
    names = [name for name in (split.strip() for split in splits.split(",")) if (corpus_dir / f"{name}.spacy").exists()]
    if not names:
        raise typer.BadParameter(f"none of {splits!r} is a corpus file in {corpus_dir}", param_hint="--splits")
    pipelines = {"a": spacy.load(model_a), "b": spacy.load(model_b)}
    rows, results = [], {}
    for split in names:
        texts, gold = read_docbin(corpus_dir / f"{split}.spacy", task)
        predicted = {key: predict_labels(nlp, texts) for key, nlp in pipelines.items()}
        result = paired_difference_intervals(gold, predicted["a"], predicted["b"], resamples=resamples, seed=seed)
        results[split] = {"n": len(gold), **result}
        for metric, figures in result.items():
            low, high = figures["interval"]
            rows.append(
                f"| {split} | {len(gold)} | {metric} | {figures['difference']:+.3f} | [{low:+.3f}, {high:+.3f}] | "
                f"{figures['b_ahead']:.0%} |"
            )
    table = [
        f"{task.name}: B = {model_b} minus A = {model_a} ({resamples} paired bootstrap resamples, seed {seed})",
        "",
        "| set | titles | metric | B - A | 95% interval | resamples with B ahead |",
        "|---|---:|---|---:|---|---:|",
        *rows,
    ]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text("\n".join(table) + "\n", encoding="utf-8")
    output_path.with_suffix(".json").write_text(
        json.dumps({"task": task.name, "a": str(model_a), "b": str(model_b), "sets": results}, indent=2) + "\n"
    )
    typer.echo("\n".join(table))


if __name__ == "__main__":
    typer.run(main)
