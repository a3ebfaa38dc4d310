"""metrics/benchmark.md: every pipeline, a TF-IDF + logistic regression baseline on the same data and the reference
study's bag-of-words recipe, on cv-dev and OOD with confidence intervals, with training wall time and inference speed
(and their ratio to the TF-IDF baseline), all measured in this run on this machine."""

import gc
import json
import os
import platform
import time
from functools import partial
from pathlib import Path

import spacy
import typer

import titlecat.components  # noqa: F401  (registers the architectures the pipelines use)
import titlecat.piece_vectors  # noqa: F401
import titlecat.trf_textcat  # noqa: F401
from titlecat.baseline import train_reference_bow, train_tfidf_logreg
from titlecat.confidence import BINS, benchmark_confidence, plot_coverage
from titlecat.corpus import (
    CV_SETS,
    LANG_KEY,
    TRAIN_FILES,
    WEIGHT_KEY,
    casefold_set,
    curated_splits,
    oversample_to_largest,
    read_corpus_docs,
    read_docbin,
    read_user_data,
)
from titlecat.labels import TASKS
from titlecat.metrics import (
    HEADLINE,
    bootstrap_intervals,
    classification_metrics,
    per_language_metrics,
    per_language_table,
    predict_labels,
    seen_unseen_metrics,
)
from titlecat.multilingual import ENCODER_FACTORY
from titlecat.predict import freeze_long_lived_objects
from titlecat.preflight import system_name
from titlecat.readers import read_pseudo_labels
from titlecat.reference import read_reference_results, read_zero_shot_answers, reference_label

SPEED_TITLES = 20_000  # enough titles that start-up costs vanish from titles/second
DUTCH_DEV = "dutch_dev.spacy"
MULTILINGUAL_DEV = "multilingual_dev.spacy"


def score(gold, predicted, task, texts, train_titles, seed) -> dict:
    scores = classification_metrics(gold, predicted, task)
    result = {k: scores[k] for k in HEADLINE if k in scores}
    result["ci95"] = bootstrap_intervals(gold, predicted, task, seed=seed)
    result.update(seen_unseen_metrics(gold, predicted, texts, train_titles, task))
    return result


def score_sets(predict, eval_sets, task, train_titles, seed) -> dict:
    """Scores on cv-dev and OOD of one system (`predict`: titles -> labels)."""
    return {
        name: score(gold, list(predict(texts)), task, texts, train_titles, seed)
        for name, (texts, gold) in eval_sets.items()
    }


def reference_bow_data(assets_dir: Path, corpus_dir: Path, pseudo_labels: Path, task, seed: int, max_per_label: int):
    """The reference recipe's data: the curated train split with the CSV's own labels plus every pseudo-label
    once, as the LLM gave it; department oversampled, as the study did."""
    splits, _ = curated_splits(assets_dir, task, seed, max_per_label)
    examples = splits["train"] + read_pseudo_labels(pseudo_labels, task)
    if task.name == "department":
        examples = oversample_to_largest(examples, seed)
    return [e.text.lower() for e in examples], [e.label for e in examples]


def titles_per_second(predict, texts, budget_seconds: float = 3.0) -> float:
    """Titles/second predicting batches of 1,000 distinct titles, for a few seconds or SPEED_TITLES titles.

    Distinct: the multilingual pipeline encodes each distinct title of a batch once, so a batch of repeats would
    flatter it.

    With the process's objects frozen out of the garbage collector's reach, as `titlecat predict` runs
    (titlecat.predict.freeze_long_lived_objects): otherwise a full collection over the imports' objects lands in
    one of the batches or not, and moves the figure by a fifth from run to run.
    """
    batch = list(dict.fromkeys(texts))[:1000]
    freeze_long_lived_objects()
    try:
        done, start = 0, time.perf_counter()
        while done < SPEED_TITLES and (done == 0 or time.perf_counter() - start < budget_seconds):
            predict(batch)
            done += len(batch)
        return done / (time.perf_counter() - start)
    finally:
        gc.unfreeze()


