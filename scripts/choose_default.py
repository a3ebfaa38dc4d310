"""Decide, task by task, which config `training/seniority` and `training/department` load, by rule 8 of
docs/multilingual.md, from evaluate's scores on the choice sets only, and link them; `training/combined` is that
config's combined pipeline, or, when the tasks chose differently, one assembled from the two chosen textcats.

A task's score is the mean macro-F1 of its augmented pipeline on the task's choice sets (cv-dev, the multilingual dev
set, and for department the Dutch dev set); the challenger (multilingual) takes a task when its score is at least
`min_gain` above the incumbent's (fast). OOD scores are in the same files; this step never reads them.
"""

import json
from pathlib import Path

import spacy
import typer

from titlecat.combined import combine
from titlecat.labels import TASKS

CHOICE_SETS = {"seniority": ("cv_dev", "multilingual_dev"), "department": ("cv_dev", "dutch_dev", "multilingual_dev")}
MIXED = "default"  # training/<MIXED>/combined: the two tasks' chosen textcats, when they come from different configs


def choice_scores(metrics_dir: Path, config: str) -> dict[str, dict[str, float]]:
    """task -> {"<set>_macro_f1": ..., "score": mean} of a config's augmented pipelines, on the choice sets only."""
    scores = {}
    for task in TASKS:
        path = metrics_dir / config / f"{task}_augmented.json"
        if not path.exists():
            raise typer.BadParameter(f"{path} is missing: evaluate config {config!r} first")
        metrics = json.loads(path.read_text())
        missing = [name for name in CHOICE_SETS[task] if name not in metrics]
        if missing:
            raise typer.BadParameter(f"{path} has no {missing} scores: evaluate with --splits ...,{missing[0]}")
        scores[task] = {f"{name}_macro_f1": metrics[name]["macro_f1"] for name in CHOICE_SETS[task]}
        scores[task]["score"] = sum(scores[task].values()) / len(CHOICE_SETS[task])
    return scores


def decide(incumbent: dict, challenger: dict, min_gain: float) -> tuple[dict[str, bool], list[str]]:
    """task -> whether the challenger takes it, with the reasons."""
    wins, reasons = {}, []
    for task in TASKS:
        gain = challenger[task]["score"] - incumbent[task]["score"]
        wins[task] = gain >= min_gain
        reasons.append(
            f"{'✔' if wins[task] else '✘'} {task}: choice-set macro-F1 {challenger[task]['score']:.3f} against "
            f"{incumbent[task]['score']:.3f} ({gain:+.3f}; the challenger needs >= {min_gain:+.3f})"
        )
    return wins, reasons


def main(
    incumbent: str = typer.Argument(..., help="The config that keeps a task unless the challenger wins it (cpu)"),
    challenger: str = typer.Argument(..., help="The config that may take a task (multilingual)"),
    metrics_dir: Path = typer.Option(Path("metrics")),
    training_dir: Path = typer.Option(Path("training")),
    output: Path = typer.Option(Path("metrics/default.json")),
    min_gain: float = typer.Option(0.01),
    version: str = typer.Option("0.1.0"),
):
    from link import main as link  # scripts/link.py, beside this file

    scores = {config: choice_scores(metrics_dir, config) for config in (incumbent, challenger)}
    wins, reasons = decide(scores[incumbent], scores[challenger], min_gain)
    chosen = {task: challenger if wins[task] else incumbent for task in TASKS}
    for reason in reasons:
        typer.echo(reason)
    for task, config in chosen.items():
        link(config, [task], training_dir)
    if len(set(chosen.values())) == 1:
        combined = next(iter(chosen.values()))
    else:
        combined = MIXED
        assemble_mixed(chosen, metrics_dir, training_dir, version)
    link(combined, ["combined"], training_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "default": chosen,
        "combined": combined,
        "incumbent": incumbent,
        "challenger": challenger,
        "rule": "docs/multilingual.md, rule 8",
        "reasons": reasons,
        "scores": scores,
    }
    output.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    typer.secho(f"✔ default: {chosen}; training/combined -> {combined} ({output})", fg="green")


def assemble_mixed(chosen: dict[str, str], metrics_dir: Path, training_dir: Path, version: str) -> None:
    """One pipeline from each task's chosen augmented pipeline, each behind its own vector component, each task's
    scores calibrated by its own config's temperature."""
    sources, temperatures = {}, {}
    for task, config in chosen.items():
        sources[task] = spacy.load(training_dir / config / task / "augmented" / "model-best")
        calibration = metrics_dir / config / "calibration.json"
        if calibration.exists():
            temperatures[task] = json.loads(calibration.read_text())["tasks"][task]["temperature"]
    nlp = combine(sources, temperatures=temperatures)
    nlp.meta.update(
        {
            "name": "titlecat_combined_default",
            "version": version,
            "description": "titlecat: seniority and department of a job title (any language), each task by the "
            f"pipeline its rule chose ({', '.join(f'{task}: {config}' for task, config in chosen.items())}). "
            "doc._.seniority, doc._.department and their scores (titlecat_answers).",
            "author": "titlecat",
            "license": "MIT",
            "titlecat": {
                "config": MIXED,
                "tasks": {task: list(TASKS[task].labels) for task in chosen},
                "sources": {task: f"training/{config}/{task}" for task, config in chosen.items()},
                "temperatures": temperatures,
            },
        }
    )
    (training_dir / MIXED).mkdir(parents=True, exist_ok=True)
    nlp.to_disk(training_dir / MIXED / "combined")


if __name__ == "__main__":
    typer.run(main)
