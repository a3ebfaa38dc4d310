"""The transformer pipeline end to end on CPU, with a tiny random XLM-RoBERTa, and its preflight checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import (
    REPO,
    curated_examples,
    load_wheel_in_fresh_venv,
    minor_series_of,
    run_project,
    wheel_requirements,
    write_docbins,
)

from titlecat.labels import get_task
from titlecat.preflight import PreflightError, check_gpu, check_mixed_precision, check_transformer, preflight

TRF_CONFIG = REPO / "configs" / "trf.cfg"


def offline_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_trf_config_is_the_filled_base():
    """configs/trf.cfg is `spacy init fill-config configs/trf_base.cfg`: the two must not drift apart."""
    from spacy.util import load_config
    from thinc.api import Config

    base = REPO / "configs" / "trf_base.cfg"
    result = subprocess.run(
        [sys.executable, "-m", "spacy", "init", "fill-config", str(base), "-"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    filled = Config().from_str(result.stdout, interpolate=False)
    assert filled == load_config(TRF_CONFIG, interpolate=False)
    config = load_config(TRF_CONFIG, interpolate=False)
    assert config["nlp"]["lang"] == "xx"
    assert config["components"]["textcat"]["factory"] == "textcat"  # exclusive
    assert config["components"]["transformer"]["model"]["name"] == "xlm-roberta-base"
    assert config["components"]["transformer"]["model"]["mixed_precision"] is False  # CPU-safe default
    assert config["system"]["gpu_allocator"] == "pytorch"
    weights = config["training"]["score_weights"]
    assert weights["cats_macro_f"] == 1.0
    assert all(not value for key, value in weights.items() if key != "cats_macro_f")


def test_trf_batches_are_large_and_keep_every_title(data_dir):
    """Few, large training steps (the per-step costs are fixed), and no title dropped for its length."""
    import spacy
    from spacy.util import load_config, registry

    from titlecat.corpus import to_docbin

    task = get_task("department")
    examples = curated_examples(task.name, 3000, seed=2)
    nlp = spacy.blank("xx")
    docs = list(to_docbin(examples, task).get_docs(nlp.vocab))
    batcher = registry.resolve({"b": load_config(TRF_CONFIG)["training"]["batcher"]})["b"]
    batches = list(batcher(docs))
    assert sorted(doc.text for batch in batches for doc in batch) == sorted(doc.text for doc in docs)
    assert len(docs) / len(batches) >= 150  # titles per step; the former batch_by_words 256 gave ~55


def test_trf_train_and_load(tiny_xlmr_dir, tmp_path):
    task = get_task("department")
    train, dev = write_docbins(tmp_path / "corpus", task.name, n_train=120, n_dev=40)
    # Train from a copy that is deleted afterwards: the pipeline must carry weights and tokenizer itself.
    model_copy = tmp_path / "source-model"
    shutil.copytree(tiny_xlmr_dir, model_copy)
    output = tmp_path / "training"
    command = [
        sys.executable, "-m", "spacy", "train", str(TRF_CONFIG), "--output", str(output), "--gpu-id", "-1",
        "--paths.train", str(train), "--paths.dev", str(dev),
        "--components.transformer.model.name", str(model_copy),
        "--training.max_steps", "12", "--training.max_epochs", "0", "--training.patience", "0",
        "--training.eval_frequency", "6", "--training.optimizer.learn_rate.warmup_steps", "3",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=offline_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.rmtree(model_copy)

    import spacy

    nlp = spacy.load(output / "model-best")
    assert nlp.pipe_names == ["transformer", "textcat"]
    assert nlp.lang == "xx"
    assert set(nlp.get_pipe("textcat").labels) == set(task.labels)
    texts = [e.text for e in curated_examples(task.name, 20, seed=1)] + ["Geschäftsführer", "営業部長", "x"]
    for doc in nlp.pipe(texts):
        assert set(doc.cats) == set(task.labels)
        assert abs(sum(doc.cats.values()) - 1.0) < 1e-4
        assert all(0.0 <= score <= 1.0 for score in doc.cats.values())


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine may have a GPU")
def test_preflight_gpu_without_gpu():
    with pytest.raises(PreflightError, match=r'pip install -e "\.\[gpu\]"') as error:
        check_gpu(0)
    assert "--vars.gpu_id -1" in str(error.value)
    check_gpu(-1)  # CPU needs nothing


def test_preflight_mixed_precision_needs_gpu():
    with pytest.raises(PreflightError, match="mixed_precision"):
        check_mixed_precision(-1, True)
    check_mixed_precision(-1, False)


def test_preflight_transformer_offline(monkeypatch, tmp_path, tiny_xlmr_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached, whatever the machine has
    with pytest.raises(PreflightError, match="vars.transformer") as error:
        check_transformer("titlecat-test/no-such-model")
    assert "HF_HUB_OFFLINE=1" in str(error.value)
    with pytest.raises(PreflightError, match="vars.transformer"):
        check_transformer(str(tmp_path / "no-such-folder"))
    with pytest.raises(PreflightError, match="config.json"):
        check_transformer(str(tmp_path))  # a folder, but no model in it
    assert "local folder" in check_transformer(str(tiny_xlmr_dir))


def test_preflight_by_config(tiny_xlmr_dir):
    assert len(preflight("trf", -1, str(tiny_xlmr_dir))) == 2
    with pytest.raises(PreflightError, match="--transformer"):
        preflight("trf", -1, None)
    # A config without a transformer only gets the GPU check.
    assert preflight("cpu", -1, "titlecat-test/no-such-model") == ["CPU (gpu_id -1)"]


def test_preflight_script(tiny_xlmr_dir):
    script = REPO / "scripts" / "preflight.py"
    env = {**offline_env(), "PYTHONPATH": str(REPO)}
    ok = subprocess.run(
        [sys.executable, str(script), "--config", "trf", "--gpu-id", "-1", "--transformer", str(tiny_xlmr_dir)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = subprocess.run(
        [sys.executable, str(script), "--config", "trf", "--gpu-id", "-1", "--transformer", "/no/such/model"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "vars.transformer" in bad.stdout + bad.stderr


def test_trf_project_train_evaluate_package(small_project, tiny_xlmr_dir, tmp_path):
    """The real project commands with --vars.config trf on the tiny model, beside the CPU results."""
    project = tmp_path / "project"
    shutil.copytree(small_project, project, symlinks=True)  # corpora and CPU results are up to date there
    run_project(
        project,
        "all",
        ".",
        "--vars.config",
        "trf",
        "--vars.transformer",
        str(tiny_xlmr_dir),
        "--vars.max_steps",
        "6",
        "--vars.eval_frequency",
        "3",
        "--vars.patience",
        "6",
    )
    summary = (project / "metrics" / "summary.md").read_text()
    assert summary.count("| titlecat cpu:") == 4 and summary.count("| titlecat trf:") == 4
    task = get_task("seniority")
    import spacy

    nlp = spacy.load(project / "training" / "trf" / "seniority")
    assert "transformer" in nlp.pipe_names
    wheel = next((project / "packages" / "trf").glob("xx_titlecat_seniority_augmented_trf-*/dist/*.whl"))
    # The wheel needs spacy-transformers too: the minor series it was built with, any patch.
    assert wheel_requirements(wheel)["spacy-transformers"] == minor_series_of("spacy-transformers")
    output = load_wheel_in_fresh_venv(wheel, tmp_path, "xx_titlecat_seniority_augmented_trf", "Senior Java Entwickler")
    assert output["pipe_names"] == ["transformer", "textcat"]
    assert set(output["cats"]) == set(task.labels)
    assert abs(sum(output["cats"].values()) - 1.0) < 1e-4


def test_package_builds_without_a_package_index(small_project, tmp_path, monkeypatch):
    """`package` on an air-gapped machine: no isolated build env, so nothing is downloaded (PIP_NO_INDEX=1)."""
    project = tmp_path / "project"
    shutil.copytree(small_project, project, symlinks=True)
    shutil.rmtree(project / "packages")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")  # no local wheel folder to fall back on either
    result = run_project(project, "package", ".")
    log = result.stdout + result.stderr
    # `python -m build` in an isolated env fails here, and spaCy then falls back to `setup.py bdist_wheel`
    # (deprecated, and gone on a machine without setuptools): neither may happen.
    assert "isolated environment" not in log and "Falling back" not in log, log[-3000:]
    wheels = sorted((project / "packages" / "cpu").glob("*/dist/*.whl"))
    assert len(wheels) == 5, result.stdout[-3000:] + result.stderr[-3000:]  # four pipelines and the combined one
    assert not list((project / "packages" / "cpu").glob("*/dist/*.tar.gz"))  # no sdist step either
    (wheel,) = (w for w in wheels if w.name.startswith("xx_titlecat_department_base_cpu-"))
    output = load_wheel_in_fresh_venv(wheel, tmp_path, "xx_titlecat_department_base_cpu", "Leiter Einkauf")
    assert set(output["cats"]) == set(get_task("department").labels)
    assert output["meta"]["titlecat"]["variant"] == "base"
