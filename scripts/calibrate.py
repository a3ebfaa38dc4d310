"""Calibrate the augmented pipelines' scores: temperature scaling fitted on cv-dev, measured on test, cv-dev and OOD.

Writes the calibration JSON (the temperatures `assemble` stores in the combined pipeline, and the expected
calibration error before/after per set) and one reliability diagram per task beside it. Only cv-dev is fitted
on; test and OOD are measured.
"""

import json
from pathlib import Path

import spacy
import typer

import titlecat.components  # noqa: F401  (registers the architectures the pipelines use)
from titlecat.confidence import calibration_report, gold_indices, plot_reliability, probabilities
from titlecat.corpus import read_docbin
from titlecat.labels import TASKS
from titlecat.readers import read_cv_dev, read_cv_positions

SETS = {"test": "test.spacy", "cv_dev": "cv_dev.spacy", "ood": "ood.spacy"}


def cv_dev_groups(annotated: Path, task, texts: list[str]) -> list[int]:
    """The CV of each cv-dev title (cv_dev.spacy is read_cv_dev's order), for folds of whole CVs."""
    examples, _ = read_cv_dev(annotated, task)
    if [example.text for example in examples] != texts:
        raise ValueError(f"cv_dev.spacy of {task.name} does not follow {annotated}: rerun corpora")
    positions, _ = read_cv_positions(annotated, labelled=True)
    cv_of_row = {position.row: position.cv for position in positions}
    return [cv_of_row[example.row] for example in examples]


def main(
    training_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="training/CONFIG"),
    corpus_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    annotated: Path = typer.Argument(..., exists=True, dir_okay=False, help="linkedin-cvs-annotated.json"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Calibration JSON; reliability PNGs go beside it"),
    gpu_id: int = typer.Option(-1),
):
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    result = {"pipelines": "augmented", "tasks": {}}
    for task in TASKS.values():
        nlp = spacy.load(training_dir / task.name / "augmented" / "model-best")
        sets, groups = {}, None
        for name, file in SETS.items():
            texts, gold = read_docbin(corpus_dir / task.name / file, task)
            sets[name] = (probabilities(nlp, texts, task.labels), gold_indices(gold, task.labels))
            if name == "cv_dev":
                groups = cv_dev_groups(annotated, task, texts)
        report = calibration_report(sets, groups)
        result["tasks"][task.name] = report
        panels = {name: {"probs": probs, "gold": gold} for name, (probs, gold) in sets.items()}
        png = output_path.parent / f"reliability_{task.name}.png"
        plot_reliability(panels, report["temperature"], f"{task.name}, augmented: reliability", png)
        for name, scores in report["sets"].items():
            typer.echo(
                f"{task.name} {name}: ECE {scores['ece_before']:.3f} -> {scores['ece_after']:.3f} "
                f"(T = {report['temperature']:g})"
            )
        typer.echo(f"{task.name} cv-dev, cross-validated: ECE {report['cv_dev_cross_validated']['ece']:.3f}")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(json.dumps(result, indent=2) + "\n")
    typer.secho(f"✔ {output_path}", fg="green")


if __name__ == "__main__":
    typer.run(main)
