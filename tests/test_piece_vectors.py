"""The fast pipeline's static piece vectors (titlecat/piece_vectors.py), built from the tests' tiny encoder."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import spacy
from conftest import TINY_PACK_TITLES as TITLES

from titlecat.multilingual import VECTOR_ATTR
from titlecat.piece_vectors import PieceTable, build_piece_table


def input_embeddings(encoder_dir) -> np.ndarray:
    from safetensors.numpy import load_file

    (matrix,) = [array for name, array in load_file(encoder_dir / "model.safetensors").items() if "word_emb" in name]
    return matrix.astype("float64")


def sif_weights(encoder_dir, rows: int) -> np.ndarray:
    """a / (a + p(piece)), p from the Unigram model's log-probabilities, 1 past the vocabulary."""
    vocab = json.loads((encoder_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    weights = np.ones(rows)
    weights[: len(vocab)] = [1e-3 / (1e-3 + np.exp(min(score, 0.0))) for _, score in vocab]
    return weights


def test_a_full_width_table_keeps_the_geometry_of_the_weighted_embeddings(tiny_encoder_dir):
    """At the encoder's own width the PCA is a rotation of the centred embeddings: every inner product stays."""
    embeddings = input_embeddings(tiny_encoder_dir)
    table = build_piece_table(tiny_encoder_dir, embeddings.shape[1]).table.astype("float64")
    assert table.shape == embeddings.shape
    unweighted = table / sif_weights(tiny_encoder_dir, len(table))[:, None]
    centred = embeddings - embeddings.mean(axis=0)
    rows = np.random.default_rng(0).choice(len(table), 200, replace=False)
    assert np.allclose(unweighted[rows] @ unweighted[rows].T, centred[rows] @ centred[rows].T, atol=2e-2)


def test_a_narrow_table_keeps_the_leading_principal_components(tiny_encoder_dir):
    embeddings = input_embeddings(tiny_encoder_dir)
    centred = embeddings - embeddings.mean(axis=0)
    table = build_piece_table(tiny_encoder_dir, 16).table.astype("float64")
    unweighted = table / sif_weights(tiny_encoder_dir, len(table))[:, None]
    best = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1][:16].sum()
    assert table.shape == (len(embeddings), 16)
    assert (unweighted**2).sum() == pytest.approx(best, rel=1e-3)  # the top-16 variance: fp16 rounding only
    with pytest.raises(ValueError, match="width 65"):
        build_piece_table(tiny_encoder_dir, 65)


def test_a_titles_vector_is_the_normalised_mean_of_its_pieces_rows_alone_and_in_a_batch(tiny_encoder_dir):
    from tokenizers import Tokenizer

    table = build_piece_table(tiny_encoder_dir, 32)
    tokenizer = Tokenizer.from_file(str(tiny_encoder_dir / "tokenizer.json"))
    titles = [*TITLES, "-", "Leiterin Vertrieb DACH"]
    batch = table.vectors(titles)
    for title, vector in zip(titles, batch, strict=True):
        ids = tokenizer.encode(title, add_special_tokens=False).ids
        mean = table.table[ids].astype("float64").mean(axis=0)
        assert np.allclose(vector, mean / np.linalg.norm(mean), atol=1e-6)
        assert np.array_equal(table.vectors([title])[0], vector)
    assert not table.vectors([""]).any()


def test_the_component_sets_the_vector_saves_loads_and_pickles(tiny_encoder_dir, tmp_path):
    nlp = spacy.blank("xx")
    pieces = nlp.add_pipe("titlecat_piece_vectors", name="title_encoder", config={"width": 32})
    with pytest.raises(ValueError, match="no table yet"):
        nlp("Einkäufer")
    pieces.initialize(encoder_path=str(tiny_encoder_dir))
    expected = build_piece_table(tiny_encoder_dir, 32).vectors(["Einkäufer"])[0]
    assert np.array_equal(nlp("Einkäufer")._.get(VECTOR_ATTR), expected)
    assert nlp("   ")._.get(VECTOR_ATTR) is None
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert np.array_equal(loaded("Einkäufer")._.get(VECTOR_ATTR), expected)
    assert loaded.get_pipe("title_encoder").signature() == pieces.signature()
    copied = pickle.loads(pickle.dumps(loaded.get_pipe("title_encoder").table))
    assert isinstance(copied, PieceTable) and np.array_equal(copied.vectors(["Einkäufer"])[0], expected)


def test_a_fast_pipeline_answers_titles_in_words_it_never_saw_through_their_pieces(small_project):
    """The fast pipeline (configs/cpu.cfg) reads the piece vectors: its scores move with them."""
    nlp = spacy.load(small_project / "training" / "cpu" / "department")
    assert nlp.pipe_names == ["title_encoder", "textcat"]
    assert nlp.get_pipe_meta("title_encoder").factory == "titlecat_piece_vectors"
    textcat = nlp.get_pipe("textcat")
    assert np.abs(textcat.model.get_ref("vector_output_layer").get_param("W")).max() > 0
    doc = nlp("Verkoopmedewerker")
    vector = doc._.get(VECTOR_ATTR)
    doc._.set(VECTOR_ATTR, np.zeros_like(vector))
    assert textcat(doc).cats != nlp("Verkoopmedewerker").cats


def test_the_compact_normaliser_gives_the_tokenizers_own_pieces(tiny_encoder_dir):
    from tokenizers import Tokenizer

    from titlecat.piece_vectors import compact_normalizer

    config = json.loads((tiny_encoder_dir / "tokenizer.json").read_text(encoding="utf-8"))
    # XLM-R's kind of run, with characters a regular expression's class treats specially among them.
    config["normalizer"]["normalizers"][:0] = [
        {"type": "Replace", "pattern": {"String": char}, "content": content}
        for char, content in zip("\x02\u200b]\\-^[\x0b", ["", " "] * 4, strict=True)
    ]
    original = json.dumps(config)
    compact = compact_normalizer(original)
    steps = [json.loads(text)["normalizer"]["normalizers"] for text in (original, compact)]
    assert len(steps[1]) < len(steps[0])  # the one-character replacements merged
    titles = [*TITLES, "a\tb\x01c\u00a0d\u2002e", "\ufb01nance", "x\\y]z-^[", "Ｆｕｌｌ width", "  "]
    pieces = [
        [encoding.ids for encoding in Tokenizer.from_str(text).encode_batch(titles, add_special_tokens=False)]
        for text in (original, compact)
    ]
    assert pieces[0] == pieces[1]


def test_combining_pipelines_with_and_without_a_title_encoder_is_refused(tiny_encoder_dir):
    from titlecat.combined import combine

    with_pieces = spacy.blank("xx")
    with_pieces.add_pipe("titlecat_piece_vectors", name="title_encoder", config={"width": 16})
    with_pieces.get_pipe("title_encoder").initialize(encoder_path=str(tiny_encoder_dir))
    with pytest.raises(ValueError, match=r"only \['seniority'\] of \['department', 'seniority'\] have a title_encoder"):
        combine({"seniority": with_pieces, "department": spacy.blank("xx")})
