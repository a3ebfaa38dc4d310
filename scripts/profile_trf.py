"""Where a trf training step and `nlp.pipe` spend their time, and how fast a trf config trains and predicts.

Runs the config's own training pieces (corpus, batcher, optimizer, `nlp.update`, `nlp.evaluate`) on a
local random-weight model: the tiny XLM-R of the tests or one of xlm-roberta-base's exact shape.

  profile    cProfile of training steps, one dev evaluation and prediction, split into model compute
             (torch forward and backward, optimizer update) and per-batch CPU overhead
  benchmark  time per training step and titles/s of several configs (e.g. a git revision's config
             against the working tree's), no profiler, as a table with ratios
  quality    dev macro-F1 of `spacy train` on the tiny model for each config, at the same steps budget
  gpu        on a GPU: seconds per training step with the GPU's utilisation (nvidia-smi), dev scoring,
             and `titlecat predict` titles/s by batch size, chunk size and precision, with a CPU profile

A config is a path, or REV:PATH for that file at a git revision (e.g. 2078805:configs/trf.cfg).
"""

from __future__ import annotations

import cProfile
import itertools
import json
import os
import platform
import pstats
import random
import subprocess
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import typer
from spacy.schemas import ConfigSchemaTraining
from spacy.training.initialize import init_nlp
from spacy.util import load_config_from_str, registry, resolve_dot_names

from titlecat.corpus import read_docbin
from titlecat.labels import get_task
from titlecat.metrics import predict_labels
from titlecat.preflight import transformer_block
from titlecat.tiny_xlmr import build_tiny_xlmr, build_xlmr_base_shape

app = typer.Typer(help=__doc__, no_args_is_help=True)

# cProfile keys (file suffix, function name) whose cumulative time is model compute. They never nest
# inside one another, so their sum is the compute time; the rest of a phase is overhead.
COMPUTE = {
    "torch forward": ("torch/nn/modules/module.py", "_call_impl"),
    "torch backward": ("torch/autograd/__init__.py", "backward"),
    "optimizer update (thinc Adam, torch<->numpy)": ("thinc/model.py", "finish_update"),
}
# Overhead that spaCy and spacy-transformers spend per batch, named where the profile shows it.
OVERHEAD = {
    "wordpiece tokenization (HF fast tokenizer)": (
        "spacy_transformers/layers/transformer_model.py",
        "huggingface_tokenize",
    ),
    "wordpiece alignment": ("spacy_transformers/align.py", "get_alignment_via_offset_mapping"),
    "span getter": ("spacy_transformers/span_getters.py", "get_doc_spans"),
    "textcat + listener (thinc)": ("spacy/pipeline/textcat.py", "predict"),
    "scoring (Scorer.score_cats)": ("spacy/scorer.py", "score_cats"),
    "tokenizing titles into Docs (spaCy)": ("spacy/language.py", "_ensure_doc"),
    "corpus reading + batching": ("spacy/training/batchers.py", "minibatch_by_words"),
}


def config_text(spec: str) -> str:
    """The text of a config: a file, or REV:PATH read from git."""
    if ":" in spec and not Path(spec).exists():
        return subprocess.run(["git", "show", spec], capture_output=True, text=True, check=True).stdout
    return Path(spec).read_text()


def model_folder(shape: str, cache: Path, task_name: str) -> Path:
    """Build (once) the tiny or the real-shape random model, with a tokenizer trained on curated titles."""
    folder = cache / f"xlmr-{shape}"
    if (folder / "config.json").exists():
        return folder
    titles, _ = read_docbin(Path("corpus") / task_name / "train.spacy", get_task(task_name))
    typer.echo(f"building the {shape} model in {folder}")
    if shape == "tiny":
        return build_tiny_xlmr(folder, titles)
    return build_xlmr_base_shape(folder, titles)


