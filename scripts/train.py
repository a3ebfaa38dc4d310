"""Train one pipeline (task × variant) with `spacy train` and score it on dev (the config says how it trains)."""

import json
import time
from pathlib import Path

import typer
from spacy.cli.train import train
from spacy.util import load_config
from wasabi import msg

import titlecat.components  # noqa: F401  (registers the architectures the pipelines use)
import titlecat.multilingual  # noqa: F401
import titlecat.trf_textcat  # noqa: F401
from titlecat.corpus import BALANCED_READER, TRAIN_FILES
from titlecat.labels import get_task
from titlecat.multilingual import ENCODER_FACTORY
from titlecat.piece_vectors import PIECE_FACTORY
from titlecat.preflight import PreflightError, config_file, preflight, transformer_block


def main(
    task_name: str = typer.Argument(..., metavar="TASK"),
    variant: str = typer.Argument(..., help="base (curated train) or augmented (+ pseudo-labels)"),
    config: str = typer.Option("cpu", help="Name of a config in configs/"),
    corpus_dir: Path = typer.Option(Path("corpus")),
    training_dir: Path = typer.Option(Path("training")),
    gpu_id: int = typer.Option(-1),
    seed: int = typer.Option(42),
    max_steps: int = typer.Option(0, help="0 = the config's own cap (as for the three below)"),
    max_epochs: int = typer.Option(0),
    patience: int = typer.Option(0),
    eval_frequency: int = typer.Option(0),
    transformer: str = typer.Option("xlm-roberta-base", help="Hub name or local folder (transformer configs only)"),
    vector_weight: float = typer.Option(
        -1.0, help="Configs with title vectors: their weight beside the n-grams; negative = the config's own"
    ),
    class_weight: str = typer.Option(
        "", help="Configs with title vectors: 'balanced' or 'none'; empty = the config's own"
    ),
    inverse_l2: float = typer.Option(
        0.0, "--C", help="Configs with title vectors: the fit's inverse L2 strength C; 0 = the config's own"
    ),
    encoder: Path = typer.Option(
        Path("assets/encoder"),
        help="The frozen encoder's folder (configs with title vectors: multilingual, cpu's piece vectors)",
    ),
    name: str = typer.Option("", help="Folder under training_dir; default: the config's name"),
    learn_rate: float = typer.Option(0.0, help="Peak learning rate; 0 = the config's own"),
    oversample: bool | None = typer.Option(
        None,
        "--oversample/--no-oversample",
        help="Class balance: every label drawn up to the largest's size (seeded); default: the config's "
        "corpora.train.oversample_tasks (titlecat.ClassBalancedCorpus.v1)",
    ),
    freeze_embeddings: bool | None = typer.Option(
        None,
        "--freeze-embeddings/--train-embeddings",
        help="Transformer configs: keep the encoder's wordpiece embeddings as pretrained; default: the config's",
    ),
    encoder_rate_scale: float = typer.Option(
        0.0, help="Transformer configs: the encoder's rate as a share of the head's (--learn-rate); 0 = the config's"
    ),
    encoder_layer_decay: float = typer.Option(
        0.0, help="Transformer configs: each encoder layer's rate as a share of the one above's; 0 = the config's"
    ),
    prefix: str | None = typer.Option(
        None, help="Transformer configs: text put before every title (e5: 'query: '); default: the config's"
    ),
    title_ngrams: bool | None = typer.Option(
        None,
        "--title-ngrams/--no-title-ngrams",
        help="Transformer configs: the title's n-grams, a linear layer beside the pooled vector; default: the config's",
    ),
):
    task = get_task(task_name)
    train_file = TRAIN_FILES.get(variant)
    if train_file is None:
        raise typer.BadParameter(f"variant {variant!r} is not 'base' or 'augmented'", param_hint="VARIANT")
    output_dir = training_dir / (name or config) / task.name / variant
    overrides = {
        "paths.train": str(corpus_dir / task.name / train_file),
        "paths.dev": str(corpus_dir / task.name / "dev.spacy"),
        "system.seed": seed,
    }
    # Each config carries the caps that suit its model (trf: 700 steps; cpu: 1, it is fitted at initialisation); a
    # value given here replaces the config's.
    caps = {"max_steps": max_steps, "max_epochs": max_epochs, "patience": patience, "eval_frequency": eval_frequency}
    overrides.update({f"training.{name}": value for name, value in caps.items() if value > 0})
    if learn_rate > 0:
        overrides["training.optimizer.learn_rate.initial_rate"] = learn_rate
    config_path = config_file(config)
    config_text = config_path.read_text(encoding="utf-8") if config_path else ""
    if "${paths.encoder}" in config_text:
        if not (encoder / "config.json").exists():
            raise typer.BadParameter(f"{encoder} holds no encoder: spacy project run encoder", param_hint="--encoder")
        overrides["paths.encoder"] = str(encoder)
        hidden_size = json.loads((encoder / "config.json").read_text())["hidden_size"]
        if f'factory = "{ENCODER_FACTORY}"' in config_text:
            # The classifier's vector layer is as wide as the encoder's output.
            overrides["components.textcat.model.width"] = hidden_size
        elif f'factory = "{PIECE_FACTORY}"' in config_text:
            # Piece vectors are at most as wide as the encoder's embeddings (the tests' tiny encoder: 64); the
            # classifier's vector layer follows the component's width.
            width = load_config(config_path)["components"]["title_encoder"]["width"]
            if hidden_size < width:
                msg.warn(
                    f"{encoder}: embeddings {hidden_size} wide, under the piece vectors' {width}: {hidden_size} used"
                )
                overrides["components.title_encoder.width"] = hidden_size
        if vector_weight >= 0:
            overrides["components.textcat.model.vector_weight"] = vector_weight
        if inverse_l2 > 0:
            overrides["initialize.after_init.C"] = inverse_l2
        if class_weight:
            overrides["initialize.after_init.class_weight"] = None if class_weight == "none" else class_weight
    if oversample is not None:
        if BALANCED_READER not in config_text:
            raise typer.BadParameter(f"the {config} config's [corpora.train] is not {BALANCED_READER}")
        overrides["corpora.train.oversample_tasks"] = [task.name] if oversample else []
    block = transformer_block(config_text) if config_path else None
    if block:
        overrides[f"{block}.name"] = transformer
        # Mixed precision is a GPU feature: thinc's gradient scaler refuses CPU tensors.
        overrides[f"{block}.mixed_precision"] = gpu_id >= 0
        if freeze_embeddings is not None:
            overrides[f"{block}.freeze_embeddings"] = freeze_embeddings
        if encoder_rate_scale > 0:
            overrides[f"{block}.encoder_rate_scale"] = encoder_rate_scale
        if encoder_layer_decay > 0:
            overrides[f"{block}.encoder_layer_decay"] = encoder_layer_decay
        if prefix is not None:
            overrides[f"{block}.prefix"] = prefix
        if title_ngrams is not None:
            overrides[f"{block}.title_ngrams"] = title_ngrams
    else:
        transformer_options = {
            "--freeze-embeddings": freeze_embeddings is not None,
            "--encoder-rate-scale": encoder_rate_scale > 0,
            "--encoder-layer-decay": encoder_layer_decay > 0,
            "--prefix": prefix is not None,
            "--title-ngrams": title_ngrams is not None,
        }
        for option, given in transformer_options.items():
            if given:
                raise typer.BadParameter(f"the {config} config fine-tunes no transformer", param_hint=option)
    try:
        preflight(config, gpu_id, transformer)
    except PreflightError as error:
        typer.secho(f"✘ {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    start = time.perf_counter()
    train(config_path or Path("configs") / f"{config}.cfg", output_dir, use_gpu=gpu_id, overrides=overrides)
    # Read by the benchmark: training wall time on this machine.
    (output_dir / "train_time.json").write_text(json.dumps({"seconds": time.perf_counter() - start}) + "\n")
    if variant == "augmented":
        link_default(training_dir / (name or config) / task.name, output_dir / "model-best")


def link_default(folder: Path, model: Path) -> None:
    """Make `folder` itself load as `model` (spacy.load("training/cpu/seniority")) through relative symlinks."""
    for entry in model.iterdir():
        link = folder / entry.name
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.exists():
            raise FileExistsError(f"{link} exists and is not a link: remove it to point {folder} at {model}")
        link.symlink_to(entry.relative_to(folder))


if __name__ == "__main__":
    typer.run(main)
