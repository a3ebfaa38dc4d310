"""Make training/<name> load the pipelines of one config: spacy.load("training/seniority")."""

import os
from pathlib import Path

import typer


def main(
    config: str = typer.Argument(..., help="The config whose pipelines training/<name> loads"),
    names: list[str] = typer.Argument(..., help="Folders under training/<config> to link, e.g. seniority"),
    training_dir: Path = typer.Option(Path("training")),
):
    for name in names:
        target = training_dir / config / name
        if not (target / "config.cfg").exists():
            raise typer.BadParameter(f"{target} holds no pipeline: train (and assemble) config {config!r} first")
        link = training_dir / name
        if link.exists() and not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a link: remove it to point it at {target}")
        # A relative link, made beside the old one and renamed over it: never a moment without one.
        partial = training_dir / f".{name}.link"
        partial.unlink(missing_ok=True)
        partial.symlink_to(Path(config) / name, target_is_directory=True)
        os.replace(partial, link)
        typer.secho(f"✔ {link} -> {target}", fg="green")


if __name__ == "__main__":
    typer.run(main)
