"""Pseudo-label the unlabelled CV positions with the spacy-llm pipeline (configs/llm_<backend>.cfg).

The default backend `recorded` serves recorded gemini-2.0-flash answers: no
model is queried. `openai` queries any OpenAI-compatible endpoint, its key
read from the environment variable named by --api-key-env. Answers are kept
in an answer store as they arrive: a rerun sends only what is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from wasabi import msg

from titlecat.llm import BackendError
from titlecat.llm.report import RECORDED_NOTE, write_report
from titlecat.llm.run import llm_model, load_pipeline, pseudo_label, write_jsonl_atomic
from titlecat.readers import DataError, read_cv_positions

app = typer.Typer(add_completion=False)


@app.command()
def main(
    input_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="linkedin-cvs-not-annotated.json"),
    output_path: Path = typer.Argument(..., dir_okay=False, help="Pseudo-label JSONL to write"),
    backend: str = typer.Option("recorded", help="Picks configs/llm_<backend>.cfg: recorded | openai"),
    config_path: Path = typer.Option(None, "--config", help="Config file instead of configs/llm_<backend>.cfg"),
    recorded: Path = typer.Option(Path("assets/gemini_synthetic.csv"), help="Recorded answers (recorded backend)"),
    store: Path = typer.Option(None, help="Answer store JSONL [default: corpus/llm_answers/<backend>.jsonl]"),
    rejects: Path = typer.Option(Path("corpus/pseudo_label_rejects.jsonl"), help="Rows without a valid answer"),
    report_dir: Path = typer.Option(Path("metrics/pseudo_labels"), help="summary.json + label_distribution.png"),
    curated_dir: Path = typer.Option(None, help="Folder of the curated CSVs, for the distribution plot"),
    compare: list[Path] = typer.Option(None, help="Other backends' pseudo-label JSONL: report agreement per task"),
    base_url: str = typer.Option(None, help="openai: base URL, e.g. http://127.0.0.1:8000/v1"),
    model: str = typer.Option(None, help="openai: model name"),
    api_key_env: str = typer.Option(None, help="openai: environment variable holding the key (never the key)"),
    timeout: float = typer.Option(None, help="openai: seconds per request"),
    max_tries: int = typer.Option(None, help="openai: tries per request on 429/5xx/timeouts"),
    backoff: float = typer.Option(None, help="openai: first backoff in seconds (doubles per retry)"),
    limit: int = typer.Option(None, help="Only the first N positions (smoke tests)"),
    progress: bool = typer.Option(True, help="Show the progress bar"),
):
    config_path = config_path or Path("configs") / f"llm_{backend}.cfg"
    if not config_path.exists():
        msg.fail(f"No config {config_path} for backend {backend!r}", exits=2)
    store = store or Path("corpus") / "llm_answers" / f"{backend}.jsonl"
    overrides = {"paths.store": str(store)}
    if backend == "recorded":
        overrides["paths.recorded"] = str(recorded)
    options = {"base_url": base_url, "model": model, "api_key_env": api_key_env, "timeout": timeout}
    options |= {"max_tries": max_tries, "backoff": backoff}
    overrides |= {f"components.llm.model.{key}": value for key, value in options.items() if value is not None}

    try:
        positions, skipped = read_cv_positions(input_path)
        nlp = load_pipeline(config_path, overrides)
    except (DataError, OSError, ValueError) as error:
        msg.fail(str(error), exits=1)
    if limit is not None:
        positions = positions[:limit]
    backend_name = llm_model(nlp).backend
    msg.info(f"{len(positions)} positions, backend {backend_name}, answer store {store}")
    if backend_name.startswith("recorded:"):
        msg.warn(RECORDED_NOTE)

    try:
        records, rejected, counts = pseudo_label(nlp, positions, progress=progress)
    except KeyboardInterrupt:
        msg.warn(f"Interrupted: every answer so far is in {store}; rerun to continue with the rest")
        sys.exit(130)
    except BackendError as error:
        msg.fail(f"{error} (answers so far are kept in {store})", exits=1)

    write_jsonl_atomic(output_path, records)
    rejects.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(rejects, rejected)
    write_report(
        report_dir,
        records,
        counts,
        backend=backend_name,
        positions=len(positions),
        empty_titles=len(skipped),
        curated_dir=curated_dir,
        compare=compare or None,
    )
    line = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in counts.items())
    msg.good(f"{output_path}: {len(records)} pseudo-labelled positions ({line}); rejects in {rejects}")
    if skipped:
        msg.info(f"{len(skipped)} positions with an empty title skipped")


if __name__ == "__main__":
    app()
