"""benchmarks/soak_serve.py: a short soak of `titlecat serve` on conftest's random-weights pipeline, with a key."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOAK = REPO / "benchmarks" / "soak_serve.py"
# What each kind must get: good requests 200, bad JSON 400, wrong types 422, too much 413, no key 401; a bad
# upload 400 (an unreadable file) or 422 (a bad form value), as tests/test_serve.py expects each.
EXPECTED = {
    "single": {200},
    "batch": {200},
    "bad_json": {400},
    "wrong_type": {422},
    "too_many_titles": {413},
    "oversized_length": {413},
    "oversized_chunked": {413},
    "oversized_upload": {413},
    "long_titles": {200},
    "slow_label": {200},
    "slow_upload": {200},
    "file_upload": {200},
    "bad_upload": {400, 422},
    "without_key": {401},
}


def test_a_short_soak_gets_every_kind_its_answer_and_no_5xx(model, tmp_path):
    """25 s, 4 clients: every request kind is sent (the deck deals each within 100 requests) and answered as
    expected, none unanswered, oversized bodies refused before they are sent whole, the server's memory sampled."""
    out = tmp_path / "soak.md"
    env = {**os.environ, "TITLECAT_SOAK_KEY": secrets.token_hex(16), "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(SOAK), "--model", str(model), "--seconds", "25", "--clients", "4", "--out", str(out)]
    result = subprocess.run(
        [*command, "--api-key-env", "TITLECAT_SOAK_KEY"], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["kinds"]) == set(EXPECTED)
    for kind, summary in report["kinds"].items():
        assert summary["requests"] > 0, kind
        assert set(map(int, summary["outcomes"])) <= EXPECTED[kind], (kind, summary)  # "closed" would fail int()
        assert summary["unanswered"] == summary["unexpected"] == summary["server_errors"] == 0, (kind, summary)
        if "offered" in summary:
            assert summary["read_whole"] == 0 and summary["sent_max"] < summary["offered"], (kind, summary)
    assert report["requests"] == sum(summary["requests"] for summary in report["kinds"].values()) > 100
    assert report["titles_labelled"] > report["kinds"]["single"]["requests"]  # and batches, files
    assert all(report["checks"][name] for name in ("no_5xx", "all_answered", "server_ok")), report["checks"]
    assert report["server"]["stopped_on_sigterm"] and report["server"]["temp_left"] == 0
    samples = report["rss"]["samples"]
    assert len(samples) >= 20 and all(rss > 50 * 2**20 for _, rss in samples)  # a pipeline's process, every 0.5 s
    text = out.read_text()
    assert "| single | " in text and "| without_key | " in text and "target: p99 of single-title requests" in text
