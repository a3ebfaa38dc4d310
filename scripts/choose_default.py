"""Decide which config `training/seniority`, `training/department` and `training/combined` load, by the rule of
docs/multilingual.md (rule 2), from evaluate's cv-dev and Dutch dev scores only, and link them.

The challenger (the multilingual config) becomes the default when, with its augmented pipelines, department macro-F1
on the Dutch dev set is at least `min_dutch_gain` above the incumbent's, and department and seniority macro-F1 on
cv-dev are at most `max_cv_dev_loss` below it. OOD scores are in the same files; this step never reads them.
"""

import json
from pathlib import Path

import typer

from titlecat.labels import TASKS

CHOICE_SETS = ("cv_dev", "dutch_dev")


def choice_scores(metrics_dir: Path, config: str) -> dict[str, dict[str, float]]:
    """task -> {"<set>_macro_f1": ...} of a config's augmented pipelines, on the sets that make choices only."""
    scores = {}
    for task in TASKS:
        path = metrics_dir / config / f"{task}_augmented.json"
        if not path.exists():
            raise typer.BadParameter(f"{path} is missing: evaluate config {config!r} first")
        metrics = json.loads(path.read_text())
        scores[task] = {f"{name}_macro_f1": metrics[name]["macro_f1"] for name in CHOICE_SETS if name in metrics}
    return scores


def decide(incumbent: dict, challenger: dict, min_dutch_gain: float, max_cv_dev_loss: float) -> tuple[bool, list[str]]:
    department, seniority = "department", "seniority"
    checks = []
    if "dutch_dev_macro_f1" not in incumbent[department] or "dutch_dev_macro_f1" not in challenger[department]:
        return False, ["no Dutch dev score for department: evaluate with --splits ...,dutch_dev"]
    gain = challenger[department]["dutch_dev_macro_f1"] - incumbent[department]["dutch_dev_macro_f1"]
    checks.append(
        (gain >= min_dutch_gain, f"department Dutch dev macro-F1 {gain:+.3f} (needs >= {min_dutch_gain:+.3f})")
    )
    for task in (department, seniority):
        change = challenger[task]["cv_dev_macro_f1"] - incumbent[task]["cv_dev_macro_f1"]
        checks.append(
            (change >= -max_cv_dev_loss, f"{task} cv-dev macro-F1 {change:+.3f} (needs >= {-max_cv_dev_loss:+.3f})")
        )
    return all(passed for passed, _ in checks), [f"{'✔' if passed else '✘'} {text}" for passed, text in checks]


def main(
    incumbent: str = typer.Argument(..., help="The config that stays the default unless the challenger wins (cpu)"),
    challenger: str = typer.Argument(..., help="The config that may replace it (multilingual)"),
    metrics_dir: Path = typer.Option(Path("metrics")),
    training_dir: Path = typer.Option(Path("training")),
    output: Path = typer.Option(Path("metrics/default.json")),
    min_dutch_gain: float = typer.Option(0.05),
    max_cv_dev_loss: float = typer.Option(0.01),
):
    from link import main as link  # scripts/link.py, beside this file

    scores = {config: choice_scores(metrics_dir, config) for config in (incumbent, challenger)}
    wins, reasons = decide(scores[incumbent], scores[challenger], min_dutch_gain, max_cv_dev_loss)
    default = challenger if wins else incumbent
    for reason in reasons:
        typer.echo(reason)
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "default": default,
        "incumbent": incumbent,
        "challenger": challenger,
        "reasons": reasons,
        "scores": scores,
    }
    output.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    typer.secho(f"✔ default: {default} ({output})", fg="green")
    link(default, ["seniority", "department", "combined"], training_dir)


if __name__ == "__main__":
    typer.run(main)
