"""The two tasks, their label sets and the ordinal seniority scale.

Every step imports its labels from here, so a label added or renamed in one
place reaches corpora, training, evaluation and packaging alike.
"""

from __future__ import annotations

import re
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

    def training_label(self, text: str, label: str) -> str:
        """A curated or pseudo label in the convention of the hand-labelled CVs (docs/labels.md)."""
        if self.name == "seniority":
            return harmonise_seniority(text, label)
        return harmonise_department(text, label)


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


# The annotators' seniority convention, as the hand-labelled CVs show it (docs/labels.md): a title is
# Senior or Junior only when it says so; a plain "Sales Manager", "Consultant" or "Mechaniker" is
# Professional. The curated CSV calls thousands of such titles Senior and the LLM calls many Junior,
# so both sources are mapped onto the annotators' convention before training (chosen on cv-dev).
SENIOR_MARKER = re.compile(r"\b(senior|sr|snr|principal|expert|experienced|sénior|confirmé)\b", re.IGNORECASE)
JUNIOR_MARKER = re.compile(
    r"\bjunior|\bjr\b|intern\b|internship|praktik|trainee|azubi|auszubild|ausbildung|apprenti|lehrling|student"
    r"|studium|studien|dual|stagiair|\bstage|becari|volontär|graduate|associate|assistant|assistent|aide|helper"
    r"|helfer|aushilfe|minijob|entry",
    re.IGNORECASE,
)


def harmonise_seniority(text: str, label: str) -> str:
    """A training label in the annotators' convention: Senior/Junior without a marker in the title → Professional."""
    if label == "Senior" and not SENIOR_MARKER.search(text):
        return "Professional"
    if label == "Junior" and not JUNIOR_MARKER.search(text):
        return "Professional"
    return label


# The annotators' department convention for general management (docs/labels.md): a title that says
# only that someone runs a business ("Owner", "Geschäftsführer", "CEO & Founder") names no function,
# and the hand-labelled CVs file every such title under Other; the LLM files a fifth of them under
# Business Development. A title with anything more ("Geschäftsführer Vertrieb") keeps its label.
_GENERAL_MANAGEMENT_WORD = (
    r"(co-?\s?owner|owner|(unternehmens)?inhaber(in)?|co-?founder|founder|(mit)?gründer(in)?"
    r"|ceo|chief executive( officer)?|geschäftsführer(in)?|geschäftsführende[rs]?|gesellschafter(in)?"
    r"|geschäftsführung|managing director|general manager|vice president|president|vorstand"
    r"|vorstandsvorsitzende[r]?|selbst(st)?ändig(e[r]?)?|unternehmer(in)?|entrepreneur|gérant(e)?|président(e)?"
    r"|directeur général|directrice générale|fondat(eur|rice)|propriétaire|eigenaar|oprichter|director general"
    r"|fundador(a)?|propietario|dueño)"
)
_SEPARATOR = r"[\s,/&|+.\-–]+"
_CONNECTOR = r"(and|und|et|y|en|senior|sr|deputy|stellv|stellvertretende[r]?)"
_TITLE_WORD = rf"({_GENERAL_MANAGEMENT_WORD}|{_CONNECTOR})\b"
GENERAL_MANAGEMENT_ONLY = re.compile(
    rf"^(?=.*\b{_GENERAL_MANAGEMENT_WORD}\b)\W*{_TITLE_WORD}({_SEPARATOR}{_TITLE_WORD})*\W*$", re.IGNORECASE
)


def harmonise_department(text: str, label: str) -> str:
    """A training label in the annotators' convention: a title of general management only → Other."""
    return "Other" if GENERAL_MANAGEMENT_ONLY.match(text) else label
