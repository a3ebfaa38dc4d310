"""metrics/summary.md: every evaluated pipeline next to the reference study's rows."""

import json
from pathlib import Path

import typer

from titlecat.labels import TASKS
from titlecat.metrics import per_language_table
from titlecat.preflight import system_name
from titlecat.readers import read_ood
from titlecat.reference import read_reference_results, reference_label, score_zero_shot


def fmt(value) -> str:
    return "" if value is None else f"{value:.4f}"


def pair(scores: dict | None) -> str:
    return f"{scores['accuracy']:.4f} / {scores['macro_f1']:.4f}" if scores else ""


CHOICE_SET_NAMES = {"cv_dev": "cv-dev", "dutch_dev": "Dutch dev", "multilingual_dev": "multilingual dev"}


def languages_table(pipelines: list[dict]) -> list[str]:
    """The multilingual dev set language by language (accuracy / macro-F1), each pipeline a row."""
    rows = [
        (f"{system_name(m['config'])}: {m['pipeline']}", m["multilingual_dev"]["per_language"])
        for m in pipelines
        if "per_language" in m.get("multilingual_dev", {})
    ]
    caption = "Multilingual dev set by language (accuracy / macro-F1; 60 titles a language):"
    return per_language_table(rows, caption, pair)


def main(
    metrics_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    assets_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    output_path: Path = typer.Argument(..., dir_okay=False),
):
    ours = [json.loads(path.read_text()) for path in sorted(metrics_dir.glob("*/*_*.json"))]
    ours = [m for m in ours if "ood" in m and "test" in m]
    zero_shot = {
        name: score_zero_shot(
            assets_dir / "gemini_results.csv", read_ood(assets_dir / "linkedin-cvs-annotated.json", task)[0], task
        )
        for name, task in TASKS.items()
    }
    references = read_reference_results(assets_dir / "all_results.csv")
    lines = [
        "# titlecat results",
        "",
        "OOD = the ACTIVE positions of linkedin-cvs-annotated.json (evaluation only). cv-dev = every position "
        "of the annotated CVs with no ACTIVE position (217; made the choices, never trained on). Dutch dev = 257 "
        "ESCO occupation titles in Dutch (department only; for choices, never trained on). Multilingual dev = 420 "
        "hand-labelled CV-style titles in 7 languages (data/README.md; for choices, never trained on). "
        "Test = the 15% in-distribution split of the curated CSV (seniority: in the annotators' convention).",
        "",
    ]
    for task_name in TASKS:
        # The Dutch dev set has department labels only.
        dutch = task_name == "department"
        choice_sets = ("cv_dev", "dutch_dev", "multilingual_dev") if dutch else ("cv_dev", "multilingual_dev")
        lines += [
            f"## {task_name}",
            "",
            "| system | test acc | test macro-F1 | "
            + "".join(f"{CHOICE_SET_NAMES[name]} acc / macro-F1 | " for name in choice_sets)
            + "OOD acc | OOD macro-F1 | OOD MAE | OOD unseen acc (n) |",
            "|---|---:|---:|" + "---:|" * len(choice_sets) + "---:|---:|---:|---:|",
        ]
        for m in (m for m in ours if m["task"] == task_name):
            unseen = m["ood"].get("unseen_in_train")
            unseen_text = f"{unseen['accuracy']:.4f} ({unseen['n']})" if unseen else ""
            label = system_name(m["config"]) + f": {m['pipeline']}"
            choice_cells = "".join(f"{pair(m.get(name))} | " for name in choice_sets)
            lines.append(
                f"| {label} | {fmt(m['test']['accuracy'])} | {fmt(m['test']['macro_f1'])} | {choice_cells}"
                f"{fmt(m['ood']['accuracy'])} | {fmt(m['ood']['macro_f1'])} | {fmt(m['ood'].get('mae'))} | "
                f"{unseen_text} |"
            )
        z = zero_shot[task_name]
        empty = "| | | " + "| " * len(choice_sets)
        lines.append(
            f"| gemini-2.0-flash zero-shot, recomputed ({z['answered']} of {z['n']} answered) {empty}"
            f"{fmt(z['accuracy'])} | {fmt(z['macro_f1'])} | {fmt(z.get('mae'))} | |"
        )
        for r in (r for r in references if r["target"] == task_name):
            lines.append(
                f"| {reference_label(r)} {empty}{fmt(r['accuracy'])} | {fmt(r['macro_f1'])} | {fmt(r['mae'])} | |"
            )
        lines += ["", *languages_table([m for m in ours if m["task"] == task_name]), ""]
    lines += [
        "gemini-2.0-flash zero-shot is recomputed from gemini_results.csv, which has no answer for one of the 623 OOD "
        "positions (row 33, 'CEO'): that position counts as wrong in accuracy and as a missed gold label in macro-F1; "
        "MAE is over the 622 answered positions. Reference rows are copied from all_results.csv.",
        "'OOD unseen' = OOD titles that do not occur verbatim (ignoring case) in the pipeline's training data.",
        "",
    ]
    output_path.write_text("\n".join(lines))
    output_path.with_suffix(".json").write_text(
        json.dumps({"pipelines": ours, "zero_shot": zero_shot, "reference": references}, indent=2) + "\n"
    )
    typer.echo(f"✔ {output_path}")


if __name__ == "__main__":
    typer.run(main)
