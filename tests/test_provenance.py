"""Provenance (titlecat.provenance): the sidecar OUT.json of `titlecat predict` and `predict-ray`, the fingerprint of
a pipeline's weights, `/v1/metadata` and the `X-Titlecat-Pipeline` header of `titlecat serve`, and the summary's
titles/s with and without loading.

The pipeline is the built, untrained `model` of conftest (milliseconds), copied where a test changes it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import types
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import spacy
from conftest import run_predict
from spacy.language import Language

from titlecat import __version__, provenance
from titlecat import predict as predict_module
from titlecat.predict import STATUSES, PredictOptions, predict_file
from titlecat.provenance import fingerprint, folder_fingerprint, header_value, memory_fingerprint, sidecar_path

TITLES = ["Head of Sales", "Werkstudent IT-Support", "", "Directeur commercial", "12345", "Einkäuferin", "CTO"]
SUMMARY_RATES = re.compile(r"in ([\d.]+) s \(([\d,]+) titles/s\), ([\d.]+) s with loading \(([\d,]+) titles/s\)")


def write_titles(path: Path, titles=TITLES, encoding: str = "utf-8") -> Path:
    path.write_text("id;title\n" + "".join(f"{i};{title}\n" for i, title in enumerate(titles)), encoding=encoding)
    return path


def hidden_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def trained_copy(model: Path, folder: Path) -> Path:
    """`model` with a packaged combined pipeline's meta (scripts/assemble.py, scripts/package.py) and the corpora a
    spaCy training run writes into its config."""
    copy = shutil.copytree(model, folder)
    meta = json.loads((copy / "meta.json").read_text())
    meta.update(
        name="titlecat_combined_cpu",
        version="0.3.1",
        description="titlecat: seniority and department, cpu pipelines",
        sources=[{"name": "seniority-v2.csv", "url": "https://example.org/seniority-v2.csv", "description": "x"}],
        titlecat={"config": "cpu", "variant": "augmented", "sources": {"seniority": "training/cpu/seniority"}},
    )
    (copy / "meta.json").write_text(json.dumps(meta))
    config = (copy / "config.cfg").read_text()
    config = config.replace("[paths]\ntrain = null\ndev = null", '[paths]\ntrain = "corpus/train.spacy"\ndev = null')
    assert 'train = "corpus/train.spacy"' in config
    (copy / "config.cfg").write_text(config)
    return copy


# The fingerprint


def test_the_fingerprint_is_the_same_for_the_same_weights_and_changes_with_a_weight(model, tmp_path):
    first, second = fingerprint(spacy.load(model)), fingerprint(spacy.load(model))
    assert first == second and re.fullmatch(r"[0-9a-f]{64}", first)
    # A copy elsewhere, with another meta (a wheel's is rewritten by scripts/package.py): the same weights.
    copy = trained_copy(model, tmp_path / "copy")
    (copy / "config.cfg").write_text((model / "config.cfg").read_text())
    assert fingerprint(spacy.load(copy)) == first
    # One byte of a weights file changed.
    weights = copy / "seniority" / "model"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    assert fingerprint(spacy.load(copy)) != first
    # One parameter changed in memory and saved.
    nlp = spacy.load(model)
    linear = nlp.get_pipe("department").model.get_ref("output_layer")
    changed = linear.get_param("b").copy()
    changed[0] += 0.001
    linear.set_param("b", changed)
    nlp.to_disk(tmp_path / "changed")
    assert fingerprint(spacy.load(tmp_path / "changed")) not in (first, fingerprint(spacy.load(copy)))
    # The config is part of it (the architecture the weights go into).
    shutil.copytree(model, tmp_path / "config")
    config = tmp_path / "config" / "config.cfg"
    config.write_text(config.read_text().replace("batch_size = 1000", "batch_size = 999"))
    assert fingerprint(spacy.load(tmp_path / "config")) != first


def test_a_packaged_pipeline_has_the_fingerprint_of_the_folder_it_was_built_from(model, tmp_path):
    """`spacy package` (as scripts/package.py runs it, its meta rewritten after) copies the folder and writes a
    README.md and another meta.json into the wheel's data folder: the weights, and so the fingerprint, stay."""
    from spacy.cli.package import package

    meta = {**json.loads((model / "meta.json").read_text()), "name": "titlecat_test", "version": "1.2.3"}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "packages").mkdir()
    package(model, tmp_path / "packages", meta_path=tmp_path / "meta.json", create_sdist=False, force=True)
    (data,) = (tmp_path / "packages").glob("xx_titlecat_test-1.2.3/xx_titlecat_test/xx_titlecat_test-1.2.3")
    assert (data / "README.md").exists() and not (model / "README.md").exists()
    (data / "meta.json").write_text(json.dumps({**meta, "requirements": ["spacy>=3.8,<3.9"]}))
    assert folder_fingerprint(data) == fingerprint(spacy.load(model))


