"""Trustworthy confidence: calibration, coverage, the review flag and the LLM fallback.

- **Calibration**: expected calibration error (ECE) of the top score, reliability diagrams, and
  temperature scaling fitted on cv-dev (`fit_temperature`). `assemble` folds the fitted temperatures
  into the combined pipeline's textcats (titlecat.combined.set_temperature), so `titlecat predict`
  scores are calibrated; the best label never changes.
- **Coverage**: accuracy and macro-F1 of the answers kept when the least confident share is set aside.
- **Review flag and LLM fallback** of `titlecat predict` (`RowPostprocess`): `needs_review` where a
  model answer scores below a threshold; the least confident titles of chosen tasks sent to the
  project's spacy-llm task (titlecat/llm), whose answer replaces the model's. The benchmark measures
  the same selection rule (`least_confident`) offline with recorded LLM answers (`fallback`).

docs/quality.md (section "Confidence") says what was chosen and on what evidence; docs/use.md how to use it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from .labels import TASKS, Task
from .metrics import bootstrap_intervals, ordinal_mae
from .predict import check_review_below, needs_review

# Equal-width bins of the top score over [0, 1] (Guo et al., 2017, used 15).
BINS = 15
# The temperature is searched in this range (log scale): far beyond any useful value on both sides.
TEMPERATURE_BOUNDS = (0.05, 20.0)
# Shares of titles set aside (coverage) and sent to the LLM (fallback) that the benchmark reports.
SET_ASIDE = (0.0, 0.10, 0.25, 0.50)
LLM_BUDGETS = (0.0, 0.10, 0.25, 0.50, 1.0)


# --- calibration ------------------------------------------------------------------------------------------------------


def probabilities(nlp, texts: Sequence[str], labels: Sequence[str], batch_size: int = 1000) -> np.ndarray:
    """(titles × labels) scores of a textcat pipeline, columns in `labels` order, as float64."""
    return np.array(
        [[doc.cats.get(label, 0.0) for label in labels] for doc in nlp.pipe(texts, batch_size=batch_size)],
        dtype="float64",
    ).reshape(len(texts), len(labels))


def gold_indices(gold: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index[label] for label in gold], dtype="int64")


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of softmax scores: p**(1/T) renormalised per row (= softmax(logits / T)).

    T > 1 softens overconfident scores, T < 1 sharpens; the order of each row's labels never changes.
    """
    probs = np.asarray(probs, dtype="float64")
    if temperature == 1.0:
        return probs
    powered = np.power(probs, 1.0 / temperature)
    total = powered.sum(axis=-1, keepdims=True)
    return np.divide(powered, total, out=probs.copy(), where=total > 0)


