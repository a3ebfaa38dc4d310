"""The llm pseudo-labelling step: recorded backend, and a live backend against a fake server with faults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import DATA, REPO, copy_project, run_project
from fake_openai_server import FakeOpenAI

from titlecat.labels import DEPARTMENT_LABELS, SENIORITY_LABELS, TASKS, seniority_from_ordinal
from titlecat.llm import ROW_ID_KEY, AnswerStore, BackendError, InvalidAnswer, parse_answer
from titlecat.llm.models import WORKER_THREAD_PREFIX
from titlecat.llm.run import load_pipeline, pseudo_label
from titlecat.llm.store import StoreBusy
from titlecat.readers import PSEUDO_LABEL_FIELDS, Position, read_jsonl, read_pseudo_labels, read_recorded_answers

UNLABELLED = DATA / "linkedin-cvs-not-annotated.json"
RECORDED = DATA / "gemini_synthetic.csv"
SCRIPT = REPO / "scripts" / "pseudo_label.py"


def write_cvs(path: Path, titles: list[str]) -> Path:
    """A CV file in the shape of linkedin-cvs-not-annotated.json: rows are 0..n-1 in this order."""
    path.write_text(json.dumps([[{"position": t, "status": "ACTIVE"} for t in titles]]), encoding="utf-8")
    return path


def run_cli(args: list[str], cwd: Path, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; `env` values of None remove a variable."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    env = {key: value for key, value in env.items() if value is not None}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args), "--no-progress"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # generous: a loaded 2-core machine slows these runs several-fold
        **kwargs,
    )


def records(path: Path) -> list[dict]:
    return [record for _, record in read_jsonl(path)]


# --- the answer parser ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"department": "Sales", "seniority": "Senior"}', ("Sales", "Senior")),
        ('```json\n{"department": "Other", "seniority": "Lead"}\n```', ("Other", "Lead")),
        ('{"department": "Administrative", "seniority": "2.0"}', ("Administrative", "Professional")),
        ('{"department": "Marketing", "seniority": 6}', ("Marketing", "Director")),
    ],
)
def test_parse_answer_accepts(raw, expected):
    answer = parse_answer(raw)
    assert (answer.department, answer.seniority) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "Sales, Senior",
        '{"department": "Sales", "seniority": ',
        '["Sales", "Senior"]',
        '{"department": "Sales"}',
        '{"department": "sales", "seniority": "Senior"}',  # near misses are rejected, not mapped
        '{"department": "Astronautics", "seniority": "Senior"}',
        '{"department": "Sales", "seniority": "Intern"}',
        '{"department": "Sales", "seniority": 7}',
        '{"department": "Sales", "seniority": 2.5}',
        '{"department": "Sales", "seniority": true}',
    ],
)
def test_parse_answer_rejects(raw):
    with pytest.raises(InvalidAnswer):
        parse_answer(raw)


def test_store_refuses_a_second_writer(tmp_path):
    path = tmp_path / "store.jsonl"
    first, second = AnswerStore(path), AnswerStore(path)
    first.add("k1", "answer 1")
    with pytest.raises(StoreBusy, match="another run"):
        second.add("k2", "answer 2")
    first.close()
    second.add("k2", "answer 2")  # the first writer is gone: the second takes over, with what the first wrote
    assert second.get("k1") == ["answer 1"] and len(second) == 2
    second.close()


def test_store_drops_partial_last_line(tmp_path):
    path = tmp_path / "store.jsonl"
    store = AnswerStore(path)
    store.add("k1", "answer 1")
    store.close()
    with path.open("a", encoding="utf-8") as file:
        file.write('{"key": "k2", "raw_ans')  # a write cut off by a kill
    with pytest.warns(UserWarning, match="partial last line"):
        store = AnswerStore(path)
    store.add("k3", "answer 3")
    store.close()
    assert AnswerStore(path).get("k1") == ["answer 1"] and AnswerStore(path).get("k3") == ["answer 3"]


# --- recorded backend ----------------------------------------------------------------------------------------------


def test_recorded_backend_reproduces_recorded_labels(tmp_path):
    recorded = read_recorded_answers(RECORDED)
    # The first 60 rows, plus every row of titles whose recorded answers differ between rows (answered per row).
    rows = set(range(60)) | {r for r, a in recorded.items() if a["position"] in ("IT Consultant", "Partner", "Owner")}
    from titlecat.readers import read_cv_positions

    positions = [p for p in read_cv_positions(UNLABELLED)[0] if p.row in rows]
    out, cli_store = tmp_path / "pseudo.jsonl", tmp_path / "store.jsonl"
    args = [UNLABELLED, out, "--config", REPO / "configs" / "llm_recorded.cfg", "--recorded", RECORDED]
    args += ["--store", cli_store, "--rejects", tmp_path / "rejects.jsonl", "--report-dir", tmp_path / "report"]
    args += ["--curated-dir", DATA, "--limit", 60]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "recorded" in result.stdout and "no model was queried" in result.stdout
    written = records(out)
    assert [r["row_id"] for r in written] == list(range(60))
    assert all(set(PSEUDO_LABEL_FIELDS) <= set(r) for r in written)
    for task in TASKS.values():
        assert len(read_pseudo_labels(out, task)) == 60
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["labelled"] == 60 and summary["invalid"] == summary["no_recorded_answer"] == 0
    assert "recorded" in summary["note"] and (tmp_path / "report" / "label_distribution.png").stat().st_size > 0

    # In process, over the subset with the per-row conflicts: the llm pipeline gives each row its recorded labels.
    store = tmp_path / "store2.jsonl"
    nlp = load_pipeline(
        REPO / "configs" / "llm_recorded.cfg", {"paths.recorded": str(RECORDED), "paths.store": str(store)}
    )
    labelled, rejects, counts = pseudo_label(nlp, positions, progress=False)
    assert not rejects and counts["labelled"] == len(positions) > 60
    for record in labelled:
        answer = recorded[record["row_id"]]
        assert record["department"] == answer["department"]
        assert record["seniority"] == seniority_from_ordinal(answer["seniority"])
        assert record["backend"] == "recorded:gemini-2.0-flash"
    # Same inputs, same backend: everything from the store.
    nlp = load_pipeline(
        REPO / "configs" / "llm_recorded.cfg", {"paths.recorded": str(RECORDED), "paths.store": str(store)}
    )
    again, _, counts = pseudo_label(nlp, positions, progress=False)
    assert counts["from_cache"] == len(positions) and counts["requests"] == 0
    assert [(r["row_id"], r["department"], r["seniority"]) for r in again] == [
        (r["row_id"], r["department"], r["seniority"]) for r in labelled
    ]
    # doc.cats: one-hot over both label sets.
    doc = nlp.make_doc(positions[0].text)
    doc.user_data[ROW_ID_KEY] = positions[0].row
    doc = nlp(doc)
    assert set(doc.cats) == set(DEPARTMENT_LABELS) | set(SENIORITY_LABELS) and sum(doc.cats.values()) == 2.0
    assert doc.cats[labelled[0]["department"]] == doc.cats[labelled[0]["seniority"]] == 1.0


def test_recorded_backend_reports_missing_and_invalid(tmp_path):
    titles = ["Bookkeeper", "Co-Owner", "Logistics Officer", "Truck driver/ laborer", "Fuel Driver"]
    cvs = write_cvs(tmp_path / "cvs.json", titles)
    csv = tmp_path / "recorded.csv"
    csv.write_text(
        "row_id,position,department,seniority\n"
        "0,Bookkeeper,Administrative,2.0\n"
        "1,Co-Owner,Astronautics,5.0\n"  # department outside the set
        "2,Logistics Officer,Other,7.0\n"  # seniority outside 1..6
        "3,Someone Else,Other,1.0\n",  # recorded for another title: not this one's answer
        encoding="utf-8",
    )  # row 4 has no recorded answer
    nlp = load_pipeline(REPO / "configs" / "llm_recorded.cfg", {"paths.recorded": str(csv), "paths.store": None})
    positions = [Position(t, i, 0, "ACTIVE") for i, t in enumerate(titles)]
    labelled, rejects, counts = pseudo_label(nlp, positions, progress=False)
    assert [r["row_id"] for r in labelled] == [0]
    assert {(r["row_id"], r["reason"]) for r in rejects} == {
        (1, "invalid"),
        (2, "invalid"),
        (3, "no_recorded_answer"),
        (4, "no_recorded_answer"),
    }
    invalid = {r["row_id"]: r for r in rejects}
    assert "Astronautics" in invalid[1]["raw_answer"] and "department" in invalid[1]["error"]
    assert invalid[4]["raw_answer"] is None and "row 4" in invalid[4]["error"]
    assert counts["invalid"] == 2 and counts["no_recorded_answer"] == 2
    assert cvs.exists()


# --- live backend against a fake OpenAI-compatible server ------------------------------------------------------------

FAULTS = {
    "Sales Manager": ["429", "ok"],
    "Server Hiccup": ["500", "ok"],
    "Always Down": ["500"],
    "Slow Title": ["timeout", "ok"],
    "Broken Json": ["malformed"],
    "Bad Label": ["bad_label"],
    "Fixed On Retry": ["malformed", "ok"],
}
ANSWERS = {
    "Sales Manager": {"department": "Sales", "seniority": "Management"},
    "Buchhalter": {"department": "Administrative", "seniority": "Professional"},
}


OPENAI_SETTINGS = {
    "model": "fake-model",
    "api_key_env": "TITLECAT_TEST_KEY",
    "timeout": 0.5,
    "max_tries": 3,
    "backoff": 0.01,
}


def openai_args(server: FakeOpenAI, cvs: Path, tmp: Path) -> list:
    args = [cvs, tmp / "pseudo.jsonl", "--config", REPO / "configs" / "llm_openai.cfg", "--base-url", server.base_url]
    args += [x for key, value in OPENAI_SETTINGS.items() for x in (f"--{key.replace('_', '-')}", value)]
    args += ["--store", tmp / "store" / "answers.jsonl", "--rejects", tmp / "rejects.jsonl"]
    return args + ["--report-dir", tmp / "report"]


def test_openai_backend_retries_rejects_and_keeps_the_key_secret(tmp_path, monkeypatch):
    titles = [*FAULTS, "Buchhalter", "Buchhalter"]
    cvs = write_cvs(tmp_path / "cvs.json", titles)
    key = f"sk-test-{uuid.uuid4().hex}"
    with FakeOpenAI(FAULTS, ANSWERS, api_key=key) as server:
        result = run_cli(openai_args(server, cvs, tmp_path), tmp_path, {"TITLECAT_TEST_KEY": key})
        assert result.returncode == 0, result.stderr
        first = dict(server.requests)
        # 429 and 500 and a timeout are retried with backoff; an invalid answer is asked once more.
        assert first == {
            "Sales Manager": 2,
            "Server Hiccup": 2,
            "Always Down": 3,
            "Slow Title": 2,
            "Broken Json": 2,
            "Bad Label": 2,
            "Fixed On Retry": 2,
            "Buchhalter": 1,  # a repeated title is asked once
        }
        assert server.auth_ok == {True: sum(first.values())}

        written = records(tmp_path / "pseudo.jsonl")
        labels = {r["row_id"]: (r["text"], r["department"], r["seniority"]) for r in written}
        assert labels == {
            0: ("Sales Manager", "Sales", "Management"),
            1: ("Server Hiccup", "Other", "Professional"),
            3: ("Slow Title", "Other", "Professional"),
            6: ("Fixed On Retry", "Other", "Professional"),
            7: ("Buchhalter", "Administrative", "Professional"),
            8: ("Buchhalter", "Administrative", "Professional"),
        }
        assert {r["backend"] for r in written} == {"openai:fake-model"}
        rejects = {r["text"]: r for r in records(tmp_path / "rejects.jsonl")}
        assert {t: r["reason"] for t, r in rejects.items()} == {
            "Always Down": "failed",
            "Broken Json": "invalid",
            "Bad Label": "invalid",
        }
        assert rejects["Broken Json"]["raw_answer"] == '{"department": "Sales", "seniority": '
        assert len(rejects["Broken Json"]["attempts"]) == 2 and "not valid JSON" in rejects["Broken Json"]["error"]
        assert "Astronautics" in rejects["Bad Label"]["raw_answer"]
        assert "HTTP 500" in rejects["Always Down"]["error"]
        summary = json.loads((tmp_path / "report" / "summary.json").read_text())
        assert (summary["labelled"], summary["invalid"], summary["failed"]) == (6, 2, 1)

        # Rerun (in process, to keep the suite fast): only the failed title is asked again; stored answers,
        # valid or invalid twice, are reused.
        monkeypatch.setenv("TITLECAT_TEST_KEY", key)
        overrides = {f"components.llm.model.{k}": v for k, v in OPENAI_SETTINGS.items()}
        overrides |= {
            "components.llm.model.base_url": server.base_url,
            "paths.store": str(tmp_path / "store" / "answers.jsonl"),
        }
        nlp = load_pipeline(REPO / "configs" / "llm_openai.cfg", overrides)
        positions = [Position(t, i, 0, "ACTIVE") for i, t in enumerate(titles)]
        again, again_rejects, counts = pseudo_label(nlp, positions, progress=False)
        assert {t: n - first[t] for t, n in server.requests.items() if n != first[t]} == {"Always Down": 3}
        assert again == [{**r, "from_cache": True} for r in written]
        assert counts["from_cache"] == 8 and counts["requests"] == 1 and len(again_rejects) == 3

    # The key was sent (auth_ok) but appears in no file and no log.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    for output in (result.stdout, result.stderr):
        assert key not in output


def test_openai_backend_stops_on_auth_error_without_leaking_the_key(tmp_path, monkeypatch):
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("TITLECAT_TEST_KEY", key)
    with FakeOpenAI({"Analyst": ["401"]}) as server:
        overrides = {
            "components.llm.model.base_url": server.base_url,
            "components.llm.model.api_key_env": "TITLECAT_TEST_KEY",
            "paths.store": str(tmp_path / "store.jsonl"),
        }
        nlp = load_pipeline(REPO / "configs" / "llm_openai.cfg", overrides)
        with pytest.raises(BackendError, match="HTTP 401") as error:
            pseudo_label(nlp, [Position("Analyst", 0, 0, "ACTIVE")], progress=False)
        assert server.requests["Analyst"] == 1  # no retry
        assert key not in str(error.value)


def test_a_404_stops_the_run_with_a_complete_message(tmp_path):
    """An unknown model (or a base URL without /v1) with no key configured: what to check, then the server's words."""
    with FakeOpenAI({"Analyst": ["404"]}) as server:
        overrides = {
            "components.llm.model.base_url": server.base_url,
            "components.llm.model.api_key_env": "",  # a local server: the message must not name an empty $variable
            "paths.store": str(tmp_path / "store.jsonl"),
        }
        nlp = load_pipeline(REPO / "configs" / "llm_openai.cfg", overrides)
        with pytest.raises(BackendError, match="HTTP 404") as error:
            pseudo_label(nlp, [Position("Analyst", 0, 0, "ACTIVE")], progress=False)
        assert server.requests["Analyst"] == 1  # no retry
    message = str(error.value)
    assert "Check the base URL" in message and "model name" in message and "$" not in message, message
    assert message.endswith("The server said: " + json.dumps({"error": {"message": "The model `gpt-4o-mini` does not "
        "exist or you do not have access to it.", "code": "model_not_found"}}))  # fmt: skip
    assert error.value.settings == ("base_url", "model")


