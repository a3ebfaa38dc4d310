"""Shared fixtures. Transformer tests run offline on a tiny local XLM-RoBERTa."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

# No test may reach the Hugging Face Hub: a local folder must load without a network attempt.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("TITLECAT_DATA", "/work/shared/data/snapaddy"))
if not (DATA_DIR / "department-v2.csv").is_file():
    DATA_DIR = REPO_ROOT / "assets"


def curated_examples(task_name: str, n: int, seed: int = 0):
    """A shuffled, reproducible sample of n curated titles of a task."""
    from titlecat.labels import get_task
    from titlecat.readers import read_curated_csv

    task = get_task(task_name)
    path = DATA_DIR / task.curated_asset
    if not path.is_file():
        pytest.skip(f"curated data {path} not available")
    examples, _ = read_curated_csv(path, task)
    random.Random(seed).shuffle(examples)
    return examples[:n]


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory) -> Path:
    """A tiny random XLM-RoBERTa (tokenizer trained on curated titles of both tasks) in a temp folder.

    Pass it as vars.transformer / components.transformer.model.name. Treat it
    as read-only: it is shared by every test of the session.
    """
    from titlecat.tiny_xlmr import build_tiny_xlmr

    titles = [e.text for task in ("department", "seniority") for e in curated_examples(task, 300)]
    return build_tiny_xlmr(tmp_path_factory.mktemp("tiny-xlmr"), titles, max_length=128)


def write_docbins(folder: Path, task_name: str, n_train: int, n_dev: int, seed: int = 0) -> tuple[Path, Path]:
    """train.spacy/dev.spacy in the project's corpus format: blank xx docs, cats one-hot over all labels."""
    import spacy
    from spacy.tokens import DocBin

    from titlecat.labels import get_task, one_hot

    task = get_task(task_name)
    examples = curated_examples(task_name, n_train + n_dev, seed)
    nlp = spacy.blank("xx")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", examples[:n_train]), ("dev", examples[n_train:])):
        docbin = DocBin()
        for example in part:
            doc = nlp.make_doc(example.text)
            doc.cats = one_hot(example.label, task.labels)
            docbin.add(doc)
        docbin.to_disk(folder / f"{name}.spacy")
        paths.append(folder / f"{name}.spacy")
    return paths[0], paths[1]
