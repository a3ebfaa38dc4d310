"""Metrics of the study: accuracy, macro-F1 (scikit-learn's), per-class scores, confusion, ordinal MAE."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from .labels import SENIORITY_ORDINAL, Task


def classification_metrics(gold: Sequence[str], predicted: Sequence[str], task: Task) -> dict:
    """Metrics of one pipeline on one set.

    macro_f1 is `f1_score(average="macro")` with scikit-learn's default labels
    (those in gold or predicted), as the reference study computed it.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no examples to score")
    labels = list(task.labels)
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    result = {
        "n": len(gold),
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=False)
        },
        "labels": labels,
        "confusion": confusion_matrix(gold, predicted, labels=labels).tolist(),
    }
    if task.ordinal:
        result["mae"] = ordinal_mae(gold, predicted)
    return result


def ordinal_mae(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Mean absolute error on the Junior=1 ... Director=6 scale."""
    return float(
        np.mean([abs(SENIORITY_ORDINAL[g] - SENIORITY_ORDINAL[p]) for g, p in zip(gold, predicted, strict=False)])
    )


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str, path: Path | str) -> None:
    """Confusion matrix (counts; rows gold, columns predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    size = 1.0 + 0.55 * len(labels)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                colour = "white" if matrix[i, j] > threshold else "black"
                axes.text(j, i, str(matrix[i, j]), ha="center", va="center", color=colour, fontsize=8)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def predict_labels(nlp, texts: Sequence[str], batch_size: int | None = None) -> list[str]:
    """The highest-scoring label of each title (batches of the pipeline's own nlp.batch_size by default)."""
    return [max(doc.cats, key=doc.cats.get) for doc in nlp.pipe(texts, batch_size=batch_size)]


def resampled_indices(n: int, resamples: int, seed: int):
    """`resamples` bootstrap samples of the indices 0..n-1 (with replacement), seeded: one draw per resample."""
    rng = np.random.RandomState(seed)
    for _ in range(resamples):
        yield rng.randint(0, n, n)


def percentile_interval(values, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def resampled_macro_f1(gold: Sequence[str], predicted: Sequence[str], indices: np.ndarray) -> np.ndarray:
    """Macro-F1 of each resample (a row of `indices`), as `f1_score(average="macro", zero_division=0)` computes it:
    the mean, over the labels in that resample's gold or predicted, of 2 TP / (gold count + predicted count).
    Counted for all resamples at once: scikit-learn validates its inputs for ~7 ms a call, which made 1,000
    resamples a set most of the benchmark's time."""
    code = {label: index for index, label in enumerate(sorted(set(gold) | set(predicted)))}
    n_labels, n_resamples = len(code), len(indices)
    gold_codes = np.array([code[label] for label in gold], dtype="int64")[indices]
    predicted_codes = np.array([code[label] for label in predicted], dtype="int64")[indices]
    # Resample r's label c is bin r * n_labels + c.
    offsets = np.arange(n_resamples, dtype="int64")[:, None] * n_labels

    def counts(codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        flat = np.bincount((codes + offsets).ravel(), weights=weights, minlength=n_resamples * n_labels)
        return flat.reshape(n_resamples, n_labels)

    true_positives = counts(gold_codes, (gold_codes == predicted_codes).ravel().astype("float64"))
    both = counts(gold_codes) + counts(predicted_codes)
    present = both > 0
    f1 = np.divide(2 * true_positives, both, out=np.zeros_like(true_positives), where=present)
    return f1.sum(axis=1) / present.sum(axis=1)


def bootstrap_intervals(
    gold: Sequence[str],
    predicted: Sequence[str],
    task: Task,
    resamples: int = 1000,
    seed: int = 42,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals of accuracy, macro-F1 (and MAE) over resampled titles."""
    indices = np.array(list(resampled_indices(len(gold), resamples, seed)))
    correct = np.asarray(gold) == np.asarray(predicted)
    samples = {"accuracy": correct[indices].mean(axis=1), "macro_f1": resampled_macro_f1(gold, predicted, indices)}
    if task.ordinal:
        errors = np.abs(
            np.array([SENIORITY_ORDINAL[g] for g in gold]) - np.array([SENIORITY_ORDINAL[p] for p in predicted])
        )
        samples["mae"] = errors[indices].mean(axis=1)
    return {name: percentile_interval(values, level) for name, values in samples.items()}


def paired_difference_intervals(
    gold: Sequence[str],
    predicted_a: Sequence[str],
    predicted_b: Sequence[str],
    resamples: int = 1000,
    seed: int = 42,
    level: float = 0.95,
) -> dict[str, dict]:
    """B's accuracy and macro-F1 minus A's on the same titles, with a paired percentile bootstrap interval and the
    share of resamples in which B is ahead: whether a set this size can tell the two pipelines apart at all."""
    if not len(gold) == len(predicted_a) == len(predicted_b):
        raise ValueError(f"{len(gold)} gold labels, {len(predicted_a)} and {len(predicted_b)} predictions")
    gold_array, a_array, b_array = np.asarray(gold), np.asarray(predicted_a), np.asarray(predicted_b)

    def differences(indices: np.ndarray) -> dict[str, np.ndarray]:
        """B minus A on each resample (a row of `indices`)."""
        return {
            "accuracy": (gold_array == b_array)[indices].mean(axis=1) - (gold_array == a_array)[indices].mean(axis=1),
            "macro_f1": resampled_macro_f1(gold, predicted_b, indices) - resampled_macro_f1(gold, predicted_a, indices),
        }

    samples = differences(np.array(list(resampled_indices(len(gold_array), resamples, seed))))
    whole = differences(np.arange(len(gold_array))[None, :])
    return {
        name: {
            "difference": float(whole[name][0]),
            "interval": percentile_interval(values, level),
            "b_ahead": float(np.mean(values > 0)),
        }
        for name, values in samples.items()
    }


HEADLINE = ("n", "accuracy", "macro_f1", "mae")


def seen_unseen_metrics(
    gold: Sequence[str], predicted: Sequence[str], texts: Sequence[str], train_titles: set[str], task: Task
) -> dict[str, dict]:
    """Headline metrics on the titles met verbatim (ignoring case) in training and on the rest.

    Tells memorised (pseudo-)labels apart from generalisation.
    """
    result = {}
    for subset, keep in (("seen_in_train", True), ("unseen_in_train", False)):
        indices = [i for i, text in enumerate(texts) if (text.casefold() in train_titles) == keep]
        result[subset] = {"n": 0}
        if indices:
            scores = classification_metrics([gold[i] for i in indices], [predicted[i] for i in indices], task)
            result[subset] = {k: scores[k] for k in HEADLINE if k in scores}
    return result


def per_language_metrics(gold: Sequence[str], predicted: Sequence[str], languages: Sequence[str], task: Task) -> dict:
    """Accuracy, macro-F1 (and MAE) of each language's titles: {lang: {n, accuracy, macro_f1[, mae]}}."""
    result = {}
    for lang in sorted(set(languages)):
        rows = [i for i, code in enumerate(languages) if code == lang]
        scores = classification_metrics([gold[i] for i in rows], [predicted[i] for i in rows], task)
        result[lang] = {key: scores[key] for key in ("n", "accuracy", "macro_f1", "mae") if key in scores}
    return result


def per_language_table(rows: Sequence[tuple[str, dict]], caption: str, cell) -> list[str]:
    """Markdown lines of a set's per-language figures: `rows` are (system, per_language_metrics(...)) pairs, a
    column a language, each cell `cell(scores)`; no lines when there are no rows."""
    if not rows:
        return []
    languages = sorted({lang for _, per_language in rows for lang in per_language})
    lines = [caption, "", "| system | " + " | ".join(languages) + " |", "|---|" + "---|" * len(languages)]
    for system, per_language in rows:
        cells = [cell(per_language[lang]) if lang in per_language else "" for lang in languages]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return lines
