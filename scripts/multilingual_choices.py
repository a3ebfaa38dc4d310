"""The multilingual pipeline's fit settings, compared on cv-dev and the Dutch dev set (docs/multilingual.md, rule 1);
with --piece-widths, the fast pipeline's static piece vectors instead of the encoder's (rule 6).

Fits the pipeline's own model (hashed n-grams beside the encoder's title vector, logistic regression) for every
combination of vector weight, class weight and prefix on each task's augmented train, and writes a table. It reads
no OOD title. Not part of `all`: a check, run once per encoder (about 10 minutes on 2 cores).
"""

import itertools
import json
import time
from pathlib import Path

import numpy as np
import typer
from sklearn.metrics import f1_score
from spacy.tokens import DocBin
from wasabi import msg

from titlecat.components import extract_title_features, hashed_design_matrix
from titlecat.corpus import make_nlp
from titlecat.esco import read_esco_dev
from titlecat.labels import TASKS
from titlecat.multilingual import build_runtime, fit_ngrams_and_vectors
from titlecat.piece_vectors import piece_table

LENGTH = 2**18


def main(
    encoder_dir: Path = typer.Option(Path("assets/encoder"), exists=True, file_okay=False),
    corpus_dir: Path = typer.Option(Path("corpus"), exists=True, file_okay=False),
    esco_path: Path = typer.Option(Path("assets/occupations_nl.csv"), exists=True, dir_okay=False),
    output_path: Path = typer.Option(Path("metrics/multilingual_choices.md")),
    vector_weights: str = typer.Option("1,2,4,8"),
    class_weights: str = typer.Option("none,balanced"),
    prefixes: str = typer.Option("query: ,", help="Comma-separated; an empty item is no prefix"),
    Cs: str = typer.Option("10", "--C", help="Comma-separated inverse L2 strengths of the logistic regression"),
    tasks: str = typer.Option("seniority,department", help="Tasks to fit; rule 1's score needs both"),
    fp32: bool = typer.Option(
        False, "--fp32", help="Vectors from the encoder's fp32 torch forward, not its int8 layers"
    ),
    piece_widths: str = typer.Option(
        "", help="Comma-separated widths: the fast pipeline's piece vectors (rule 6) in place of the encoder's"
    ),
    seed: int = typer.Option(42),
):
    nlp = make_nlp()
    sets: dict[str, dict[str, tuple[list[str], list[str]]]] = {}
    for task in tasks.split(","):
        sets[task] = {
            name: read_docbin(corpus_dir / task / f"{name}.spacy", nlp) for name in ("train_augmented", "cv_dev")
        }
    esco, _ = read_esco_dev(esco_path, seed)
    sets["department"]["dutch_dev"] = ([e.text for e in esco], [e.label for e in esco])
    texts = sorted({text for task_sets in sets.values() for texts, _ in task_sets.values() for text in texts})
    vectors_by_prefix = {}
    if piece_widths:
        # The column "prefix" then names the piece table: the pieces carry no prefix.
        prefixes = ",".join(f"pieces-{width}" for width in piece_widths.split(","))
        for width in piece_widths.split(","):
            vectors = piece_table(encoder_dir, int(width)).vectors(texts)
            vectors_by_prefix[f"pieces-{width}"] = dict(zip(texts, vectors, strict=True))
    else:
        runtime = build_runtime(encoder_dir)
        for prefix in prefixes.split(","):
            start = time.perf_counter()
            vectors = runtime.encode(texts, prefix, 64, 64, torch_device="cpu" if fp32 else None)
            msg.info(f"{len(texts):,} titles encoded with prefix {prefix!r} in {time.perf_counter() - start:.0f} s")
            vectors_by_prefix[prefix] = dict(zip(texts, vectors, strict=True))
    extract = extract_title_features(2, 5)
    rows = []
    settings = itertools.product(
        prefixes.split(","), map(float, Cs.split(",")), map(float, vector_weights.split(",")), class_weights.split(",")
    )
    for prefix, C, weight, class_weight in settings:
        row = {"prefix": prefix, "C": C, "vector_weight": weight, "class_weight": class_weight}
        for task, task_sets in sets.items():
            matrices = {
                name: design_matrices(extract, nlp, texts, vectors_by_prefix[prefix], weight)
                for name, (texts, _) in task_sets.items()
            }
            train_texts, train_labels = task_sets["train_augmented"]
            docs = [nlp.make_doc(text) for text in train_texts]
            labels = list(TASKS[task].labels)
            for doc, label in zip(docs, train_labels, strict=True):
                doc.cats = {name: float(name == label) for name in labels}
            ngram_weights, vector_weights, bias = fit_ngrams_and_vectors(
                *matrices["train_augmented"], docs, labels, task, C, None if class_weight == "none" else class_weight,
                3000,
            )  # fmt: skip
            for name, (_, gold) in task_sets.items():
                if name == "train_augmented":
                    continue
                ngrams, vectors = matrices[name]
                logits = ngrams @ ngram_weights.T + vectors @ vector_weights.T + bias
                predicted = [labels[i] for i in np.asarray(logits).argmax(axis=1)]
                row[f"{task}_{name}_accuracy"] = float(np.mean([p == g for p, g in zip(predicted, gold, strict=True)]))
                row[f"{task}_{name}_macro_f1"] = float(f1_score(gold, predicted, average="macro", zero_division=0))
        scored = ("department_cv_dev_macro_f1", "department_dutch_dev_macro_f1", "seniority_cv_dev_macro_f1")
        row["rule_score"] = (
            None
            if any(key not in row for key in scored)
            else float(
                np.mean(
                    [
                        row["department_cv_dev_macro_f1"],
                        row["department_dutch_dev_macro_f1"],
                        row["seniority_cv_dev_macro_f1"],
                    ]
                )
            )
        )
        if "department_dutch_dev_macro_f1" in row:  # rules 4 and 5: department's own score
            row["department_score"] = (row["department_cv_dev_macro_f1"] + row["department_dutch_dev_macro_f1"]) / 2
        msg.text(json.dumps(row))
        rows.append(row)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    output_path.write_text(render(rows))
    msg.good(f"{output_path}: {len(rows)} settings")


