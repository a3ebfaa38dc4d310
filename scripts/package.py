"""Package one trained pipeline as a pip-installable wheel, with its metrics and data sources in the meta.

Works without a package index: `spacy package --build wheel` would run `python -m build` in an isolated
environment, which downloads setuptools. Here `spacy package` only writes the package folder, and the
wheel is built in this environment (`--no-isolation`) with the setuptools the project depends on.

The wheel requires the minor series of spaCy (and of each other package its pipeline uses, e.g.
spacy-transformers) it was built with, any patch release: `spacy>=3.8.0,<3.9.0`, not `spacy package`'s
`>=3.8.18,<3.9.0`, which no older 3.8 install can satisfy although the pipeline loads there.

The wheel declares an entry point for every name its shipped code (`--code`) registers in spaCy's registries
(`declare_entry_points`), as titlecat's pyproject does for titlecat: a pipeline that names one of them (a user's
own, holding a sourced titlecat textcat) loads wherever the wheel is installed, with no import.
"""

import json
import shutil
import subprocess
import sys
from importlib.metadata import version as installed_version
from pathlib import Path

import srsly
import typer
from packaging.version import Version
from spacy.util import split_requirement

from titlecat.labels import get_task
from titlecat.registrations import entry_points

SPLITS = ("test", "cv_dev", "ood")
TRANSFORMER_REQUIREMENT = "spacy-transformers>=1.3,<1.5"
# What the multilingual pipelines' title encoder loads and runs with on a CPU (a GPU also needs torch and
# transformers, as their error says).
ENCODER_REQUIREMENTS = ["onnxruntime>=1.17", "tokenizers>=0.19", "safetensors>=0.4"]
# What the fast pipelines' piece vectors load with.
PIECE_VECTOR_REQUIREMENTS = ["tokenizers>=0.19"]


def uses_title_transformer(model_path: Path) -> bool:
    return "titlecat.TransformerTitleClassifier" in (model_path / "config.cfg").read_text(encoding="utf-8")


def uses_title_encoder(model_path: Path) -> bool:
    return 'factory = "titlecat_title_encoder"' in (model_path / "config.cfg").read_text(encoding="utf-8")


def uses_piece_vectors(model_path: Path) -> bool:
    return 'factory = "titlecat_piece_vectors"' in (model_path / "config.cfg").read_text(encoding="utf-8")


def extra_requirements(model_path: Path) -> list[str]:
    return (
        [TRANSFORMER_REQUIREMENT] * uses_title_transformer(model_path)
        + ENCODER_REQUIREMENTS * uses_title_encoder(model_path)
        + PIECE_VECTOR_REQUIREMENTS * uses_piece_vectors(model_path)
    )


