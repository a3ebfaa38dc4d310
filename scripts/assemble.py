"""One pipeline answering both tasks: the augmented textcats sourced as "seniority" and "department"."""

import json
from pathlib import Path

import spacy
import typer

from titlecat.combined import FACTORY, combine
from titlecat.labels import TASKS


def main(
    seniority_path: Path = typer.Argument(..., exists=True, file_okay=False),
    department_path: Path = typer.Argument(..., exists=True, file_okay=False),
    output_dir: Path = typer.Argument(..., file_okay=False),
    config: str = typer.Option("cpu"),
    version: str = typer.Option("0.1.0"),
    calibration: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="calibrate's JSON: each task's temperature (none: scores as trained)"
    ),
):
    temperatures = {}
    if calibration is not None:
        tasks = json.loads(calibration.read_text())["tasks"]
        temperatures = {task: tasks[task]["temperature"] for task in ("seniority", "department")}
    sources = {"seniority": spacy.load(seniority_path), "department": spacy.load(department_path)}
    nlp = combine(sources, temperatures=temperatures)
    nlp.meta.update(
        {
            "name": f"titlecat_combined_{config}",
            "version": version,
            "description": f"titlecat: seniority and department of a job title (any language), {config} pipelines "
            f"trained on curated titles + LLM pseudo-labelled CV titles. doc._.seniority, doc._.department "
            f"and their scores doc._.seniority_score, doc._.department_score ({FACTORY} component); scores "
            f"calibrated on CV titles by temperature scaling (meta titlecat.temperatures).",
            "author": "titlecat",
            "license": "MIT",
            "titlecat": {
                "config": config,
                "tasks": {task: list(TASKS[task].labels) for task in ("seniority", "department")},
                "sources": {"seniority": str(seniority_path), "department": str(department_path)},
                "temperatures": temperatures,
            },
        }
    )
    nlp.to_disk(output_dir)
    typer.secho(f"✔ {output_dir}: {nlp.pipe_names}", fg="green")


if __name__ == "__main__":
    typer.run(main)
