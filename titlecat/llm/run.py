"""Run the llm pipeline over CV positions: pseudo-label records, rejects and counts."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from spacy.language import Language
from spacy.util import load_config, load_model_from_config
from tqdm import tqdm

from ..readers import Position
from .models import LLMResponse, TitleModel
from .task import RESULT_KEY, ROW_ID_KEY

# Counter keys, in the order the progress bar and the report show them.
COUNT_KEYS = ("labelled", "from_cache", "requests", "invalid", "failed", "no_recorded_answer")
REJECT_REASONS = {"invalid": "invalid", "failed": "failed", "missing": "no_recorded_answer"}


def load_pipeline(config_path: Path | str, overrides: dict | None = None) -> Language:
    """An nlp with the `llm` component from a configs/llm_*.cfg file (titlecat.llm must be imported: it is here)."""
    config = load_config(Path(config_path), overrides=overrides or {}, interpolate=False)
    return load_model_from_config(config, auto_fill=True)


def llm_model(nlp: Language, name: str = "llm"):
    return nlp.get_pipe(name)._model


class Progress:
    """The progress bar. A titlecat model moves it from its workers as each answer arrives, and every retry and
    failure shows at once in the postfix (count and last cause), not only when spacy-llm hands back the batch."""

    def __init__(self, total: int, enabled: bool):
        # disable=None: no bar where stderr is no terminal (a log file or pipe would get its carriage returns).
        disable = None if enabled else True
        self.bar = tqdm(total=total, unit="title", disable=disable, mininterval=0.5, dynamic_ncols=True)
        self.counts: Counter = Counter({key: 0 for key in COUNT_KEYS})
        self.retries = 0
        self.failed = 0
        self.last_cause = ""
        self._lock = threading.Lock()
        self._shown = 0.0

    def answered(self, response: LLMResponse, prompts: int) -> None:
        with self._lock:
            if response.status == "failed":
                self.failed += prompts
                self.last_cause = response.error or ""
            self.bar.update(prompts)
            self._show(refresh=response.status == "failed")

    def retrying(self, cause: str) -> None:
        with self._lock:
            self.retries += 1
            self.last_cause = cause
            self._show(refresh=True)

    def doc_done(self, moved_by_model: bool) -> None:
        with self._lock:
            if not moved_by_model:
                self.bar.update(1)
            self._show(refresh=False)

    def _show(self, refresh: bool) -> None:
        postfix = {key: self.counts[key] for key in COUNT_KEYS}
        postfix["failed"] = max(self.failed, self.counts["failed"])
        postfix["retries"] = self.retries
        if self.last_cause:
            postfix["last"] = self.last_cause[-60:]
        self.bar.set_postfix(postfix, refresh=False)
        if refresh and time.monotonic() - self._shown >= 0.2:  # at once, but not a line per retry of a storm
            self._shown = time.monotonic()
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def pseudo_label(
    nlp: Language, positions: Iterable[Position], *, batch_size: int | None = None, progress: bool = True
) -> tuple[list[dict], list[dict], Counter]:
    """(pseudo-label records, rejects, counts) for positions, in input order; every position lands in exactly one.

    `batch_size` (docs per spacy-llm batch) defaults to 16 per request in flight: the workers of a batch stay busy.
    """
    positions = list(positions)
    records: list[dict] = []
    rejects: list[dict] = []
    model = llm_model(nlp)
    ours = isinstance(model, TitleModel)
    batch_size = batch_size or 16 * (model.concurrency if ours else 1)
    bar = Progress(len(positions), progress)
    counts = bar.counts
    if ours:
        model.listener = bar

    def docs():
        for position in positions:
            doc = nlp.make_doc(position.text)
            doc.user_data[ROW_ID_KEY] = position.row
            yield doc

    try:
        for position, doc in zip(positions, nlp.pipe(docs(), batch_size=batch_size), strict=True):
            result = doc.user_data[RESULT_KEY]
            counts["requests"] += result["requests"]
            counts["from_cache"] += bool(result["from_cache"])
            if result["status"] == "labelled":
                counts["labelled"] += 1
                records.append(
                    {
                        "row_id": position.row,
                        "text": position.text,
                        "department": result["department"],
                        "seniority": result["seniority"],
                        "backend": result["backend"],
                        "raw_answer": result["raw_answer"],
                        "from_cache": result["from_cache"],
                    }
                )
            else:
                reason = REJECT_REASONS[result["status"]]
                counts[reason] += 1
                rejects.append(
                    {
                        "row_id": position.row,
                        "text": position.text,
                        "reason": reason,
                        "error": result["error"],
                        "raw_answer": result["raw_answer"],
                        "attempts": result["attempts"],
                        "backend": result["backend"],
                    }
                )
            bar.doc_done(moved_by_model=ours)
    finally:
        bar.close()
        if ours:
            model.listener = None
            model.close()
    return records, rejects, counts
