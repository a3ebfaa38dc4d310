"""Pseudo-label the unlabelled CV positions with the spacy-llm pipeline (configs/llm_<backend>.cfg).

The default backend `recorded` serves recorded gemini-2.0-flash answers: no
model is queried. `openai` queries any OpenAI-compatible endpoint, its key
read from the environment variable named by --api-key-env (--no-api-key for
local servers), --concurrency requests at a time. Answers are kept in an
answer store as they arrive: a rerun sends only what is missing. An unset key
variable stops the run before the first request, an endpoint that looks down
(connection errors, timeouts, 5xx on several titles in a row) within seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from spacy.util import load_config
from wasabi import msg

from titlecat.llm import BackendError
from titlecat.llm.report import RECORDED_NOTE, write_report
from titlecat.llm.run import llm_model, load_pipeline, pseudo_label
from titlecat.llm.store import StoreBusy
from titlecat.readers import DataError, read_cv_positions, write_jsonl

app = typer.Typer(add_completion=False)


@app.command()
def main(
    input_path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="linkedin-cvs-not-annotated.json")],
    output_path: Annotated[Path, typer.Argument(dir_okay=False, help="Pseudo-label JSONL to write")],
    backend: Annotated[str, typer.Option(help="Picks configs/llm_<backend>.cfg: recorded | openai")] = "recorded",
    config_path: Annotated[
        Path | None, typer.Option("--config", help="Config file instead of configs/llm_<backend>.cfg")
    ] = None,
    recorded: Annotated[Path, typer.Option(help="Recorded answers (recorded backend)")] = Path(
        "assets/gemini_synthetic.csv"
    ),
    store: Annotated[
        Path | None, typer.Option(help="Answer store JSONL [default: corpus/llm_answers/<backend>.jsonl]")
    ] = None,
    rejects: Annotated[Path, typer.Option(help="Rows without a valid answer")] = Path(
        "corpus/pseudo_label_rejects.jsonl"
    ),
    report_dir: Annotated[Path, typer.Option(help="summary.json + label_distribution.png")] = Path(
        "metrics/pseudo_labels"
    ),
    curated_dir: Annotated[
        Path | None, typer.Option(help="Folder of the curated CSVs, for the distribution plot")
    ] = None,
    compare: Annotated[
        list[Path] | None, typer.Option(help="Other backends' pseudo-label JSONL: report agreement per task")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="openai: base URL, e.g. http://127.0.0.1:8000/v1")] = None,
    model: Annotated[str | None, typer.Option(help="openai: model name")] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="openai: environment variable holding the key (never the key); '' = no key")
    ] = None,
    no_api_key: Annotated[
        bool, typer.Option("--no-api-key", help="openai: send no key (Ollama, vLLM, llama.cpp servers)")
    ] = False,
    concurrency: Annotated[int | None, typer.Option(help="openai: requests in flight [config: 8]")] = None,
    requests_per_minute: Annotated[
        float | None, typer.Option(help="openai: most requests sent per minute, 0 = no limit [config: 0]")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="openai: seconds per request")] = None,
    max_tries: Annotated[int | None, typer.Option(help="openai: tries per request on 429/5xx/timeouts")] = None,
    backoff: Annotated[float | None, typer.Option(help="openai: first backoff in seconds (doubles per retry)")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N positions (smoke tests)")] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar")] = True,
):
    config_path = config_path or Path("configs") / f"llm_{backend}.cfg"
    if not config_path.exists():
        msg.fail(f"No config {config_path} for backend {backend!r}", exits=2)
    store = store or Path("corpus") / "llm_answers" / f"{backend}.jsonl"
    try:
        config = load_config(config_path, interpolate=False)
    except (OSError, ValueError) as error:
        msg.fail(f"{config_path}: {error}", exits=1)
    overrides = {"paths.store": str(store)}
    # Backend-specific options are passed every time by project.yml: apply each only where the config has it.
    if "recorded" in config["paths"]:
        overrides["paths.recorded"] = str(recorded)
    if config["components"]["llm"]["model"].get("@llm_models") == "titlecat.OpenAICompatible.v1":
        options = {"base_url": base_url, "model": model, "api_key_env": "" if no_api_key else api_key_env}
        options |= {"timeout": timeout, "max_tries": max_tries, "backoff": backoff, "concurrency": concurrency}
        options |= {"requests_per_minute": requests_per_minute}
        overrides |= {f"components.llm.model.{key}": value for key, value in options.items() if value is not None}

    try:
        positions, skipped = read_cv_positions(input_path)
        nlp = load_pipeline(config_path, overrides)
    except (BackendError, DataError, OSError, ValueError) as error:
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
    except (BackendError, StoreBusy) as error:
        msg.fail(f"{error} (answers so far are kept in {store}: a rerun asks only for the rest)", exits=1)

    write_jsonl(output_path, records)
    write_jsonl(rejects, rejected)
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
