"""ESCO occupation names in 21 languages as a training source of one task (docs/labels.md, the ESCO section).

Writes `esco.spacy` (each name's language with it), and a report of what came in per language and label and what was
left out and why (`esco.json`, `esco.md`). `augment` adds the names to the augmented train at their weight. No
concept of the Dutch dev set is among them, in any language.
"""

import json
from pathlib import Path

import typer

from titlecat.corpus import LANG_KEY, make_nlp, write_corpus
from titlecat.esco_names import DEPARTMENT_RULES, MELO_FOLDERS, OCCUPATIONS_FILE, draw, english_names, read_esco_source
from titlecat.labels import get_task
from titlecat.readers import DataError, Example


def main(
    task_name: str = typer.Argument(..., metavar="TASK"),
    assets_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Holds melo/, occupations_en.csv"),
    output_dir: Path = typer.Argument(..., file_okay=False),
    cap: int = typer.Option(120, min=0, help="Names drawn a language and label, at most (0 = none)"),
    composed_share: float = typer.Option(
        0.5, min=0.0, max=1.0, help="Seniority: composed Junior/Senior names fill at most this share of the cap"
    ),
    department_rule: str = typer.Option("wide", help="wide (docs/labels.md's table) or narrow (the Dutch dev set's)"),
    languages: str = typer.Option(",".join(MELO_FOLDERS), help="Comma-separated ISO 639-1 codes"),
    dutch_dev: Path = typer.Option(
        Path("assets/occupations_nl.csv"), exists=True, dir_okay=False, help="The Dutch dev set's ESCO file"
    ),
    seed: int = typer.Option(42),
):
    task = get_task(task_name)
    if department_rule not in DEPARTMENT_RULES:
        raise typer.BadParameter(f"{department_rule!r}: one of {DEPARTMENT_RULES}", param_hint="--department-rule")
    wanted = tuple(lang.strip() for lang in languages.split(",") if lang.strip())
    unknown = [lang for lang in wanted if lang not in MELO_FOLDERS]
    if unknown:
        raise typer.BadParameter(f"{unknown}: not among {sorted(MELO_FOLDERS)}", param_hint="--languages")
    occupations = assets_dir / OCCUPATIONS_FILE
    try:
        source = read_esco_source(assets_dir / "melo", occupations, dutch_dev, seed, wanted)
        chosen, report = draw(source, task, english_names(occupations), cap, composed_share, seed, department_rule)
    except DataError as error:
        typer.secho(f"✘ {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    examples = [Example(name.text, label, name.uri, index) for index, (name, label) in enumerate(chosen)]
    output_dir.mkdir(parents=True, exist_ok=True)
    nlp = make_nlp()
    write_corpus(output_dir / "esco.spacy", examples, task, nlp, [{LANG_KEY: name.lang} for name, _ in chosen])
    report["languages"] = list(wanted)
    (output_dir / "esco.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (output_dir / "esco.md").write_text(render(report, chosen))
    typer.echo(
        f"✔ {task.name}: {report['names']:,} ESCO names ({report['composed']:,} composed) in {len(wanted)} languages"
        f" → {output_dir / 'esco.spacy'}"
    )


def render(report: dict, chosen: list) -> str:
    labels = list(report["per_label"])
    lines = [
        f"# ESCO names: {report['task']}",
        "",
        f"At most {report['cap_per_language_and_label']} names a language and label (seed {report['seed']}); "
        f"{report['names']:,} in all, {report['composed']:,} of them composed (docs/labels.md). The Dutch dev set's "
        f"{report['dutch_dev_concepts_left_out']} concepts are left out in every language.",
        "",
        "| language | " + " | ".join(labels) + " | total |",
        "|---|" + "---:|" * (len(labels) + 1),
    ]
    for lang, counts in report["per_language_and_label"].items():
        lines.append(
            f"| {lang} | " + " | ".join(str(counts[label]) for label in labels) + f" | {sum(counts.values())} |"
        )
    lines.append(
        "| **all** | " + " | ".join(str(report["per_label"][label]) for label in labels) + f" | {report['names']} |"
    )
    lines += ["", "Left out, and why:", ""]
    lines += [f"- {reason}: {count:,}" for reason, count in report["left_out"].items()]
    lines += ["", "Examples (the first of each label):", ""]
    for label in labels:
        texts = [name.text for name, chosen_label in chosen if chosen_label == label][:6]
        lines.append(f"- {label}: " + "; ".join(texts))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    typer.run(main)
