import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TITLECAT_DATA", REPO.parent / "shared" / "data" / "snapaddy")).resolve()

# Small but real: a few curated titles per label, a few dozen training steps.
SMALL_RUN = ["--vars.max_per_label", "25", "--vars.max_steps", "60", "--vars.eval_frequency", "20",
             "--vars.patience", "40"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "department-v2.csv").exists():
        pytest.fail(f"snapADDY data not found in {DATA}: set TITLECAT_DATA to the asset mirror folder")
    return DATA


def copy_project(destination: Path) -> Path:
    """A fresh copy of the project (no outputs), so tests never touch the working tree's runs."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "project.yml", destination)
    for folder in ("configs", "scripts", "titlecat"):
        shutil.copytree(REPO / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def run_project(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "spacy", "project", "run", *args], cwd=project,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"spacy project run {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def small_project(tmp_path_factory, data_dir) -> Path:
    """The whole `all` workflow, once, on a small subset."""
    project = copy_project(tmp_path_factory.mktemp("project"))
    run_project(project, "all", ".", "--vars.asset_mirror", str(data_dir), *SMALL_RUN)
    return project
