"""The fast pipeline's multilingual features: static piece vectors, no transformer at prediction time.

The `titlecat_piece_vectors` component sets `doc._.title_vector` (as the multilingual pipeline's title encoder does)
to the L2-normalised mean of a table's rows for the title's SentencePiece pieces. The table is the encoder's own
input embeddings (multilingual-e5-small: XLM-R's 250k pieces), reduced by PCA to `width` dimensions and weighted
per piece by SIF (a / (a + p(piece)), p from the tokenizer's Unigram log-probabilities: frequent pieces such as
"▁" or "s" say little), stored fp16. `titlecat.MultilingualTitleClassifier.v1` reads it beside the n-grams, so
the fast pipeline knows titles in languages it was not trained on (docs/multilingual.md, rule 6).

Like `multilingual`, this file ships inside wheels without titlecat: it imports spaCy, numpy and its sibling
`multilingual`; `tokenizers` when a pipeline is loaded; safetensors only to build a table.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path

import catalogue
import numpy as np
from spacy.language import Language
from spacy.util import registry

try:  # inside titlecat, and inside a wheel that ships both files beside each other
    from .multilingual import TitleVectorPipe, embedding_name
except ImportError:  # this file loaded on its own (spacy package/train --code), titlecat installed
    from titlecat.multilingual import TitleVectorPipe, embedding_name

PIECE_FACTORY = "titlecat_piece_vectors"
# Where `titlecat encoder` saves the table it built, inside the encoder folder (one per width).
PIECES_DIR = "titlecat-pieces-{width}"
TABLE_FILES = ("tokenizer.json", "table.npy")
SIF_SMOOTHING = 1e-3
DEFAULT_WIDTH = 128


class PieceTable:
    """A tokenizer and one fp16 row per piece: `vectors(texts)` is the normalised mean of each text's rows."""

    def __init__(self, tokenizer_json: str, table: np.ndarray):
        from tokenizers import Tokenizer

        self.tokenizer_json, self.table = tokenizer_json, table
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        # Without character offsets where tokenizers has it (>= 0.20): the pieces' ids are all a vector needs.
        self._encode_batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        self._not_by_words = not_by_words(tokenizer_json)
        self._word_pieces: dict[str, list[int]] = {}

    def __getstate__(self) -> dict:
        return {"tokenizer_json": self.tokenizer_json, "table": np.asarray(self.table)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    @property
    def width(self) -> int:
        return int(self.table.shape[1])

    def vectors(self, texts: list[str]) -> np.ndarray:
        """[len(texts), width]: each text's mean piece row, L2-normalised (zeros for a text with no piece)."""
        vectors = np.zeros((len(texts), self.width), dtype="float32")
        if not texts:
            return vectors
        ids = self.piece_ids(texts)
        lengths = np.fromiter(map(len, ids), dtype="int64", count=len(ids))
        has_pieces = lengths > 0
        if has_pieces.any():
            rows = self.table[np.concatenate([piece_ids for piece_ids in ids if piece_ids])].astype("float32")
            starts = np.concatenate([[0], np.cumsum(lengths[has_pieces])[:-1]])
            vectors[has_pieces] = np.add.reduceat(rows, starts, axis=0) / lengths[has_pieces, None]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def piece_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's piece ids, as the tokenizer gives them. The tokenizer splits a text into words at its spaces
        and cuts each word into pieces on its own, so a text it normalises to itself (`not_by_words`) has the pieces
        of its words one after the other: each distinct word is cut once and remembered (titles reuse a small
        vocabulary), the other texts are encoded whole."""
        if self._not_by_words is None:
            return [encoding.ids for encoding in self._encode_batch(texts, add_special_tokens=False)]
        word_pieces = self._word_pieces
        if len(word_pieces) > MAX_WORDS:
            word_pieces.clear()
        unsafe = self._not_by_words.search
        by_words = [not unsafe(text) and unicodedata.is_normalized("NFKC", text) for text in texts]
        whole = [text for text, by_word in zip(texts, by_words, strict=True) if not by_word]
        new_words = list({word: None for text, by_word in zip(texts, by_words, strict=True) if by_word
                          for word in text.split(" ") if word and word not in word_pieces})  # fmt: skip
        encoded = self._encode_batch(new_words + whole, add_special_tokens=False)
        word_pieces.update(zip(new_words, (encoding.ids for encoding in encoded), strict=False))
        whole_ids = iter([encoding.ids for encoding in encoded[len(new_words) :]])
        ids = []
        for text, by_word in zip(texts, by_words, strict=True):
            if by_word:
                ids.append([piece for word in text.split(" ") if word for piece in word_pieces[word]])
            else:
                ids.append(next(whole_ids))
        return ids

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.tokenizer_json.encode("utf-8"))
        digest.update(np.ascontiguousarray(self.table[:: max(1, len(self.table) // 4096)]).tobytes())
        return digest.hexdigest()[:16]

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "tokenizer.json").write_text(self.tokenizer_json, encoding="utf-8")
        np.save(path / "table.npy", self.table, allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> PieceTable:
        missing = [name for name in TABLE_FILES if not (path / name).exists()]
        if missing:
            raise FileNotFoundError(f"{path}: the piece vectors' files {missing} are missing")
        # Memory-mapped: a batch of titles touches a few thousand of the 250k rows.
        table = np.load(path / "table.npy", mmap_mode="r", allow_pickle=False)
        return cls((path / "tokenizer.json").read_text(encoding="utf-8"), table)


# Words remembered with their pieces (`PieceTable.piece_ids`), at most; emptied when full.
MAX_WORDS = 2**18


def not_by_words(tokenizer_json: str) -> re.Pattern | None:
    """What keeps a text from being cut into pieces word by word (`PieceTable.piece_ids`) by this tokenizer: any
    whitespace but a space, a space at the end (a piece of its own), a control character, a character the
    normaliser replaces or removes, an added token's text. None when the tokenizer is not one whose words are cut
    alone (a Metaspace split at every space before a Unigram model, a normaliser of one-character replacements,
    NFKC and the collapsing of spaces): every text is then encoded whole. NFKC is checked text by text."""
    config = json.loads(tokenizer_json)
    pre_tokenizer = config.get("pre_tokenizer") or {}
    if (config.get("model") or {}).get("type") != "Unigram" or pre_tokenizer != {
        "type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True
    }:  # fmt: skip
        return None
    normalizer = config.get("normalizer") or {}
    steps = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer]
    replaced = []
    for step in steps:
        pattern = step.get("pattern") or {}
        if step.get("type") == "NFKC" or (step.get("type") == "Replace" and pattern == {"Regex": " {2,}"}):
            continue
        if step.get("type") == "Replace" and len(pattern.get("String", "")) == 1:
            replaced.append(re.escape(pattern["String"]))
        elif step.get("type") == "Replace" and re.fullmatch(r"\[[^\]]*\]", pattern.get("Regex", "")):
            replaced.append(pattern["Regex"])
        else:
            return None
    added = [re.escape(token["content"]) for token in config.get("added_tokens") or []]
    return re.compile("|".join([r"[^\S ]", " $", r"[\x00-\x1f\x7f-\x9f]", *replaced, *added]))


def compact_normalizer(tokenizer_json: str) -> str:
    """The same tokenizer with its run of one-character replacements (XLM-R's: some 50, a pass over the text each)
    merged into one regular expression per replacement: the same pieces, in half the time.

    Only replacements of one character by "" or " " are merged, which cannot make a character another of them
    replaces, so their order does not matter; every other normaliser stays where it was."""
    config = json.loads(tokenizer_json)
    normalizer = config.get("normalizer") or {}
    if normalizer.get("type") != "Sequence":
        return tokenizer_json
    merged: dict[str, list[str]] = {"": [], " ": []}
    kept = []
    for step in normalizer["normalizers"]:
        target = step.get("pattern", {}).get("String") if step.get("type") == "Replace" else None
        if target is not None and len(target) == 1 and step["content"] in merged:
            merged[step["content"]].append(target)
        else:
            kept.append(step)
    regexes = [
        {"type": "Replace", "pattern": {"Regex": "[" + "".join(map(class_member, chars)) + "]"}, "content": content}
        for content, chars in merged.items()
        if chars
    ]
    config["normalizer"] = {"type": "Sequence", "normalizers": regexes + kept}
    return json.dumps(config, ensure_ascii=False)


def class_member(char: str) -> str:
    """`char` inside a regular expression's character class."""
    return "\\" + char if char in "\\[]^-" else char


def build_piece_table(encoder_dir: Path, width: int) -> PieceTable:
    """The SIF-weighted PCA of a Hugging Face encoder folder's input embeddings (model.safetensors, tokenizer.json),
    `width` columns, fp16."""
    from safetensors import safe_open

    tokenizer_json = (encoder_dir / "tokenizer.json").read_text(encoding="utf-8")
    model = json.loads(tokenizer_json)["model"]
    with safe_open(str(encoder_dir / "model.safetensors"), "np") as weights:
        name = embedding_name(dict.fromkeys(weights.keys()))
        embeddings = weights.get_tensor(name).astype("float32")
    if not 0 < width <= embeddings.shape[1]:
        raise ValueError(f"piece vector width {width}: must be 1..{embeddings.shape[1]} (the encoder's)")
    centred = (embeddings - embeddings.mean(axis=0)).astype("float64")
    # Exact PCA: the leading eigenvectors of the (width x width) scatter matrix, each signed so that its largest
    # entry is positive (the same table on every machine).
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    components = eigenvectors[:, np.argsort(eigenvalues)[::-1][:width]]
    components *= np.sign(components[np.abs(components).argmax(axis=0), np.arange(width)])
    table = centred @ components
    # SIF per piece; the rows past the vocabulary (the matrix is padded; never looked up) keep weight 1, as does
    # every piece of a tokenizer with no piece probabilities (WordPiece, BPE).
    weights = np.ones(len(table), dtype="float64")
    if model.get("type") == "Unigram":
        log_probs = np.array([score for _, score in model["vocab"]], dtype="float64")
        weights[: len(log_probs)] = SIF_SMOOTHING / (SIF_SMOOTHING + np.exp(np.minimum(log_probs, 0.0)))
    # The tokenizer is compacted once here, not at every load (about a second for XLM-R's 17 MB).
    return PieceTable(compact_normalizer(tokenizer_json), (table * weights[:, None]).astype("float16"))


def piece_table(encoder_dir: Path, width: int) -> PieceTable:
    """The table `titlecat encoder` saved in the encoder folder, or built now."""
    built = encoder_dir / PIECES_DIR.format(width=width)
    return PieceTable.load(built) if (built / "table.npy").exists() else build_piece_table(encoder_dir, width)


class PieceVectors(TitleVectorPipe):
    """Sets `doc._.title_vector` from static piece vectors (None for a blank title)."""

    def __init__(self, nlp: Language, name: str, width: int):
        self.nlp, self.name = nlp, name
        self.cfg = {"width": width}
        self.table: PieceTable | None = None

    def initialize(self, get_examples=None, *, nlp=None, encoder_path: str | None = None) -> None:
        if not encoder_path:
            raise ValueError(f"[{self.name}]: initialize needs encoder_path, a Hugging Face encoder folder")
        self.table = piece_table(Path(encoder_path), self.cfg["width"])
        self.cfg["fingerprint"] = self.table.fingerprint()

    def _require_table(self) -> PieceTable:
        if self.table is None:
            raise ValueError(f"[{self.name}]: the piece vectors have no table yet: initialize or load the pipeline")
        return self.table

    def vectors(self, texts: list[str]) -> np.ndarray:
        return self._require_table().vectors(texts)

    def signature(self) -> str:
        """What makes two components give the same vectors (titlecat.combined shares one between textcats)."""
        return f"pieces:{self._require_table().fingerprint()}"

    def to_disk(self, path, *, exclude=tuple()) -> None:
        path = Path(path)
        self._require_table().save(path)
        (path / "cfg").write_text(json.dumps(self.cfg, indent=2) + "\n")

    def from_disk(self, path, *, exclude=tuple()) -> PieceVectors:
        path = Path(path)
        if not (path / "cfg").exists():
            raise FileNotFoundError(f"{path}: the piece vectors' cfg is missing")
        self.cfg.update(json.loads((path / "cfg").read_text()))
        self.table = PieceTable.load(path)
        return self


def make_piece_vectors(nlp: Language, name: str, width: int) -> PieceVectors:
    return PieceVectors(nlp, name, width)


# A wheel may ship this file where titlecat is installed too: the factory is registered once (as in multilingual.py).
if not catalogue.check_exists(*registry.factories.namespace, PIECE_FACTORY):
    Language.factory(PIECE_FACTORY, default_config={"width": DEFAULT_WIDTH})(make_piece_vectors)
