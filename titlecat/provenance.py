"""Provenance: which pipeline answered, and how a file was labelled.

`pipeline_provenance(nlp)` is what `titlecat predict` and `predict-ray` write into the sidecar `OUT.json` beside
their output (`Run`) and what `titlecat serve` returns in `/v1/metadata` and, shortened, in the
`X-Titlecat-Pipeline` header of every response: the pipeline's name and version (its meta), what it was trained on
(what its meta and config say), and `sha256`, a fingerprint of its weights (`fingerprint`).

A sidecar rather than a line in the output: a comment line would break every reader of CSV, TSV and JSONL (and of
an `.xlsx` sheet), and one JSON file says the same for every output format.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from spacy.language import Language

from . import __version__

HEADER = "X-Titlecat-Pipeline"
# Left out of a pipeline folder's fingerprint: the meta (named by name and version; scripts/package.py rewrites it
# for a wheel, whose weights stay those of the folder it was built from), the README.md `spacy package` writes from
# it into the wheel's folder, and Python's byte code.
UNHASHED_FILES = frozenset({"meta.json", "README.md"})
UNHASHED_FOLDERS = frozenset({"__pycache__"})
READ_BYTES = 1 << 20
# Where a pipeline keeps its fingerprint once computed: one per loaded pipeline.
CACHE_ATTR = "_titlecat_sha256"


def sidecar_path(output_path: Path | str) -> Path:
    """Where the provenance of an output goes: `labels.csv` → `labels.csv.json`."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + ".json")


def pipeline_folder(nlp: Language) -> Path | None:
    """The folder a pipeline was loaded from (an installed package's data folder included), or None for one built in
    memory. spaCy's `Language.from_disk` keeps it in `nlp._path`."""
    path = getattr(nlp, "_path", None)
    if path is None or not (Path(path) / "config.cfg").is_file():
        return None
    return Path(path)


