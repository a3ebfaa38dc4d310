"""Augmented train set of one task: the curated train split plus every valid pseudo-labelled CV title."""

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
    augmented.merge(to_docbin(pseudo, task, nlp))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    augmented.to_disk(output_path)
    report = {
        "task": task.name,
        "curated_train": len(augmented) - len(pseudo),
        "pseudo_labelled": len(pseudo),
        "pseudo_label_counts": label_counts(pseudo, task),
    }
    output_path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(f"✔ {task.name}: {report['curated_train']} curated + {len(pseudo)} pseudo-labelled → {output_path}")


if __name__ == "__main__":
    typer.run(main)
