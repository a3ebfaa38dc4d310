"""A tiny, randomly initialised XLM-RoBERTa for tests and offline demos.

It has the architecture and tokenizer interface of xlm-roberta-base, so the
`trf` config runs end to end on CPU in seconds without any model download.
Its predictions are meaningless: it only exercises the plumbing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0..4, as in XLM-R


def build_tiny_xlmr(
    folder: Path | str,
    titles: Iterable[str],
    vocab_size: int = 2000,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_length: int = 128,
    seed: int = 0,
    embedding_rows: int | None = None,
) -> Path:
    """Train a Unigram tokenizer on `titles` and save it with a random XLM-R model in `folder`.

    `embedding_rows` (default: the tokenizer's vocabulary) sets the rows of the
    embedding matrix, e.g. XLM-R's 250,002, so that memory and optimizer cost
    are those of the real model. Deterministic for the same titles and seed.
    Returns the folder, which
    loads with `AutoTokenizer`/`AutoModel.from_pretrained` and works as
    `name` of spacy-transformers' TransformerModel.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    titles = [title for title in titles if title.strip()]
    if not titles:
        raise ValueError("build_tiny_xlmr needs at least one non-empty title to train its tokenizer")

    # Unigram + Metaspace mirrors XLM-R's SentencePiece tokenizer, so offsets
    # and word alignment behave as they will with the real model.
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(titles, trainer=trainer)
    bos, eos = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    # A generic fast tokenizer: XLMRobertaTokenizerFast would look for a
    # sentencepiece vocab file, which this tokenizer does not have.
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
    )
    fast.save_pretrained(folder)

    config = XLMRobertaConfig(
        vocab_size=embedding_rows or tokenizer.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden_size * 4,
        # XLM-R position ids start after the padding index (1).
        max_position_embeddings=max_length + 2,
        type_vocab_size=1,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(seed)
    XLMRobertaModel(config).save_pretrained(folder)
    return folder


# xlm-roberta-base: 12 layers, hidden 768, 12 heads, FFN 3072, 514 positions, 250,002-row embedding.
XLMR_BASE_SHAPE = {"hidden_size": 768, "layers": 12, "heads": 12, "max_length": 512, "embedding_rows": 250_002}


def build_xlmr_base_shape(folder: Path | str, titles: Iterable[str], seed: int = 0) -> Path:
    """A random-weight model of xlm-roberta-base's exact shape (278,043,648 parameters), for timing only.

    The tokenizer (8,000 pieces) is trained on `titles`; the embedding keeps XLM-R's 250,002 rows,
    so memory, optimizer state and step time are those of the real model. Its scores mean nothing.
    """
    return build_tiny_xlmr(folder, titles, vocab_size=8000, seed=seed, **XLMR_BASE_SHAPE)
