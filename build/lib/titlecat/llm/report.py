"""Report of a pseudo-labelling run: label distributions against the curated CSVs, counts, backend agreement."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..labels import SENIORITY_ORDINAL, TASKS
from ..readers import read_curated_csv, read_jsonl

RECORDED_NOTE = (
    "The recorded backend serves answers recorded from gemini-2.0-flash (gemini_synthetic.csv): "
    "no model was queried in this run."
)


def distribution(labels: list[str], label_set: tuple[str, ...]) -> dict[str, dict[str, float]]:
    counts = Counter(labels)
    total = sum(counts.values()) or 1
    return {label: {"count": counts[label], "share": round(counts[label] / total, 4)} for label in label_set}


def curated_distributions(curated_dir: Path | str) -> dict[str, dict]:
    out = {}
    for name, task in TASKS.items():
        path = Path(curated_dir) / task.curated_asset
        if path.exists():
            examples, _ = read_curated_csv(path, task)
            out[name] = distribution([e.label for e in examples], task.labels)
    return out


def agreement(records_a: list[dict], records_b: list[dict]) -> dict[str, dict]:
    """Per task: rows both label, share of equal labels, Cohen's kappa; for seniority also the mean ordinal gap."""
    from sklearn.metrics import cohen_kappa_score

    b_by_row = {r["row_id"]: r for r in records_b}
    common = [(a, b_by_row[a["row_id"]]) for a in records_a if a["row_id"] in b_by_row]
    out = {}
    for name, task in TASKS.items():
        pairs = [(a[name], b[name]) for a, b in common]
        result = {"rows": len(pairs)}
        if pairs:
            left, right = zip(*pairs, strict=True)
            result["agreement"] = round(sum(x == y for x, y in pairs) / len(pairs), 4)
            result["cohen_kappa"] = round(float(cohen_kappa_score(left, right, labels=list(task.labels))), 4)
            if task.ordinal:
                gaps = [abs(SENIORITY_ORDINAL[x] - SENIORITY_ORDINAL[y]) for x, y in pairs]
                result["mean_abs_ordinal_gap"] = round(sum(gaps) / len(gaps), 4)
        out[name] = result
    return out


def plot_distributions(pseudo: dict[str, dict], curated: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(14, 5))
    for ax, (name, task) in zip(axes, TASKS.items(), strict=True):
        xs = range(len(task.labels))
        width = 0.4
        ax.bar([x - width / 2 for x in xs], [pseudo[name][lab]["share"] for lab in task.labels], width, label="pseudo")
        if name in curated:
            shares = [curated[name][lab]["share"] for lab in task.labels]
            ax.bar([x + width / 2 for x in xs], shares, width, label=f"curated {task.curated_asset}")
        ax.set_xticks(list(xs), task.labels, rotation=45, ha="right")
        ax.set_ylabel("share of titles")
        ax.set_title(name)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    report_dir: Path | str,
    records: list[dict],
    counts: dict,
    *,
    backend: str,
    positions: int,
    empty_titles: int,
    curated_dir: Path | str | None = None,
    compare: list[Path] | None = None,
) -> dict:
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    pseudo = {name: distribution([r[name] for r in records], task.labels) for name, task in TASKS.items()}
    curated = curated_distributions(curated_dir) if curated_dir else {}
    summary: dict = {
        "backend": backend,
        "positions": positions,
        "empty_titles_skipped": empty_titles,
        **{key: int(value) for key, value in counts.items()},
    }
    if backend.startswith("recorded:"):
        summary["note"] = RECORDED_NOTE
    summary["distribution"] = {"pseudo": pseudo, "curated": curated}
    if compare:
        summary["agreement"] = {}
        for other in compare:
            other_records = [record for _, record in read_jsonl(other)]
            backends = sorted({r.get("backend", "?") for r in other_records})
            summary["agreement"][str(other)] = {"backends": backends, **agreement(records, other_records)}
    plot_distributions(pseudo, curated, report_dir / "label_distribution.png", f"Pseudo-labels ({backend})")
    (report_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary
