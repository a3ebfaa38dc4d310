"""Pseudo-label the unlabelled CV positions with the spacy-llm pipeline (configs/llm_<backend>.cfg).

The default backend `recorded` serves recorded gemini-2.0-flash answers: no
model is queried. `openai` queries any OpenAI-compatible endpoint, its key
read from the environment variable named by --api-key-env (--no-api-key for
local servers), --concurrency requests at a time. Answers are kept in an
answer store as they arrive: a rerun sends only what is missing. An unset key
variable stops the run before the first request, an endpoint that looks down
(connection errors, timeouts, 5xx on several titles in a row) within seconds.
`spacy project run pseudo-label` passes `--hints project`: messages then name
the project vars (--vars.llm_*) instead of this script's flags.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from spacy.util import load_config
from wasabi import msg

from titlecat.llm import BackendError, MissingKey
from titlecat.llm.report import RECORDED_NOTE, write_report
from titlecat.llm.run import llm_model, load_pipeline, pseudo_label
from titlecat.llm.store import StoreBusy
from titlecat.readers import DataError, read_cv_positions, read_jsonl, write_jsonl

app = typer.Typer(add_completion=False)

# How a reader sets each model setting: this script's flag, or the var of `spacy project run pseudo-label`.
SETTINGS = {
    "script": {
        "backend": "--backend",
        "base_url": "--base-url",
        "model": "--model",
        "api_key_env": "--api-key-env NAME",
        "no_key": "--no-api-key",
        "timeout": "--timeout SECONDS",
        "limit": "--limit N",
    },
    "project": {
        "backend": "--vars.llm_backend",
        "base_url": "--vars.llm_base_url",
        "model": "--vars.llm_model",
        "api_key_env": "--vars.llm_api_key_env NAME",
        "no_key": '--vars.llm_api_key_env ""',
        "timeout": "--vars.llm_timeout SECONDS",
        "limit": "--vars.llm_limit N",
    },
}


def explain(error: BackendError, hints: str) -> str:
    """The error, with the fix in the words of the reader's command line (flags or project vars)."""
    names = SETTINGS[hints]
    if isinstance(error, MissingKey):
        return (
            f"{error.problem}. Export it, name the variable that holds the key with {names['api_key_env']}, or "
            f"send no key to a server that needs none (Ollama, vLLM, llama.cpp) with {names['no_key']}"
        )
    settings = [names[setting] for setting in error.settings if setting in names]
    return f"{error} [set with {', '.join(settings)}]" if settings else str(error)


def previous_run(path: Path) -> str | None:
    """What an existing pseudo-label file holds ('1,886 from recorded:gemini-2.0-flash'), None if nothing."""
    if not path.exists():
        return None
    try:
        backends = Counter(record.get("backend", "?") for _, record in read_jsonl(path))
    except (DataError, OSError, UnicodeDecodeError):
        return "an unreadable file"
    return ", ".join(f"{n:,} from {backend}" for backend, n in backends.most_common()) or "no rows"


@app.command()
def main(
    input_path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="linkedin-cvs-not-annotated.json")],
    output_path: Annotated[
        Path,
        typer.Argument(dir_okay=False, help="Pseudo-label JSONL (project: corpus/pseudo_labels/<backend>.jsonl)"),
    ],
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
    rejects: Annotated[
        Path | None,
        typer.Option(help="Rows without a valid answer [default: corpus/pseudo_label_rejects/<backend>.jsonl]"),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(help="summary.json + label_distribution.png [default: metrics/pseudo_labels/<backend>]"),
    ] = None,
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
    timeout: Annotated[
        float | None, typer.Option(help="openai: seconds to wait for an answer (slow local models: more) [config: 30]")
    ] = None,
    max_tries: Annotated[int | None, typer.Option(help="openai: tries per request on 429/5xx/timeouts")] = None,
    backoff: Annotated[float | None, typer.Option(help="openai: first backoff in seconds (doubles per retry)")] = None,
    limit: Annotated[int, typer.Option(help="Only the first N positions (a smoke test); 0 = all")] = 0,
    progress: Annotated[bool, typer.Option(help="Show the progress bar")] = True,
    hints: Annotated[
        str, typer.Option(hidden=True, help="How messages name the settings: script (flags) or project (vars)")
    ] = "script",
):
    if hints not in SETTINGS:
        msg.fail(f"--hints {hints!r}: script or project", exits=2)
    if limit < 0:
        msg.fail(f"{SETTINGS[hints]['limit'].split()[0]} {limit}: 0 (all) or more", exits=2)
    config_path = config_path or Path("configs") / f"llm_{backend}.cfg"
    if not config_path.exists():
        msg.fail(f"No config {config_path} for backend {backend!r} (set with {SETTINGS[hints]['backend']})", exits=2)
    store = store or Path("corpus") / "llm_answers" / f"{backend}.jsonl"
    rejects = rejects or Path("corpus") / "pseudo_label_rejects" / f"{backend}.jsonl"
    report_dir = report_dir or Path("metrics") / "pseudo_labels" / backend
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
    except BackendError as error:
        msg.fail(explain(error, hints), exits=1)
    except (DataError, OSError, ValueError) as error:
        msg.fail(str(error), exits=1)
    if limit:
        positions = positions[:limit]
    backend_name = llm_model(nlp).backend
    limited = f" (the first {limit:,}: {SETTINGS[hints]['limit'].split()[0]} {limit})" if limit else ""
    msg.info(f"{len(positions)} positions{limited}, backend {backend_name}, answer store {store}")
    if backend_name.startswith("recorded:"):
        msg.warn(RECORDED_NOTE)

    try:
        records, rejected, counts = pseudo_label(nlp, positions, progress=progress)
    except KeyboardInterrupt:
        msg.warn(f"Interrupted: every answer so far is in {store}; rerun to continue with the rest")
        sys.exit(130)
    except (BackendError, StoreBusy) as error:
        reason = explain(error, hints) if isinstance(error, BackendError) else str(error)
        msg.fail(f"{reason} (answers so far are kept in {store}: a rerun asks only for the rest)", exits=1)

    before = previous_run(output_path)
    write_jsonl(output_path, records)
    after = previous_run(output_path)
    if before is not None and before != after:
        # Never silently: the augment and train steps that read this file will see the new pseudo-labels.
        msg.warn(f"{output_path} held {before}; it now holds {after}")
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
