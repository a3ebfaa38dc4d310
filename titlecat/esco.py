"""The Dutch dev set: ESCO occupation titles with a department derived from their ISCO-08 group.

For choices that must not favour German and English alone (feature weights, encoder, the default pipeline); like
cv-dev, never trained on. Occupation-list style, not CV style: a signal, not a target. Derived as
`shared/data/esco/README.md` says: per occupation its preferred label and one of its alt labels drawn at random
(seeded), at most 40 titles a department (Other 50), groups outside the table below left out.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from .readers import DataError, Example, Skipped, normalise_title

ESCO_FILE = "occupations_nl.csv"
# ISCO-08 unit groups (4 digits) -> titlecat department. Other: whole major/sub-major groups (prefixes).
ISCO_DEPARTMENTS = {
    "Information Technology": ("2512", "2514", "2519", "2521", "2522", "2523", "2529", "3511", "3513", "3514"),
    "Human Resources": ("1212", "2423", "3333", "4416"),
    "Purchasing": ("3323",),
    "Administrative": ("4110", "4120", "4131", "4132", "4312", "3313", "2411", "4226", "4415"),
    "Sales": ("5223", "3322", "5242", "5243"),
    "Customer Support": ("4222", "4225"),
    "Marketing": ("1222", "2431"),
}
OTHER_PREFIXES = ("22", "23", "32", "51", "53", "54", "6", "7", "8", "9")
MAX_PER_DEPARTMENT = 40
MAX_OTHER = 50
COLUMNS = ("iscoGroup", "preferredLabel", "altLabels")


def department_of(isco_group: str) -> str | None:
    for department, groups in ISCO_DEPARTMENTS.items():
        if isco_group in groups:
            return department
    return "Other" if isco_group.startswith(OTHER_PREFIXES) else None


def read_esco_dev(path: Path | str, seed: int = 42) -> tuple[list[Example], list[Skipped]]:
    """The Dutch ESCO dev set (department labels), in file order within each department."""
    path = Path(path)
    rng = random.Random(seed)
    by_department: dict[str, list[Example]] = {}
    skipped: list[Skipped] = []
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file, strict=True)
            missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise DataError(path, "line 1", f"columns {missing} missing; header: {reader.fieldnames}")
            for row in reader:
                line = reader.line_num
                group = (row["iscoGroup"] or "").strip()
                if not (len(group) == 4 and group.isdigit()):
                    raise DataError(path, f"line {line}, field 'iscoGroup'", f"not a 4-digit ISCO-08 group: {group!r}")
                department = department_of(group)
                if department is None:
                    continue
                preferred = normalise_title(row["preferredLabel"])
                alternatives = [normalise_title(label) for label in (row["altLabels"] or "").split("\n")]
                alternatives = [label for label in alternatives if label and label != preferred]
                # Drawn for every kept occupation, so the draw does not depend on which labels are empty.
                alternative = rng.choice(alternatives) if alternatives else None
                if not preferred:
                    skipped.append(Skipped(path.name, line, "empty preferredLabel"))
                titles = [title for title in (preferred, alternative) if title]
                by_department.setdefault(department, []).extend(
                    Example(title, department, path.name, line) for title in titles
                )
    except csv.Error as error:
        raise DataError(path, f"line {reader.line_num}", f"malformed CSV: {error}") from error
    except UnicodeDecodeError as error:
        raise DataError(path, f"byte {error.start}", "not UTF-8 text") from error
    examples = []
    for department in sorted(by_department):
        titles = by_department[department]
        cap = MAX_OTHER if department == "Other" else MAX_PER_DEPARTMENT
        keep = sorted(rng.sample(range(len(titles)), cap)) if len(titles) > cap else range(len(titles))
        examples += [titles[i] for i in keep]
    return examples, skipped
