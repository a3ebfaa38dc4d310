"""Fail fast, before training, on a missing GPU or an unreachable transformer.

python scripts/preflight.py --config trf --gpu-id -1 --transformer xlm-roberta-base
"""

from __future__ import annotations

import typer
from wasabi import msg

from titlecat.preflight import PreflightError, preflight

TRUTH = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def main(
    config: str = typer.Option("cpu", help="Training config: a name in configs/ (cpu, trf) or a path"),
    gpu_id: int = typer.Option(-1, help="vars.gpu_id: -1 for CPU"),
    transformer: str | None = typer.Option(None, help="vars.transformer: Hub id or local folder (trf only)"),
    # A value, not a flag, so that project.yml can pass `--mixed-precision ${vars.mixed_precision}`.
    mixed_precision: str = typer.Option("false", help="true/false: mixed precision in training (GPU only)"),
) -> None:
    if mixed_precision.lower() not in TRUTH:
        msg.fail("--mixed-precision must be true or false", f"got {mixed_precision!r}", exits=1)
    try:
        checked = preflight(config, gpu_id, transformer, TRUTH[mixed_precision.lower()])
    except PreflightError as error:
        msg.fail("Preflight failed", str(error), exits=1)
    msg.good(f"Preflight ok for config {config!r}", "; ".join(checked))


if __name__ == "__main__":
    typer.run(main)