def test_the_fingerprint_is_computed_once_per_loaded_pipeline(model, tmp_path, monkeypatch):
    copy = shutil.copytree(model, tmp_path / "copy")
    nlp = predict_module.load_pipeline(copy)  # computes it while loading
    expected = folder_fingerprint(copy)
    calls = []
    monkeypatch.setattr(provenance, "folder_fingerprint", lambda folder: calls.append(folder) or "x")
    assert fingerprint(nlp) == fingerprint(nlp) == expected and calls == []
    assert fingerprint(spacy.load(copy)) == "x" and calls == [copy]  # another load: computed for it


class Table:
    """A component whose to_bytes raises NotImplementedError, as the multilingual title encoder's does."""

    def __init__(self, nlp: Language, name: str):
        self.name = name
        self.values = np.zeros(4, dtype="float32")

    def __call__(self, doc):
        return doc

    def to_bytes(self, *, exclude=()):
        raise NotImplementedError("save the pipeline with nlp.to_disk")

    def to_disk(self, path, *, exclude=()):
        Path(path).mkdir(parents=True, exist_ok=True)
        np.save(Path(path) / "values.npy", self.values)

    def from_disk(self, path, *, exclude=()):
        self.values = np.load(Path(path) / "values.npy")
        return self


Language.factory("test_provenance_table")(Table)


def test_a_pipeline_built_in_memory_gets_a_fingerprint_of_what_it_saves(nlp, tmp_path):
    def built(value: float = 0.0) -> Language:
        built = spacy.blank("xx")
        built.add_pipe("department", source=nlp)
        built.add_pipe("test_provenance_table").values[0] = value
        return built

    assert provenance.pipeline_folder(built()) is None
    assert fingerprint(built()) == fingerprint(built()) == memory_fingerprint(built())
    assert fingerprint(built(1.0)) != fingerprint(built())
    built().to_disk(tmp_path / "saved")
    loaded = spacy.load(tmp_path / "saved")
    assert provenance.pipeline_folder(loaded) == tmp_path / "saved"
    assert fingerprint(loaded) == folder_fingerprint(tmp_path / "saved")


def test_trained_on_says_what_the_meta_and_config_say(model, nlp, tmp_path):
    assert provenance.trained_on(nlp) == {}
    trained = spacy.load(trained_copy(model, tmp_path / "trained"))
    assert provenance.trained_on(trained) == {
        "variant": "augmented",
        "config": "cpu",
        "sources": [{"name": "seniority-v2.csv", "url": "https://example.org/seniority-v2.csv", "description": "x"}],
        "pipelines": {"seniority": "training/cpu/seniority"},
        "corpora": {"train": "corpus/train.spacy"},
    }


# titlecat predict: the sidecar and the summary