def folder_fingerprint(folder: Path | str) -> str:
    """sha256 over a pipeline folder's files in sorted order, each as its path (relative, '/'-separated), its size
    and its bytes, so that a renamed, added or changed file changes it; `meta.json`, `README.md` (at the top) and
    byte code left out."""
    folder = Path(folder)
    files = []
    for root, folders, names in os.walk(folder, followlinks=True):
        folders[:] = [name for name in folders if name not in UNHASHED_FOLDERS]
        for name in names:
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            if relative not in UNHASHED_FILES and not name.endswith(".pyc"):
                files.append((relative, path))
    digest = hashlib.sha256()
    for relative, path in sorted(files):
        with path.open("rb") as file:
            digest.update(f"{relative}\0{os.fstat(file.fileno()).st_size}\0".encode())
            while chunk := file.read(READ_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def memory_fingerprint(nlp: Language) -> str:
    """sha256 of a pipeline built in memory (never loaded from a folder): its config, then each component's name
    and `to_bytes()`; a component that cannot be serialised to bytes (the title encoder's tables are large) is saved
    to a temporary folder and stands in by that folder's fingerprint. The vocab is left out: labelling adds strings
    to it, never weights."""
    digest = hashlib.sha256(nlp.config.to_str().encode())
    for name, pipe in nlp.pipeline:
        try:
            data = pipe.to_bytes(exclude=["vocab"]) if hasattr(pipe, "to_bytes") else b""
        except NotImplementedError:
            with tempfile.TemporaryDirectory(prefix="titlecat-fingerprint-") as folder:
                pipe.to_disk(Path(folder) / name, exclude=["vocab"])
                data = folder_fingerprint(Path(folder) / name).encode()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def fingerprint(nlp: Language) -> str:
    """The sha256 fingerprint of a pipeline's weights, computed once per loaded pipeline: over the files of the
    folder it was loaded from (`folder_fingerprint`; for an installed package, the package's folder), else over
    what it serialises to (`memory_fingerprint`). Weights changed in memory after the first call are not seen."""
    cached = getattr(nlp, CACHE_ATTR, None)
    if cached is None:
        folder = pipeline_folder(nlp)
        cached = folder_fingerprint(folder) if folder is not None else memory_fingerprint(nlp)
        setattr(nlp, CACHE_ATTR, cached)
    return cached


def trained_on(nlp: Language) -> dict:
    """What a pipeline's meta and config say it was trained on (empty where they say nothing):

    - `variant`: base (the curated train split) or augmented (+ LLM pseudo-labels and ESCO names); `config`;
    - `sources`: the data assets a wheel's meta lists (scripts/package.py: name, url, description);
    - `pipelines`: a combined pipeline's source pipeline per task (scripts/assemble.py);
    - `corpora`: the train and dev corpora of a pipeline trained by spaCy (its config's `paths`)."""
    meta = nlp.meta
    own = meta.get("titlecat") or {}
    found: dict = {key: own[key] for key in ("variant", "config") if own.get(key)}
    if meta.get("sources"):
        found["sources"] = meta["sources"]
    if own.get("sources"):
        found["pipelines"] = own["sources"]
    paths = nlp.config.get("paths") or {}
    corpora = {split: str(paths[split]) for split in ("train", "dev") if paths.get(split)}
    if corpora:
        found["corpora"] = corpora
    return found


def pipeline_name(nlp: Language) -> str:
    """'xx_titlecat_combined_cpu': the language and the meta's name, as spaCy names a package."""
    return f"{nlp.meta.get('lang', nlp.lang)}_{nlp.meta.get('name', 'pipeline')}"


def pipeline_provenance(nlp: Language) -> dict:
    """name, version, description, sha256 (`fingerprint`) and trained_on (`trained_on`) of a pipeline."""
    return {
        "name": pipeline_name(nlp),
        "version": nlp.meta.get("version"),
        "description": nlp.meta.get("description"),
        "sha256": fingerprint(nlp),
        "trained_on": trained_on(nlp),
    }


def header_value(pipeline: dict) -> str:
    """`X-Titlecat-Pipeline`'s value: 'xx_titlecat_combined_cpu@0.1.0; sha256=<its first 16 hex digits>', in the
    printable ASCII a header carries."""
    value = f"{pipeline['name']}@{pipeline['version']}; sha256={pipeline['sha256'][:16]}"
    return re.sub(r"[^ -~]", "?", value)


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Run:
    """What a labelling run's sidecar says besides its summary: the pipeline (`pipeline_provenance`, and the
    --model that named it), the input (path, format, the encoding it was read in and whether it was detected) and
    the review flag / LLM fallback, if any (its summary line)."""

    pipeline: dict
    input_path: Path | str
    input_format: str
    model: str | None = None
    encoding: str | None = None
    encoding_detected: bool = False
    postprocess: object | None = None  # titlecat.confidence.RowPostprocess

    def record(self, summary, output_path: Path | str, output_bytes: int) -> dict:
        """The sidecar's JSON object, once the output is complete (`summary`: titlecat.predict.Summary)."""
        output_path = Path(output_path)
        record = {
            "titlecat_version": __version__,
            "pipeline": {**self.pipeline, "model": self.model},
            "input": {
                "path": str(Path(self.input_path).resolve()),
                "format": self.input_format,
                "encoding": self.encoding,
                "encoding_detected": self.encoding_detected,
            },
            "output": {"path": str(output_path.resolve()), "bytes": output_bytes},
            "rows": {"total": summary.total, **summary.status_counts()},
            "seconds": {"loading": rounded(summary.loading_seconds, 4), "labelling": round(summary.seconds, 4)},
            "titles_per_second": {
                "without_loading": round(summary.rate, 1),
                "with_loading": rounded(summary.rate_with_loading, 1),
            },
            "formula_like_cells_neutralised": summary.neutralised,
            "finished": utc_now(),
        }
        if self.postprocess is not None:
            record["postprocess"] = self.postprocess.summary()
        return record


def write_json_atomically(path: Path, data: dict) -> Path:
    """`data` as JSON into a hidden partial file beside `path`, flushed; returns the partial file, for the caller to
    rename into place (os.replace) when the rest of its work is done, or to remove."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as file:
            json.dump(data, file, ensure_ascii=False, indent=2, default=str)
            file.write("\n")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial
