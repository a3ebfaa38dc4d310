"""Augmented train set of one task: the curated train split plus every valid pseudo-labelled CV title.

Pseudo labels are mapped onto the annotators' convention like the curated ones (docs/labels.md), and each
pseudo-labelled title goes in `--pseudo-label-weight` times (docs/quality.md).
"""

import json
from pathlib import Path

import typer

from titlecat.corpus import harmonise, label_counts, make_nlp, read_docbin, to_docbin
from titlecat.labels import get_task
from titlecat.readers import DataError, Example, read_pseudo_labels


def main(
    task_name: str = typer.Argument(..., metavar="TASK"),
    train_path: Path = typer.Argument(..., exists=True, dir_okay=False),
    pseudo_labels_path: Path = typer.Argument(..., exists=True, dir_okay=False),
    output_path: Path = typer.Argument(..., dir_okay=False),
    pseudo_label_weight: int = typer.Option(1, min=1, help="Copies of each pseudo-labelled title in train"),
    harmonise_labels: bool = typer.Option(
        True, "--harmonise/--no-harmonise", help="Pseudo labels in the annotators' convention (docs/labels.md)"
    ),
):
    task = get_task(task_name)
    try:
        pseudo = read_pseudo_labels(pseudo_labels_path, task)
    except DataError as error:
        typer.secho(f"✘ {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    relabelled = 0
    if harmonise_labels:
        pseudo, relabelled = harmonise(pseudo, task)
    nlp = make_nlp()
    texts, labels = read_docbin(train_path, task, nlp)
    curated = [
        Example(text, label, train_path.name, i) for i, (text, label) in enumerate(zip(texts, labels, strict=True))
    ]
    examples = curated + pseudo * pseudo_label_weight
    output_path.parent.mkdir(parents=True, exist_ok=True)
    to_docbin(examples, task, nlp).to_disk(output_path)
    report = {
        "task": task.name,
        "curated_train": len(curated),
        "pseudo_labelled": len(pseudo),
        "pseudo_label_weight": pseudo_label_weight,
        "pseudo_label_counts": label_counts(pseudo, task),
        "pseudo_labels_relabelled_to_annotators_convention": relabelled,
        "total": len(examples),
        "label_counts": label_counts(examples, task),
    }
    output_path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(
        f"✔ {task.name}: {len(curated)} curated + {len(pseudo)} pseudo-labelled ×{pseudo_label_weight}"
        + f" ({relabelled} pseudo-labels mapped onto the annotators' convention) → {output_path}"
    )


if __name__ == "__main__":
    typer.run(main)