def negative_log_likelihood(probs: np.ndarray, gold: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log p(gold) after temperature scaling (scores floored at 1e-12: a log of 0 is infinite)."""
    logits = np.log(np.clip(np.asarray(probs, dtype="float64"), 1e-12, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(len(gold)), gold]))


def fit_temperature(probs: np.ndarray, gold: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of the gold labels (Guo et al., 2017).

    A one-dimensional bounded search over log T (scipy), deterministic; rounded to 4 decimals, as stored.
    """
    from scipy.optimize import minimize_scalar

    low, high = np.log(TEMPERATURE_BOUNDS)
    best = minimize_scalar(
        lambda log_t: negative_log_likelihood(probs, gold, float(np.exp(log_t))),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return round(float(np.exp(best.x)), 4)


def top_confidence(probs: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top score, whether the top label is the gold one) per title."""
    probs = np.asarray(probs, dtype="float64")
    return probs.max(axis=1), probs.argmax(axis=1) == np.asarray(gold)


def reliability(confidence: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> list[dict]:
    """Per equal-width bin of the top score: its range, titles, mean score and accuracy (empty bins left out).

    Bins are (lo, hi], the first [0, hi]: a score of exactly 1.0 is in the last bin.
    """
    confidence = np.asarray(confidence, dtype="float64")
    correct = np.asarray(correct, dtype="float64")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = which == b
        if members.any():
            rows.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "n": int(members.sum()),
                    "confidence": float(confidence[members].mean()),
                    "accuracy": float(correct[members].mean()),
                }
            )
    return rows


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> float:
    """ECE: sum over equal-width bins of the top score of (bin share of titles) × |accuracy − mean score|."""
    total = len(confidence)
    if total == 0:
        raise ValueError("no scores to calibrate")
    return float(
        sum(
            row["n"] / total * abs(row["accuracy"] - row["confidence"])
            for row in reliability(confidence, correct, bins)
        )
    )


def ece_noise_floor(confidence: Sequence[float], bins: int = BINS, draws: int = 1000, seed: int = 42) -> float:
    """The ECE that perfectly calibrated scores would still show on this many titles: the mean ECE when each
    title is right with probability equal to its score. On a few hundred titles it is far from 0 (sampling
    noise within each bin), so an ECE near it is as good as can be told apart."""
    confidence = np.asarray(confidence, dtype="float64")
    rng = np.random.RandomState(seed)
    return float(
        np.mean(
            [expected_calibration_error(confidence, rng.rand(len(confidence)) < confidence, bins) for _ in range(draws)]
        )
    )


def ece(probs: np.ndarray, gold: np.ndarray, temperature: float = 1.0, bins: int = BINS) -> float:
    return expected_calibration_error(*top_confidence(apply_temperature(probs, temperature), gold), bins)


def cross_validated_ece(
    probs: np.ndarray, gold: np.ndarray, groups: Sequence[int], folds: int = 5, bins: int = BINS
) -> tuple[float, list[float]]:
    """ECE of out-of-fold temperature scaling: each fold (whole groups, e.g. CVs) scored with the temperature
    fitted on the other folds, the scored folds pooled. Returns (ECE, the temperatures fitted per fold).

    Fitting on a set and measuring ECE on the same set is in-sample; this is the honest number for it.
    """
    from sklearn.model_selection import GroupKFold

    scaled = np.zeros_like(np.asarray(probs, dtype="float64"))
    temperatures = []
    for fit_index, held_out in GroupKFold(n_splits=folds).split(probs, gold, groups):
        temperature = fit_temperature(probs[fit_index], gold[fit_index])
        temperatures.append(temperature)
        scaled[held_out] = apply_temperature(probs[held_out], temperature)
    return expected_calibration_error(*top_confidence(scaled, gold), bins), temperatures


def calibration_report(sets: dict[str, tuple[np.ndarray, np.ndarray]], cv_dev_groups: Sequence[int]) -> dict:
    """Fit the temperature on `sets["cv_dev"]` (scores, gold indices) only, and measure every set before and after.

    Rule (docs/quality.md): temperature scaling is used when its cross-validated cv-dev ECE (5 folds of whole CVs)
    is below the ECE of the scores as trained; otherwise the temperature is 1.
    """
    probs, gold = sets["cv_dev"]
    fitted = fit_temperature(probs, gold)
    cv_ece, fold_temperatures = cross_validated_ece(probs, gold, cv_dev_groups)
    use = cv_ece < ece(probs, gold)
    temperature = fitted if use else 1.0
    report = {
        "bins": BINS,
        "fitted_temperature": fitted,
        "temperature": temperature,
        "cv_dev_cross_validated": {"ece": cv_ece, "fold_temperatures": fold_temperatures, "folds": 5},
        "sets": {},
    }
    for name, (set_probs, set_gold) in sets.items():
        scaled = apply_temperature(set_probs, temperature)
        report["sets"][name] = {
            "n": len(set_gold),
            "accuracy": float(np.mean(set_probs.argmax(axis=1) == set_gold)),
            "ece_before": ece(set_probs, set_gold),
            "ece_after": ece(scaled, set_gold),
            "nll_before": negative_log_likelihood(set_probs, set_gold),
            "nll_after": negative_log_likelihood(scaled, set_gold),
            "mean_top_score_before": float(set_probs.max(axis=1).mean()),
            "mean_top_score_after": float(scaled.max(axis=1).mean()),
            "ece_noise_floor_after": ece_noise_floor(scaled.max(axis=1)),
        }
    return report


def plot_reliability(panels: dict[str, dict], temperature: float, title: str, path: Path | str, bins: int = BINS):
    """One reliability diagram per set (`panels`: name -> {"probs", "gold"}): accuracy against mean top score
    per bin, before and after temperature scaling, with the diagonal of perfect calibration and the ECEs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (name, data) in zip(axes[0], panels.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for t, colour, label in ((1.0, "tab:red", "as trained"), (temperature, "tab:blue", f"T = {temperature:g}")):
            conf, correct = top_confidence(apply_temperature(data["probs"], t), data["gold"])
            rows = reliability(conf, correct, bins)
            error = expected_calibration_error(conf, correct, bins)
            ax.plot(
                [r["confidence"] for r in rows],
                [r["accuracy"] for r in rows],
                marker="o",
                color=colour,
                label=f"{label}: ECE {error:.3f}",
            )
            if t == temperature:
                counts = ax.twinx()
                centres = [(r["low"] + r["high"]) / 2 for r in rows]
                counts.bar(centres, [r["n"] for r in rows], width=1 / bins, alpha=0.15, color=colour)
                counts.set_ylabel("titles per bin (after)", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top score")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name.replace('_', '-')} (n = {len(data['gold'])})")
        ax.legend(loc="upper left", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- coverage and the offline fallback -------------------------------------------------------------------------------


def least_confident(scores: Sequence[float], share: float | None = None, below: float | None = None) -> np.ndarray:
    """Indices of the titles to set aside or send on: the round(share × n) lowest scores, or those below `below`.

    Ties keep input order (a stable sort), so the choice is deterministic. The one rule used by the
    benchmark's coverage and fallback rows and by `titlecat predict --llm-share/--llm-below`.
    """
    scores = np.asarray(scores, dtype="float64")
    if (share is None) == (below is None):
        raise ValueError("give exactly one of share and below")
    if below is not None:
        return np.flatnonzero(scores < below)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be between 0 and 1, not {share}")
    count = int(math.floor(share * len(scores) + 0.5))
    return np.sort(np.argsort(scores, kind="stable")[:count])


def headline(gold: Sequence[str], predicted: Sequence[str], task: Task) -> dict:
    """n, accuracy, macro-F1 (scikit-learn's default labels, as metrics.classification_metrics) and MAE."""
    gold_array, predicted_array = np.asarray(gold), np.asarray(predicted)
    result = {
        "n": len(gold_array),
        "accuracy": float(np.mean(gold_array == predicted_array)),
        "macro_f1": float(f1_score(gold_array, predicted_array, average="macro", zero_division=0)),
    }
    if task.ordinal:
        result["mae"] = ordinal_mae(gold, predicted)
    return result


def coverage(gold: Sequence[str], predicted: Sequence[str], scores: Sequence[float], set_aside: float, task: Task):
    """Headline metrics of the answers kept when the least confident `set_aside` share is set aside."""
    aside = set(least_confident(scores, share=set_aside).tolist())
    kept = [i for i in range(len(gold)) if i not in aside]
    return {"set_aside": set_aside, **headline([gold[i] for i in kept], [predicted[i] for i in kept], task)}


def fallback(
    predicted: Sequence[str], scores: Sequence[float], llm: Sequence[str | None], share: float
) -> tuple[list[str], int, int]:
    """The pipeline's answers with the least confident `share` replaced by the LLM's (None: no LLM answer, the
    pipeline's stays, as in `titlecat predict`). Returns (answers, titles sent, answers taken)."""
    answers = list(predicted)
    sent = least_confident(scores, share=share)
    taken = 0
    for i in sent:
        if llm[i] is not None:
            answers[i] = llm[i]
            taken += 1
    return answers, len(sent), taken


def llm_labels(texts: Sequence[str], answers: dict[int, str], task: Task) -> list[str | None]:
    """Recorded LLM answers by position (None where there is none), mapped onto the annotators' convention as the
    pseudo-labels and `titlecat predict`'s fallback answers are (`Task.training_label`)."""
    return [task.training_label(text, answers[i]) if i in answers else None for i, text in enumerate(texts)]


def benchmark_confidence(nlp, task: Task, eval_sets: dict, temperature: float, llm_answers: dict[int, str], seed=42):
    """The benchmark's confidence rows of one pipeline: coverage on every set of `eval_sets` (name -> (texts, gold)),
    and the LLM fallback at each of LLM_BUDGETS on "ood", whose recorded answers are `llm_answers` (OOD row ->
    label). Scores are calibrated with `temperature`, as the combined pipeline gives them."""
    result = {"temperature": temperature, "coverage": [], "llm_fallback": [], "curves": {}}
    for name, (texts, gold) in eval_sets.items():
        probs = apply_temperature(probabilities(nlp, texts, task.labels), temperature)
        predicted = [task.labels[i] for i in probs.argmax(axis=1)]
        scores = probs.max(axis=1)
        result["coverage"] += [{"set": name, **coverage(gold, predicted, scores, x, task)} for x in SET_ASIDE]
        result["curves"][name] = coverage_curve(gold, predicted, scores, task)
        if name != "ood":
            continue  # recorded LLM answers exist for the OOD positions only (docs/quality.md)
        llm = llm_labels(texts, llm_answers, task)
        for budget in LLM_BUDGETS:
            answers, sent, taken = fallback(predicted, scores, llm, budget)
            row = {"set": name, "budget": budget, "sent": sent, "llm_answers_taken": taken}
            row.update(headline(gold, answers, task))
            row["ci95"] = bootstrap_intervals(gold, answers, task, seed=seed)
            result["llm_fallback"].append(row)
    return result


def coverage_curve(gold, predicted, scores, task: Task, steps: int = 19) -> list[dict]:
    """Coverage rows from nothing to 90% set aside, in 5-point steps (the plot)."""
    return [coverage(gold, predicted, scores, round(i * 0.05, 2), task) for i in range(steps)]


def plot_coverage(curves: dict[str, list[dict]], path: Path | str) -> None:
    """Accuracy and macro-F1 of the kept answers against the share set aside, one line per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    colours = {}
    for name, rows in curves.items():
        shares = [100 * row["set_aside"] for row in rows]
        # One colour per task (the name's first word), dashed for OOD.
        colour = colours.setdefault(name.split()[0], f"C{len(colours)}")
        style = "--" if "ood" in name.lower() else "-"
        for ax, metric in zip(axes, ("accuracy", "macro_f1"), strict=True):
            ax.plot(shares, [row[metric] for row in rows], style, color=colour, marker=".", label=name)
    for ax, metric in zip(axes, ("accuracy", "macro-F1"), strict=True):
        ax.set_xlabel("least confident titles set aside (%)")
        ax.set_ylabel(f"{metric} of the answers kept")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("Coverage: keep the most confident answers (calibrated scores)")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- titlecat predict: review flag and LLM fallback -------------------------------------------------------------------


class FallbackError(ValueError):
    """The LLM fallback cannot go on (endpoint down, bad key, store busy): stops `titlecat predict`."""


def llm_config_path(backend: str) -> Path:
    """A config file, or a backend name: configs/llm_<name>.cfg in the working directory or beside titlecat."""
    path = Path(backend)
    if path.suffix == ".cfg":
        if not path.exists():
            raise FallbackError(f"--llm-fallback: no config file {path}")
        return path
    candidates = [
        Path("configs") / f"llm_{backend}.cfg",
        Path(__file__).parent.parent / "configs" / f"llm_{backend}.cfg",
    ]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FallbackError(
        f"--llm-fallback {backend!r}: none of {', '.join(map(str, candidates))} exists; name a backend "
        "(openai, recorded) from the project folder, or give a spacy-llm config file (.cfg)"
    )


# How titlecat predict's users set the settings a titlecat.llm error names (BackendError.settings).
FALLBACK_FLAGS = {"base_url": "--llm-base-url", "model": "--llm-model", "api_key_env": "--llm-api-key-env NAME"}


def llm_error_message(error: Exception) -> str:
    """A titlecat.llm error with its fix in titlecat predict's flags."""
    from .llm import BackendError, MissingKey

    if isinstance(error, MissingKey):
        return (
            f"{error.problem}. Export it, name the variable that holds the key with --llm-api-key-env NAME, or send "
            "no key to a server that needs none (Ollama, vLLM, llama.cpp) with --llm-api-key-env ''"
        )
    flags = [FALLBACK_FLAGS[name] for name in getattr(error, "settings", ()) if name in FALLBACK_FLAGS]
    return f"{error} [set with {', '.join(flags)}]" if isinstance(error, BackendError) and flags else str(error)


def project_files(config_path: Path) -> dict[str, str]:
    """The config's [paths] that name files relative to its project (the recorded answers,
    assets/gemini_synthetic.csv), resolved against that project's folder where the working directory lacks
    them: `titlecat predict --llm-fallback recorded` then runs from any folder."""
    from thinc.api import Config

    project = config_path.resolve().parent.parent  # configs/llm_<backend>.cfg
    paths = Config().from_disk(config_path, interpolate=False).get("paths", {})
    return {
        f"paths.{key}": str(project / value)
        for key, value in paths.items()
        if isinstance(value, str) and value and not Path(value).exists() and (project / value).exists()
    }


class LLMFallback:
    """The project's spacy-llm task (configs/llm_<backend>.cfg) answering titles on request.

    Its answers are kept in an answer store as they arrive, so a rerun after an interruption or an
    outage asks only for what is missing; the live backend's concurrency, rate limit and circuit
    breaker are those of titlecat.llm (the breaker's stop becomes a `FallbackError`).
    """

    def __init__(self, backend: str, store: Path | str, overrides: dict | None = None, progress: bool = False):
        from .llm.run import llm_model, load_pipeline

        self.store = Path(store)
        self.progress = progress
        config_path = llm_config_path(backend)
        settings = {**project_files(config_path), "paths.store": str(self.store)}
        settings |= {f"components.llm.model.{key}": value for key, value in (overrides or {}).items()}
        try:
            self.nlp = load_pipeline(config_path, settings)
        except Exception as error:  # spaCy's config errors, BackendError (an unset key variable), missing files
            raise FallbackError(f"--llm-fallback {config_path}: {llm_error_message(error)}") from None
        self.backend = llm_model(self.nlp).backend
        self.counts: Counter = Counter()

    def answer(self, titles: Sequence[str]) -> dict[str, dict | None]:
        """title -> {"department", "seniority"} (None where the LLM gave no valid answer), each title asked once,
        mapped onto the annotators' convention (`Task.training_label`)."""
        from .llm import BackendError
        from .llm.run import pseudo_label
        from .llm.store import StoreBusy
        from .readers import Position

        distinct = list(dict.fromkeys(titles))
        if not distinct:
            return {}
        # No CV row: the recorded backend looks a title up by its text.
        positions = [Position(title, None, 0, "") for title in distinct]
        try:
            records, rejects, counts = pseudo_label(self.nlp, positions, progress=self.progress)
        except (BackendError, StoreBusy) as error:
            raise FallbackError(
                f"LLM fallback: {llm_error_message(error)} (answers so far are kept in {self.store}: a rerun asks "
                "only for the rest)"
            ) from None
        self.counts.update({key: counts[key] for key in ("requests", "from_cache")})
        self.counts["failed"] += len(rejects)
        answers: dict[str, dict | None] = dict.fromkeys(distinct)
        for record in records:
            # In the annotators' convention, as the pseudo-labels and the benchmark's fallback rows (`llm_labels`).
            title = record["text"]
            answers[title] = {name: task.training_label(title, record[name]) for name, task in TASKS.items()}
        return answers


class RowPostprocess:
    """Adds the review flag and the LLM fallback to the output rows of `titlecat predict`, chunk by chunk.

    - `review_below` P: a `needs_review` column, true where any task still answered by the model scores
      below P (an LLM answer is not flagged: the LLM was the second opinion), false otherwise, empty for
      bad rows (their status says what is wrong).
    - `llm`: for each task of `llm_tasks`, the least confident `llm_share` of the chunk's labelled rows
      (or those scoring below `llm_below`) are sent to the LLM; its answer replaces the model's, the task's
      score is left empty (the LLM gives none) and `<task>_answered_by` says `model`, `llm`, or
      `llm_failed` (no valid answer: the model's answer stays). The share is per chunk of `--chunk-size`
      rows, i.e. of the whole file when it is smaller.
    """

    def __init__(
        self,
        review_below: float | None = None,
        llm: LLMFallback | None = None,
        llm_tasks: Sequence[str] = ("department",),
        llm_share: float | None = None,
        llm_below: float | None = None,
    ):
        check_review_below(review_below)
        if llm is not None:
            if (llm_share is None) == (llm_below is None):
                raise ValueError("--llm-fallback needs exactly one of --llm-share and --llm-below")
            if llm_share is not None and not 0.0 <= llm_share <= 1.0:
                raise ValueError(f"--llm-share must be between 0 and 1, not {llm_share}")
            if not llm_tasks:
                raise ValueError("--llm-tasks names no task")
        self.review_below = review_below
        self.llm = llm
        self.llm_tasks = list(llm_tasks) if llm is not None else []
        self.llm_share = llm_share
        self.llm_below = llm_below
        self.tasks: list[str] = []
        self.flagged = 0

    def fields(self, fields: list[str]) -> list[str]:
        """The output columns with this postprocess's columns added; checks that the pipeline has the tasks."""
        self.tasks = [field[: -len("_score")] for field in fields if field.endswith("_score")]
        missing = [task for task in self.llm_tasks if task not in self.tasks]
        if missing:
            raise ValueError(f"--llm-tasks {','.join(missing)}: the pipeline answers only {self.tasks}")
        extra = [f"{task}_answered_by" for task in self.llm_tasks]
        return fields + extra + (["needs_review"] if self.review_below is not None else [])

    def __call__(self, rows: list[dict], texts: Sequence[str]) -> list[dict]:
        """Rows of one chunk (and their checked titles, same order), changed in place and returned."""
        ok = [i for i, row in enumerate(rows) if row["status"] == "ok"]
        if self.llm is not None:
            chosen = {
                task: [
                    ok[i]
                    for i in least_confident([rows[j][f"{task}_score"] for j in ok], self.llm_share, self.llm_below)
                ]
                for task in self.llm_tasks
            }
            answers = self.llm.answer([texts[i] for indices in chosen.values() for i in indices])
            for task in self.llm_tasks:
                for i in ok:
                    rows[i][f"{task}_answered_by"] = "model"
                for i in chosen[task]:
                    answer = answers[texts[i]]
                    if answer is None:
                        rows[i][f"{task}_answered_by"] = "llm_failed"
                        continue
                    rows[i].update({task: answer[task], f"{task}_score": None, f"{task}_answered_by": "llm"})
        if self.review_below is not None:
            for i in ok:
                # The LLM's answer was the second opinion: its score is empty, so needs_review skips it.
                rows[i]["needs_review"] = needs_review(rows[i], self.tasks, self.review_below)
                self.flagged += rows[i]["needs_review"]
        return rows

    def summary(self) -> str:
        parts = []
        if self.review_below is not None:
            rows = "1 row" if self.flagged == 1 else f"{self.flagged:,} rows"
            parts.append(f"needs_review: {rows} (a model score below {self.review_below:g})")
        if self.llm is not None:
            counts = self.llm.counts
            parts.append(
                f"LLM fallback ({self.llm.backend}) for {', '.join(self.llm_tasks)}: {counts['requests']:,} requests, "
                f"{counts['from_cache']:,} answers from the store {self.llm.store}, titles without an answer: "
                f"{counts['failed']:,}"
            )
        return "; ".join(parts)


def row_postprocess(
    output_path: Path | str,
    review_below: float | None = None,
    llm_fallback: str | None = None,
    llm_share: float | None = None,
    llm_below: float | None = None,
    llm_tasks: str = "department",
    llm_store: Path | str | None = None,
    llm_overrides: dict | None = None,
    progress: bool = False,
) -> RowPostprocess | None:
    """The postprocess `titlecat predict` asked for, or None. The answer store defaults to OUT.llm_answers.jsonl."""
    if review_below is None and llm_fallback is None:
        if llm_share is not None or llm_below is not None:
            raise ValueError("--llm-share / --llm-below need --llm-fallback BACKEND")
        return None
    llm = None
    if llm_fallback is not None:
        output_path = Path(output_path)
        store = Path(llm_store) if llm_store else output_path.with_name(output_path.name + ".llm_answers.jsonl")
        overrides = {key: value for key, value in (llm_overrides or {}).items() if value is not None}
        llm = LLMFallback(llm_fallback, store, overrides, progress)
    tasks = [task.strip() for task in llm_tasks.split(",") if task.strip()]
    return RowPostprocess(review_below, llm, tasks, llm_share, llm_below)
