"""The ESCO names' cap and weight, chosen by rule 7 of docs/multilingual.md on the choice sets only.

For each task, and for both pipeline kinds (the fast one's piece vectors, the multilingual one's encoder, each with
its project.yml fit settings), fits the pipeline's own model (hashed n-grams beside the title vector, logistic
regression) on the augmented train plus the ESCO names of each setting (cap per language and label x weight, and
*none*), scores it on cv-dev, the Dutch dev set (department) and the multilingual dev set, and applies the rule. Reads
no OOD title. Not part of `all`: a check, run when the ESCO rule or the fit settings change (about 30 min on 2 cores).
"""

import hashlib
import itertools
import json
import time
from pathlib import Path

import numpy as np
import typer
from multilingual_choices import design_matrices  # scripts/multilingual_choices.py, beside this file
from sklearn.metrics import f1_score
from wasabi import msg

from titlecat.components import SAMPLE_WEIGHT_KEY, extract_title_features
from titlecat.corpus import make_nlp, read_docbin, read_user_data
from titlecat.esco_names import OCCUPATIONS_FILE, draw, english_names, read_esco_source
from titlecat.labels import TASKS
from titlecat.multilingual import build_runtime, fit_ngrams_and_vectors
from titlecat.piece_vectors import piece_table

CHOICE_SETS = {"seniority": ("cv_dev", "multilingual_dev"), "department": ("cv_dev", "dutch_dev", "multilingual_dev")}
# Each kind's fit settings, as project.yml has them: (vector weight, C); class weight balanced for all four.
FIT_SETTINGS = {
    ("fast", "seniority"): (1.0, 1.0),
    ("fast", "department"): (1.0, 0.3),
    ("multilingual", "seniority"): (1.0, 10.0),
    ("multilingual", "department"): (4.0, 0.3),
}


