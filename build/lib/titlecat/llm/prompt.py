"""The prompt for one job title and the parser/validator of its answer.

The answer must be one JSON object naming exactly one department and one
seniority level of `titlecat.labels`. Anything else is an `InvalidAnswer`:
never mapped to a label by guesswork.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..labels import DEPARTMENT_LABELS, SENIORITY_LABELS, SENIORITY_ORDINAL, seniority_from_ordinal

FALLBACK_DEPARTMENT = "Other"
FALLBACK_SENIORITY = "Professional"

DEPARTMENT_DEFINITIONS: dict[str, str] = {
    "Administrative": "office administration, assistants, secretaries, back office, bookkeeping and accounting clerks",
    "Business Development": "founders, owners and general management growing the business, partnerships, strategy",
    "Consulting": "consultants, advisors and analysts who advise clients or the business",
    "Customer Support": "customer service, help desk, service desk, first/second line support, after-sales service",
    "Human Resources": "recruiting, talent acquisition, personnel administration, payroll, people development",
    "Information Technology": "software, IT systems, infrastructure, data, IT engineering and IT operations",
    "Marketing": "marketing, communication, PR, brand, content, social media, product marketing",
    "Other": "any other function (e.g. production, logistics, finance, legal, research, medicine, teaching, crafts)",
    "Project Management": "project and programme managers, PMO, project leads and project coordination",
    "Purchasing": "procurement, buying, sourcing, supplier management, technical purchasing",
    "Sales": "selling: account managers, sales representatives, key account, business-to-business/consumer sales",
}

SENIORITY_DEFINITIONS: dict[str, str] = {
    "Junior": "interns, trainees, apprentices, working students, assistants at entry level",
    "Professional": "regular employees and specialists without a seniority marker",
    "Senior": "senior or experienced specialists and engineers without leadership of a unit",
    "Lead": "team, group or project leads; leads a team or a project but not a department",
    "Management": "managers heading a department or business, owners, chairs and managing partners",
    "Director": "directors, heads of division, C-level, managing directors, vice presidents, board members",
}

# Few-shot facts given by the project (never taken from the annotated CVs).
DEFAULT_EXAMPLES: tuple[dict[str, str], ...] = (
    {"text": "Analyst", "department": "Consulting", "seniority": "Junior"},
    {"text": "Consultant", "department": "Consulting", "seniority": "Professional"},
    {"text": "Application Engineer", "department": "Information Technology", "seniority": "Senior"},
    {"text": "Architecte SI - Chef de projet Applicatif", "department": "Project Management", "seniority": "Lead"},
    {"text": "Vorsitz", "department": "Other", "seniority": "Management"},
    {"text": "Abteilungsdirektor", "department": "Other", "seniority": "Director"},
    # Department-only facts: shown as department hints, their seniority is not invented.
    {"text": "Adjoint directeur communication", "department": "Marketing"},
    {"text": "Advisor Strategy and Projects", "department": "Project Management"},
    {"text": "Assistent", "department": "Administrative"},
    {"text": "Berater", "department": "Consulting"},
    {"text": "Abteilung HR", "department": "Human Resources"},
    {"text": "3rd Level IT Engineer", "department": "Information Technology"},
    {"text": "Arbeitsvorbereitung / Technischer Einkauf", "department": "Purchasing"},
    {"text": "Sales Manager B2B/B2C", "department": "Sales"},
    {"text": "1st Line Support", "department": "Customer Support"},
)

TITLE_LINE = "Job title: "


def check_examples(examples: list[dict[str, str]]) -> list[dict[str, str]]:
    """Few-shot examples with labels checked against the label sets."""
    checked = []
    for i, example in enumerate(examples):
        text = " ".join(str(example.get("text", "")).split())
        if not text:
            raise ValueError(f"few-shot example {i}: empty 'text'")
        if example.get("department") not in DEPARTMENT_LABELS:
            raise ValueError(f"few-shot example {i} ({text!r}): department {example.get('department')!r} unknown")
        if example.get("seniority") is not None and example["seniority"] not in SENIORITY_LABELS:
            raise ValueError(f"few-shot example {i} ({text!r}): seniority {example['seniority']!r} unknown")
        checked.append({"text": text, **{k: example[k] for k in ("department", "seniority") if example.get(k)}})
    return checked


def instructions(examples: list[dict[str, str]]) -> str:
    """Everything of the prompt except the title: the same for every title."""
    departments = "\n".join(f"- {label}: {DEPARTMENT_DEFINITIONS[label]}" for label in DEPARTMENT_LABELS)
    seniorities = "\n".join(
        f"- {label} ({SENIORITY_ORDINAL[label]}): {SENIORITY_DEFINITIONS[label]}" for label in SENIORITY_LABELS
    )
    full = [e for e in examples if "seniority" in e]
    partial = [e for e in examples if "seniority" not in e]
    lines = [
        "You classify job titles from CVs. Titles can be in any language.",
        "For the job title below, choose exactly one department and exactly one seniority level.",
        "",
        "Departments:",
        departments,
        "",
        "Seniority levels, from lowest (1) to highest (6):",
        seniorities,
        "",
        f'If the title is ambiguous or gives no clue, answer department "{FALLBACK_DEPARTMENT}" '
        f'and seniority "{FALLBACK_SENIORITY}".',
        "Answer with one JSON object and nothing else, using the label names exactly as written above:",
        '{"department": "<department>", "seniority": "<seniority level>"}',
    ]
    if full:
        lines += ["", "Examples:"]
        for e in full:
            answer = json.dumps({"department": e["department"], "seniority": e["seniority"]}, ensure_ascii=False)
            lines += [f"{TITLE_LINE}{json.dumps(e['text'], ensure_ascii=False)}", f"Answer: {answer}"]
    if partial:
        lines += ["", "More examples (department only):"]
        lines += [f"{json.dumps(e['text'], ensure_ascii=False)} -> {e['department']}" for e in partial]
    return "\n".join(lines)


def render_prompt(instructions_text: str, title: str) -> str:
    # The title is JSON-quoted so that quotes or markup inside it cannot end the prompt's structure.
    quoted = json.dumps(title, ensure_ascii=False)
    return f"{instructions_text}\n\nNow the job title to classify.\n{TITLE_LINE}{quoted}\nAnswer:"


def title_of_prompt(prompt: str) -> str:
    """The title of a rendered prompt (its last title line): for servers and tests."""
    line = [line for line in prompt.splitlines() if line.startswith(TITLE_LINE)][-1]
    return json.loads(line[len(TITLE_LINE) :])


class InvalidAnswer(ValueError):
    """An answer that is not one JSON object with one valid label per task."""


@dataclass(frozen=True)
class ParsedAnswer:
    department: str
    seniority: str


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)


def parse_answer(raw: str | None) -> ParsedAnswer:
    """Validate one raw answer; raise InvalidAnswer saying what is wrong.

    Accepted: one JSON object (optionally in a ``` code fence, as chat models
    often write it) with "department" one of the 11 labels and "seniority" one
    of the 6 labels, or its number on the 1..6 scale (the recorded answers
    write 1.0..6.0). Labels must match exactly: near misses are rejected.
    """
    if raw is None or not str(raw).strip():
        raise InvalidAnswer("empty answer")
    text = str(raw).strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidAnswer(f"not valid JSON: {error.msg} at character {error.pos}") from None
    if not isinstance(data, dict):
        raise InvalidAnswer(f"expected a JSON object, found {type(data).__name__}")
    missing = [key for key in ("department", "seniority") if key not in data]
    if missing:
        raise InvalidAnswer(f"missing keys {missing}")
    department = data["department"]
    if not isinstance(department, str) or department.strip() not in DEPARTMENT_LABELS:
        raise InvalidAnswer(f"department {department!r} is not one of the {len(DEPARTMENT_LABELS)} labels")
    seniority = data["seniority"]
    if isinstance(seniority, str) and seniority.strip() in SENIORITY_LABELS:
        seniority = seniority.strip()
    elif isinstance(seniority, (int, float, str)) and not isinstance(seniority, bool):
        try:
            seniority = seniority_from_ordinal(seniority)
        except ValueError:
            raise InvalidAnswer(f"seniority {seniority!r} is not one of {list(SENIORITY_LABELS)} or 1..6") from None
    else:
        raise InvalidAnswer(f"seniority {seniority!r} is not one of {list(SENIORITY_LABELS)} or 1..6")
    return ParsedAnswer(department.strip(), seniority)


def is_valid_answer(raw: str | None) -> bool:
    try:
        parse_answer(raw)
    except InvalidAnswer:
        return False
    return True
