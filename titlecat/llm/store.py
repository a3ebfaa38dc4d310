"""Append-only answer store: every LLM answer is on disk as soon as it arrives.

spaCy-llm's own BatchCache is not used: it writes only every `batch_size`
docs (a crash loses the rest), keys docs by an order-insensitive sum of token
hashes, and stores processed docs rather than the raw answers we must report.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, one run per store is up to the user
    fcntl = None

from ..readers import DataError


def answer_key(identity: dict) -> str:
    """A stable key for 'this prompt to this backend' (never includes secrets)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class StoreBusy(RuntimeError):
    """Another process is writing to the same answer store."""


class AnswerStore:
    """JSONL, one line per answer: {"key", "raw_answer", ...metadata}.

    Exactly once: one writer. Threads of this process write under a lock, one
    whole line each, flushed at once; another process writing to the same file
    is refused (an advisory lock held while the file is open for appending).
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._answers: dict[str, list[str]] = {}
        self._file = None
        self._lock = threading.Lock()
        self._loaded = 0  # bytes read so far
        self._lines = 0
        self._closed = False
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            # A run killed in the middle of a write leaves a partial last line: drop it so appends stay valid JSONL.
            warnings.warn(f"{self.path}: dropping a partial last line (interrupted write)", stacklevel=3)
            os.truncate(self.path, complete)
        new, self._loaded = data[self._loaded : complete], complete
        for line_number, line in enumerate(new.decode("utf-8").splitlines(), start=self._lines + 1):
            self._lines = line_number
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
        with self._lock:
            return list(self._answers.get(key, ()))

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                raise StoreBusy(f"{self.path}: another run is writing to this answer store; wait for it") from None
        self._file = file
        self._load()  # what an earlier writer appended since this store was read

    def add(self, key: str, raw_answer: str, **metadata) -> None:
        line = json.dumps({"key": key, "raw_answer": raw_answer, **metadata}, ensure_ascii=False) + "\n"
        with self._lock:
            if self._closed:
                return  # an answer from a request still in flight when the run stopped: the rerun asks again
            if self._file is None:
                self._open()
            self._file.write(line)
            # Flushed per answer: a killed process loses nothing already answered (fsync would only add OS-crash
            # safety). One line per write, so a kill leaves at most one partial last line, which _load drops.
            self._file.flush()
            self._loaded += len(line.encode("utf-8"))
            self._lines += 1
            self._answers.setdefault(key, []).append(raw_answer)

    def reopen(self) -> None:
        with self._lock:
            self._closed = False

    def close(self) -> None:
        """Release the file (and its lock); answers added after this are dropped until `reopen`."""
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()  # releases the lock
                self._file = None
