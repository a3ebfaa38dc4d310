"""Every pipeline kind titlecat ships survives pickling (issue 49): under the spawn and forkserver start methods (the
default on macOS and Windows, and from Python 3.14 on Linux) spaCy pickles the pipeline to the workers of
`nlp.pipe(n_process=...)`, and their answers are those of one process, bit for bit.

The pipelines are small and real: built from the project's configs on the tests' tiny encoder and tiny XLM-R,
initialised (the fast and the multilingual ones fitted on a few dozen titles), never trained."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, TINY_PACK_TITLES, piece_vectors_of, write_docbins

TITLES = [*TINY_PACK_TITLES, "", "   ", "Geschäftsführerin", "Einkäufer", "営業部長"]
TASK_EXTENSIONS = ("seniority", "department", "seniority_score", "department_score")
TRF_NGRAMS = {"components.textcat.model.title_ngrams": True}

# nlp.pipe(n_process=2) of each pipeline under one start method, in a fresh interpreter (the test process's start
# method stays as it was), against one process; prints each pipeline's verdict: "same", or what went wrong.
PIPE_IN_PROCESSES = """
import json, multiprocessing, sys, traceback
import spacy

def answers(docs):
    return [
        [doc.text, doc.cats, {name: doc._.get(name) for name in EXTENSIONS if doc.has_extension(name)}]
        for doc in docs
    ]

if __name__ == "__main__":
    method, pipelines, texts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    EXTENSIONS = json.loads(sys.argv[4])
    multiprocessing.set_start_method(method, force=True)
    verdicts = {}
    for kind, path in pipelines.items():
        try:
            nlp = spacy.load(path)
            one = answers(nlp.pipe(texts, batch_size=2))
            two = answers(nlp.pipe(texts, n_process=2, batch_size=2))
            verdicts[kind] = "same" if two == one else f"different: {one} != {two}"
        except Exception as error:
            verdicts[kind] = f"{type(error).__name__}: {error}\\n{traceback.format_exc()[-2000:]}"
    print(json.dumps(verdicts))