def test_openai_run_killed_midway_and_rerun_yields_every_row_once(tmp_path):
    titles = [f"Job Title {i}" for i in range(200)]
    cvs = write_cvs(tmp_path / "cvs.json", titles)
    store = tmp_path / "store" / "answers.jsonl"
    with FakeOpenAI(delay=0.05) as server:
        args = [*openai_args(server, cvs, tmp_path), "--concurrency", 8]
        env = {**os.environ, "PYTHONPATH": str(REPO), "TITLECAT_TEST_KEY": "sk-test-kill"}
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), *map(str, args), "--no-progress"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 45
            while sum(server.requests.values()) < 60 and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.02)
            assert process.poll() is None, "the run ended before it could be killed"
        finally:
            process.send_signal(signal.SIGKILL)  # 8 requests in flight: their answers are lost, not half-written
            process.wait(timeout=10)
        assert not (tmp_path / "pseudo.jsonl").exists()  # nothing half-written
        stored = len(records(store))
        assert 40 <= stored < 200
        server.wait_quiet()  # a request the killed run sent last may still be on its way to the server
        sent_before = sum(server.requests.values())

        result = run_cli(args, tmp_path, {"TITLECAT_TEST_KEY": "sk-test-kill"})
        assert result.returncode == 0, result.stderr
        assert sum(server.requests.values()) - sent_before == 200 - stored  # only what was missing
    lines = records(store)
    assert len(lines) == len({line["key"] for line in lines}) == 200  # every answer stored exactly once
    assert sorted(line["title"] for line in lines) == sorted(titles)
    written = records(tmp_path / "pseudo.jsonl")
    assert [r["row_id"] for r in written] == list(range(200))
    assert [r["text"] for r in written] == titles
    assert sum(r["from_cache"] for r in written) == stored


