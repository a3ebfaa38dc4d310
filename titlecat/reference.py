"""The reference study's numbers, and the gemini-2.0-flash zero-shot row scored by our metrics."""

from __future__ import annotations

import csv
from pathlib import Path

from sklearn.metrics import accuracy_score, f1_score

from .labels import Task, seniority_from_ordinal
from .metrics import ordinal_mae
from .readers import DataError, Example

NO_ANSWER = "(no answer)"

# Reference rows not measured like the others, said beside them wherever they are shown.
FOOTING = {
    "Rule-based": "scored on the 380 CVs with exactly one ACTIVE position, not on all 623",
    "Prompt-engineered": "gemini-2.0-flash; its macro-F1 over 622 rows (one answer is missing)",
}


def reference_label(row: dict) -> str:
    """The row's model name as shown in tables, with its footing where it differs."""
    return f"reference: {row['model']}" + (f" ({row['note']})" if row["note"] else "")


def read_reference_results(path: Path | str) -> list[dict]:
    """all_results.csv: model,target,accuracy,macro_f1,mae (mae often empty; rows may lack trailing fields)."""
    path = Path(path)
    rows = []
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = [h.strip() for h in next(reader)]
        for fields in reader:
            if not fields:
                continue
            record = dict(zip(header, (f.strip() for f in fields), strict=False))
            try:
                rows.append(
                    {
                        "model": record["model"],
                        "target": record["target"],
                        "accuracy": float(record["accuracy"]),
                        "macro_f1": float(record["macro_f1"]),
                        "mae": float(record["mae"]) if record.get("mae") else None,
                        "note": FOOTING.get(record["model"], ""),
                    }
                )
            except (KeyError, ValueError) as error:
                raise DataError(path, f"line {reader.line_num}", f"cannot read {fields!r}: {error}") from None
    return rows


def read_zero_shot_answers(path: Path | str, task: Task) -> dict[int, str]:
    """gemini_results.csv: OOD row (the ACTIVE positions in file order) -> the task's label as answered."""
    path = Path(path)
    answers: dict[int, str] = {}
    with path.open(newline="", encoding="utf-8") as file:
        for record in csv.DictReader(file):
            value = record[task.name].strip()
            answers[int(record["row_id"])] = seniority_from_ordinal(value) if task.ordinal else value
    return answers


def score_zero_shot(path: Path | str, ood: list[Example], task: Task) -> dict:
    """Score recorded zero-shot answers (gemini_results.csv) against the OOD gold labels.

    `row_id` indexes the ACTIVE positions in file order. A position without an
    answer counts as wrong in accuracy and as a missed gold label in macro-F1
    (over all 623); MAE, which needs an answer, is over the answered rows.
    """
    answers = read_zero_shot_answers(path, task)
    gold = [example.label for example in ood]
    predicted = [answers.get(index, NO_ANSWER) for index in range(len(ood))]
    answered = [i for i, p in enumerate(predicted) if p != NO_ANSWER]
    labels = sorted((set(gold) | set(predicted)) - {NO_ANSWER})
    result = {
        "n": len(gold),
        "answered": len(answered),
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        "accuracy_answered_only": float(accuracy_score([gold[i] for i in answered], [predicted[i] for i in answered])),
    }
    if task.ordinal:
        result["mae"] = ordinal_mae([gold[i] for i in answered], [predicted[i] for i in answered])
    return result
