"""Append-only answer store: every LLM answer is on disk as soon as it arrives.

spaCy-llm's own BatchCache is not used: it writes only every `batch_size`
docs (a crash loses the rest), keys docs by an order-insensitive sum of token
hashes, and stores processed docs rather than the raw answers we must report.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from ..readers import DataError


def answer_key(identity: dict) -> str:
    """A stable key for 'this prompt to this backend' (never includes secrets)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class AnswerStore:
    """JSONL, one line per answer: {"key", "raw_answer", ...metadata}."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._answers: dict[str, list[str]] = {}
        self._file = None
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            # A run killed in the middle of a write leaves a partial last line: drop it so appends stay valid JSONL.
            warnings.warn(f"{self.path}: dropping a partial last line (interrupted write)", stacklevel=2)
            os.truncate(self.path, complete)
            data = data[:complete]
        for line_number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self._answers.setdefault(record["key"], []).append(record["raw_answer"])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise DataError(self.path, f"line {line_number}", f"not an answer-store record: {error}") from None

    def __len__(self) -> int:
        return sum(len(answers) for answers in self._answers.values())

    def get(self, key: str) -> list[str]:
        return list(self._answers.get(key, ()))

    def add(self, key: str, raw_answer: str, **metadata) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        record = {"key": key, "raw_answer": raw_answer, **metadata}
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        # Flushed per answer: a killed process loses nothing already answered (fsync would only add OS-crash safety).
        self._file.flush()
        self._answers.setdefault(key, []).append(raw_answer)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