# --- failing fast ----------------------------------------------------------------------------------------------------


def test_unset_key_stops_before_the_first_request(tmp_path):
    cvs = write_cvs(tmp_path / "cvs.json", ["Analyst", "Buchhalter"])
    with FakeOpenAI() as server:
        # It stops before any request (asserted below); run_cli's timeout guards against a hang, no clock here.
        result = run_cli(openai_args(server, cvs, tmp_path), tmp_path, {"TITLECAT_TEST_KEY": None})
        assert result.returncode == 1
        message = " ".join(result.stdout.split())
        assert "$TITLECAT_TEST_KEY is not set" in message and server.base_url in message
        assert "--no-api-key" in message and "fake-model" in message
        assert not server.requests and not (tmp_path / "pseudo.jsonl").exists()

        # A key-less local server: --no-api-key sends no Authorization header at all.
        (tmp_path / "pseudo.jsonl").write_text('{"backend": "recorded:gemini-2.0-flash"}\n' * 3)
        result = run_cli([*openai_args(server, cvs, tmp_path), "--no-api-key"], tmp_path, {"TITLECAT_TEST_KEY": None})
        assert result.returncode == 0, result.stdout + result.stderr
        assert server.requests == {"Analyst": 1, "Buchhalter": 1} and server.with_key == 0
        assert len(records(tmp_path / "pseudo.jsonl")) == 2
        # What it replaced is said, never silently overwritten.
        note = " ".join(result.stdout.split())
        assert "held 3 from recorded:gemini-2.0-flash; it now holds 2 from openai:fake-model" in note, note


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_connection_stops_the_run_with_one_error(tmp_path):
    cvs = write_cvs(tmp_path / "cvs.json", [f"Job Title {i}" for i in range(300)])
    key = f"sk-test-{uuid.uuid4().hex}"
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    args = [cvs, tmp_path / "pseudo.jsonl", "--config", REPO / "configs" / "llm_openai.cfg", "--base-url", base_url]
    args += ["--model", "fake-model", "--api-key-env", "TITLECAT_TEST_KEY", "--store", tmp_path / "store.jsonl"]
    args += ["--backoff", 0.05]  # the default (1 s, doubling) trips after 15 s: see docs/pseudo_labels.md
    # Default concurrency, tries and breaker; run_cli's timeout fails a run that retries every title for ever.
    result = run_cli(args, tmp_path, {"TITLECAT_TEST_KEY": key})
    assert result.returncode == 1, (result.stdout, result.stderr)
    message = " ".join(result.stdout.split())
    assert message.count("looks down") == 1
    assert f"{base_url}/chat/completions" in message and "'fake-model'" in message
    assert "Connection refused" in message and "rerun" in message
    assert key not in result.stdout + result.stderr
    assert not (tmp_path / "pseudo.jsonl").exists()