def main(
    tasks: str = typer.Option("seniority,department"),
    kinds: str = typer.Option("fast,multilingual"),
    caps: str = typer.Option("40,120"),
    weights: str = typer.Option("0.1,0.3,1.0"),
    department_rules: str = typer.Option("narrow,wide", help="Department's label rules (rule 7's addendum)"),
    composed_share: float = typer.Option(0.5, help="Seniority's composed names (a share of the cap)"),
    department_composed_shares: str = typer.Option("0", help="Department's composed names: shares of the cap"),
    assets_dir: Path = typer.Option(Path("assets"), exists=True, file_okay=False),
    encoder_dir: Path = typer.Option(Path("assets/encoder"), exists=True, file_okay=False),
    corpus_dir: Path = typer.Option(Path("corpus"), exists=True, file_okay=False),
    piece_width: int = typer.Option(128, help="The fast pipeline's piece vectors (configs/cpu.cfg)"),
    output_path: Path = typer.Option(Path("metrics/esco_choices.md")),
    rows_from: list[Path] = typer.Option(
        [], help="Rows of another run (its JSON; e.g. the other kind, run in parallel) to decide on with this run's"
    ),
    cache_dir: Path = typer.Option(Path("metrics/esco_choices_cache"), help="The titles' vectors, kept between runs"),
    seed: int = typer.Option(42),
):
    nlp = make_nlp()
    occupations = assets_dir / OCCUPATIONS_FILE
    source = read_esco_source(assets_dir / "melo", occupations, assets_dir / "occupations_nl.csv", seed)
    english = english_names(occupations)
    cap_list, weight_list = [int(c) for c in caps.split(",")], [float(w) for w in weights.split(",")]
    data = {}
    for task in tasks.split(","):
        train_path = corpus_dir / task / "train_augmented.spacy"
        if any(weight is not None for weight in read_user_data(train_path, SAMPLE_WEIGHT_KEY, None, nlp)):
            raise typer.BadParameter(f"{train_path} holds ESCO names already: augment with --esco-weight 0 first")
        train = read_docbin(train_path, TASKS[task], nlp)
        sets = {name: read_docbin(corpus_dir / task / f"{name}.spacy", TASKS[task], nlp) for name in CHOICE_SETS[task]}
        esco = {}
        rules = department_rules.split(",") if task == "department" else ["-"]
        shares = [float(share) for share in department_composed_shares.split(",")] if task == "department" else [0.0]
        for rule, share in itertools.product(rules, shares):
            # A department setting with composed names is named by its rule: "narrow, composed 0.5".
            name = rule if not share else f"{rule}, composed {share:g}"
            for cap in cap_list:
                chosen, report = draw(
                    source,
                    TASKS[task],
                    english,
                    cap,
                    share if task == "department" else composed_share,
                    seed,
                    rule.replace("-", "wide"),
                )
                esco[(name, cap)] = ([n.text for n, _ in chosen], [label for _, label in chosen])
                msg.info(f"{task}: rule {name}, cap {cap}: {report['names']:,} ESCO names")
        data[task] = {"train": train, "sets": sets, "esco": esco}
    texts = sorted(
        {t for d in data.values() for texts, _ in (d["train"], *d["sets"].values(), *d["esco"].values()) for t in texts}
    )
    extract = extract_title_features(2, 5)
    rows = []
    for kind in [kind for kind in kinds.split(",") if kind]:  # none: decide on --rows-from alone
        start = time.perf_counter()
        by_text = cached_vectors(kind, texts, encoder_dir, piece_width, cache_dir)
        msg.info(f"{kind}: {len(texts):,} titles' vectors in {time.perf_counter() - start:.0f} s")
        for task, d in data.items():
            vector_weight, C = FIT_SETTINGS[(kind, task)]
            labels = list(TASKS[task].labels)
            set_matrices = {
                name: design_matrices(extract, nlp, set_texts, by_text, vector_weight)
                for name, (set_texts, _) in d["sets"].items()
            }
            rules = sorted({rule for rule, _ in d["esco"]})
            settings = [("-", 0, 0.0)] + [(r, c, w) for r in rules for c in cap_list for w in weight_list]
            for rule, cap, weight in settings:
                start = time.perf_counter()
                train_texts, train_labels = d["train"]
                extra_texts, extra_labels = d["esco"][(rule, cap)] if cap else ([], [])
                all_texts, all_labels = train_texts + extra_texts, train_labels + extra_labels
                docs = [nlp.make_doc(text) for text in all_texts]
                for index, (doc, label) in enumerate(zip(docs, all_labels, strict=True)):
                    doc.cats = {name: float(name == label) for name in labels}
                    if index >= len(train_texts):
                        doc.user_data[SAMPLE_WEIGHT_KEY] = weight
                ngrams, vectors_matrix = design_matrices(extract, nlp, all_texts, by_text, vector_weight)
                ngram_weights, vector_weights, bias = fit_ngrams_and_vectors(
                    ngrams, vectors_matrix, docs, labels, f"{kind} {task}", C, "balanced", 3000
                )
                row = {"kind": kind, "task": task, "rule": rule, "cap": cap, "weight": weight}
                for name, (_, gold) in d["sets"].items():
                    set_ngrams, set_vectors = set_matrices[name]
                    logits = set_ngrams @ ngram_weights.T + set_vectors @ vector_weights.T + bias
                    predicted = [labels[i] for i in np.asarray(logits).argmax(axis=1)]
                    row[f"{name}_accuracy"] = float(np.mean([p == g for p, g in zip(predicted, gold, strict=True)]))
                    row[f"{name}_macro_f1"] = float(f1_score(gold, predicted, average="macro", zero_division=0))
                row["score"] = float(np.mean([row[f"{name}_macro_f1"] for name in d["sets"]]))
                row["seconds"] = time.perf_counter() - start
                msg.text(json.dumps(row))
                rows.append(row)
                output_path.parent.mkdir(parents=True, exist_ok=True)
                output_path.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    rows += [row for path in rows_from for row in json.loads(path.read_text())]
    all_kinds = sorted({row["kind"] for row in rows})
    decisions = {task: decide(rows, task, all_kinds) for task in data}
    output_path.write_text(render(rows, decisions))
    for task, (setting, reasons) in decisions.items():
        msg.good(f"{task}: {describe(setting)}" + "".join(f"\n  {r}" for r in reasons))