class Run:
    """A config initialised on a model: the pipeline, its optimizer, batcher and corpora, as `spacy train` has them."""

    def __init__(self, spec: str, model: Path, task_name: str, seed: int = 0, gpu_id: int = -1, overrides=None):
        text = config_text(spec)
        overrides = {
            "paths.train": f"corpus/{task_name}/train.spacy",
            "paths.dev": f"corpus/{task_name}/dev.spacy",
            "system.seed": seed,
            f"{transformer_block(text)}.name": str(model),
            **(overrides or {}),
        }
        config = load_config_from_str(text, overrides=overrides, interpolate=False)
        self.name = spec
        self.nlp = init_nlp(config, use_gpu=gpu_id)  # on a GPU: the config's gpu_allocator, as spacy train
        resolved = config.interpolate()
        training = registry.resolve(resolved["training"], schema=ConfigSchemaTraining)
        train_corpus, dev_corpus = resolve_dot_names(resolved, [training["train_corpus"], training["dev_corpus"]])
        self.optimizer, self.dropout = training["optimizer"], training["dropout"]
        examples = list(train_corpus(self.nlp))
        random.Random(seed).shuffle(examples)
        self.batcher, self.examples = training["batcher"], examples
        self.batches = iter(self.batcher(examples))
        self.dev = list(dev_corpus(self.nlp))
        self.texts = [eg.reference.text for eg in examples]

    def step(self) -> int:
        """One training step as spaCy's loop runs it; returns the titles in the batch."""
        batch = next(self.batches, None)
        if batch is None:  # a new epoch
            self.batches = iter(self.batcher(self.examples))
            batch = next(self.batches)
        self.nlp.update(batch, drop=self.dropout, sgd=self.optimizer)
        self.optimizer.step_schedules()
        return len(batch)

    def evaluate(self, n: int | None = None) -> dict:
        return self.nlp.evaluate(self.dev[:n])  # batch size: the config's nlp.batch_size, as in training

    def predict(self, n: int) -> list[str]:
        return predict_labels(self.nlp, self.texts[:n])  # what evaluate and benchmark run


def timed(function, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def breakdown(profile: cProfile.Profile, total: float) -> list[tuple[str, str, float]]:
    """(kind, name, seconds) of the compute and named overhead parts of a profiled phase, then the rest."""
    stats = pstats.Stats(profile).stats  # {(file, line, function): (cc, nc, tottime, cumtime, callers)}
    rows = []
    for kind, parts in (("compute", COMPUTE), ("overhead", OVERHEAD)):
        for name, (suffix, function) in parts.items():
            seconds = sum(v[3] for (f, _, fn), v in stats.items() if fn == function and f.endswith(suffix))
            if seconds > 0:
                rows.append((kind, name, seconds))
    compute = sum(s for kind, _, s in rows if kind == "compute")
    named = sum(s for kind, _, s in rows if kind == "overhead")
    rows.append(("overhead", "other (spaCy/thinc/Python glue)", max(total - compute - named, 0.0)))
    return rows


def top_functions(profile: cProfile.Profile, n: int = 12) -> list[str]:
    stats = pstats.Stats(profile).stats
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:n]
    return [f"| `{Path(f).name}:{line} {fn}` | {v[2]:.2f} | {v[1]:,} |" for (f, line, fn), v in ranked]


def machine() -> str:
    import torch

    return f"{platform.machine()} CPU, {len(os.sched_getaffinity(0))} cores, torch threads {torch.get_num_threads()}"


@app.command()
def profile(
    config: str = typer.Option("configs/trf.cfg", help="PATH or REV:PATH"),
    shape: str = typer.Option("tiny", help="tiny or base (xlm-roberta-base's shape, random weights)"),
    task_name: str = typer.Option("department", "--task"),
    steps: int = typer.Option(3, help="Profiled training steps, after one warm-up step"),
    predict_titles: int = typer.Option(1000),
    cache: Path = typer.Option(Path(tempfile.gettempdir()) / "titlecat-models"),
    output: Path = typer.Option(Path("metrics/trf_profile.md")),
):
    """cProfile a few training steps, one dev evaluation and prediction; append the breakdown to OUTPUT."""
    run = Run(config, model_folder(shape, cache, task_name), task_name)
    run.step()  # warm-up: lazy initialisation is no per-step cost
    phases = []
    for phase, function, count in (
        ("training step", lambda: sum(run.step() for _ in range(steps)), steps),
        ("dev evaluation", lambda: len(run.evaluate()) and len(run.dev), 1),
        ("predict", lambda: len(run.predict(predict_titles)), 1),
    ):
        profiler = cProfile.Profile()
        wall = time.perf_counter()
        titles = profiler.runcall(function)
        wall = time.perf_counter() - wall
        phases.append((phase, count, titles, wall, breakdown(profiler, wall), top_functions(profiler)))
        typer.echo(f"✔ {phase}: {wall:.2f} s, {titles} titles")
    lines = [
        f"## {config}, {shape} model, {task_name} ({date.today()}, {machine()}, under cProfile)",
        "",
    ]
    for phase, count, titles, wall, rows, top in phases:
        per = f", {wall / count:.3f} s per step, {titles / count:.0f} titles per step" if count > 1 else ""
        lines += [
            f"### {phase}: {titles} titles in {wall:.2f} s{per}",
            "",
            "| part | kind | seconds | share |",
            "|---|---|---:|---:|",
            *(f"| {name} | {kind} | {s:.3f} | {s / wall:.0%} |" for kind, name, s in rows),
            "",
            "Top functions by own time:",
            "",
            "| function | own s | calls |",
            "|---|---:|---:|",
            *top,
            "",
        ]
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a") as file:
        file.write("\n".join(lines) + "\n")
    typer.echo(f"✔ {output}")