def read_docbin(path: Path, nlp) -> tuple[list[str], list[str]]:
    docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    return [doc.text for doc in docs], [max(doc.cats, key=doc.cats.get) for doc in docs]


def design_matrices(extract, nlp, texts: list[str], vectors: dict, weight: float):
    """The hashed n-grams (sparse) and the weighted title vectors of `texts`, as the pipeline's model sees them."""
    keys, values, lengths = extract.predict([nlp.make_doc(text) for text in texts])
    ngrams = hashed_design_matrix(np.asarray(keys), np.asarray(values), np.asarray(lengths), LENGTH)
    return ngrams, np.stack([vectors[text] for text in texts]) * np.float32(weight)


def render(rows: list[dict]) -> str:
    lines = [
        "# Multilingual pipeline: fit settings on cv-dev and the Dutch dev set",
        "",
        "`scripts/multilingual_choices.py`; augmented train; accuracy / macro-F1. Rule: "
        "docs/multilingual.md, rule 1 (the mean of the three macro-F1s).",
        "",
        "| prefix | C | vector weight | class weight | department cv-dev | department Dutch dev | seniority cv-dev "
        "| department score | rule score |",
        "|---|---:|---:|---|---|---|---|---:|---:|",
    ]
    for row in sorted(rows, key=lambda row: (-(row["rule_score"] or 0), -row.get("department_score", 0))):
        cells = [
            f"{row[f'{task}_{name}_accuracy']:.3f} / {row[f'{task}_{name}_macro_f1']:.3f}"
            if f"{task}_{name}_accuracy" in row
            else ""
            for task, name in (("department", "cv_dev"), ("department", "dutch_dev"), ("seniority", "cv_dev"))
        ]
        prefix = f"`{row['prefix']}`" if row["prefix"] else "none"
        lines.append(
            f"| {prefix} | {row['C']:g} | {row['vector_weight']:g} | {row['class_weight']} | " + " | ".join(cells)
            + (f" | {row['department_score']:.3f}" if "department_score" in row else " | ")
            + (f" | {row['rule_score']:.3f} |" if row["rule_score"] is not None else " | |")
        )  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    typer.run(main)
