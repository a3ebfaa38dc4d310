"""Run the llm pipeline over CV positions: pseudo-label records, rejects and counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from spacy.language import Language
from spacy.util import load_config, load_model_from_config
from tqdm import tqdm

from ..readers import Position
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


def pseudo_label(
    nlp: Language, positions: Iterable[Position], *, batch_size: int = 16, progress: bool = True
) -> tuple[list[dict], list[dict], Counter]:
    """(pseudo-label records, rejects, counts) for positions, in input order; every position lands in exactly one."""
    positions = list(positions)
    records: list[dict] = []
    rejects: list[dict] = []
    counts: Counter = Counter({key: 0 for key in COUNT_KEYS})

    def docs():
        for position in positions:
            doc = nlp.make_doc(position.text)
            doc.user_data[ROW_ID_KEY] = position.row
            yield doc

    bar = tqdm(total=len(positions), unit="title", disable=not progress, mininterval=0.5, dynamic_ncols=True)
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
            bar.set_postfix({key: counts[key] for key in COUNT_KEYS}, refresh=False)
            bar.update(1)
    finally:
        bar.close()
        store = getattr(llm_model(nlp), "store", None)
        if store is not None:
            store.close()
    return records, rejects, counts