def write_titles_file(path: Path, task_name: str, n: int) -> Path:
    """n curated training titles (repeated as needed), one a line: the input of `titlecat predict`."""
    titles, _ = read_docbin(Path("corpus") / task_name / "train.spacy", get_task(task_name))
    path.write_text("\n".join((titles * (n // len(titles) + 1))[:n]) + "\n", encoding="utf-8")
    return path


def predict_file_speed(pipeline: Path, titles_file: Path, repeats: int = 3) -> dict:
    """Titles/s (wall and process CPU) of `titlecat predict` on the file, pipeline loaded from disk as it does:
    the fastest of `repeats` runs (a busy moment of the machine slows one run, never speeds one up)."""
    from titlecat.predict import PredictOptions, load_pipeline, predict_file

    nlp = load_pipeline(pipeline)
    n = sum(1 for _ in titles_file.open(encoding="utf-8"))
    runs = [
        timed(
            lambda: predict_file(nlp, titles_file, titles_file.with_suffix(".csv"), PredictOptions.of(progress=False))
        )[1:]
        for _ in range(repeats)
    ]
    wall, cpu = min(runs)
    return {"titles": n, "batch_size": nlp.batch_size, "titles_per_s": n / wall, "titles_per_cpu_s": n / cpu}


def file_speed_lines(speeds: dict, n: int) -> list[str]:
    if not speeds:
        return []
    cpu = speeds["CPU pipeline"]["titles_per_s"]
    return [
        "",
        f"`titlecat predict` (one process, each pipeline's own batch size) on a file of {n:,} training titles, each "
        "pipeline loaded from disk; × = ratio to the CPU pipeline on the same file in the same run:",
        "",
        "| pipeline | batch size | titles/s (wall, best of 3) | titles/CPU s | × CPU pipeline |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| `{name}` | {speed['batch_size']:,} | {speed['titles_per_s']:,.0f} | {speed['titles_per_cpu_s']:,.0f} "
            f"| {speed['titles_per_s'] / cpu:.2f} |"
            for name, speed in speeds.items()
        ),
        "",
        "Training steps, `nlp.pipe` and `nlp.evaluate`:",
    ]


@app.command()
def benchmark(
    configs: list[str] = typer.Argument(..., help="PATH or REV:PATH, the first one is the baseline"),
    shape: str = typer.Option("base"),
    task_name: str = typer.Option("department", "--task"),
    steps: int = typer.Option(2, help="Timed training steps, after one warm-up step"),
    predict_titles: int = typer.Option(500),
    eval_titles: int = typer.Option(300, help="Dev titles scored with nlp.evaluate, as training does"),
    file_titles: int = typer.Option(0, help="If > 0, also time `titlecat predict` on a file of this many titles"),
    cpu_pipeline: Path = typer.Option(
        Path("training/cpu/department/base/model-best"), help="Timed on the same file, for the ratio"
    ),
    torch_threads: int = typer.Option(
        0, help="If > 0, torch's threads: 1 keeps spin-waiting threads out of the CPU time on a busy machine"
    ),
    cache: Path = typer.Option(Path(tempfile.gettempdir()) / "titlecat-models"),
    output: Path = typer.Option(Path("metrics/trf_benchmark.md")),
):
    """Seconds per training step, training and prediction titles/s of each config (no profiler)."""
    if torch_threads > 0:
        import torch

        torch.set_num_threads(torch_threads)
    model = model_folder(shape, cache, task_name)
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="titlecat-trf-speed-"))
    file_speeds = {}
    if file_titles:
        titles_file = write_titles_file(scratch / "titles.txt", task_name, file_titles)
        file_speeds["CPU pipeline"] = predict_file_speed(cpu_pipeline, titles_file)
    for spec in configs:
        run = Run(spec, model, task_name)
        run.step()
        titles, wall, cpu = timed(lambda: sum(run.step() for _ in range(steps)))  # noqa: B023
        predicted, predict_wall, predict_cpu = timed(run.predict, predict_titles)
        _, eval_wall, eval_cpu = timed(run.evaluate, eval_titles)
        n_eval = min(eval_titles, len(run.dev))
        if file_titles:
            folder = scratch / f"pipeline-{len(rows)}"
            run.nlp.to_disk(folder)
            file_speeds[spec] = predict_file_speed(folder, titles_file)
        rows.append(
            {
                "config": spec,
                "nlp_batch_size": run.nlp.batch_size,
                "titles_per_step": titles / steps,
                "step_wall_s": wall / steps,
                "step_cpu_s": cpu / steps,
                "train_titles_per_cpu_s": titles / cpu,
                "train_titles_per_s": titles / wall,
                "predict_titles_per_cpu_s": len(predicted) / predict_cpu,
                "predict_titles_per_s": len(predicted) / predict_wall,
                "eval_titles_per_cpu_s": n_eval / eval_cpu,
                "eval_titles_per_s": n_eval / eval_wall,
            }
        )
        typer.echo(f"✔ {spec}: {rows[-1]}")
    base = rows[0]
    lines = [
        f"# trf speed: {shape} model, {task_name} ({date.today()}, {machine()})",
        *file_speed_lines(file_speeds, file_titles),
        "",
        f"{steps} timed training steps after one warm-up step; prediction of {predict_titles} training titles "
        "with `predict_labels` (nlp.pipe, the config's nlp.batch_size), as evaluate and benchmark run it; "
        f"`nlp.evaluate` of {eval_titles} dev titles, as training scores dev. Speeds are titles per second of "
        "process CPU time (all threads), which other processes on the machine disturb less than wall time; "
        "wall time in brackets. × = ratio to the first row.",
        "",
        "| config | titles/step | CPU s/step (wall) | train titles/CPU s | × | predict titles/CPU s (wall) | × "
        "| dev eval titles/CPU s (wall) | × |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = {key: row[key] / base[key] for key in row if key.endswith("per_cpu_s")}
        lines.append(
            f"| `{row['config']}` | {row['titles_per_step']:.0f} | {row['step_cpu_s']:.2f} ({row['step_wall_s']:.2f}) "
            f"| {row['train_titles_per_cpu_s']:.2f} | {ratio['train_titles_per_cpu_s']:.2f} "
            f"| {row['predict_titles_per_cpu_s']:.1f} ({row['predict_titles_per_s']:.1f}) "
            f"| {ratio['predict_titles_per_cpu_s']:.2f} "
            f"| {row['eval_titles_per_cpu_s']:.1f} ({row['eval_titles_per_s']:.1f}) "
            f"| {ratio['eval_titles_per_cpu_s']:.2f} |"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    output.with_suffix(".json").write_text(
        json.dumps({"machine": machine(), "rows": rows, "predict_file": file_speeds}, indent=2) + "\n"
    )
    typer.echo(f"✔ {output}")


@app.command()
def quality(
    configs: list[str] = typer.Argument(..., help="PATH or REV:PATH"),
    max_steps: int = typer.Option(200),
    eval_frequency: int = typer.Option(50),
    learn_rate: float = typer.Option(
        0.0,
        help="If > 0, the peak learning rate of every config (the tiny model "
        "barely moves at a transformer's usual 5e-5 to 1e-4)",
    ),
    task_name: str = typer.Option("department", "--task"),
    cache: Path = typer.Option(Path(tempfile.gettempdir()) / "titlecat-models"),
    output: Path = typer.Option(Path("metrics/trf_quality.md")),
):
    """Best dev macro-F1 of `spacy train` with the tiny model for each config, at the same steps budget."""
    from spacy.cli.train import train

    model = model_folder("tiny", cache, task_name)
    lines = [
        f"# trf dev scores: tiny model, {task_name}, {max_steps} steps, eval every {eval_frequency}, "
        f"peak learning rate {learn_rate or 'of each config'} "
        f"({date.today()}, {machine()})",
        "",
        "| config | best dev macro-F1 | titles/step | titles seen | train s |",
        "|---|---:|---:|---:|---:|",
    ]
    for spec in configs:
        with tempfile.TemporaryDirectory() as folder:
            config_path = Path(folder) / "config.cfg"
            config_path.write_text(config_text(spec))
            overrides = {
                "paths.train": f"corpus/{task_name}/train.spacy",
                "paths.dev": f"corpus/{task_name}/dev.spacy",
                f"{transformer_block(config_text(spec))}.name": str(model),
                "training.max_steps": max_steps,
                "training.max_epochs": 0,
                "training.patience": 0,
                "training.eval_frequency": eval_frequency,
                "training.logger": {"@loggers": "spacy.ConsoleLogger.v1", "progress_bar": False},
            }
            if learn_rate > 0:
                overrides["training.optimizer.learn_rate.initial_rate"] = learn_rate
            start = time.perf_counter()
            train(config_path, Path(folder) / "out", use_gpu=-1, overrides=overrides)
            seconds = time.perf_counter() - start
            meta = json.loads((Path(folder) / "out" / "model-best" / "meta.json").read_text())
        f1 = meta["performance"]["cats_macro_f"]
        batches = Run(spec, model, task_name).batches
        per_step = sum(len(next(batches)) for _ in range(20)) / 20
        lines.append(f"| `{spec}` | {f1:.3f} | {per_step:.0f} | {per_step * max_steps:,.0f} | {seconds:.0f} |")
        typer.echo(lines[-1])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    typer.echo(f"✔ {output}")


class GpuSampler:
    """nvidia-smi's utilisation (%) and memory (MiB) of one GPU every `interval_ms`, read in a thread."""

    def __init__(self, gpu_id: int, interval_ms: int = 100):
        self.samples: list[tuple[float, float, float]] = []  # (perf_counter, utilisation, memory)
        self.process = None
        if gpu_id < 0:
            return
        query = ["nvidia-smi", "-i", str(gpu_id), "--query-gpu=utilization.gpu,memory.used"]
        self.process = subprocess.Popen(
            [*query, "--format=csv,noheader,nounits", "-lms", str(interval_ms)], stdout=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                utilisation, memory = (float(value) for value in line.split(","))
            except ValueError:
                continue
            self.samples.append((time.perf_counter(), utilisation, memory))

    def window(self, start: float, end: float) -> dict:
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        if not inside:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_max_mib": None}
        return {
            "gpu_util_mean": sum(s[1] for s in inside) / len(inside),
            "gpu_util_max": max(s[1] for s in inside),
            "gpu_mem_max_mib": max(s[2] for s in inside),
        }

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()


def synchronize(gpu_id: int) -> None:
    """Wait for the GPU's queued work, so that a timer's end counts it."""
    if gpu_id >= 0:
        import torch

        torch.cuda.synchronize()


def measured(sampler: GpuSampler, gpu_id: int, function, *args):
    """function(*args) timed to the end of its GPU work: (result, wall s, process CPU s, utilisation window)."""
    synchronize(gpu_id)
    start = time.perf_counter()
    result, _, cpu = timed(function, *args)
    synchronize(gpu_id)
    end = time.perf_counter()
    time.sleep(0.3)  # the sampler's last lines of the window
    return result, end - start, cpu, sampler.window(start, end)


def number(value: float | None, spec: str, unit: str = "") -> str:
    return "–" if value is None else format(value, spec) + unit


def utilisation(window: dict) -> str:
    if window["gpu_util_mean"] is None:
        return "–"
    return f"{window['gpu_util_mean']:.0f}% ({window['gpu_util_max']:.0f}%)"


def compile_options(entry: str) -> dict:
    """`--compile` entry -> the config's torch_compile: none, a torch.compile backend or a mode."""
    if entry == "none":
        return {}
    return {"backend": entry} if entry in ("eager", "aot_eager", "cudagraphs") else {"mode": entry}


@app.command()
def gpu(
    config: str = typer.Option("configs/trf.cfg", help="PATH or REV:PATH"),
    shape: str = typer.Option("base", help="base (xlm-roberta-base's shape, random weights) or tiny"),
    task_name: str = typer.Option("department", "--task"),
    gpu_id: int = typer.Option(0, help="-1: a dry run on CPU (no utilisation, no mixed precision)"),
    warmup_steps: int = typer.Option(10, help="Untimed training steps first (CUDA kernels, allocator)"),
    steps: int = typer.Option(100, help="Timed training steps per batch size"),
    train_batch_sizes: str = typer.Option("1500", help="Comma-separated batcher sizes (padded spaCy tokens)"),
    adam: str = typer.Option(
        "torch,thinc", help="Comma-separated Adam steps to time: torch (torch_adam = true, the config's) and thinc"
    ),
    compile_modes: str = typer.Option(
        "none",
        "--compile",
        help="Comma-separated encoder compilations to time: none (the config's), a torch.compile mode "
        "(reduce-overhead: CUDA graphs; default) or backend (aot_eager, for a dry run); each but none with "
        "static_shapes = true",
    ),
    profile_steps: int = typer.Option(20, help="Training steps under cProfile (0: none)"),
    file_titles: int = typer.Option(40000, help="Titles in the file that `titlecat predict` labels"),
    batch_sizes: str = typer.Option("1000,4000", help="Comma-separated `titlecat predict --batch-size` values"),
    max_batch_items: str = typer.Option("8192,32768", help="Comma-separated padded wordpieces per forward pass"),
    profile_titles: int = typer.Option(10000, help="Titles predicted under cProfile (0: none)"),
    cache: Path = typer.Option(Path(tempfile.gettempdir()) / "titlecat-models"),
    output: Path = typer.Option(Path("metrics/trf_gpu.md")),
    keep: Path | None = typer.Option(
        None, help="Keep the trained pipeline and the titles file here (DIR/pipeline, DIR/titles.txt)"
    ),
):
    """Training and prediction of the trf config on a GPU: where the time goes and how busy the GPU is."""
    import torch
    from torch._dynamo.utils import counters

    from titlecat.predict import PredictOptions, load_pipeline, predict_file
    from titlecat.preflight import check_gpu

    if gpu_id >= 0:
        check_gpu(gpu_id, option="--gpu-id", use="profile")
        import spacy

        spacy.require_gpu(gpu_id)
    block = transformer_block(config_text(config))
    sampler = GpuSampler(gpu_id)
    model = model_folder(shape, cache, task_name)
    scratch = keep or Path(tempfile.mkdtemp(prefix="titlecat-trf-gpu-"))
    scratch.mkdir(parents=True, exist_ok=True)
    rows, top = {"train": [], "failed": [], "predict": []}, {}
    pipeline = scratch / "pipeline"
    sizes = [int(value) for value in train_batch_sizes.split(",")]
    for size, adam_steps, compiled in itertools.product(sizes, adam.split(","), compile_modes.split(",")):
        overrides = {
            "training.batcher.size": size,
            f"{block}.mixed_precision": gpu_id >= 0,
            f"{block}.torch_adam": adam_steps == "torch",
            f"{block}.static_shapes": compiled != "none",
            f"{block}.torch_compile": compile_options(compiled),
        }
        counters.clear()
        try:
            run = Run(config, model, task_name, gpu_id=gpu_id, overrides=overrides)
            for _ in range(warmup_steps):
                run.step()
            titles, wall, cpu, window = measured(sampler, gpu_id, lambda: sum(run.step() for _ in range(steps)))  # noqa: B023
            _, eval_wall, _, eval_window = measured(sampler, gpu_id, run.evaluate)
        except Exception as error:  # e.g. a compilation that needs what the machine lacks: the other rows go on
            rows["failed"].append({"batch_size": size, "adam": adam_steps, "compile": compiled, "error": repr(error)})
            typer.echo(f"✘ training, batcher size {size}, {adam_steps} Adam, compile {compiled}: {error!r}"[:2000])
            run = None
            continue
        rows["train"].append(
            {
                "batch_size": size,
                "adam": adam_steps,
                "compile": compiled,
                "titles_per_step": titles / steps,
                "step_wall_s": wall / steps,
                "step_cpu_s": cpu / steps,
                "train_titles_per_s": titles / wall,
                **window,
                "dev_titles_per_s": len(run.dev) / eval_wall,
                "dev_gpu_util_mean": eval_window["gpu_util_mean"],
                # Whether the compiled rows ran compiled: graphs, breaks in them, graph replays torch skipped.
                "compiled_graphs": counters["stats"]["unique_graphs"],
                "graph_breaks": sum(counters["graph_break"].values()),
                "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
            }
        )
        typer.echo(f"✔ training, batcher size {size}, {adam_steps} Adam, compile {compiled}: {rows['train'][-1]}")
        if profile_steps and f"train-{adam_steps}-{compiled}" not in top:
            profiler = cProfile.Profile()
            profiler.runcall(lambda: [run.step() for _ in range(profile_steps)])  # noqa: B023
            top[f"train-{adam_steps}-{compiled}"] = top_functions(profiler, 15)
        if not pipeline.exists():
            run.nlp.to_disk(pipeline)
        run = None  # its model and optimizer state off the GPU before the next one
        if gpu_id >= 0:
            torch.cuda.empty_cache()
    titles_file = write_titles_file(scratch / "titles.txt", task_name, file_titles)
    nlp = load_pipeline(pipeline, gpu_id)  # as `titlecat predict --gpu-id` loads it
    encoder = nlp.get_pipe("textcat").model.get_ref("encoder")
    shim = encoder.shims[0]
    out = scratch / "labels.csv"
    for mixed_precision in (True, False) if gpu_id >= 0 else (False,):
        shim._mixed_precision = mixed_precision  # HFShim's autocast switch (the config's mixed_precision)
        for items in (int(value) for value in max_batch_items.split(",")):
            encoder.attrs["max_batch_items" if gpu_id < 0 else "max_batch_items_gpu"] = items
            for batch_size in (int(value) for value in batch_sizes.split(",")):
                # Untimed first: kernels loaded and the chunks' shapes seen once, as in a long file.
                options = PredictOptions.of(batch_size=batch_size, progress=False)
                predict_file(nlp, titles_file, out, options)
                _, wall, cpu, window = measured(
                    sampler,
                    gpu_id,
                    lambda: predict_file(nlp, titles_file, out, options),  # noqa: B023
                )
                rows["predict"].append(
                    {
                        "mixed_precision": mixed_precision,
                        "max_batch_items": items,
                        "batch_size": batch_size,
                        "titles_per_s": file_titles / wall,
                        "titles_per_cpu_s": file_titles / cpu,
                        **window,
                    }
                )
                typer.echo(f"✔ predict: {rows['predict'][-1]}")
    if profile_titles:
        shim._mixed_precision = gpu_id >= 0  # the config's defaults: the fastest settings above
        encoder.attrs["max_batch_items"], encoder.attrs["max_batch_items_gpu"] = 8192, 32768
        small = write_titles_file(scratch / "profile.txt", task_name, profile_titles)
        profiler = cProfile.Profile()
        profiler.runcall(predict_file, nlp, small, out, progress=False)
        top["predict"] = top_functions(profiler, 15)
    sampler.close()
    device = torch.cuda.get_device_name(gpu_id) if gpu_id >= 0 else "no GPU (dry run)"
    lines = [
        f"# trf on a GPU: {shape} model, {task_name} ({date.today()}, {device}, {machine()})",
        "",
        f"Training: `{config}` with mixed precision on the GPU, {warmup_steps} untimed steps, then {steps} timed "
        "ones; the dev set scored as training scores it. GPU utilisation: nvidia-smi every 0.1 s over the timed "
        "window, mean (max).",
        "",
        "| batcher size | Adam steps | compile | titles/step | s/step | CPU s/step | train titles/s | GPU util "
        "| GPU memory MiB | dev titles/s | dev GPU util | graphs (breaks, CUDA-graph skips) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *(
            f"| {r['batch_size']} | {r['adam']} | {r['compile']} | {r['titles_per_step']:.0f} | {r['step_wall_s']:.3f} "
            f"| {r['step_cpu_s']:.3f} "
            f"| {r['train_titles_per_s']:,.0f} | {utilisation(r)} | {number(r['gpu_mem_max_mib'], ',.0f')} "
            f"| {r['dev_titles_per_s']:,.0f} | "
            f"{number(r['dev_gpu_util_mean'], '.0f', '%')} "
            f"| {r['compiled_graphs']} ({r['graph_breaks']}, {r['cudagraph_skips']}) |"
            for r in rows["train"]
        ),
        *(
            f"| {r['batch_size']} | {r['adam']} | {r['compile']} | failed: {r['error'][:300]} |||||||||"
            for r in rows["failed"]
        ),
        "",
        f"`titlecat predict` (`predict_file`, one process, pipeline loaded as `--gpu-id` loads it) on {file_titles:,} "
        "curated training titles:",
        "",
        "| fp16 autocast | max_batch_items | --batch-size | titles/s | titles/CPU s | GPU util |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r['mixed_precision']} | {r['max_batch_items']:,} | {r['batch_size']:,} | {r['titles_per_s']:,.0f} "
            f"| {r['titles_per_cpu_s']:,.0f} | {utilisation(r)} |"
            for r in rows["predict"]
        ),
    ]
    for phase, ranked in top.items():
        what = (
            "{} training steps, {} Adam, compile {}".format(profile_steps, *phase.split("-", 2)[1:])
            if phase != "predict"
            else f"predicting {profile_titles:,} titles"
        )
        lines += ["", f"cProfile, {what}: the 15 functions with the most own time", ""]
        lines += ["| function | own s | calls |", "|---|---:|---:|", *ranked]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    output.with_suffix(".json").write_text(
        json.dumps({"device": device, "machine": machine(), **rows}, indent=2) + "\n"
    )
    typer.echo(f"✔ {output}")


@app.command("first-steps")
def first_steps(
    attention: str = typer.Option("default", help="default (the code's: no cuDNN on a GPU) or cudnn (torch's choice)"),
    config: str = typer.Option("configs/trf.cfg", help="PATH or REV:PATH"),
    shape: str = typer.Option("base", help="base (xlm-roberta-base's shape, random weights) or tiny"),
    task_name: str = typer.Option("department", "--task"),
    gpu_id: int = typer.Option(0, help="-1: on the CPU"),
    steps: int = typer.Option(30, help="Training steps a window"),
    windows: int = typer.Option(2),
    cache: Path = typer.Option(Path(tempfile.gettempdir()) / "titlecat-models"),
):
    """A fresh process's first training steps, as `spacy train` starts (no warm-up), then dev scored once: the
    first-use costs that a GPU's per-shape setup adds (cuDNN's attention plans)."""
    import contextlib

    import titlecat.trf_textcat as trf_textcat

    if attention == "cudnn":
        trf_textcat.attention_kernels = lambda device: contextlib.nullcontext()
    elif attention != "default":
        raise typer.BadParameter("default or cudnn", param_hint="--attention")
    if gpu_id >= 0:
        import spacy

        spacy.require_gpu(gpu_id)
    block = transformer_block(config_text(config))
    run = Run(
        config,
        model_folder(shape, cache, task_name),
        task_name,
        gpu_id=gpu_id,
        overrides={f"{block}.mixed_precision": gpu_id >= 0},
    )
    for window in range(windows):
        synchronize(gpu_id)
        start = time.perf_counter()
        titles = sum(run.step() for _ in range(steps))
        synchronize(gpu_id)
        wall = time.perf_counter() - start
        typer.echo(
            f"attention {attention}: steps {window * steps + 1}-{(window + 1) * steps}: "
            f"{1000 * wall / steps:.1f} ms/step, {titles / wall:,.0f} titles/s"
        )
    _, wall, _ = timed(lambda: (run.evaluate(), synchronize(gpu_id)))
    typer.echo(f"attention {attention}: dev scored ({len(run.dev):,} titles) in {wall:.2f} s")


if __name__ == "__main__":
    app()
