"""Build train/dev/test (70/15/15, stratified), cv-dev and the OOD set of one task as DocBins, with a report."""

import json
from collections import Counter
from pathlib import Path

import typer

from titlecat.corpus import LANG_KEY, casefold_set, curated_splits, harmonise, label_counts, make_nlp, write_corpus
from titlecat.esco import read_esco_dev
from titlecat.labels import get_task
from titlecat.readers import DataError, as_dicts, read_cv_dev, read_multilingual_dev, read_ood


def main(
    task_name: str = typer.Argument(..., metavar="TASK", help="seniority or department"),
    assets_dir: Path = typer.Argument(..., exists=True, file_okay=False),
    output_dir: Path = typer.Argument(..., help="Folder for train/dev/test/ood.spacy and the report"),
    seed: int = typer.Option(42),
    max_per_label: int = typer.Option(0, help="Keep at most this many curated titles per label (0 = all)"),
    dutch_dev: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="ESCO occupations_nl.csv: also write the Dutch dev set (department)"
    ),
    multilingual_dev: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="data/multilingual_dev.csv: also write the multilingual dev set"
    ),
    harmonise_labels: bool = typer.Option(
        True, "--harmonise/--no-harmonise", help="Curated labels in the annotators' convention (docs/labels.md)"
    ),
):
    task = get_task(task_name)
    try:
        splits, curated_skipped = curated_splits(assets_dir, task, seed, max_per_label)
        ood, ood_skipped = read_ood(assets_dir / "linkedin-cvs-annotated.json", task)
        cv_dev, cv_dev_skipped = read_cv_dev(assets_dir / "linkedin-cvs-annotated.json", task)
        if dutch_dev is not None:
            if task.name != "department":
                raise typer.BadParameter("the Dutch dev set has department labels only", param_hint="--dutch-dev")
            dutch, dutch_skipped = read_esco_dev(dutch_dev, seed)
            cv_dev_skipped += dutch_skipped
        if multilingual_dev is not None:
            multilingual, languages, multilingual_skipped = read_multilingual_dev(multilingual_dev, task)
            cv_dev_skipped += multilingual_skipped
    except DataError as error:
        typer.secho(f"✘ {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    curated = [example for split in splits.values() for example in split]
    # Split on the CSV's own labels (the study's protocol), then mapped onto the annotators' convention.
    relabelled = {}
    if harmonise_labels:
        for name, examples in splits.items():
            splits[name], relabelled[name] = harmonise(examples, task)
    splits["cv_dev"] = cv_dev
    splits["ood"] = ood
    if dutch_dev is not None:
        splits["dutch_dev"] = dutch
    # Each title's language rides with it (doc.user_data, in the corpus's user_data file), for the per-language figures.
    user_data = {"dutch_dev": [{LANG_KEY: "nl"}] * len(splits.get("dutch_dev", []))}
    if multilingual_dev is not None:
        splits["multilingual_dev"] = multilingual
        user_data["multilingual_dev"] = [{LANG_KEY: lang} for lang in languages]

    output_dir.mkdir(parents=True, exist_ok=True)
    nlp = make_nlp()
    for name, examples in splits.items():
        write_corpus(output_dir / f"{name}.spacy", examples, task, nlp, user_data.get(name))

    text_counts = Counter(example.text.casefold() for example in curated)
    ood_titles = casefold_set(example.text for example in ood)
    train_titles = casefold_set(example.text for example in splits["train"])
    report = {
        "task": task.name,
        "seed": seed,
        "max_per_label": max_per_label,
        "sources": {
            "curated": task.curated_asset,
            "cv_dev": "linkedin-cvs-annotated.json (every position of the CVs with no ACTIVE position)",
            "ood": "linkedin-cvs-annotated.json (ACTIVE positions)",
            **({"dutch_dev": f"{dutch_dev.name} (ESCO occupations in Dutch, titlecat/esco.py)"} if dutch_dev else {}),
            **(
                {"multilingual_dev": f"{multilingual_dev.name} (CV-style titles in 7 languages, data/README.md)"}
                if multilingual_dev
                else {}
            ),
        },
        "relabelled_to_annotators_convention": relabelled,
        "counts": {name: len(examples) for name, examples in splits.items()},
        # OOD's label mix is left out: it is a number a reader could tune priors or rules toward.
        "label_counts": {name: label_counts(examples, task) for name, examples in splits.items() if name != "ood"},
        "skipped": as_dicts(curated_skipped + cv_dev_skipped + ood_skipped),
        "skipped_by_reason": dict(Counter(skip.reason for skip in curated_skipped + cv_dev_skipped + ood_skipped)),
        "duplicate_titles": {
            "curated_rows_repeating_an_earlier_title": sum(n - 1 for n in text_counts.values()),
            "distinct_titles_seen_more_than_once": sum(1 for n in text_counts.values() if n > 1),
        },
        "train_titles_also_in_ood": len(train_titles & ood_titles),
        "ood_titles_also_in_train": sum(1 for example in ood if example.text.casefold() in train_titles),
    }
    (output_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (output_dir / "report.md").write_text(render_report(report))
    typer.echo(
        f"✔ {task.name}: " + ", ".join(f"{n} {name}" for name, n in report["counts"].items()) + f" → {output_dir}"
    )


def render_report(report: dict) -> str:
    splits = list(report["label_counts"])
    lines = [
        f"# Corpus report: {report['task']}",
        "",
        f"Seed {report['seed']}; curated titles per label capped at {report['max_per_label'] or 'no cap'}. "
        f"Curated: `{report['sources']['curated']}`; cv-dev: {report['sources']['cv_dev']}, for choices, never "
        f"trained on; OOD: {report['sources']['ood']}, evaluation only: {report['counts']['ood']} rows, its "
        "labels not counted here (the evaluation reports them).",
        "",
        "| label | " + " | ".join(splits) + " |",
        "|---|" + "---:|" * len(splits),
    ]
    labels = list(report["label_counts"][splits[0]])
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(str(report["label_counts"][s][label]) for s in splits) + " |")
    lines.append("| **total** | " + " | ".join(str(report["counts"][s]) for s in splits) + " |")
    duplicates = report["duplicate_titles"]
    lines += [
        "",
        f"- Rows skipped: {len(report['skipped'])} "
        + (
            f"({', '.join(f'{n} {reason}' for reason, n in report['skipped_by_reason'].items())})"
            if report["skipped"]
            else ""
        ),
        "- Curated labels mapped onto the annotators' convention (docs/labels.md): "
        + (", ".join(f"{n} {split}" for split, n in report["relabelled_to_annotators_convention"].items()) or "none"),
        "- Duplicate curated titles (case-insensitive): "
        f"{duplicates['curated_rows_repeating_an_earlier_title']} rows repeat "
        f"an earlier title ({duplicates['distinct_titles_seen_more_than_once']} distinct titles).",
        f"- Distinct train titles that also occur among OOD titles: {report['train_titles_also_in_ood']}; "
        f"OOD rows whose title occurs in train: {report['ood_titles_also_in_train']} of {report['counts']['ood']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    typer.run(main)
