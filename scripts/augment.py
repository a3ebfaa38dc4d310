"""Augmented train set of one task: the curated train split plus every valid pseudo-labelled CV title, and the ESCO
names of `esco_corpus.py` at their weight.

Pseudo labels are mapped onto the annotators' convention like the curated ones (docs/labels.md), and each
pseudo-labelled title goes in `--pseudo-label-weight` times (docs/quality.md). Each ESCO name counts `--esco-weight`
of a curated title in the fit (its doc's sample weight; rule 7 of docs/multilingual.md chooses it).
"""

import json
from pathlib import Path

import typer

from titlecat.corpus import (
    LANG_KEY,
    WEIGHT_KEY,
    harmonise,
    label_counts,
    make_nlp,
    read_docbin,
    read_user_data,
    write_corpus,
)
from titlecat.labels import get_task
from titlecat.readers import DataError, Example, read_pseudo_labels


def main(
    task_name: str = typer.Argument(..., metavar="TASK"),
    train_path: Path = typer.Argument(..., exists=True, dir_okay=False),
    pseudo_labels_path: Path = typer.Argument(..., exists=True, dir_okay=False),
    output_path: Path = typer.Argument(..., dir_okay=False),
    pseudo_label_weight: int = typer.Option(1, min=1, help="Copies of each pseudo-labelled title in train"),
    esco: Path | None = typer.Option(None, exists=True, dir_okay=False, help="esco.spacy of scripts/esco_corpus.py"),
    esco_weight: float = typer.Option(0.0, min=0.0, help="Each ESCO name's weight in the fit; 0 = none added"),
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
    user_data = [{} for _ in examples]
    esco_names = []
    if esco is not None and esco_weight > 0:
        esco_texts, esco_labels = read_docbin(esco, task, nlp)
        esco_names = [
            Example(t, label, esco.name, i) for i, (t, label) in enumerate(zip(esco_texts, esco_labels, strict=True))
        ]
        examples += esco_names
        user_data += [{WEIGHT_KEY: esco_weight, LANG_KEY: lang} for lang in read_user_data(esco, LANG_KEY, "?", nlp)]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    write_corpus(output_path, examples, task, nlp, user_data)
    report = {
        "task": task.name,
        "curated_train": len(curated),
        "pseudo_labelled": len(pseudo),
        "pseudo_label_weight": pseudo_label_weight,
        "pseudo_label_counts": label_counts(pseudo, task),
        "pseudo_labels_relabelled_to_annotators_convention": relabelled,
        "esco_names": len(esco_names),
        "esco_weight": esco_weight if esco_names else 0.0,
        "esco_label_counts": label_counts(esco_names, task),
        "total": len(examples),
        "label_counts": label_counts(examples, task),
    }
    output_path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(
        f"✔ {task.name}: {len(curated)} curated + {len(pseudo)} pseudo-labelled ×{pseudo_label_weight}"
        + (f" + {len(esco_names)} ESCO names ×{esco_weight:g}" if esco_names else "")
        + f" ({relabelled} pseudo-labels mapped onto the annotators' convention) → {output_path}"
    )


if __name__ == "__main__":
    typer.run(main)
