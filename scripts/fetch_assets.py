"""Copy (from a mirror) or download the assets listed in project.yml, verifying sha256."""

from pathlib import Path

import srsly
import typer

from titlecat.assets import AssetError, fetch_asset


def main(
    project_file: Path = typer.Argument(Path("project.yml"), exists=True, help="project.yml with the assets"),
    mirror: str = typer.Option(
        "", help="Local folders holding the asset files, comma-separated; empty = download by URL"
    ),
):
    mirrors = [Path(folder.strip()) for folder in mirror.split(",") if folder.strip()]
    for folder in mirrors:
        if not folder.is_dir():
            raise typer.BadParameter(f"asset mirror {folder} is not a folder", param_hint="--mirror")
    for asset in srsly.read_yaml(project_file)["assets"]:
        try:
            action = fetch_asset(Path(asset["dest"]), asset["url"], asset["sha256"], mirrors)
        except AssetError as error:
            typer.secho(f"✘ {error}", fg="red", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"✔ {asset['dest']}: {action}, sha256 verified")


if __name__ == "__main__":
    typer.run(main)