def test_predict_writes_the_sidecar_beside_the_output_and_both_rates_in_the_summary(model, tmp_path):
    trained = trained_copy(model, tmp_path / "trained")
    source = write_titles(tmp_path / "crm.csv", encoding="cp1252")
    for output in (tmp_path / "labels.csv", tmp_path / "labels.xlsx"):
        before = datetime.now().astimezone()
        result = run_predict(source, output, "-m", trained, "--column", "title", "--id-column", "id")
        assert result.exit_code == 0, result.output
        summary = [line for line in result.stderr.splitlines() if line.startswith("✔")][0]
        seconds, rate, total, rate_with_loading = SUMMARY_RATES.search(summary).groups()
        assert float(total) >= float(seconds) and int(rate.replace(",", "")) >= int(rate_with_loading.replace(",", ""))
        record = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
        assert sidecar_path(output) == output.with_name(output.name + ".json")
        loaded = spacy.load(trained)
        assert record["pipeline"] == {
            "name": "xx_titlecat_combined_cpu",
            "version": "0.3.1",
            "description": "titlecat: seniority and department, cpu pipelines",
            "sha256": fingerprint(loaded),
            "trained_on": provenance.trained_on(loaded),
            "model": str(trained),
        }
        assert record["titlecat_version"] == __version__
        assert record["input"] == {
            "path": str(source.resolve()),
            "format": "csv",
            "encoding": "cp1252",
            "encoding_detected": True,
        }
        assert record["output"] == {"path": str(output.resolve()), "bytes": output.stat().st_size}
        assert record["rows"] == {"total": 7, "ok": 5, "empty": 1, "not_text": 1} | {s: 0 for s in STATUSES[3:]}
        assert list(record["rows"]) == ["total", *STATUSES]
        assert record["seconds"]["loading"] > 0 and record["seconds"]["labelling"] > 0
        rates = record["titles_per_second"]
        # both seconds are rounded to 0.0001 s and the rate to 0.1: the rate lies within what that rounding allows
        total_seconds = sum(record["seconds"].values())
        assert 7 / (total_seconds + 0.0001) - 0.05 <= rates["with_loading"] <= 7 / (total_seconds - 0.0001) + 0.05
        assert 0 < rates["with_loading"] < rates["without_loading"]
        finished = datetime.fromisoformat(record["finished"])
        assert before.replace(microsecond=0) <= finished <= datetime.now().astimezone()
        assert hidden_files(tmp_path) == []


def test_the_sidecar_names_an_encoding_that_was_given_and_the_utf8_default(model, tmp_path):
    source = write_titles(tmp_path / "crm.csv", encoding="cp1252")
    result = run_predict(source, tmp_path / "out.jsonl", "-m", model, "--column", "title", "--encoding", "latin-1")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out.jsonl.json").read_text())
    assert (record["input"]["encoding"], record["input"]["encoding_detected"]) == ("iso8859-1", False)
    source = write_titles(tmp_path / "crm.csv", encoding="utf-8-sig")
    result = run_predict(source, tmp_path / "out.jsonl", "-m", model, "--column", "title")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out.jsonl.json").read_text())
    assert (record["input"]["encoding"], record["input"]["encoding_detected"]) == ("utf-8", False)
    assert record["pipeline"]["model"] == str(model) and record["pipeline"]["trained_on"] == {}


