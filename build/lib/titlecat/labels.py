"""The two tasks, their label sets and the ordinal seniority scale.

Every step imports its labels from here, so a label added or renamed in one
place reaches corpora, training, evaluation and packaging alike.
"""

from __future__ import annotations

from dataclasses import dataclass

SENIORITY_LABELS: tuple[str, ...] = (
    "Junior",
    "Professional",
    "Senior",
    "Lead",
    "Management",
    "Director",
)
# Ordinal scale of the study: Junior=1 ... Director=6.
SENIORITY_ORDINAL: dict[str, int] = {label: i + 1 for i, label in enumerate(SENIORITY_LABELS)}

DEPARTMENT_LABELS: tuple[str, ...] = (
    "Administrative",
    "Business Development",
    "Consulting",
    "Customer Support",
    "Human Resources",
    "Information Technology",
    "Marketing",
    "Other",
    "Project Management",
    "Purchasing",
    "Sales",
)


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    curated_asset: str  # the curated title->label CSV of this task

    @property
    def ordinal(self) -> bool:
        return self.name == "seniority"


TASKS: dict[str, Task] = {
    "seniority": Task("seniority", SENIORITY_LABELS, "seniority-v2.csv"),
    "department": Task("department", DEPARTMENT_LABELS, "department-v2.csv"),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}: expected one of {sorted(TASKS)}") from None


def seniority_from_ordinal(value: float | int | str) -> str:
    """Map 1..6 (also '5.0' as the recorded LLM answers write it) to a label."""
    number = float(value)
    if not number.is_integer() or not 1 <= number <= len(SENIORITY_LABELS):
        raise ValueError(f"seniority {value!r} is not an integer in 1..{len(SENIORITY_LABELS)}")
    return SENIORITY_LABELS[int(number) - 1]


def one_hot(label: str, labels: tuple[str, ...]) -> dict[str, float]:
    """doc.cats for one gold label: every label of the task present, one of them 1.0."""
    if label not in labels:
        raise ValueError(f"label {label!r} is not one of {list(labels)}")
    return {name: float(name == label) for name in labels}