def main(
    corpus_dir: Path = typer.Option(Path("corpus")),
    pseudo_labels: Path = typer.Option(
        Path("corpus/pseudo_labels/recorded.jsonl"), help="The pseudo-labels the augmented pipelines were trained with"
    ),
    training_dir: Path = typer.Option(Path("training")),
    assets_dir: Path = typer.Option(Path("assets")),
    output_path: Path = typer.Option(Path("metrics/benchmark.md")),
    gpu_id: int = typer.Option(-1),
    seed: int = typer.Option(42),
    max_per_label: int = typer.Option(0, help="As in corpora: the reference recipe rebuilds its curated split"),
):
    if gpu_id >= 0:
        spacy.require_gpu(gpu_id)
    # Every config trained so far (cpu, trf, the trf-check stand-in, ...), so that they sit side by side.
    configs = sorted(d.name for d in training_dir.iterdir() if d.is_dir() and list(d.glob("*/*/model-best")))
    rows = []
    calibration = {config: read_calibration(output_path.parent / config / "calibration.json") for config in configs}
    confidence = {config: {} for config in configs}
    for task in TASKS.values():
        eval_sets = {name: read_docbin(corpus_dir / task.name / file, task) for name, file in CV_SETS.items()}
        if (corpus_dir / task.name / DUTCH_DEV).exists():
            eval_sets["dutch_dev"] = read_docbin(corpus_dir / task.name / DUTCH_DEV, task)
        confidence_sets = dict(eval_sets)
        languages = []
        if (corpus_dir / task.name / MULTILINGUAL_DEV).exists():
            eval_sets["multilingual_dev"] = read_docbin(corpus_dir / task.name / MULTILINGUAL_DEV, task)
            languages = read_user_data(corpus_dir / task.name / MULTILINGUAL_DEV, LANG_KEY, "?")
        # 1,000+ distinct titles to time with: OOD's 623, then test's.
        speed_texts = eval_sets["ood"][0] + read_docbin(corpus_dir / task.name / "test.spacy", task)[0]
        for variant, train_file in TRAIN_FILES.items():
            train_texts, train_gold = read_docbin(corpus_dir / task.name / train_file, task)
            train_titles = casefold_set(train_texts)
            for config in configs:
                model_dir = training_dir / config / task.name / variant
                if not (model_dir / "model-best").exists():
                    continue  # trf-check trains the augmented variants only
                nlp = spacy.load(model_dir / "model-best")
                predict = partial(predict_labels, nlp)
                scores = score_sets(predict, eval_sets, task, train_titles, seed)
                if languages:
                    texts, gold = eval_sets["multilingual_dev"]
                    scores["multilingual_dev"]["per_language"] = per_language_metrics(
                        gold, predict(texts), languages, task
                    )
                rows.append(
                    {
                        "system": system_name(config),
                        "task": task.name,
                        "variant": variant,
                        **scores,
                        "train_seconds": json.loads((model_dir / "train_time.json").read_text())["seconds"],
                        "titles_per_second": titles_per_second(predict, speed_texts),
                    }
                )
                if variant == "augmented":
                    temperature = calibration[config].get(task.name, {}).get("temperature", 1.0)
                    llm_answers = read_zero_shot_answers(assets_dir / "gemini_results.csv", task)
                    confidence[config][task.name] = benchmark_confidence(
                        nlp, task, confidence_sets, temperature, llm_answers, seed
                    )
                typer.echo(f"✔ {rows[-1]['system']} {task.name} {variant}")
            baselines = [("TF-IDF + logistic regression", train_tfidf_logreg, train_texts, train_gold)]
            if variant == "augmented":
                texts, gold = reference_bow_data(assets_dir, corpus_dir, pseudo_labels, task, seed, max_per_label)
                baselines.append(("reference bag-of-words recipe, retrained", train_reference_bow, texts, gold))
            for system, train_baseline, texts, gold in baselines:
                start = time.perf_counter()
                baseline = train_baseline(texts, gold, seed)
                train_seconds = time.perf_counter() - start
                rows.append(
                    {
                        "system": system,
                        "task": task.name,
                        "variant": variant,
                        **score_sets(baseline.predict, eval_sets, task, casefold_set(texts), seed),
                        "train_seconds": train_seconds,
                        "titles_per_second": titles_per_second(baseline.predict, speed_texts),
                    }
                )
                typer.echo(f"✔ {system} {task.name} {variant}")
    speed = [
        pipeline_speed(training_dir / config / "combined", config, speed_titles(corpus_dir, seed), corpus_dir)
        for config in configs
        if (training_dir / config / "combined" / "config.cfg").exists()
    ]
    references = read_reference_results(assets_dir / "all_results.csv")
    result = {
        "speed": speed,
        "machine": f"{platform.machine()}, {_cpu_count()} cores",
        "configs": configs,
        "rows": rows,
        "reference": references,
        "calibration": calibration,
        "confidence": confidence,
    }
    output_path.parent.mkdir(parents=True, exist_ok=True)
    curves = {
        f"{task} {name.replace('_', '-')}" + (f" ({config})" if len(configs) > 1 else ""): curve
        for config in configs
        for task, found in confidence[config].items()
        for name, curve in found.pop("curves").items()
    }
    plot_coverage(curves, output_path.parent / "coverage.png")
    output_path.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    output_path.write_text(render(result))
    typer.echo(f"✔ {output_path}")