def cached_vectors(kind: str, texts: list[str], encoder_dir: Path, piece_width: int, cache_dir: Path) -> dict:
    """Each title's vector from `kind`'s model, encoding only titles not kept from an earlier run (the encoder takes
    minutes for ~45,000 titles on 2 cores)."""
    key = hashlib.sha256(f"{kind}:{piece_width}:{encoder_dir.resolve()}".encode()).hexdigest()[:16]
    path = cache_dir / f"{kind}-{key}.npz"
    found = {}
    if path.exists():
        with np.load(path) as stored:
            found = dict(zip(stored["texts"].tolist(), stored["vectors"], strict=True))
    missing = [text for text in texts if text not in found]
    if missing:
        if kind == "fast":
            vectors = piece_table(encoder_dir, piece_width).vectors(missing)
        else:
            vectors = build_runtime(encoder_dir).encode(missing, "query: ", 64, 64)
        found.update(zip(missing, np.asarray(vectors), strict=True))
        cache_dir.mkdir(parents=True, exist_ok=True)
        keys = sorted(found)
        np.savez(path, texts=np.asarray(keys), vectors=np.stack([found[text] for text in keys]))
    return {text: found[text] for text in texts}


def decide(rows: list[dict], task: str, kinds: list[str]) -> tuple[tuple[str, int, float], list[str]]:
    """Rule 7: the setting (label rule, cap, weight) with the best score (the mean over kinds of the choice sets'
    mean macro-F1) among those whose cv-dev macro-F1 stays within 0.01 of *none*'s for every kind, if 0.01 above
    *none*'s; ties within 0.005 go to the smaller weight, then the smaller cap (then the narrow rule)."""
    table: dict[tuple[str, int, float], dict[str, dict]] = {}
    for row in rows:
        if row["task"] == task:
            table.setdefault((row["rule"], row["cap"], row["weight"]), {})[row["kind"]] = row
    none_key = ("-", 0, 0.0)
    none = table[none_key]
    scores, reasons = {}, []
    for setting, by_kind in table.items():
        if set(by_kind) != set(kinds):
            continue
        falls = [k for k in kinds if by_kind[k]["cv_dev_macro_f1"] < none[k]["cv_dev_macro_f1"] - 0.01]
        if falls and setting != none_key:
            reasons.append(f"{describe(setting)}: out (cv-dev macro-F1 falls > 0.01 for {', '.join(falls)})")
            continue
        scores[setting] = float(np.mean([by_kind[k]["score"] for k in kinds]))
    best = max(scores.values())
    near = sorted((weight, cap, rule) for (rule, cap, weight), score in scores.items() if score >= best - 0.005)
    weight, cap, rule = near[0]
    choice = (rule, cap, weight)
    if scores[choice] < scores[none_key] + 0.01:
        reasons.append(f"best {scores[choice]:.4f} is not 0.01 above none's {scores[none_key]:.4f}: none")
        return none_key, reasons
    reasons.append(f"{describe(choice)}: score {scores[choice]:.4f} against none's {scores[none_key]:.4f}")
    return choice, reasons


def describe(setting: tuple[str, int, float]) -> str:
    rule, cap, weight = setting
    if not cap:
        return "none"
    return ("" if rule == "-" else f"rule {rule}, ") + f"cap {cap}, weight {weight:g}"


def render(rows: list[dict], decisions: dict) -> str:
    lines = [
        "# ESCO names in training: cap and weight on the choice sets (rule 7 of docs/multilingual.md)",
        "",
        "`scripts/esco_choices.py`; augmented train + the ESCO names of each setting; accuracy / macro-F1; score = the "
        "mean macro-F1 over the task's choice sets. No OOD title was read.",
        "",
    ]
    for task, (setting, reasons) in decisions.items():
        sets = CHOICE_SETS[task]
        lines += [
            f"## {task}: {describe(setting)}",
            "",
            *[f"- {reason}" for reason in reasons],
            "",
            "| kind | rule | cap | weight | " + " | ".join(sets) + " | score |",
            "|---|---|---:|---:|" + "---|" * len(sets) + "---:|",
        ]
        for row in (row for row in rows if row["task"] == task):
            cells = [f"{row[f'{name}_accuracy']:.3f} / {row[f'{name}_macro_f1']:.3f}" for name in sets]
            lines.append(
                f"| {row['kind']} | {row['rule']} | {row['cap']} | {row['weight']:g} | "
                + " | ".join(cells)
                + f" | {row['score']:.4f} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    typer.run(main)