def main(
    model_path: Path = typer.Argument(..., exists=True, file_okay=False),
    output_dir: Path = typer.Argument(..., file_okay=False),
    name: str = typer.Option(..., help="Package name without the language prefix, e.g. titlecat_seniority_base_cpu"),
    metrics_paths: list[Path] = typer.Option(
        ..., "--metrics", exists=True, dir_okay=False, help="evaluate's JSON of each task the pipeline answers"
    ),
    variant: str = typer.Option("augmented", help="base (curated train) or augmented (+ pseudo-labels)"),
    config: str = typer.Option("cpu"),
    version: str = typer.Option("0.1.0"),
    project_file: Path = typer.Option(Path("project.yml"), exists=True),
    code: str = typer.Option("", help="Comma-separated Python files with registered functions to ship"),
):
    tasks = {}
    for metrics_path in metrics_paths:
        metrics = json.loads(metrics_path.read_text())
        task = get_task(metrics["task"])
        scores = {
            split: {k: metrics[split][k] for k in ("n", "accuracy", "macro_f1", "mae") if k in metrics[split]}
            for split in SPLITS
        }
        tasks[task.name] = {"labels": list(task.labels), "metrics": scores}
    data = "curated CSV" + (" + LLM pseudo-labelled CV titles" if variant == "augmented" else "")
    results = "; ".join(
        f"{task}: OOD accuracy {t['metrics']['ood']['accuracy']:.3f}, macro-F1 {t['metrics']['ood']['macro_f1']:.3f}"
        for task, t in tasks.items()
    )
    meta = {
        "name": name,
        "version": version,
        "description": f"titlecat: {' and '.join(tasks)} of a job title (any language), {config} pipeline trained "
        f"on {data}. {results}.",
        "author": "titlecat",
        "license": "MIT",
        "sources": [
            # MELO's files share their names across languages: each is named by its path under assets/
            {"name": asset["dest"].removeprefix("assets/"), "url": asset["url"], "description": asset["description"]}
            for asset in srsly.read_yaml(project_file)["assets"]
        ],
        "performance": {
            f"{task}_{split}_{key}": value
            for task, t in tasks.items()
            for split, scores in t["metrics"].items()
            for key, value in scores.items()
        },
        "titlecat": {"variant": variant, "config": config, "tasks": tasks},
        # spacy package requires spacy + this (and sets it from the running spaCy's exact patch otherwise)
        "spacy_version": minor_series(installed_version("spacy")),
        # spacy package finds the requirements of registered functions by their module; the shipped transformer
        # title classifier (--code) loads its encoder through spacy-transformers, which it cannot see.
        "requirements": extra_requirements(model_path),
    }
    # The combined pipeline's temperatures (folded into its weights by assemble) stay on record.
    temperatures = json.loads((model_path / "meta.json").read_text()).get("titlecat", {}).get("temperatures")
    if temperatures:
        meta["titlecat"]["temperatures"] = temperatures
    output_dir.mkdir(parents=True, exist_ok=True)
    meta_path = output_dir / f"meta_{name}.json"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    command = [sys.executable, "-m", "spacy", "package", str(model_path), str(output_dir)]
    command += ["--meta-path", str(meta_path), "--build", "none", "--force"]
    if code:
        command += ["--code", code]
    lang = json.loads((model_path / "meta.json").read_text())["lang"]
    package_dir = output_dir / f"{lang}_{name}-{version}"
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--quiet"]
    build += ["--outdir", str(package_dir / "dist")]
    run_step(command, model_path)
    set_requirements(package_dir, f"{lang}_{name}", version)
    try:
        declare_entry_points(package_dir, f"{lang}_{name}")
    except ValueError as error:
        typer.secho(f"✘ {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    run_step([*build, str(package_dir)], model_path)
    typer.secho(f"✔ {next((package_dir / 'dist').glob('*.whl'))}", fg="green")


def run_step(step: list[str], model_path: Path) -> None:
    if subprocess.run(step).returncode != 0:
        typer.secho(f"✘ {' '.join(step[1:4])} failed for {model_path}", fg="red", err=True)
        raise typer.Exit(1)


def minor_series(package_version: str) -> str:
    """Any patch release of this minor series: 3.8.18 -> '>=3.8.0,<3.9.0' (spaCy's own pipelines say the same)."""
    major, minor = Version(package_version).release[:2]
    return f">={major}.{minor}.0,<{major}.{minor + 1}.0"


# The entry points of the setup.py that `spacy package` writes: the package announces itself as a pipeline.
SPACY_MODELS_ENTRY_POINT = "entry_points={'spacy_models': ['{m} = {m}'.format(m=model_name)]}"


def declare_entry_points(package_dir: Path, package_name: str) -> dict[str, dict[str, str]]:
    """The package's setup.py declares, besides `spacy_models`, an entry point for every name its shipped code
    registers (`spacy_architectures`, `spacy_factories`, ...: titlecat.registrations finds them by importing the
    package), so a pipeline that uses one (e.g. a user's pipeline that sourced a titlecat textcat) loads wherever the
    wheel is installed, without an import. Returns them."""
    # The package's __init__ reads its meta.json, which setup.py copies there when the wheel is built: now already.
    shutil.copy(package_dir / "meta.json", package_dir / package_name / "meta.json")
    found = entry_points(package_name, path=package_dir)
    setup_path = package_dir / "setup.py"
    setup = setup_path.read_text(encoding="utf-8")
    if setup.count(SPACY_MODELS_ENTRY_POINT) != 1:
        raise ValueError(f"{setup_path}: `spacy package` wrote no {SPACY_MODELS_ENTRY_POINT!r} to add entry points to")
    groups = {group: [f"{name} = {target}" for name, target in names.items()] for group, names in found.items()}
    declared = f"{SPACY_MODELS_ENTRY_POINT[:-1]}, **{groups!r}}}"
    setup_path.write_text(setup.replace(SPACY_MODELS_ENTRY_POINT, declared), encoding="utf-8")
    return found


def set_requirements(package_dir: Path, package_name: str, version: str) -> None:
    """The package's requirements as pip should see them.

    Each package `spacy package` lists (spacy; spacy-transformers for a trf pipeline) is required in the
    minor series installed here, any patch. titlecat is taken out: `spacy package` lists it because the
    registered functions were found in it, but the wheel ships them itself (`--code`), and pip could not
    install a wheel that needs titlecat, which is not on PyPI.
    """
    # The package's meta (setup.py reads its requirements) and the pipeline's copy inside it.
    for meta_path in (
        package_dir / "meta.json",
        package_dir / package_name / f"{package_name}-{version}" / "meta.json",
    ):
        meta = json.loads(meta_path.read_text())
        names = [split_requirement(r)[0] for r in meta.get("requirements", [])]
        meta["requirements"] = [name + minor_series(installed_version(name)) for name in names if name != "titlecat"]
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