SPEED_FILE_TITLES = 2_000
# The encoder alone, int8 against its plain fp32 torch forward, on the first of those titles (the fp32 forward is
# the slow one: a few hundred titles say the ratio).
ENCODER_TITLES = 500


def speed_titles(corpus_dir: Path, seed: int) -> list[str]:
    """SPEED_FILE_TITLES distinct titles of every corpus file, CV-style and curated, in a seeded random order.

    Not the ESCO names (esco.spacy, and the weighted docs of train_augmented) nor the multilingual dev set: occupation
    names are longer than the titles people label, and without them the sample is the one earlier runs timed."""
    import random

    nlp = spacy.blank("xx")
    titles = {
        doc.text
        for path in sorted(corpus_dir.glob("*/*.spacy"))
        if path.name not in ("esco.spacy", MULTILINGUAL_DEV)
        for doc in read_corpus_docs(path, nlp)
        if WEIGHT_KEY not in doc.user_data
    }
    titles = sorted(title for title in titles if title.strip())
    random.Random(seed).shuffle(titles)
    return titles[:SPEED_FILE_TITLES]


def folder_megabytes(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def pipeline_speed(model_dir: Path, config: str, titles: list[str], corpus_dir: Path) -> dict:
    """A combined pipeline's titles/s through `nlp.pipe` and through `titlecat predict` (a fresh process, its own
    timer: without loading), its size on disk; with a title encoder also the encoder alone, int8 (as the pipeline
    runs it) and as a plain fp32 torch forward, and how often the answers of the two agree on cv-dev and the
    Dutch dev set (docs/multilingual.md, rule 3)."""
    import csv
    import re
    import subprocess
    import sys
    import tempfile

    nlp = spacy.load(model_dir)
    row = {"system": system_name(config), "titles": len(titles), "megabytes": folder_megabytes(model_dir.resolve())}
    freeze_long_lived_objects()
    try:
        start = time.perf_counter()
        for _ in nlp.pipe(titles, batch_size=1000):
            pass
        row["pipe_titles_per_second"] = len(titles) / (time.perf_counter() - start)
    finally:
        gc.unfreeze()
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "titles.csv", Path(tmp) / "labels.csv"
        with source.open("w", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows([["title"], *([title] for title in titles)])
        command = [sys.executable, "-m", "titlecat", "predict", str(source), str(target), "--model", str(model_dir)]
        done = subprocess.run([*command, "--column", "title"], capture_output=True, text=True)
        rate = re.search(r"\(([\d,]+) titles/s\)", done.stdout + done.stderr)
        if done.returncode != 0 or rate is None:
            raise RuntimeError(f"titlecat predict failed on {model_dir}: {done.stderr[-2000:]}")
        row["predict_titles_per_second"] = float(rate.group(1).replace(",", ""))
    if "title_encoder" in nlp.pipe_names and nlp.get_pipe_meta("title_encoder").factory == ENCODER_FACTORY:
        encoder = nlp.get_pipe("title_encoder")
        chunk_size = encoder.cfg["chunk_size"]
        settings = (encoder.cfg["prefix"], encoder.cfg["max_length"], chunk_size)
        row["encoder_titles"] = min(ENCODER_TITLES, len(titles))
        for name, device in (("encoder_int8_titles_per_second", None), ("encoder_fp32_torch_titles_per_second", "cpu")):
            # Warmed up first, on one chunk: the first torch call builds the model, the first ONNX call its session.
            encoder.runtime.encode(titles[-chunk_size:], *settings, torch_device=device)
            start = time.perf_counter()
            encoder.runtime.encode(titles[:ENCODER_TITLES], *settings, torch_device=device)
            row[name] = row["encoder_titles"] / (time.perf_counter() - start)
        row["agreement"] = int8_fp32_agreement(nlp, corpus_dir)
    return row


def int8_fp32_agreement(nlp, corpus_dir: Path) -> dict:
    """Share of cv-dev and Dutch dev titles whose answer (each task) is the same with the encoder's int8 layers
    and with its fp32 torch forward."""
    encoder = nlp.get_pipe("title_encoder")
    tasks = [name for name in TASKS if name in nlp.pipe_names]
    # cv-dev holds the same positions in both tasks' corpora.
    sources = {"cv-dev": ("seniority", "cv_dev.spacy"), "Dutch dev": ("department", DUTCH_DEV)}
    titles = {
        name: read_docbin(corpus_dir / task / file, TASKS[task])[0]
        for name, (task, file) in sources.items()
        if (corpus_dir / task / file).exists()
    }
    answers = {}
    for device in (None, "cpu"):
        encoder.torch_device = device
        answers[device] = {
            name: [tuple(doc._.get(task) for task in tasks) for doc in nlp.pipe(texts)]
            for name, texts in titles.items()
        }
    encoder.torch_device = None
    return {
        f"{name} {task}": sum(a[i] == b[i] for a, b in zip(answers[None][name], answers["cpu"][name], strict=True))
        / len(texts)
        for name, texts in titles.items()
        for i, task in enumerate(tasks)
    }


def render_speed(result: dict) -> list[str]:
    lines = [
        "## Speed of the combined pipelines (both tasks)",
        "",
        f"{SPEED_FILE_TITLES:,} distinct titles of the corpora, one process. `nlp.pipe`: batches of 1,000; "
        "`titlecat predict`: a fresh process labelling a CSV of them, by its own timer (after loading). The title "
        f"encoder alone, on the first {ENCODER_TITLES} of them: its int8 ONNX layers as the pipeline runs them, and a "
        "plain fp32 torch forward of the same encoder (same titles, same length-sorted chunks). Agreement: the share "
        "of answers that the int8 and the fp32 encoder give alike.",
        "",
        "| pipeline | size MB | nlp.pipe titles/s | titlecat predict titles/s | encoder int8 titles/s "
        "| encoder fp32 torch titles/s | int8 / fp32 | answers agree |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in result.get("speed", []):
        int8, fp32 = row.get("encoder_int8_titles_per_second"), row.get("encoder_fp32_torch_titles_per_second")
        agreement = ", ".join(f"{name} {share:.1%}" for name, share in row.get("agreement", {}).items())
        lines.append(
            f"| {row['system']} | {row['megabytes']:,.0f} | {row['pipe_titles_per_second']:,.0f} | "
            f"{row['predict_titles_per_second']:,.0f} | {f'{int8:,.0f}' if int8 else ''} | "
            f"{f'{fp32:,.0f}' if fp32 else ''} | {f'{int8 / fp32:.2f}×' if int8 else ''} | {agreement} |"
        )
    return lines + [""]


def read_calibration(path: Path) -> dict:
    """calibrate's per-task results (temperature, ECE per set), or {} where that step has not run."""
    return json.loads(path.read_text())["tasks"] if path.exists() else {}


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def _metric(scores: dict, name: str) -> str:
    if name not in scores:
        return ""
    low, high = scores["ci95"][name]
    return f"{scores[name]:.3f} [{low:.3f}, {high:.3f}]"


def _subset(scores: dict) -> str:
    return f"{scores['accuracy']:.3f} ({scores['n']})" if scores["n"] else "– (0)"


def _cv_dev(scores: dict) -> str:
    values = [scores["accuracy"], scores["macro_f1"]] + ([scores["mae"]] if "mae" in scores else [])
    return " / ".join(f"{value:.3f}" for value in values)


def render(result: dict) -> str:
    lines = [
        "# Benchmark",
        "",
        "cv-dev = the 217 positions of the annotated CVs with no ACTIVE position (made every choice; never trained "
        "on): accuracy / macro-F1 (/ MAE). Dutch dev = 257 ESCO occupation titles in Dutch (department only; for "
        "choices, never trained on). Multilingual dev = 420 hand-labelled CV-style titles in 7 languages (for "
        "choices, never trained on; by language below). OOD = the 623 ACTIVE positions (evaluation only; decided "
        "nothing). "
        "95% bootstrap intervals (1,000 resamples) in brackets. Seen/unseen: OOD titles that do / do not occur "
        "verbatim (ignoring case) in that system's training data. Wall time and speed measured in this run on "
        f"{result['machine']}; speed = titles/second predicting batches of 1,000 distinct titles (up to "
        f"{SPEED_TITLES:,} titles or 3 s), one process, its objects frozen out of the garbage collector's reach as "
        "`titlecat predict` runs; ×: the ratio to the TF-IDF baseline of the same variant. The reference "
        "bag-of-words recipe is retrained here on the curated train split with the CSV's labels plus every "
        "pseudo-label once (department oversampled), as the study built it.",
        "",
    ]
    for task in TASKS:
        lines += [
            f"## {task}",
            "",
            "| system | variant | cv-dev | Dutch dev | multilingual dev | OOD accuracy | OOD macro-F1 | OOD MAE "
            "| seen acc (n) | unseen acc (n) | train s (×) | titles/s (×) |",
            "|---|---|---|---|---|---|---|---|---|---|---:|---:|",
        ]
        task_rows = [r for r in result["rows"] if r["task"] == task]
        tfidf = {r["variant"]: r for r in task_rows if r["system"] == "TF-IDF + logistic regression"}
        for row in task_rows:
            ood, base = row["ood"], tfidf.get(row["variant"], row)
            lines.append(
                f"| {row['system']} | {row['variant']} | {_cv_dev(row['cv_dev'])} | "
                f"{_cv_dev(row['dutch_dev']) if 'dutch_dev' in row else ''} | "
                f"{_cv_dev(row['multilingual_dev']) if 'multilingual_dev' in row else ''} | "
                f"{_metric(ood, 'accuracy')} | "
                f"{_metric(ood, 'macro_f1')} | {_metric(ood, 'mae')} | "
                f"{_subset(ood['seen_in_train'])} | {_subset(ood['unseen_in_train'])} | "
                f"{row['train_seconds']:.0f} ({row['train_seconds'] / base['train_seconds']:.1f}×) | "
                f"{row['titles_per_second']:,.0f} ({row['titles_per_second'] / base['titles_per_second']:.2f}×) |"
            )
        for ref in (r for r in result["reference"] if r["target"] == task):
            mae = f"{ref['mae']:.3f}" if ref["mae"] is not None else ""
            lines.append(
                f"| {reference_label(ref)} | | | | | {ref['accuracy']:.3f} | {ref['macro_f1']:.3f} | {mae} | | | | |"
            )
        lines += ["", *render_languages(task_rows)]
    return "\n".join(lines + render_speed(result) + render_confidence(result))


def render_languages(rows: list[dict]) -> list[str]:
    """The multilingual dev set by language (accuracy / macro-F1 (/ MAE)), each augmented pipeline a row."""
    rows = [r for r in rows if r["variant"] == "augmented" and "per_language" in r.get("multilingual_dev", {})]
    caption = "Multilingual dev set by language (augmented; accuracy / macro-F1 (/ MAE)):"
    lines = per_language_table([(r["system"], r["multilingual_dev"]["per_language"]) for r in rows], caption, _headline)
    return lines + [""] if lines else []


def _headline(row: dict) -> str:
    return " / ".join(f"{row[k]:.3f}" for k in ("accuracy", "macro_f1", "mae") if k in row)


def render_confidence(result: dict) -> list[str]:
    """Calibration, coverage and LLM-fallback tables of the augmented pipelines (docs/quality.md, "Confidence")."""
    lines = [
        "## Confidence (augmented pipelines)",
        "",
        f"Calibration (`calibrate`): expected calibration error of the top score, {BINS} equal-width bins, as "
        "trained → after temperature scaling with T fitted on cv-dev (in-sample there; cross-validated: 5 folds "
        "of whole CVs, each scored with the T of the other four). Floor: the ECE perfectly calibrated scores "
        "would show on that many titles (sampling noise).",
        "",
        "| config | task | T | test ECE | cv-dev ECE | cv-dev ECE, cross-validated | cv-dev floor | OOD ECE "
        "| OOD floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for config, tasks in result["calibration"].items():
        for task, report in tasks.items():
            sets = report["sets"]
            ece = {name: f"{s['ece_before']:.3f} → {s['ece_after']:.3f}" for name, s in sets.items()}
            lines.append(
                f"| {system_name(config)} | {task} | {report['temperature']:g} | {ece['test']} | {ece['cv_dev']} | "
                f"{report['cv_dev_cross_validated']['ece']:.3f} | {sets['cv_dev']['ece_noise_floor_after']:.3f} | "
                f"{ece['ood']} | {sets['ood']['ece_noise_floor_after']:.3f} |"
            )
    lines += [
        "",
        "Coverage: accuracy / macro-F1 (/ MAE) of the answers kept when the least confident share (calibrated "
        "top score of the task) is set aside; n kept in brackets. Plot: `metrics/coverage.png`.",
        "",
        "| config | task | set | 0% set aside | 10% | 25% | 50% |",
        "|---|---|---|---|---|---|---|",
    ]
    for config, tasks in result["confidence"].items():
        for task, found in tasks.items():
            for name in dict.fromkeys(row["set"] for row in found["coverage"]):
                cells = [f"{_headline(r)} ({r['n']})" for r in found["coverage"] if r["set"] == name]
                lines.append(
                    f"| {system_name(config)} | {task} | {name.replace('_', '-')} | " + " | ".join(cells) + " |"
                )
    lines += [
        "",
        "LLM fallback, OOD: the least confident share of the titles (calibrated top score of the task) takes the "
        "recorded gemini-2.0-flash answer (`gemini_results.csv`, 622 of 623 answered; mapped onto the annotators' "
        "convention as pseudo-labels are; no answer: the pipeline's stays). Fixed budgets, reported, not tuned. "
        "cv-dev has no recorded LLM answers, so no cv-dev rows. 95% bootstrap intervals in brackets.",
        "",
        "| config | task | LLM budget | titles sent | accuracy | macro-F1 | MAE |",
        "|---|---|---|---|---|---|---|",
    ]
    for config, tasks in result["confidence"].items():
        for task, found in tasks.items():
            for row in found["llm_fallback"]:
                lines.append(
                    f"| {system_name(config)} | {task} | {row['budget']:.0%} | {row['sent']} | "
                    f"{_metric(row, 'accuracy')} | {_metric(row, 'macro_f1')} | {_metric(row, 'mae')} |"
                )
    return lines + [""]


if __name__ == "__main__":
    typer.run(main)
