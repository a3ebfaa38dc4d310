"""Augmented train set of one task: the curated train split plus every valid pseudo-labelled CV title.

Each pseudo-labelled title goes in `--pseudo-label-weight` times: weight 3 raised
agreement with the LLM on held-out CVs (docs/quality.md), the only CV-distribution
signal that the OOD rule leaves us.
"""

import json
from pathlib import Path

import typer
from spacy.tokens import DocBin

from titlecat.corpus import label_counts, make_nlp, to_docbin
from titlecat.labels import get_task
from titlecat.readers import DataError, read_pseudo_labels


def main(
    task_name: str = typer.Argument(..., metavar="TASK"),
    train_path: Path = typer.Argument(..., exists=True, dir_okay=False),
    pseudo_labels_path: Path = typer.Argument(..., exists=True, dir_okay=False),
    output_path: Path = typer.Argument(..., dir_okay=False),
    pseudo_label_weight: int = typer.Option(1, min=1, help="Copies of each pseudo-labelled title in train"),
):
    task = get_task(task_name)
    try:
        pseudo = read_pseudo_labels(pseudo_labels_path, task)
    except DataError as error:
        typer.secho(f"✘ {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    nlp = make_nlp()
    augmented = DocBin(attrs=["ORTH"], store_user_data=False)
    augmented.merge(DocBin().from_disk(train_path))
    pseudo_docbin = to_docbin(pseudo, task, nlp)
    for _ in range(pseudo_label_weight):
        augmented.merge(pseudo_docbin)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    augmented.to_disk(output_path)
    report = {
        "task": task.name,
        "curated_train": len(augmented) - len(pseudo) * pseudo_label_weight,
        "pseudo_labelled": len(pseudo),
        "pseudo_label_weight": pseudo_label_weight,
        "pseudo_label_counts": label_counts(pseudo, task),
    }
    output_path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    curated, weight = report["curated_train"], pseudo_label_weight
    typer.echo(f"✔ {task.name}: {curated} curated + {len(pseudo)} pseudo-labelled ×{weight} → {output_path}")


if __name__ == "__main__":
    typer.run(main)
