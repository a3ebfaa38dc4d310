"""Package one trained pipeline as a pip-installable wheel, with its metrics and data sources in the meta.

Works without a package index: `spacy package --build wheel` would run `python -m build` in an isolated
environment, which downloads setuptools. Here `spacy package` only writes the package folder, and the
wheel is built in this environment (`--no-isolation`) with the setuptools the project depends on.
"""

import json
import subprocess
import sys
from pathlib import Path

import srsly
import typer

from titlecat.labels import get_task


def main(
    task_name: str = typer.Argument(..., metavar="TASK"),
    variant: str = typer.Argument(...),
    model_path: Path = typer.Argument(..., exists=True, file_okay=False),
    metrics_path: Path = typer.Argument(..., exists=True, dir_okay=False),
    output_dir: Path = typer.Argument(..., file_okay=False),
    config: str = typer.Option("cpu"),
    version: str = typer.Option("0.1.0"),
    project_file: Path = typer.Option(Path("project.yml"), exists=True),
    code: str = typer.Option("", help="Comma-separated Python files with registered functions to ship"),
):
    task = get_task(task_name)
    metrics = json.loads(metrics_path.read_text())
    summary = {
        split: {k: metrics[split][k] for k in ("n", "accuracy", "macro_f1", "mae") if k in metrics[split]}
        for split in ("test", "ood")
    }
    data = "curated CSV" + (" + LLM pseudo-labelled CV titles" if variant == "augmented" else "")
    meta = {
        "name": f"titlecat_{task.name}_{variant}_{config}",
        "version": version,
        "description": f"titlecat: {task.name} of a job title (any language), {config} pipeline trained on {data}. "
        f"Labels: {', '.join(task.labels)}. OOD accuracy {summary['ood']['accuracy']:.3f}, "
        f"macro-F1 {summary['ood']['macro_f1']:.3f}.",
        "author": "titlecat",
        "license": "MIT",
        "sources": [
            {"name": asset["dest"].split("/")[-1], "url": asset["url"], "description": asset["description"]}
            for asset in srsly.read_yaml(project_file)["assets"]
        ],
        "performance": {f"{split}_{key}": value for split, scores in summary.items() for key, value in scores.items()},
        "titlecat": {
            "task": task.name,
            "variant": variant,
            "config": config,
            "labels": list(task.labels),
            "metrics": summary,
        },
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    meta_path = output_dir / f"meta_{task.name}_{variant}.json"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    command = [sys.executable, "-m", "spacy", "package", str(model_path), str(output_dir)]
    command += ["--meta-path", str(meta_path), "--build", "none", "--force"]
    if code:
        command += ["--code", code]
    lang = json.loads((model_path / "meta.json").read_text())["lang"]
    package_dir = output_dir / f"{lang}_{meta['name']}-{version}"
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--quiet"]
    build += ["--outdir", str(package_dir / "dist")]
    for step in (command, [*build, str(package_dir)]):
        if subprocess.run(step).returncode != 0:
            typer.secho(f"✘ {' '.join(step[1:4])} failed for {model_path}", fg="red", err=True)
            raise typer.Exit(1)
    typer.secho(f"✔ {next((package_dir / 'dist').glob('*.whl'))}", fg="green")


if __name__ == "__main__":
    typer.run(main)
