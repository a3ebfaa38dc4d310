"""Fetch the study's assets: copy from a local mirror or download, then verify sha256.

The asset list (dest, url, sha256) lives in project.yml's `assets:` section;
weasel ignores the extra `sha256` key, and its own `checksum` is MD5 only.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from pathlib import Path


class AssetError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_asset(dest: Path, url: str, sha256: str, mirror: Path | list[Path] | None) -> str:
    """Make `dest` hold the verified asset; return what was done ('kept', 'copied', 'downloaded').

    `mirror`: a folder, or folders searched in order, holding the file under its name, or in a subfolder named as
    dest's own folder (the MELO mirror keeps one folder a language: melo/deu_q_de_c_de/corpus_elements.tsv)."""
    if dest.exists() and sha256_of(dest) == sha256:
        return "kept"
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    mirrors = [mirror] if isinstance(mirror, Path) else list(mirror or [])
    if mirrors:
        candidates = [
            path for folder in mirrors for path in (folder / dest.name, folder / dest.parent.name / dest.name)
        ]
        source = next((path for path in candidates if path.exists()), None)
        if source is None:
            folders = ", ".join(str(folder) for folder in mirrors)
            raise AssetError(f"{dest.name}: not found in the asset mirror ({folders}); add the folder that holds it")
        mirror = source
        shutil.copyfile(source, partial)
        action = "copied"
    else:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as file:
                shutil.copyfileobj(response, file)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise AssetError(
                f"{dest.name}: download from {url} failed ({error}); without internet, "
                "set the asset mirror (--vars.asset_mirror "
                "../shared/data/snapaddy,../shared/data/esco,../shared/data/melo)"
            ) from error
        action = "downloaded"
    found = sha256_of(partial)
    if found != sha256:
        partial.unlink()
        raise AssetError(f"{dest.name}: sha256 mismatch: expected {sha256}, found {found} (source: {mirror or url})")
    partial.replace(dest)  # only a verified file ever appears under its real name
    return action