def test_a_failed_run_leaves_the_output_and_its_sidecar_as_they_were(nlp, model, tmp_path, monkeypatch):
    source = write_titles(tmp_path / "titles.csv", TITLES * 3)
    output = tmp_path / "labels.csv"
    predict_file(nlp, source, output, PredictOptions.of(column="title", chunk_size=4, progress=False))
    old = output.read_bytes(), sidecar_path(output).read_bytes()

    # Interrupted while labelling (Ctrl-C on the third chunk): nothing new, nothing partial.
    label_records, calls = predict_module.label_records, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return label_records(*args, **kwargs)

    monkeypatch.setattr(predict_module, "label_records", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict_file(nlp, source, output, PredictOptions.of(column="title", chunk_size=4, progress=False, model="m"))
    assert (output.read_bytes(), sidecar_path(output).read_bytes()) == old and hidden_files(tmp_path) == []
    monkeypatch.setattr(predict_module, "label_records", label_records)

    # The sidecar cannot be written (a full disk): the output is not renamed into place either.
    def full_disk(self, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(provenance.Run, "record", full_disk)
    with pytest.raises(OSError, match="No space left"):
        predict_file(nlp, source, output, PredictOptions.of(column="title", chunk_size=4, progress=False, model="m"))
    assert (output.read_bytes(), sidecar_path(output).read_bytes()) == old and hidden_files(tmp_path) == []
    monkeypatch.undo()

    # A partial sidecar (its JSON failing half-way) is removed too.
    def unserialisable(self, *args):
        return {"ok": 1, "bad": object.__new__(Unprintable)}

    monkeypatch.setattr(provenance.Run, "record", unserialisable)
    with pytest.raises(RuntimeError, match="half-way"):
        predict_file(nlp, source, output, PredictOptions.of(column="title", chunk_size=4, progress=False, model="m"))
    assert (output.read_bytes(), sidecar_path(output).read_bytes()) == old and hidden_files(tmp_path) == []
    monkeypatch.undo()

    # A run that succeeds replaces both; one without a sidecar (a library call) removes the old one.
    predict_file(nlp, source, output, PredictOptions.of(column="title", chunk_size=4, progress=False, model="m"))
    assert json.loads(sidecar_path(output).read_text())["pipeline"]["model"] == "m"
    predict_file(nlp, source, output, PredictOptions.of(column="title", progress=False, sidecar=False))
    assert output.exists() and not sidecar_path(output).exists() and hidden_files(tmp_path) == []


class Unprintable:
    def __str__(self):
        raise RuntimeError("half-way")


def test_the_sidecar_may_not_be_the_input(model, tmp_path):
    source = tmp_path / "labels.csv.json"
    source.write_text('{"title": "CTO"}\n', encoding="utf-8")
    result = run_predict(source, tmp_path / "labels.csv", "-m", model, "--format", "jsonl", "--field", "title")
    assert result.exit_code == 1
    assert f"its provenance goes to {source}, the input file; name another output path" in result.stderr
    assert source.read_text(encoding="utf-8") == '{"title": "CTO"}\n' and not (tmp_path / "labels.csv").exists()


def test_the_summary_gives_titles_per_second_without_loading_alone_where_loading_was_not_timed():
    summary = predict_module.Summary(seconds=2.0, loading_seconds=6.0)
    summary.add([{"status": "ok", "line": 2}] * 10)
    assert str(summary).endswith("in 2.0 s (5 titles/s), 8.0 s with loading (1 titles/s)")
    assert summary.rate == 5.0 and summary.rate_with_loading == 1.25
    summary.loading_seconds = None
    assert str(summary).endswith("in 2.0 s (5 titles/s)") and summary.rate_with_loading is None


# predict-ray: its driver writes the sidecar of predict; every actor must hold the driver's weights


class FakeRay(types.ModuleType):
    """The Ray core calls predict-ray makes, run in this process: actors are plain objects."""

    def __init__(self):
        super().__init__("ray")
        self.killed = 0

    def is_initialized(self):
        return True

    def remote(self, **options):
        def wrap(cls):
            return types.SimpleNamespace(remote=lambda *args: FakeActor(cls(*args)))

        return wrap

    def get(self, value):
        return value

    def kill(self, actor):
        self.killed += 1


class FakeActor:
    def __init__(self, instance):
        self.instance = instance

    def __getattr__(self, name):
        return types.SimpleNamespace(remote=getattr(self.instance, name))


@pytest.fixture
def fake_ray(monkeypatch):
    ray = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.delitem(sys.modules, "titlecat.distributed", raising=False)
    import titlecat.distributed as distributed

    yield ray, distributed
    sys.modules.pop("titlecat.distributed", None)  # the real module imports the real Ray


def test_predict_ray_writes_the_sidecar_of_predict(fake_ray, model, tmp_path):
    ray, distributed = fake_ray
    source = write_titles(tmp_path / "titles.csv", TITLES * 3)
    summary = distributed.predict_ray(
        source, tmp_path / "ray.csv", PredictOptions.of(model=str(model), column="title", progress=False), workers=2
    )
    assert ray.killed == 2 and summary.loading_seconds > 0 and summary.rate_with_loading < summary.rate
    assert SUMMARY_RATES.search(str(summary))
    predict_file(
        spacy.load(model),
        source,
        tmp_path / "local.csv",
        PredictOptions.of(column="title", progress=False, model=str(model)),
    )
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    records = {name: json.loads((tmp_path / f"{name}.csv.json").read_text()) for name in ("ray", "local")}
    assert records["ray"]["pipeline"] == records["local"]["pipeline"]
    assert records["ray"]["rows"] == records["local"]["rows"] and records["ray"]["input"] == records["local"]["input"]
    assert records["ray"]["seconds"]["loading"] == round(summary.loading_seconds, 4)


def test_predict_ray_refuses_workers_that_loaded_other_weights(fake_ray, model, tmp_path, monkeypatch):
    ray, distributed = fake_ray
    monkeypatch.setattr(distributed.Labeller, "fingerprint", lambda self: "f" * 64)
    source = write_titles(tmp_path / "titles.csv")
    with pytest.raises(ValueError, match=r"2 of 2 workers loaded other weights \(sha256 ffffffffffffffff\) than"):
        distributed.predict_ray(
            source, tmp_path / "ray.csv", PredictOptions.of(model=str(model), column="title", progress=False), workers=2
        )
    assert ray.killed == 2 and not (tmp_path / "ray.csv").exists() and not (tmp_path / "ray.csv.json").exists()


# titlecat serve: /v1/metadata and the X-Titlecat-Pipeline header


def requests_to(app, calls):
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)  # runs no lifespan: entered here, it starts the labeller
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://titlecat", timeout=60) as client:
                return [await client.request(method, path, **options) for method, path, options in calls]

    return asyncio.run(run())


def test_the_service_names_the_pipeline_in_metadata_and_in_a_header_of_every_response(model, tmp_path):
    from titlecat.serve import MAX_BODY_BYTES, create_app

    trained = trained_copy(model, tmp_path / "trained")
    loaded = spacy.load(trained)
    sha256 = fingerprint(loaded)
    header = f"xx_titlecat_combined_cpu@0.3.1; sha256={sha256[:16]}"
    app = create_app(trained)
    calls = [
        ("GET", "/v1/metadata", {}),
        ("POST", "/v1/label", {"json": {"titles": ["CTO", ""]}}),
        ("POST", "/v1/label", {"content": b"{"}),
        ("POST", "/v1/label", {"content": b" " * (MAX_BODY_BYTES + 1)}),
        ("POST", "/v1/label-file", {"files": {"file": ("t.csv", b"text\nCTO\nHead of HR\n")}}),
        ("GET", "/health", {}),
        ("GET", "/", {}),
    ]
    responses = requests_to(app, calls)
    assert [response.status_code for response in responses] == [200, 200, 400, 413, 200, 200, 200]
    assert [response.headers.get("x-titlecat-pipeline") for response in responses] == [header] * len(calls)
    pipeline = responses[0].json()["pipeline"]
    assert pipeline == {
        "name": "xx_titlecat_combined_cpu",
        "version": "0.3.1",
        "description": "titlecat: seniority and department, cpu pipelines",
        "sha256": sha256,
        "trained_on": provenance.trained_on(loaded),
        "pipes": ["seniority", "department"],  # titlecat_answers disabled: the service reads doc.cats itself
    }
    assert header_value(pipeline) == header
    # The upload's answer has no sidecar beside it to send: the header is its provenance.
    assert responses[4].headers["content-disposition"].endswith('"t.labelled.csv"')
    # With a key, a request without it gets 401 and learns nothing of the pipeline.
    keyed = create_app(trained, api_key="k" * 32)
    refused, answered = requests_to(
        keyed,
        [
            ("GET", "/v1/metadata", {}),
            ("POST", "/v1/label", {"json": {"titles": ["CTO"]}, "headers": {"Authorization": f"Bearer {'k' * 32}"}}),
        ],
    )
    assert refused.status_code == 401 and "x-titlecat-pipeline" not in refused.headers
    assert answered.status_code == 200 and answered.headers["x-titlecat-pipeline"] == header


def test_an_upload_after_the_pipeline_folder_changed_is_refused(model, tmp_path):
    """Uploads load their own copy of the pipeline at the first upload: weights other than those the header names
    are not used."""
    from titlecat.serve import create_app

    copy = shutil.copytree(model, tmp_path / "copy")
    app = create_app(copy)
    weights = copy / "department" / "model"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    upload, label = requests_to(
        app,
        [
            ("POST", "/v1/label-file", {"files": {"file": ("t.csv", b"text\nCTO\n")}}),
            ("POST", "/v1/label", {"json": {"titles": ["CTO"]}}),
        ],
    )
    assert upload.status_code == 503 and upload.json()["detail"].startswith(f"pipeline: {copy} holds other weights")
    started = fingerprint(spacy.load(model))[:16]
    assert upload.json()["detail"].endswith(f"than when the service started (sha256 {started}): restart the service")
    assert label.status_code == 200 and app.state.files["nlp"] is None