"""


def init_from_config(name: str, overrides: dict):
    """configs/<name>.cfg with the overrides, initialised as `spacy train` initialises it (fit callbacks included)."""
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config

    import titlecat.components  # noqa: F401  (registers what the configs name)
    import titlecat.corpus  # noqa: F401
    import titlecat.multilingual  # noqa: F401
    import titlecat.piece_vectors  # noqa: F401
    import titlecat.trf_textcat  # noqa: F401

    return init_nlp(load_config(REPO / "configs" / f"{name}.cfg", overrides=overrides))


def randomise_output_layers(nlp, seed: int) -> None:
    """Seeded random weights for the textcat's output layers (a transformer classifier's start at zero: every title
    would get the same scores)."""
    rng = np.random.default_rng(seed)
    model = nlp.get_pipe("textcat").model
    for ref in ("output_layer", "vector_output_layer"):
        if model.has_ref(ref):
            layer = model.get_ref(ref)
            for name in ("W", "b"):
                layer.set_param(name, rng.normal(size=layer.get_param(name).shape).astype("float32"))


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory, tiny_encoder_dir, tiny_xlmr_dir) -> dict[str, str]:
    """Each kind of pipeline titlecat ships, saved: its folder by kind."""
    import spacy

    from titlecat.combined import combine

    folder = tmp_path_factory.mktemp("pickling")
    corpus = {}
    for task in ("seniority", "department"):
        train, dev = write_docbins(folder / "corpus" / task, task, n_train=60, n_dev=10)
        corpus[task] = {"paths.train": str(train), "paths.dev": str(dev)}
    fast = init_from_config("cpu", {**corpus["department"], **piece_vectors_of(tiny_encoder_dir)})
    encoder = {"paths.encoder": str(tiny_encoder_dir), "components.textcat.model.width": 64}
    multilingual = {task: init_from_config("multilingual", {**corpus[task], **encoder}) for task in corpus}
    trf_model = {"components.textcat.model.name": str(tiny_xlmr_dir)}
    trf = {
        "department": init_from_config("trf", {**corpus["department"], **trf_model}),
        # As trf-check builds its stand-in: the title's n-grams beside the pooled vector.
        "seniority": init_from_config("trf", {**corpus["seniority"], **trf_model, **TRF_NGRAMS}),
    }
    for seed, nlp in enumerate(trf.values()):
        randomise_output_layers(nlp, seed)
    built = {
        "fast": fast,
        "multilingual": multilingual["seniority"],
        # One encoder for both textcats, one calibrated (as `assemble` builds it).
        "combined": combine(multilingual, temperatures={"department": 1.5}),
        # Rule 8 chose the multilingual pipeline for one task and the fast one for the other: one vector each.
        "combined, mixed": combine({"seniority": multilingual["seniority"], "department": fast}),
        # The trf kind, both of its textcats in one pipeline: each kind started alone costs seconds (torch) a worker.
        "trf, combined": combine(trf),
    }
    paths = {}
    for kind, nlp in built.items():
        paths[kind] = str(folder / kind.replace(", ", "-"))
        nlp.to_disk(paths[kind])
    # A user's pipeline sourcing titlecat's components from a saved one (it is loaded back from its own folder).
    source = spacy.load(paths["multilingual"])
    mine = spacy.blank("en")
    mine.add_pipe("title_encoder", source=source)
    mine.add_pipe("textcat", name="seniority", source=source)
    paths["user's"] = str(folder / "users")
    mine.to_disk(paths["user's"])
    return paths


def test_every_pipeline_pickles_and_answers_as_before(pipelines):
    """pickle.dumps/loads of each loaded pipeline, in this process: the same answers (what the workers get)."""
    import spacy

    verdicts = {}
    for kind, path in pipelines.items():
        nlp = spacy.load(path)
        expected = [doc.cats for doc in nlp.pipe(TITLES, batch_size=2)]
        assert len({json.dumps(cats, sort_keys=True) for cats in expected}) > 3, kind  # title-dependent answers
        try:
            copied = pickle.loads(pickle.dumps(nlp))
        except Exception as error:
            verdicts[kind] = f"{type(error).__name__}: {error}"
            continue
        same = [doc.cats for doc in copied.pipe(TITLES, batch_size=2)] == expected
        verdicts[kind] = "same" if same else "different"
    assert verdicts == dict.fromkeys(pipelines, "same")


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_every_pipeline_answers_in_processes_as_in_one(pipelines, method):
    # The checkout's titlecat in the interpreter and its workers, whatever titlecat is installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    args = [method, json.dumps(pipelines), json.dumps(TITLES), json.dumps(TASK_EXTENSIONS)]
    result = subprocess.run(
        [sys.executable, "-c", PIPE_IN_PROCESSES, *args], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    verdicts = json.loads(result.stdout.splitlines()[-1])
    assert verdicts == dict.fromkeys(pipelines, "same"), json.dumps(verdicts, indent=1)


def test_the_title_vector_layer_is_each_docs_vector_times_its_weight_and_pickles():
    """The layer the multilingual and fast classifiers read the title vector through, its settings in model.attrs
    (a module-level forward pass, no closure): the same arrays, bit for bit, before and after pickling."""
    import spacy

    from titlecat.multilingual import VECTOR_ATTR, title_vectors

    nlp = spacy.blank("xx")
    docs = [nlp.make_doc(text) for text in ("Einkäufer", "  ", "Head of Sales")]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 8)).astype("float32")
    for doc, vector in zip(docs, vectors, strict=True):
        if doc.text.strip():
            doc._.set(VECTOR_ATTR, vector)
    expected = np.stack([vectors[0], np.zeros(8, "float32"), vectors[2]]) * 4.0
    layer = title_vectors(8, 4.0)
    for model in (layer, pickle.loads(pickle.dumps(layer))):
        scores, backprop = model(docs, is_train=True)
        assert scores.dtype == np.float32 and np.array_equal(scores, expected)
        assert backprop(scores) == []
    with pytest.raises(ValueError, match="title_encoder"):
        layer.predict([nlp.make_doc("Leiter Einkauf")])
