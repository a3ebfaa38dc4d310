"""`titlecat serve`: the real server in a subprocess on a free loopback port, real HTTP requests, then stopped."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import curated_examples, train_small_pipelines

from titlecat.labels import TASKS
from titlecat.predict import PredictOptions, answers, check_title, load_pipeline, pipeline_tasks, predict_file
from titlecat.serve import API_KEY_ENV, MAX_BODY_BYTES, MAX_TITLES, WARM_TITLES, Labeller, pipeline_metadata

# Good and bad titles of every status; the lone surrogate arrives as the JSON escape "\ud800".
MIXED = ["Leiterin Vertrieb DACH", "", "   ", "12345", "Sales " * 100, "Sales \ud800", "Head\x00of\x1fSales", "CTO"]
MIXED_STATUSES = ["ok", "empty", "empty", "not_text", "too_long", "undecodable", "ok", "ok"]


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory, data_dir, tiny_encoder_dir) -> Path:
    """A small seniority and department pipeline (300 curated titles each) and their combination."""
    return train_small_pipelines(tmp_path_factory.mktemp("serve-pipelines"), tiny_encoder_dir)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`titlecat serve` in a subprocess on 127.0.0.1; its log goes to a file (a full pipe would block it)."""

    def __init__(self, model: Path, log: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [sys.executable, "-m", "titlecat", "serve", "--model", str(model), "--port", str(self.port), *args]
        with log.open("w") as file:
            self.process = subprocess.Popen(command, stdout=file, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"titlecat serve exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"titlecat serve did not answer /health:\n{log.read_text()[-3000:]}")

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=30, **kwargs)

    def label(self, body: dict) -> httpx.Response:
        # json.dumps escapes a lone surrogate ("\ud800"); httpx's own json= would fail to encode it.
        return self.post("/v1/label", content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    def alive(self) -> bool:
        return self.process.poll() is None and httpx.get(f"{self.url}/health", timeout=5).status_code == 200

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def metrics_file(tmp_path_factory) -> Path:
    """evaluate's JSON format (scripts/evaluate.py) for seniority, as `--metrics` reads it."""
    path = tmp_path_factory.mktemp("metrics") / "seniority_augmented.json"
    splits = {"test": (120, 0.9, 0.8), "cv_dev": (217, 0.61, 0.5), "ood": (623, 0.72, 0.62)}
    data = {"task": "seniority", "pipeline": "seniority_augmented"}
    for split, (n, accuracy, macro_f1) in splits.items():
        data[split] = {"n": n, "accuracy": accuracy, "macro_f1": macro_f1, "mae": 0.5, "per_class": {}}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def server(pipelines, metrics_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "serve.log"
    running = Server(pipelines / "combined", log, "--metrics", str(metrics_file))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def nlp(pipelines):
    return load_pipeline(pipelines / "combined")


def expected_rows(nlp, titles: list[str], all_scores: bool = False) -> list[dict]:
    """What predict's pieces answer for each title, in order, computed in this process."""
    tasks = pipeline_tasks(nlp)
    rows = []
    for title in titles:
        status, text = check_title(title)
        row = {"status": status}
        if status == "ok":
            row.update(answers(nlp(text).cats, tasks, all_scores))
        rows.append(row)
    return rows


def without_nulls(row: dict) -> dict:
    return {key: value for key, value in row.items() if value is not None}


def test_label_answers_in_order_with_the_statuses_and_answers_of_predict(server, nlp):
    response = server.label({"titles": MIXED, "ids": list(range(len(MIXED) - 1)) + ["last"]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [row["status"] for row in results] == MIXED_STATUSES
    assert [row["id"] for row in results] == list(range(len(MIXED) - 1)) + ["last"]
    # Every row has every field; a bad row's answers are null, as predict leaves them empty.
    fields = {"id", "status", "seniority", "seniority_score", "department", "department_score"}
    assert all(set(row) == fields for row in results)
    assert [without_nulls(row) | {"id": None} for row in results] == [
        row | {"id": None} for row in expected_rows(nlp, MIXED)
    ]
    assert results[0]["department"] == "Sales"
    assert server.label({"titles": []}).json() == {"results": []}


def test_all_scores_gives_every_label_and_the_best_is_the_answer(server, nlp):
    results = server.label({"titles": ["Head of Human Resources", "Junior Java Developer"], "all_scores": True})
    for row in results.json()["results"]:
        for task, labels in pipeline_tasks(nlp).items():
            scores = {label: row[f"{task}:{label}"] for label in labels}
            assert sum(scores.values()) == pytest.approx(1.0, abs=0.01)
            assert row[task] == max(scores, key=scores.get) and row[f"{task}_score"] == max(scores.values())


def test_the_answers_match_titlecat_predict_on_the_same_titles(server, nlp, tmp_path):
    titles = [example.text for example in curated_examples("department", 200, seed=3)] + MIXED
    path = tmp_path / "titles.jsonl"
    path.write_text("".join(json.dumps({"text": title}) + "\n" for title in titles), encoding="utf-8")
    predict_file(
        nlp, path, tmp_path / "labels.jsonl", PredictOptions.of(progress=False, keep_title=False)
    )  # /v1/label has no title
    predicted = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    results = server.label({"titles": titles}).json()["results"]
    assert [{k: v for k, v in row.items() if k != "line"} for row in predicted] == results


BAD_REQUESTS = [
    # (name, body bytes, status, the message's start)
    ("malformed JSON", b'{"titles": ["CEO"', 400, "body: malformed JSON at line 1, column 18"),
    ("not UTF-8", b'{"titles": ["\xff"]}', 400, "body: not UTF-8"),
    ("empty body", b"", 400, "body: empty; expected a JSON object"),
    ("deeply nested", b"[" * 100_000, 400, "body: JSON nested too deeply"),
    ("not an object", b'["CEO"]', 422, "body: expected a JSON object"),
    ("no titles", b'{"ids": [1]}', 422, "titles: missing"),
    ("titles a string", b'{"titles": "CEO"}', 422, "titles: expected a list of strings, found a string"),
    ("a title a number", b'{"titles": ["CEO", 5]}', 422, "titles[1]: expected a string, found a number"),
    ("a title null", b'{"titles": [null]}', 422, "titles[0]: expected a string, found null"),
    ("unknown field", b'{"title": ["CEO"]}', 422, "title: unknown field"),
    ("ids too short", b'{"titles": ["a", "b"], "ids": [1]}', 422, "ids: expected a list as long as titles (2)"),
    ("an id an object", b'{"titles": ["a"], "ids": [{}]}', 422, "ids[0]: expected a string or an integer"),
    ("all_scores a string", b'{"titles": ["a"], "all_scores": "yes"}', 422, "all_scores: expected true or false"),
    ("review_below over 1", b'{"titles": ["a"], "review_below": 1.5}', 422, "review_below: expected a number between"),
    ("review_below a string", b'{"titles": ["a"], "review_below": "0.5"}', 422, "review_below: expected a number"),
    (
        "too many titles",
        json.dumps({"titles": ["CEO"] * (MAX_TITLES + 1)}).encode(),
        413,
        f"titles: {MAX_TITLES + 1:,} titles, more than the limit of {MAX_TITLES:,}",
    ),
    ("body too large", b" " * (MAX_BODY_BYTES + 1), 413, "body: over the limit of"),
]


@pytest.mark.parametrize("name, body, status, message", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_a_bad_request_gets_a_4xx_naming_the_field_and_the_server_lives_on(server, name, body, status, message):
    response = server.post("/v1/label", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(message), response.json()
    assert server.alive()


def test_a_chunked_body_over_the_limit_gets_413(server):
    def chunks():
        for _ in range(MAX_BODY_BYTES // 2**16 + 2):
            yield b" " * 2**16

    response = server.post("/v1/label", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["detail"].startswith("body: over the limit")
    assert server.alive()


def test_a_chunked_body_over_the_limit_is_read_no_further_once_refused(server):
    """After its 413 the server closes the connection: it neither reads nor drops the rest of a long chunked body."""
    offered = 16 * MAX_BODY_BYTES
    sent = 0

    def chunks():
        nonlocal sent
        while sent < offered:
            sent += 2**16
            yield b" " * 2**16

    response = server.post("/v1/label", content=chunks(), headers={"Content-Type": "application/json"})
    # The limit and what the loopback's socket buffers took before the server closed: a few MiB, not 64.
    assert sent < offered / 2, f"{sent:,} bytes sent"
    assert response.status_code == 413 and response.headers["connection"] == "close"
    assert server.alive()


def test_an_upload_over_the_limit_gets_413_before_it_is_read(server):
    """The Content-Length alone decides: nothing of the announced 200 MB is sent."""
    request = (
        f"POST /v1/label-file HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 200000000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(request.encode())
        # The server may send its headers and body in separate segments; it closes the connection after both.
        answer = b"".join(iter(lambda: connection.recv(4096), b"")).decode()
    assert answer.startswith("HTTP/1.1 413") and "body: over the limit of 104,857,600 bytes" in answer
    assert server.alive()


def test_review_below_flags_the_rows_with_a_score_below_it(server, nlp):
    titles = [example.text for example in curated_examples("department", 60, seed=21)] + MIXED
    expected = expected_rows(nlp, titles)
    # The median of the lower score of each answered title: both flags occur.
    lowest = sorted(min(row["seniority_score"], row["department_score"]) for row in expected if row["status"] == "ok")
    threshold = lowest[len(lowest) // 2]
    results = server.label({"titles": titles, "review_below": threshold}).json()["results"]
    flags = [row["needs_review"] for row in results]
    for row, flag in zip(expected, flags, strict=True):
        if row["status"] == "ok":
            assert flag == (row["seniority_score"] < threshold or row["department_score"] < threshold), row
        else:
            assert flag is None
    assert {True, False} <= set(flags)
    assert "needs_review" not in server.label({"titles": titles[:3]}).json()["results"][0]


def test_concurrent_clients_get_their_own_answers_batched_together(server, nlp):
    titles = [example.text for example in curated_examples("seniority", 400, seed=5)]
    expected = {row_title: row for row_title, row in zip(titles, expected_rows(nlp, titles), strict=True)}
    before = httpx.get(f"{server.url}/health").json()

    def client(index: int) -> list[tuple[list[str], httpx.Response]]:
        answered = []
        with httpx.Client(timeout=60) as session:
            for request in range(6):
                start = (index * 37 + request * 11) % len(titles)
                chosen = titles[start : start + 1 + (index * 7 + request) % 60]
                response = session.post(f"{server.url}/v1/label", json={"titles": chosen, "ids": chosen})
                answered.append((chosen, response))
        return answered

    with ThreadPoolExecutor(24) as pool:
        answered = [pair for pairs in pool.map(client, range(24)) for pair in pairs]
    assert len(answered) == 24 * 6
    for chosen, response in answered:
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [row["id"] for row in results] == chosen
        assert [without_nulls(row) | {"id": None} for row in results] == [
            expected[title] | {"id": None} for title in chosen
        ]
    after = httpx.get(f"{server.url}/health").json()
    assert after["requests"] - before["requests"] == 24 * 6
    # Requests that waited together were labelled in one nlp.pipe call.
    assert after["batches"] - before["batches"] < 24 * 6


def test_metadata_has_the_labels_and_the_metrics(server):
    metadata = httpx.get(f"{server.url}/v1/metadata").json()
    assert metadata["pipeline"]["name"] == "xx_pipeline"  # combine() names no pipeline
    assert {task: info["labels"] for task, info in metadata["tasks"].items()} == {
        task: list(TASKS[task].labels) for task in ("seniority", "department")
    }
    ood = {"n": 623, "accuracy": 0.72, "macro_f1": 0.62, "mae": 0.5}  # the file's, without per_class
    assert metadata["tasks"]["seniority"]["metrics"]["ood"] == ood
    assert metadata["tasks"]["department"]["metrics"] == {}
    assert metadata["limits"]["max_titles"] == MAX_TITLES


def test_metadata_reads_the_metrics_a_packaged_meta_holds(nlp, monkeypatch):
    """scripts/package.py writes titlecat.tasks.<task>.metrics (and `performance`) into a wheel's meta."""
    packaged = {"tasks": {"department": {"labels": [], "metrics": {"ood": {"n": 623, "accuracy": 0.7}}}}}
    monkeypatch.setitem(nlp.meta, "titlecat", packaged)
    performance = {"seniority_ood_accuracy": 0.75, "seniority_ood_n": 623, "seniority_test_mae": 0.1}
    monkeypatch.setitem(nlp.meta, "performance", performance)
    tasks = pipeline_metadata(nlp)["tasks"]
    assert tasks["department"]["metrics"] == {"ood": {"n": 623, "accuracy": 0.7}}
    assert tasks["seniority"]["metrics"] == {"ood": {"n": 623, "accuracy": 0.75}, "test": {"mae": 0.1}}


def test_the_page_is_served_without_cdn_assets_and_the_api_is_documented(server):
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/label" in page.text and "/v1/label-file" in page.text
    # Nothing loaded from another host: no script, stylesheet or image by URL.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
    assert "@import" not in page.text
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/label", "/v1/label-file", "/v1/metadata", "/health"} <= set(schema["paths"])
    body = schema["paths"]["/v1/label"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["titles"]["maxItems"] == MAX_TITLES


def test_an_uploaded_file_comes_back_as_titlecat_predict_writes_it(server, nlp, tmp_path):
    # A CSV file cannot hold a lone surrogate or NUL: the other bad titles.
    titles = [example.text for example in curated_examples("department", 150, seed=9)] + MIXED[:5] + ["x\ty"]
    source = tmp_path / "people.csv"
    with source.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "title"])
        writer.writerows([f"p{index}", title] for index, title in enumerate(titles))
    response = server.post(
        "/v1/label-file",
        files={"file": ("people.csv", source.read_bytes(), "text/csv")},
        data={"column": "title", "id_column": "id"},
    )
    assert response.status_code == 200, response.text
    assert 'filename="people.labelled.csv"' in response.headers["content-disposition"]
    predict_file(
        nlp, source, tmp_path / "expected.csv", PredictOptions.of(column="title", id_column="id", progress=False)
    )
    assert response.content == (tmp_path / "expected.csv").read_bytes()
    with (tmp_path / "expected.csv").open(newline="", encoding="utf-8") as file:
        statuses = Counter(row["status"] for row in csv.DictReader(file))
    assert json.loads(response.headers["x-titlecat-counts"]) == statuses
    assert set(statuses) == {"ok", "empty", "not_text", "too_long"}


def test_an_upload_keeps_the_title_and_the_columns_titlecat_predict_keeps(server, nlp, tmp_path):
    """The title by default and `keep_columns` (NAME=NEW_NAME too), as `titlecat predict` writes them."""
    source = tmp_path / "crm.csv"
    with source.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["email", "title", "status"])
        writer.writerows([f"p{i}@x.org", title, "Kunde"] for i, title in enumerate(MIXED[:5]))
    kept = ["email", "status=crm_status"]
    for form, options, header in [
        ({"keep_columns": " email, status=crm_status"}, {"keep_columns": kept}, "line,title,email,crm_status,status,"),
        (
            {"keep_columns": "email", "keep_title": "false"},
            {"keep_columns": ["email"], "keep_title": False},
            "line,email,status,",
        ),
    ]:
        data = {"column": "title", **form}
        response = server.post("/v1/label-file", files={"file": ("crm.csv", source.read_bytes())}, data=data)
        assert response.status_code == 200, response.text
        assert response.text.startswith(header)
        predict_file(
            nlp, source, tmp_path / "expected.csv", PredictOptions.of(column="title", progress=False, **options)
        )
        assert response.content == (tmp_path / "expected.csv").read_bytes()


def test_an_uploaded_jsonl_file_comes_back_as_jsonl_with_every_score(server, tmp_path):
    content = "".join(json.dumps({"text": title}) + "\n" for title in MIXED).encode()
    response = server.post("/v1/label-file", files={"file": ("titles.jsonl", content)}, data={"all_scores": "true"})
    assert response.status_code == 200, response.text
    rows = [json.loads(line) for line in response.text.splitlines()]
    assert [row["status"] for row in rows] == MIXED_STATUSES
    assert "department:Sales" in rows[0] and rows[1]["department:Sales"] is None
    assert "needs_review" not in rows[0]


def test_an_upload_with_review_below_gets_the_needs_review_column(server, tmp_path):
    titles = [example.text for example in curated_examples("seniority", 60, seed=23)] + MIXED
    content = "".join(json.dumps({"text": title}) + "\n" for title in titles).encode()
    response = server.post("/v1/label-file", files={"file": ("titles.jsonl", content)}, data={"review_below": "0.9"})
    assert response.status_code == 200, response.text
    rows = [json.loads(line) for line in response.text.splitlines()]
    for row in rows:
        if row["status"] == "ok":
            assert row["needs_review"] == (min(row["seniority_score"], row["department_score"]) < 0.9), row
        else:
            assert row["needs_review"] is None
    assert {True, False} <= {row["needs_review"] for row in rows}


def test_an_uploaded_excel_file_comes_back_as_titlecat_predict_writes_it(server, nlp, tmp_path):
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.title = "notes"
    sheet = workbook.create_sheet("people")
    sheet.append(["id", "title"])
    for index, example in enumerate(curated_examples("seniority", 40, seed=11)):
        sheet.append([index, example.text])
    sheet.append([99, None])
    source = tmp_path / "people.xlsx"
    workbook.save(source)
    response = server.post(
        "/v1/label-file",
        files={"file": ("people.xlsx", source.read_bytes())},
        data={"column": "title", "id_column": "id", "sheet": "people", "output": "jsonl"},
    )
    assert response.status_code == 200, response.text
    assert 'filename="people.labelled.jsonl"' in response.headers["content-disposition"]
    options = {"column": "title", "id_column": "id", "sheet": "people", "progress": False}
    predict_file(nlp, source, tmp_path / "expected.jsonl", PredictOptions.of(**options))
    assert response.content == (tmp_path / "expected.jsonl").read_bytes()
    assert response.text.count('"status": "ok"') == 40 and '"status": "empty"' in response.text
    # Without `output`, a workbook comes back as a workbook, with the rows `titlecat predict` writes to one.
    data = {"column": "title", "id_column": "id", "sheet": "people"}
    response = server.post("/v1/label-file", files={"file": ("people.xlsx", source.read_bytes())}, data=data)
    assert response.status_code == 200, response.text
    assert 'filename="people.labelled.xlsx"' in response.headers["content-disposition"]
    assert response.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    (tmp_path / "answer.xlsx").write_bytes(response.content)
    predict_file(nlp, source, tmp_path / "expected.xlsx", PredictOptions.of(**options))
    assert sheet_values(tmp_path / "answer.xlsx") == sheet_values(tmp_path / "expected.xlsx")
    assert len(sheet_values(tmp_path / "answer.xlsx")) == 42  # the header and 41 rows


def sheet_values(path: Path) -> list[list]:
    from openpyxl import load_workbook

    return [[cell.value for cell in row] for row in load_workbook(path)["labels"].iter_rows()]


@pytest.mark.parametrize(
    "name, content, data, status, message",
    [
        # A quote never closed costs its line alone (malformed); here that is every row.
        ("bad.csv", b'id,title\n1,"Sales\n', {"column": "title"}, 422, "file: bad.csv: no row was labelled (1 bad"),
        ("bad.csv", b'id,"title\n1,Sales\n', {"column": "title"}, 400, "file: bad.csv: line 1: malformed CSV"),
        ("people.csv", b"id,name\n1,CEO\n", {"column": "title"}, 400, "file: people.csv: line 1: no column 'title'"),
        (
            "titles.doc",
            b"CEO\n",
            {},
            400,
            "file: titles.doc: file name: no format for the suffix '.doc': name one with the form field 'format'",
        ),
        (
            "titles.csv",
            b"text\nCEO\n",
            {"format": "xml"},
            400,
            "file: titles.csv: the form field 'format': unknown format 'xml'",
        ),
        ("titles.csv", b"text\nCEO\n", {"output": "xml"}, 422, "output: expected csv, tsv, jsonl or xlsx"),
        ("titles.jsonl", b'{"title": "CEO"}\n', {"field": "title"}, 422, "field: unknown form field (expected all_"),
        ("titles.csv", b"text\n\n  \n", {}, 422, "file: titles.csv: no row was labelled (2 bad: empty 2)"),
        ("titles.csv", b"text\nCEO\n", {"encoding": "nonsense"}, 422, "encoding: 'nonsense': not an encoding"),
        (
            "titles.csv",
            b"text\nCEO\nCFO\n",
            {"format": "jsonl"},
            422,
            "file: titles.csv: no row was labelled (3 bad: malformed 3); malformed 3 (first on line 1): lines that "
            "are not a JSON object (a file that is not JSONL: the form field 'format' names its format)",
        ),
        ("fake.xlsx", b"id,title\n", {}, 400, "file: fake.xlsx: not an Excel .xlsx workbook"),
        ("titles.csv", b"text\nCEO\n", {"all_scores": "maybe"}, 422, "all_scores:"),
        (
            "people.csv",
            b"id,title\n1,CEO\n",
            {"column": "title", "keep_columns": "title"},
            422,
            "keep_columns: ['title'] would write a column twice: these names are output columns already; keep a column "
            "under another name with NAME=NEW_NAME, e.g. the form field 'keep_columns' 'status=crm_status' (or leave "
            "the title out: the form field 'keep_title')",
        ),
        (
            "people.csv",
            b"id,title\n1,CEO\n",
            {"column": "title", "keep_columns": "email"},
            400,
            "file: people.csv: line 1: no column 'email'",
        ),
        ("titles.csv", b"text\nCEO\n", {"keep_title": "maybe"}, 422, "keep_title:"),
        ("titles.csv", b"text\nCEO\n", {"review_below": "2"}, 422, "review_below:"),
    ],
)
def test_a_bad_upload_gets_a_4xx_naming_the_upload_and_its_line(server, name, content, data, status, message):
    response = server.post("/v1/label-file", files={"file": (name, content)}, data=data)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(message), response.json()
    assert "titlecat-serve-" not in response.text  # the temporary file's path stays on the server
    assert "--" not in response.json()["detail"]  # form fields, not predict's command-line options
    assert server.alive()


def test_an_upload_without_a_file_gets_422(server):
    response = server.post("/v1/label-file", data={"column": "title"})
    assert response.status_code == 422 and response.json()["detail"].startswith("file:")


def test_a_one_task_pipeline_answers_its_task_with_two_workers(pipelines, tmp_path, nlp):
    """Also: --review-below is every worker's default, and a request's own threshold overrides it."""
    model = pipelines / "seniority" / "model-best"
    running = Server(model, tmp_path / "serve.log", "--workers", "2", "--review-below", "1")
    try:
        titles = ["Geschäftsführer", "Praktikant Marketing", ""]
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: running.label({"titles": titles}), range(16)))
        seniority = load_pipeline(pipelines / "seniority" / "model-best")
        expected = expected_rows(seniority, titles)
        for response in responses:
            assert response.status_code == 200
            # Every score is below 1: the server's threshold flags each answered title.
            results = response.json()["results"]
            assert [row.pop("needs_review") for row in results] == [True, True, None]
            assert [without_nulls(row) for row in results] == expected
        assert set(response.json()["results"][0]) == {"status", "seniority", "seniority_score", "needs_review"}
        overridden = running.label({"titles": titles, "review_below": 0}).json()["results"]
        assert [row["needs_review"] for row in overridden] == [False, False, None]
        metadata = httpx.get(f"{running.url}/v1/metadata").json()
        assert list(metadata["tasks"]) == ["seniority"] and metadata["review_below"] == 1.0
    finally:
        running.stop()


@pytest.mark.parametrize("broken", ["model", "metrics"])
def test_serve_with_a_missing_model_or_a_bad_metrics_file_stops_naming_it(pipelines, tmp_path, broken):
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"task": "seniority", "ood": 0.7}')
    model = tmp_path / "nothing" if broken == "model" else pipelines / "combined"
    command = [sys.executable, "-m", "titlecat", "serve", "--model", str(model), "--port", str(free_port())]
    if broken == "metrics":
        command += ["--metrics", str(metrics)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    if broken == "model":
        assert f"--model {model}: no such folder or installed pipeline package" in result.stderr
    else:
        assert f"--metrics {metrics}: expected evaluate's object" in result.stderr


def test_serve_on_a_port_in_use_says_so_in_one_line_before_loading_the_pipeline(pipelines):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "titlecat",
            "serve",
            "--model",
            str(pipelines / "combined"),
            "--port",
            str(port),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"✘ --port {port}: cannot listen on 127.0.0.1:{port} (Address already in use); another process listens "
        "there: stop it, or choose another --port"
    ]
    assert not result.stdout  # uvicorn never started: nothing was loaded


def test_memory_stays_flat_over_distinct_titles_once_warm(pipelines):
    """After WARM_TITLES, batches run inside nlp.memory_zone(): new titles leave no strings in the vocab."""

    async def label(labeller: Labeller, titles: list[str]) -> None:
        for start in range(0, len(titles), 500):
            results = await asyncio.gather(
                *(labeller.label(titles[index : index + 100]) for index in range(start, start + 500, 100))
            )
            assert all(row["status"] == "ok" for rows in results for row in rows)

    async def run() -> tuple[int, int]:
        labeller = Labeller(load_pipeline(pipelines / "combined"))
        await labeller.start()
        try:
            await label(labeller, [f"Sales Manager {index} Region{index}" for index in range(WARM_TITLES)])
            warm = len(labeller.nlp.vocab.strings)
            await label(labeller, [f"Projektleiter {index} Werk{index}x" for index in range(3000)])
            return warm, len(labeller.nlp.vocab.strings)
        finally:
            await labeller.stop()

    warm, after = asyncio.run(run())
    assert after == warm


def test_upload_after_upload_leaves_nothing_in_the_vocab(pipelines):
    """In-process (httpx's ASGI transport): the strings of the files' pipeline stay as the first upload left them."""
    from titlecat.serve import create_app

    app = create_app(pipelines / "combined")

    async def upload_three() -> list[int]:
        sizes = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://titlecat") as client:
            for upload in range(3):
                content = "".join(f"Vertriebsleiter {upload}x{index} Zone{index}\n" for index in range(2000))
                response = await client.post("/v1/label-file", files={"file": ("titles.txt", content.encode())})
                assert response.status_code == 200 and len(response.text.splitlines()) == 2001
                sizes.append(len(app.state.files["nlp"].vocab.strings))
        return sizes

    sizes = asyncio.run(upload_three())
    assert sizes[1] == sizes[2] == sizes[0]


# --api-key-env: the key lives in the server's environment only; `model` is conftest's random-weights pipeline.
KEY_VARIABLE = "TITLECAT_TEST_API_KEY"
KEY = f"tc-{secrets.token_hex(16)}"  # with a '-': no variable's name, so passed as one it is refused unrepeated
WRONG_AUTHORIZATIONS = [
    {},
    {"Authorization": "Bearer not-the-key"},
    {"Authorization": f"Bearer {KEY}x"},
    {"Authorization": f"Bearer {KEY[:-1]}"},
    {"Authorization": KEY},
    {"Authorization": f"Basic {KEY}"},
]
# The page's API calls and the API's documentation: (method, path, request options)
KEYED_CALLS = [
    ("GET", "/v1/metadata", {}),
    ("POST", "/v1/label", {"json": {"titles": ["Leiterin Vertrieb DACH", ""]}}),
    ("POST", "/v1/label-file", {"files": {"file": ("titles.csv", b"text\nCTO\nHead of HR\n")}}),
    ("GET", "/openapi.json", {}),
    ("GET", "/docs", {}),
]


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["detail"].startswith("authorization: "), response.json()  # the service's error shape
    assert KEY not in response.text


def process_argvs() -> list[str]:
    """The command line of every process this user can read."""
    argvs = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argvs.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile
            pass
    return argvs


def test_with_an_api_key_every_route_but_health_and_the_page_needs_the_bearer_key(model, tmp_path):
    """Two workers: the key's variable name reaches them through the environment, the key through no argv or log."""
    env = {**os.environ, KEY_VARIABLE: KEY}
    args = ("--workers", "2", "--access-log", "--api-key-env", KEY_VARIABLE)
    running = Server(model, tmp_path / "serve.log", *args, env=env)
    try:
        assert httpx.get(f"{running.url}/health").status_code == 200
        page = httpx.get(f"{running.url}/")
        assert page.status_code == 200 and "sessionStorage" in page.text and "Authorization" in page.text
        with httpx.Client(base_url=running.url, timeout=30) as client:
            for method, path, options in KEYED_CALLS:
                for headers in WRONG_AUTHORIZATIONS:
                    assert_refused(client.request(method, path, headers=headers, **options))
                for scheme in ("Bearer", "bearer"):
                    answer = client.request(method, path, headers={"Authorization": f"{scheme} {KEY}"}, **options)
                    assert answer.status_code == 200, (path, answer.text)
            keyed = {"Authorization": f"Bearer {KEY}"}
            results = client.post("/v1/label", json={"titles": ["CTO", ""]}, headers=keyed).json()["results"]
            assert [row["status"] for row in results] == ["ok", "empty"]
            assert client.get("/v1/metadata", headers=keyed).json()["limits"]["max_titles"] == MAX_TITLES
            if Path("/proc/self/cmdline").exists():
                argvs = process_argvs()
                assert any(KEY_VARIABLE in argv for argv in argvs)  # the server's own command line is read
                assert not [argv for argv in argvs if KEY in argv]
    finally:
        running.stop()
    log = running.log.read_text()
    assert '"POST /v1/label HTTP/1.1" 401' in log and '"POST /v1/label HTTP/1.1" 200' in log  # the access log
    assert KEY not in log and "⚠" not in log


def test_the_key_is_checked_in_constant_time_before_the_body_is_read(model, monkeypatch):
    """In-process (httpx's ASGI transport): hmac.compare_digest decides, and a request without the key gets 401
    however large its body (not 413, and nothing parsed); /health and the page need no key."""
    from titlecat import serve

    compared = []

    def compare_digest(given, expected):
        compared.append((given, expected))
        return hmac_compare_digest(given, expected)

    hmac_compare_digest = serve.hmac.compare_digest
    monkeypatch.setattr(serve.hmac, "compare_digest", compare_digest)
    app = serve.create_app(model, api_key=KEY)

    async def requests() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=app)  # runs no lifespan: entered here, it starts the labeller
        client = httpx.AsyncClient(transport=transport, base_url="http://titlecat")
        async with app.router.lifespan_context(app), client:
            keyed = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
            too_large = b" " * (MAX_BODY_BYTES + 1)
            return {
                "health": await client.get("/health"),
                "page": await client.get("/"),
                "wrong": await client.post(
                    "/v1/label", json={"titles": ["CTO"]}, headers={"Authorization": "Bearer x"}
                ),
                "large without": await client.post("/v1/label", content=too_large),
                "large with": await client.post("/v1/label", content=too_large, headers=keyed),
                "right": await client.post("/v1/label", content=b'{"titles": ["CTO"]}', headers=keyed),
            }

    answers = asyncio.run(requests())
    assert answers["health"].status_code == 200 and answers["page"].status_code == 200
    assert_refused(answers["wrong"])
    assert answers["wrong"].json() == {"detail": "authorization: wrong key"}
    assert_refused(answers["large without"])
    assert answers["large without"].json()["detail"].startswith("authorization: missing")
    assert answers["large with"].status_code == 413
    assert answers["right"].status_code == 200 and answers["right"].json()["results"][0]["status"] == "ok"
    assert compared[0] == (b"x", KEY.encode()) and (KEY.encode(), KEY.encode()) in compared
    assert app.state.labeller.stats["requests"] == 1  # only the keyed request reached the pipeline
    with pytest.raises(ValueError, match="api_key: empty"):
        serve.create_app(model, api_key="")


def serve_in_process(monkeypatch, *args: str, env: dict[str, str | None]):
    """`titlecat serve ARGS` through the CLI in this process, with `env` (None: unset), uvicorn.run and create_app
    replaced by recorders: (click's Result, uvicorn.run's calls, create_app's calls)."""
    import uvicorn
    from typer.testing import CliRunner

    from titlecat import serve
    from titlecat.cli import app

    runs, apps = [], []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: runs.append((a, kw)))
    monkeypatch.setattr(serve, "create_app", lambda *a, **kw: apps.append((a, kw)) or "app")
    for name in (serve.MODEL_ENV, serve.METRICS_ENV, serve.REVIEW_ENV, API_KEY_ENV):
        monkeypatch.delenv(name, raising=False)  # restored after the test: serve sets them for --workers
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["serve", *args])
    return result, runs, apps


@pytest.mark.parametrize(
    "host, keyed, warned",
    [("0.0.0.0", False, True), ("127.0.0.1", False, False), ("localhost", False, False), ("0.0.0.0", True, False)],
)
def test_listening_beyond_loopback_without_a_key_warns_once_on_stderr(model, monkeypatch, host, keyed, warned):
    args = ["--model", str(model), "--host", host, "--port", str(free_port())]
    args += ["--api-key-env", KEY_VARIABLE] if keyed else []
    result, runs, apps = serve_in_process(monkeypatch, *args, env={KEY_VARIABLE: KEY})
    assert result.exit_code == 0, result.output
    assert len(runs) == 1 and apps[0][0][3] == (KEY if keyed else None)  # create_app's api_key
    warnings = [line for line in result.stderr.splitlines() if line.startswith("⚠")]
    if warned:
        assert len(warnings) == 1 and f"--host {host}: listening beyond this machine with no key" in warnings[0]
        assert "--api-key-env NAME" in warnings[0]
    else:
        assert warnings == []
    assert KEY not in result.output + result.stderr


def test_workers_get_the_name_of_the_key_variable_never_the_key(model, monkeypatch):
    args = ["--model", str(model), "--port", str(free_port()), "--workers", "2", "--api-key-env", KEY_VARIABLE]
    result, runs, apps = serve_in_process(monkeypatch, *args, env={KEY_VARIABLE: KEY})
    assert result.exit_code == 0, result.output
    ((run_args, run_options),) = runs
    assert run_args == ("titlecat.serve:app_from_env",) and run_options["workers"] == 2 and run_options["factory"]
    assert KEY not in repr(runs) and apps == []  # the workers build the app
    assert os.environ[API_KEY_ENV] == KEY_VARIABLE
    assert [name for name, value in os.environ.items() if KEY in value] == [KEY_VARIABLE]
    from titlecat import serve

    monkeypatch.setenv(serve.MODEL_ENV, str(model))
    assert serve.app_from_env() == "app" and apps[0][0][3] == KEY  # what a worker gives create_app


@pytest.mark.parametrize(
    "name, value, message",
    [
        (KEY_VARIABLE, None, f"--api-key-env {KEY_VARIABLE}: the environment variable {KEY_VARIABLE} is unset"),
        (KEY_VARIABLE, "", f"--api-key-env {KEY_VARIABLE}: the environment variable {KEY_VARIABLE} is empty"),
        (KEY_VARIABLE, "two words", f"--api-key-env {KEY_VARIABLE}: the key holds a space"),
        (KEY, None, "--api-key-env: expected the name of the environment variable that holds the key"),
    ],
    ids=["unset", "empty", "not a header's", "the key itself"],
)
def test_serve_with_no_key_in_the_variable_stops_naming_it(model, monkeypatch, name, value, message):
    """Not an open server: nothing starts; the message names the variable, never a key."""
    args = ["--model", str(model), "--host", "0.0.0.0", "--port", str(free_port()), "--api-key-env", name]
    result, runs, apps = serve_in_process(monkeypatch, *args, env={KEY_VARIABLE: value})
    assert result.exit_code == 1 and runs == [] and apps == []
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"✘ {message}"), result.stderr
    assert KEY not in result.output + result.stderr and "two words" not in result.stderr