def openai_pipeline(server: FakeOpenAI, store: Path | None, **settings):
    overrides = {f"components.llm.model.{k}": v for k, v in {**OPENAI_SETTINGS, **settings}.items()}
    overrides |= {"components.llm.model.base_url": server.base_url, "paths.store": str(store) if store else None}
    return load_pipeline(REPO / "configs" / "llm_openai.cfg", overrides)


def wait_for_llm_workers(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith(WORKER_THREAD_PREFIX):
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), f"{thread.name} still running after {timeout} s"


def test_5xx_on_titles_in_a_row_trips_the_breaker_and_a_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("TITLECAT_TEST_KEY", "sk-test-breaker")
    titles = [f"Up {i}" for i in range(10)] + [f"Down {i}" for i in range(20)]
    positions = [Position(t, i, 0, "ACTIVE") for i, t in enumerate(titles)]
    store = tmp_path / "store.jsonl"
    with FakeOpenAI({t: ["500"] for t in titles if t.startswith("Down")}) as server:
        with pytest.raises(BackendError, match="looks down") as error:
            pseudo_label(openai_pipeline(server, store, concurrency=4), positions, progress=False)
        assert "HTTP 500" in str(error.value) and "fake-model" in str(error.value) and server.base_url in str(error)
        assert sum(server.requests.values()) < 20 * 3  # stopped long before every title used its tries
        stored = {line["title"] for line in records(store)}
        assert stored and stored <= set(titles[:10])  # what was answered is kept
        # The run stops without waiting for requests in flight; let them land before counting the rerun's.
        wait_for_llm_workers()

        server.script = {}  # the endpoint is back
        sent_before = sum(server.requests.values())
        nlp = openai_pipeline(server, store, concurrency=4)
        labelled, rejects, counts = pseudo_label(nlp, positions, progress=False)
        assert not rejects and [r["text"] for r in labelled] == titles
        assert counts["from_cache"] == len(stored) and counts["requests"] == 30 - len(stored)
        assert sum(server.requests.values()) - sent_before == 30 - len(stored)


