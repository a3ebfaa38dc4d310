"""Placeholder producer: pseudo-labels from the recorded gemini-2.0-flash answers."""

from pathlib import Path

import typer

from titlecat.labels import DEPARTMENT_LABELS, seniority_from_ordinal
from titlecat.readers import read_cv_positions, read_recorded_answers, write_jsonl


def main(unlabelled: Path, output: Path, recorded: Path = typer.Option(...)):
    positions, _ = read_cv_positions(unlabelled)
    answers = read_recorded_answers(recorded)
    records = []
    for position in positions:
        answer = answers.get(position.row)
        if answer is None or answer["department"] not in DEPARTMENT_LABELS:
            continue
        records.append({"row_id": position.row, "text": position.text, "department": answer["department"],
                        "seniority": seniority_from_ordinal(answer["seniority"]), "backend": "recorded",
                        "raw_answer": str(answer)})
    write_jsonl(output, records)


if __name__ == "__main__":
    typer.run(main)