def test_an_endpoint_that_hangs_trips_the_breaker_when_its_requests_time_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TITLECAT_TEST_KEY", "sk-test-hang")
    positions = [Position(f"Hanging {i}", i, 0, "ACTIVE") for i in range(40)]
    with FakeOpenAI({p.text: ["timeout"] for p in positions}, sleep=2.0) as server:
        nlp = openai_pipeline(server, None, concurrency=4, timeout=0.4, max_tries=5, breaker_seconds=0.3)
        start = time.monotonic()
        with pytest.raises(BackendError, match="looks down") as error:
            pseudo_label(nlp, positions, progress=False)
        elapsed = time.monotonic() - start
    assert "timed out after 0.4 s" in str(error.value)
    # The first 4 requests time out together, 0.4 s after they left: that is 3+ titles failing for 0.3+ s.
    assert elapsed < 1.5 and sum(server.requests.values()) <= 8, (elapsed, server.requests)


# --- concurrency ---------------------------------------------------------------------------------------------------


def test_concurrency_8_is_at_least_5_times_faster_than_1(tmp_path):
    """1,000 titles at 50 ms per answer with 8 in flight, against 200 (same titles/second, less waiting) with 1."""
    out = tmp_path / "bench.md"
    bench = [sys.executable, str(REPO / "scripts" / "bench_llm_concurrency.py"), out, "--titles", 1000]
    bench += ["--sequential-titles", 200, "--concurrency", 1, "--concurrency", 8, "--latency", 0.05]
    result = subprocess.run(
        list(map(str, bench)),
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {row["concurrency"]: row for row in json.loads(out.with_suffix(".json").read_text())}
    assert rows[8]["titles"] == 1000 and rows[1]["titles"] == 200
    assert rows[1]["seconds"] >= 200 * 0.05  # the latency is real: one request at a time
    assert rows[8]["speedup"] >= 5, rows
    assert "| 8 | 1000 |" in out.read_text()


def test_a_429_storm_pauses_every_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("TITLECAT_TEST_KEY", "sk-test-storm")
    titles = [f"Storm {i}" for i in range(4)] + [f"Calm {i}" for i in range(20)]
    positions = [Position(t, i, 0, "ACTIVE") for i, t in enumerate(titles)]
    script = {t: ["429", "ok"] for t in titles[:4]}
    with FakeOpenAI(script, delay=0.01, retry_after="1") as server:
        start = time.monotonic()
        labelled, rejects, _ = pseudo_label(openai_pipeline(server, None, concurrency=4), positions, progress=False)
        elapsed = time.monotonic() - start
    assert not rejects and len(labelled) == 24
    storms = [t for t, _, action in server.arrivals if action == "429"]
    assert storms and elapsed >= 1.0
    for storm in storms:
        # Retry-After: 1 holds back every worker, not only the one that got the 429.
        assert not [t for t, _, _ in server.arrivals if storm + 0.15 < t < storm + 0.85], storm
    # One wave of 429s is one pause, not one per worker: the run is not 4 × 1 s.
    assert elapsed < 3.5


def test_requests_per_minute_spaces_the_requests(tmp_path, monkeypatch):
    monkeypatch.setenv("TITLECAT_TEST_KEY", "sk-test-rpm")
    positions = [Position(f"Paced {i}", i, 0, "ACTIVE") for i in range(12)]
    with FakeOpenAI() as server:
        nlp = openai_pipeline(server, None, concurrency=8, requests_per_minute=600)
        labelled, _, _ = pseudo_label(nlp, positions, progress=False)
    times = sorted(t for t, _, _ in server.arrivals)
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert len(labelled) == 12 and min(gaps) > 0.08  # 600 a minute: one every 0.1 s, though 8 could go at once


def test_progress_shows_failures_and_retries_as_they_happen(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TITLECAT_TEST_KEY", "sk-test-progress")
    positions = [Position(t, i, 0, "ACTIVE") for i, t in enumerate(["Always Down", "A", "B", "C"])]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the bar is drawn on a terminal only
    with FakeOpenAI({"Always Down": ["500"]}, delay=0.2) as server:
        pseudo_label(openai_pipeline(server, None, concurrency=1), positions, progress=True)
    frames = capsys.readouterr().err.replace("\n", "\r").split("\r")
    # Drawn when the first title failed, while three titles were still to come.
    assert [f for f in frames if "1/4" in f and "failed=1" in f and "retries=2" in f and "HTTP 500" in f], frames


# --- through the project: the vars a project user sets ------------------------------------------------------------


def test_live_pseudo_labelling_through_the_project_vars(tmp_path, data_dir):
    """llm_api_key_env, llm_limit and llm_timeout reach the script; its messages name vars; recorded labels stay."""
    project = copy_project(tmp_path / "project")
    (project / "assets").mkdir()
    for name in ("linkedin-cvs-not-annotated.json", "gemini_synthetic.csv", "department-v2.csv", "seniority-v2.csv"):
        (project / "assets" / name).symlink_to(data_dir / name)  # what the pseudo-label command reads
    # Stands for the study's pseudo-labels of the recorded backend: a live run must leave them alone.
    recorded = project / "corpus" / "pseudo_labels" / "recorded.jsonl"
    recorded.parent.mkdir(parents=True)
    recorded_bytes = b'{"backend": "recorded:gemini-2.0-flash"}\n'
    recorded.write_bytes(recorded_bytes)
    with FakeOpenAI(lifetime=600) as server:  # two project runs: spaCy's start-up alone can take a minute when busy
        live = ["pseudo-label", ".", "--vars.llm_backend", "openai", "--vars.llm_base_url", server.base_url]
        live += ["--vars.llm_model", "fake-model"]

        # No key in the variable: the fix is said in vars, not in the script's flags.
        result = run_project(project, *live, "--vars.llm_api_key_env", "TITLECAT_TEST_UNSET_KEY", check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0 and "✘" in output, output[-3000:]
        message = " ".join(output[output.index("✘") :].split())  # the error, not the command line spaCy echoes
        assert "$TITLECAT_TEST_UNSET_KEY is not set" in message, message
        assert '--vars.llm_api_key_env ""' in message and "--vars.llm_api_key_env NAME" in message, message
        assert "--no-api-key" not in message and "--api-key-env" not in message
        assert not server.requests

        # A key-less local server, a smoke test of 5 titles: its own output, the recorded one untouched.
        result = run_project(project, *live, "--vars.llm_api_key_env", "", "--vars.llm_limit", "5")
        assert sum(server.requests.values()) == 5 and server.with_key == 0
        assert len(records(project / "corpus" / "pseudo_labels" / "openai.jsonl")) == 5
        assert recorded.read_bytes() == recorded_bytes
        assert "--vars.llm_limit 5" in result.stdout

    # A slow model: llm_timeout is the seconds each request may take.
    with FakeOpenAI(delay=2.0, lifetime=600) as slow:
        live[5] = slow.base_url
        args = [*live, "--vars.llm_api_key_env", "", "--vars.llm_limit", "4", "--vars.llm_timeout", "0.5"]
        result = run_project(project, *args, check=False)
        message = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0 and "timed out after 0.5 s" in message, message[-3000:]
        assert "only slow needs a timeout above 0.5 s [set with --vars.llm_timeout SECONDS]" in message, message
