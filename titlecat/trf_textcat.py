"""A transformer title classifier that does its per-batch work on arrays: `titlecat.TransformerTitleClassifier.v1`.

The model of an exclusive `textcat`: one batched fast-tokenizer call on the batch's texts, the Hugging Face
encoder, pooling (mean of the wordpieces or the first one) and a softmax layer, all on the batch as tensors.
Nothing per title is kept on the Doc. spacy-transformers' `transformer` component with a listener does far more
per title (a `doc._.trf_data` split out of the batch output for each doc, each encoding turned into Python
objects, wordpieces aligned to spaCy tokens), work a title classifier never reads; on a GPU it kept the device
idle (docs/gpu.md). What spacy-transformers does well is kept: the encoder is wrapped by its `HFWrapper`/`HFShim`
(weights loaded by `huggingface_from_pretrained` from a Hub name or a local folder at initialisation, saved with
the pipeline and loaded back without the source), so mixed precision, gradient scaling and GPU placement are
theirs.

Shipped inside the trf wheels with `spacy package --code`, beside titlecat/components.py, so this module must be
self-contained: it imports spaCy, thinc, (inside functions, so importing it stays cheap) torch, transformers and
spacy-transformers, never the rest of titlecat (components.py's `unscored_if_blank`, shipped beside it, is found
through spaCy's registry). Every function that is pickled (nlp.pipe with n_process under spawn) is defined at
module level.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import re
import types
from functools import partial
from weakref import WeakKeyDictionary

import numpy
from spacy.ml.models.textcat import resize_and_set_ref, resize_linear_weighted
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Dropout, Linear, Model, Softmax_v2, SparseLinear_v2, chain, resizable, use_ops, zero_init
from thinc.types import ArgsKwargs, Floats2d

# Bias of a label that the output layer gains on resizing: such a label starts out improbable (as in spaCy).
NEG_VALUE = -5000
POOLINGS = ("mean", "first")
# A forward pass's fixed CPU cost, in padded wordpieces: ~1 ms a pass and ~1 µs a wordpiece for the tests' tiny
# XLM-R on 2 cores (docs/gpu.md); for larger encoders wordpieces cost more, and less padding pays more.
CPU_PASS_COST = 1024
# titlecat/components.py registers the hashed word and character n-grams of the CPU pipeline under this name; this
# module finds them through spaCy's registry (it must not import the rest of titlecat, see above).
TITLE_FEATURES = "titlecat.title_features.v1"


@registry.architectures("titlecat.TransformerTitleClassifier.v1")
def build_transformer_title_classifier(
    name: str,
    pooling: str = "mean",
    max_length: int = 64,
    dropout: float = 0.1,
    mixed_precision: bool = False,
    grad_scaler_config: dict = {},  # noqa: B006  (config dicts, never mutated)
    tokenizer_config: dict = {},  # noqa: B006
    transformer_config: dict = {},  # noqa: B006
    max_batch_items: int = 8192,
    freeze_embeddings: bool = False,
    max_batch_items_gpu: int = 32768,
    torch_adam: bool = True,
    static_shapes: bool = False,
    torch_compile: dict = {},  # noqa: B006
    encoder_rate_scale: float = 1.0,
    encoder_layer_decay: float = 1.0,
    prefix: str = "",
    title_ngrams: bool = False,
    ngram_min_n: int = 2,
    ngram_max_n: int = 5,
    ngram_length: int = 2**18,
    nO: int | None = None,
) -> Model[list[Doc], Floats2d]:
    """Exclusive classes from a Hugging Face encoder (`name`: Hub id or local folder) fine-tuned end to end.

    pooling: "mean" (of the title's wordpieces, padding left out) or "first" (the <s>/[CLS] piece).
    max_length: wordpieces per title, special ones included; longer titles are truncated.
    dropout: before the output layer (the encoder applies its own, from its config, while training).
    max_batch_items: padded wordpieces per forward pass when predicting on the CPU (the batch is cut by length).
    max_batch_items_gpu: the same on a GPU, where fewer, larger passes pay (each kernel launch costs CPU time).
    freeze_embeddings: keep the encoder's wordpiece embeddings as pretrained (no gradient, no optimizer update).
    torch_adam: the encoder's Adam steps by torch (`torch.optim.AdamW`, fused: a few kernel launches for all its
        weight arrays) with the training optimizer's settings and schedules read at each step; false: thinc's
        optimizer walks the arrays one by one (a device sync per array on a GPU). Only for thinc's Adam: with
        another optimizer (SGD, RAdam) thinc's own steps run either way.
    static_shapes: pad each training batch to one of a few shapes (`static_shape`: titles up to a multiple of 16,
        wordpieces up to a multiple of 4), so that a compiled encoder meets few shapes (CUDA graphs need them).
    torch_compile: keyword arguments of `torch.compile` for the encoder's training passes (e.g.
        {"mode": "reduce-overhead"}: CUDA graphs on a GPU); empty: none. Prediction runs it uncompiled.
    encoder_rate_scale: the encoder's learning rate as a share of the training optimizer's, which the output layer
        takes as it is: below 1, a head that starts from zero moves faster than the pretrained body under it
        (needs `torch_adam`).
    encoder_layer_decay: layer-wise rate decay: the encoder's top layer takes its rate, each layer below
        `encoder_layer_decay` times the one above, the embeddings that times the lowest layer's; 1: one rate for
        all (needs `torch_adam`). Below 1, the lower layers keep more of what pretraining taught them.
    prefix: put before every title, training and predicting (e5 encoders were trained on "query: " + text).
    title_ngrams: the softmax reads, beside the pooled vector, the title's hashed word and character n-grams
        (`ngram_min_n` to `ngram_max_n` characters, `ngram_length` weights a label: the CPU pipeline's features),
        one linear layer each, trained together at the head's rate, as spaCy's TextCatEnsemble puts a bag of words
        beside its neural model.
    """
    encoder = title_encoder(
        name,
        pooling,
        max_length,
        mixed_precision,
        grad_scaler_config,
        tokenizer_config,
        transformer_config,
        max_batch_items,
        freeze_embeddings,
        max_batch_items_gpu,
        torch_adam,
        static_shapes,
        torch_compile,
        encoder_rate_scale,
        encoder_layer_decay,
        prefix,
    )
    # The head (dropout, softmax) runs on the CPU even when the encoder is on a GPU: the textcat reads every score
    # one by one (`float(scores[i, j])` in `set_annotations`), and on cupy each read is a device sync (185 µs a
    # title on an H200 machine, more than all the rest). One copy of the pooled vectors per batch replaces them.
    if title_ngrams:
        return ngrams_and_encoder_classifier(encoder, dropout, ngram_min_n, ngram_max_n, ngram_length, nO)
    with use_ops("numpy"):
        output_layer = Softmax_v2(nO=nO)
        resizable_layer = resizable(
            output_layer, resize_layer=partial(resize_linear_weighted, fill_defaults={"b": NEG_VALUE, "W": 0})
        )
        model = chain(encoder, Dropout(dropout), resizable_layer)
    model.set_ref("output_layer", output_layer)
    model.set_ref("encoder", encoder)
    model.attrs["multi_label"] = False
    model.attrs["resize_output"] = partial(resize_and_set_ref, resizable_layer=resizable_layer)
    # titlecat.components.unscored_if_blank: a title with no text scores 0.0 for every label, alone and in a batch
    return registry.misc.get("titlecat.unscored_if_blank.v1")(model)


def ngrams_and_encoder_classifier(
    encoder: Model, dropout: float, min_n: int, max_n: int, length: int, nO: int | None
) -> Model[list[Doc], Floats2d]:
    """softmax(n-gram layer(the title's n-grams) + vector layer(dropout(the encoder's pooled vector))).

    One node over both branches, as titlecat's multilingual classifier: thinc's chain/add would initialise the
    vector layer before the encoder has a width. The linear layers are `output_layer` (n-grams) and
    `vector_output_layer`, the references calibration (titlecat.combined) scales.
    """
    with use_ops("numpy"):
        features = registry.layers.get(TITLE_FEATURES)(min_n, max_n)
        ngram_linear = SparseLinear_v2(nO=nO, length=length)
        vector_linear = Linear(nO=nO, init_W=zero_init)
        scores = Model(
            "ngrams_and_encoder_scores",
            ngrams_and_encoder_forward,
            init=ngrams_and_encoder_init,
            layers=[features, ngram_linear, encoder, Dropout(dropout), vector_linear],
            dims={"nO": nO},
        )
    scores.set_ref("output_layer", ngram_linear)
    scores.set_ref("vector_output_layer", vector_linear)
    scores.set_ref("encoder", encoder)
    scores.attrs["multi_label"] = False
    scores.attrs["resize_output"] = resize_ngrams_and_encoder
    return registry.misc.get("titlecat.unscored_if_blank.v1")(scores)


def ngrams_and_encoder_forward(model: Model, docs: list[Doc], is_train: bool):
    features, ngram_linear, encoder, dropout, vector_linear = model.layers
    ngram_logits, backprop_ngrams = ngram_linear(features.predict(docs), is_train)
    pooled, backprop_encoder = encoder(docs, is_train)
    dropped, backprop_dropout = dropout(pooled, is_train)
    vector_logits, backprop_vector = vector_linear(dropped, is_train)
    scores = model.ops.softmax(ngram_logits + vector_logits)

    def backprop(d_scores):
        # As thinc's Softmax_v2: the textcat's (scores - truth) is cross-entropy's gradient at the logits.
        backprop_ngrams(d_scores)
        backprop_encoder(backprop_dropout(backprop_vector(d_scores)))
        return []

    return scores, backprop


def ngrams_and_encoder_init(model: Model, X=None, Y=None) -> None:
    features, ngram_linear, encoder, dropout, vector_linear = model.layers
    if Y is not None:
        model.set_dim("nO", Y.shape[1], force=True)
    n_labels = model.get_dim("nO")
    encoder.initialize()
    for layer in (ngram_linear, vector_linear):
        layer.set_dim("nO", n_labels, force=True)
    vector_linear.set_dim("nI", encoder.get_dim("nO"), force=True)
    ngram_linear.initialize()
    vector_linear.initialize()


def resize_ngrams_and_encoder(model: Model, new_nO: int) -> Model:
    vector_linear = model.get_ref("vector_output_layer")
    if vector_linear.has_param("W") and vector_linear.get_param("W") is not None:
        raise ValueError("a trained titlecat transformer classifier with title n-grams cannot take new labels")
    for layer in (model, model.get_ref("output_layer"), vector_linear):
        layer.set_dim("nO", new_nO, force=True)
    return model


def title_encoder(
    name: str,
    pooling: str,
    max_length: int,
    mixed_precision: bool = False,
    grad_scaler_config: dict | None = None,
    tokenizer_config: dict | None = None,
    transformer_config: dict | None = None,
    max_batch_items: int = 8192,
    freeze_embeddings: bool = False,
    max_batch_items_gpu: int = 32768,
    torch_adam: bool = True,
    static_shapes: bool = False,
    torch_compile: dict | None = None,
    encoder_rate_scale: float = 1.0,
    encoder_layer_decay: float = 1.0,
    prefix: str = "",
) -> Model[list[Doc], Floats2d]:
    """Docs → one pooled vector per title (hidden size wide, a numpy array wherever the encoder runs); the encoder
    lives in spacy-transformers' HFShim (`TitleEncoderShim`, which adds the torch Adam step)."""
    from spacy_transformers.data_classes import HFObjects

    if pooling not in POOLINGS:
        raise ValueError(f"titlecat.TransformerTitleClassifier.v1: pooling {pooling!r} is not one of {POOLINGS}")
    hf_objects = HFObjects(None, None, None, dict(tokenizer_config or {}), dict(transformer_config or {}))
    shim = title_encoder_shim_class()(
        hf_objects,
        mixed_precision=mixed_precision,
        grad_scaler_config=dict(grad_scaler_config or {}),
        torch_adam=torch_adam,
        compiled=bool(torch_compile),
        rate_scale=encoder_rate_scale,
        layer_decay=encoder_layer_decay,
    )
    return Model(
        "title_encoder",
        encoder_forward,
        init=init_encoder,
        shims=[shim],
        dims={"nO": None},
        attrs={
            "name": name,
            "pooling": pooling,
            "max_length": max_length,
            "max_batch_items": max_batch_items,
            "max_batch_items_gpu": max_batch_items_gpu,
            "freeze_embeddings": freeze_embeddings,
            "static_shapes": static_shapes,
            "torch_compile": dict(torch_compile or {}),
            "prefix": prefix,
        },
    )


def __getattr__(name: str):
    # TitleEncoderShim subclasses spacy-transformers' HFShim, whose import (torch, transformers) waits until a
    # transformer pipeline is built: the CPU pipelines import this module too. pickle finds the class here by name.
    if name == "TitleEncoderShim":
        return title_encoder_shim_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def title_encoder_shim_class() -> type:
    from spacy_transformers.layers.hf_shim import HFShim

    class TitleEncoderShim(HFShim):
        """spacy-transformers' HFShim whose update of the encoder's weights is one torch Adam step (`torch_adam`)."""

        def __init__(
            self,
            *args,
            torch_adam: bool = True,
            compiled: bool = False,
            rate_scale: float = 1.0,
            layer_decay: float = 1.0,
            **kwargs,
        ):
            super().__init__(*args, **kwargs)
            self.torch_adam = torch_adam
            self.compiled = compiled
            self.rate_scale = rate_scale
            self.layer_decay = layer_decay
            self._torch_optimizer = None  # [the thinc optimizer it mirrors, the torch AdamW (moments), steps taken]

        def finish_update(self, optimizer) -> None:
            if self.torch_adam and is_plain_adam(optimizer):
                torch_adam_step(self, optimizer)
            elif unserved := self.torch_only_settings():
                # Only torch's step serves these. A CUDA graph reads its weights where it recorded them, and thinc's
                # steps give each weight new memory: it would be recorded anew every step (torch gives up after
                # 128), training silently slow. thinc's optimizer takes one rate for every weight it steps.
                raise ValueError(
                    f"titlecat.TransformerTitleClassifier.v1: {', '.join(unserved)} needs torch_adam = true and "
                    f"thinc's Adam optimizer (the training optimizer is {type(optimizer).__name__} with "
                    f"use_radam={optimizer.use_radam}, b1={optimizer.b1}; torch_adam={self.torch_adam})"
                )
            else:
                super().finish_update(optimizer)

        def torch_only_settings(self) -> list[str]:
            """The settings in use that only `torch_adam_step` serves, as the config writes them."""
            settings = {
                "torch_compile": self.compiled,
                f"encoder_rate_scale = {self.rate_scale}": self.rate_scale != 1.0,
                f"encoder_layer_decay = {self.layer_decay}": self.layer_decay != 1.0,
            }
            return [setting for setting, in_use in settings.items() if in_use]

    TitleEncoderShim.__qualname__ = TitleEncoderShim.__name__
    return TitleEncoderShim


def is_plain_adam(optimizer) -> bool:
    """Whether a thinc optimizer takes Adam steps (what `torch_adam_step` mirrors), not SGD or RAdam."""
    return not optimizer.use_radam and optimizer.b1 > 0 and optimizer.b2 > 0


def torch_adam_step(shim, optimizer) -> None:
    """The step thinc's Adam would take on every encoder weight with a gradient, as a few torch launches.

    thinc's optimizer, called once per weight array (199 for XLM-R), converts each to cupy and back, clips it with
    a norm read back to the host and runs its own kernels: on an H200 a training step took 0.128 s with it, 0.057 s
    with this (docs/gpu.md). Here: the same per-array gradient clipping (each array's norm at most
    `grad_clip`, as thinc clips, not the whole gradient's), L2 as thinc applies it (decoupled weight decay when
    `L2_is_weight_decay`, else added to the gradient), and torch's fused AdamW with the optimizer's current
    learning rate and betas. thinc adds eps before the bias correction, torch after: eps / sqrt(1 - beta2^t) here
    is thinc's (it matters for gradients near eps: rare wordpieces' rows). torch decays the weights before the Adam
    update, thinc after: lr * L2 * update apart, below float noise. A step whose gradients overflowed under mixed
    precision is skipped, as thinc skips it.
    """
    import torch

    if shim._torch_optimizer is None or shim._torch_optimizer[0] is not optimizer:
        # Moments belong to the thinc optimizer (a new one, e.g. a new training run, starts from zero, as thinc's).
        groups = layer_rate_groups(shim._model, shim.layer_decay)
        shim._torch_optimizer = [optimizer, torch.optim.AdamW(groups, lr=optimizer.learn_rate, fused=True), 0]
    adam, steps_taken = shim._torch_optimizer[1:]
    params = [param for param in shim._model.parameters() if param.grad is not None]
    grads = [param.grad for param in params]
    if grads and not shim._grad_scaler.found_inf:
        if optimizer.L2 and not optimizer.L2_is_weight_decay:
            torch._foreach_add_(grads, params, alpha=optimizer.L2)
        if optimizer.grad_clip:
            norms = torch.stack(torch._foreach_norm(grads))
            torch._foreach_mul_(grads, list((optimizer.grad_clip / norms.clamp(min=optimizer.grad_clip)).unbind()))
        for group in adam.param_groups:
            group.update(
                lr=optimizer.learn_rate * shim.rate_scale * group["rate_factor"],
                betas=(optimizer.b1, optimizer.b2),
                eps=optimizer.eps / (1.0 - optimizer.b2 ** (steps_taken + 1)) ** 0.5,
                weight_decay=optimizer.L2 if optimizer.L2_is_weight_decay else 0.0,
            )
        adam.step()  # weights whose gradient is None (frozen embeddings, the unused pooler) are left alone
        shim._torch_optimizer[2] = steps_taken + 1
    # Zeros, as thinc leaves them: the gradients stay allocated from step to step.
    shim._model.zero_grad(set_to_none=False)
    shim._grad_scaler.update()


def layer_rate_groups(encoder, layer_decay: float) -> list[dict]:
    """The encoder's trainable weights as AdamW parameter groups, each with its `rate_factor`: 1 for the top layer
    (and anything above it: the pooler), `layer_decay` ** k for the layer k below the top, the embeddings one step
    further down. Layers are read from the weights' names (`...layer.<i>....`, `...embeddings...`: BERT, XLM-R)."""
    n_layers = encoder.config.num_hidden_layers
    factors: dict[float, list] = {}
    for name, param in encoder.named_parameters():
        if not param.requires_grad:
            continue
        layer = re.search(r"\blayer\.(\d+)\.", name)
        if layer:
            depth = n_layers - 1 - int(layer.group(1))
        elif "embeddings" in name:
            depth = n_layers
        else:
            depth = 0
        factors.setdefault(layer_decay**depth, []).append(param)
    return [{"params": params, "rate_factor": factor} for factor, params in factors.items()]


def init_encoder(model: Model, X=None, Y=None) -> None:
    """Load the pretrained tokenizer and weights (Hub name or local folder) once; the width is the hidden size."""
    from spacy_transformers.layers.transformer_model import huggingface_from_pretrained

    shim = model.shims[0]
    if shim._hfmodel.transformer is None:
        hf_objects = huggingface_from_pretrained(
            model.attrs["name"],
            dict(shim._hfmodel._init_tokenizer_config),
            dict(shim._hfmodel._init_transformer_config),
        )
        if not getattr(hf_objects.tokenizer, "is_fast", False):
            # Titles are tokenized by the Rust backend of a fast tokenizer (`wordpiece_ids`), as spacy-transformers'
            # own alignment needed one too.
            raise ValueError(
                f"titlecat.TransformerTitleClassifier.v1: {model.attrs['name']!r} loads a slow (Python) tokenizer; "
                "a fast one (tokenizer.json, the Hugging Face `tokenizers` library) is needed"
            )
        shim._hfmodel = hf_objects
        shim._model = hf_objects.transformer
    model.set_dim("nO", shim._model.config.hidden_size)


def encoder_forward(model: Model, docs: list[Doc], is_train: bool):
    """One fast-tokenizer call for the batch, the encoder, then pooling on the batch as tensors.

    Predicting, the batch is sorted by length and cut into chunks of at most `max_batch_items` padded
    wordpieces (`max_batch_items_gpu` on a GPU), each padded to its own longest title, the cuts chosen to waste
    little on padding without too many passes (`length_chunks`): padded to the batch's longest title, most of the
    work would be padding (titles average ~8 pieces, the longest of 1,000 reach 64).
    Training batches come sorted by length from the batcher and go through whole, so one backward pass serves
    the batch.
    """
    import torch
    from thinc.api import xp2torch

    shim = model.shims[0]
    if not docs:
        return numpy.zeros((0, model.get_dim("nO")), dtype="float32"), no_gradient
    texts = [model.attrs["prefix"] + doc.text for doc in docs]
    ids, mask = wordpiece_ids(shim._hfmodel.tokenizer, texts, model.attrs["max_length"])
    if is_train:
        if model.attrs["freeze_embeddings"]:
            # Wordpieces of titles in languages the training data barely has keep their pretrained vectors; and
            # the largest matrix (XLM-R: 192M of 278M weights) costs no gradient or optimizer update.
            shim._model.get_input_embeddings().weight.requires_grad_(False)
        if model.attrs["static_shapes"]:
            ids, mask = static_shape(ids, mask, shim._hfmodel.tokenizer, model.attrs["max_length"])
        with compiled_encoder(shim, model.attrs["torch_compile"]):
            pooled, backprop_encoder = encode_chunk(shim, ids, mask, model.attrs["pooling"], is_train)

        def backprop(d_pooled):
            grad = xp2torch(d_pooled, device=pooled.device)
            if len(docs) < pooled.shape[0]:  # the filler rows of a static shape get no gradient
                grad = torch.cat([grad, grad.new_zeros((pooled.shape[0] - len(docs), grad.shape[1]))])
            backprop_encoder(ArgsKwargs(args=(pooled,), kwargs={"grad_tensors": grad}))
            return []  # docs have no gradient

        return to_numpy(pooled[: len(docs)]), backprop
    lengths = mask.sum(axis=1)
    order = numpy.argsort(lengths, kind="stable")
    pooled_chunks = []
    on_gpu = shim._model.device.type == "cuda"
    budget = model.attrs["max_batch_items_gpu" if on_gpu else "max_batch_items"]
    # On a GPU a pass costs as much as a full one (kernel launches bound it, docs/gpu.md): fewest passes first.
    pass_cost = budget if on_gpu else CPU_PASS_COST
    for rows in length_chunks(lengths[order], budget, pass_cost):
        chunk = order[rows]
        width = int(lengths[chunk].max())
        pooled_chunks.append(
            encode_chunk(shim, ids[chunk, :width], mask[chunk, :width], model.attrs["pooling"], False)[0]
        )
    # The chunks hold the titles in length order; back to the batch's order.
    pooled = to_numpy(torch.cat(pooled_chunks))
    position = numpy.empty_like(order)
    position[order] = numpy.arange(len(order))
    return pooled[position], no_gradient


# Per Hugging Face tokenizer, a copy of its Rust tokenizer that truncates at each max_length (never padding).
_TRUNCATING_BACKENDS: WeakKeyDictionary = WeakKeyDictionary()


def wordpiece_ids(tokenizer, texts: list[str], max_length: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Wordpiece ids padded on the right to the longest title, and the attention mask: what
    `tokenizer(texts, padding="longest", truncation=True, max_length=max_length)` returns, as int64 arrays.

    The fast tokenizer's Rust backend on the whole batch (its threads), skipping the wrapper's per-title Python
    objects (a dict and a BatchEncoding per title, then lists padded in Python): 23 µs → 7 µs a title here. A copy
    of the backend carries the truncation, so the tokenizer saved with the pipeline is left as it was.
    """
    from tokenizers import Tokenizer

    backends = _TRUNCATING_BACKENDS.setdefault(tokenizer, {})
    if max_length not in backends:
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        backend.enable_truncation(max_length, direction=tokenizer.truncation_side)
        backends[max_length] = backend
    backend = backends[max_length]
    # encode_batch_fast (tokenizers >= 0.21) skips the character offsets, which nothing here reads.
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    id_lists = [encoding.ids for encoding in encode(texts)]
    lengths = numpy.fromiter(map(len, id_lists), dtype=numpy.int64, count=len(id_lists))
    flat = numpy.fromiter(itertools.chain.from_iterable(id_lists), dtype=numpy.int64, count=int(lengths.sum()))
    mask = numpy.arange(int(lengths.max(initial=0))) < lengths[:, None]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = numpy.full(mask.shape, pad_id, dtype=numpy.int64)
    ids[mask] = flat  # row by row, left to right: each title's pieces, then its padding
    return ids, mask.astype(numpy.int64)


# The grid of `static_shape`. The config's batches of department's training data (an epoch: 139 batches of 1 to
# 488 titles, 11 to 64 wordpieces wide with the tests' tokenizer) come in 97 shapes; on this grid in 29, for 9%
# more padded wordpieces (a grid of 64 × 8: 17 shapes, +45%).
STATIC_ROWS, STATIC_WIDTH = 16, 4


def static_shape(ids: numpy.ndarray, mask: numpy.ndarray, tokenizer, max_length: int) -> tuple[numpy.ndarray, ...]:
    """A padded batch grown to a shape of few: titles up to a multiple of STATIC_ROWS, wordpieces up to a multiple
    of STATIC_WIDTH, never past max_length (where position embeddings end). Training batches come in ever new
    sizes (titles × longest title) and a CUDA graph is recorded per shape: without this a compiled encoder would
    record one nearly every step. Filler rows hold one <s> piece each, not none (a row with nothing to attend to
    has no defined softmax); they come after the titles."""
    rows, width = ids.shape
    shape = (
        -(-rows // STATIC_ROWS) * STATIC_ROWS,
        min(-(-width // STATIC_WIDTH) * STATIC_WIDTH, max(width, max_length)),
    )
    if shape == ids.shape:
        return ids, mask
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    first_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else pad_id
    grown_ids = numpy.full(shape, pad_id, dtype=ids.dtype)
    grown_mask = numpy.zeros(shape, dtype=mask.dtype)
    grown_ids[:rows, :width], grown_mask[:rows, :width] = ids, mask
    grown_ids[rows:, 0], grown_mask[rows:, 0] = first_id, 1
    return grown_ids, grown_mask


# Per encoder class and torch.compile options, its forward compiled: the unbound function, so that no encoder is
# kept alive by it (and the module, saved and pickled with the pipeline, holds nothing compiled).
_COMPILED_FORWARDS: dict = {}
# Compilations torch allows a function before it runs it eagerly for good (its default: 8). Dynamic shapes (torch's
# default) compile once for all shapes after the second; `"dynamic": false` compiles every shape of the grid.
COMPILED_SHAPES = 128


@contextlib.contextmanager
def compiled_encoder(shim, options: dict):
    """Within it, the encoder's forward is `torch.compile(forward, **options)`, compiled once per encoder class and
    options; with no options, nothing changes. Only training passes run it: prediction's chunks take any shape."""
    if not options:
        yield
        return
    import torch

    module = shim._model
    key = (type(module), json.dumps(options, sort_keys=True, default=repr))
    if key not in _COMPILED_FORWARDS:
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), COMPILED_SHAPES))
        _COMPILED_FORWARDS[key] = torch.compile(type(module).forward, **options)
    for param in module.parameters():
        if param.requires_grad and param.grad is None:
            # A gradient with nowhere to go is taken over by autograd as it is, and a CUDA graph's outputs are
            # overwritten by its next replay: kept weight gradients must be accumulated into, never taken over
            # (the pooler, which no title classifier reads, then gets zero gradients: weight decay only).
            param.grad = torch.zeros_like(param)
    torch.compiler.cudagraph_mark_step_begin()  # a new training step: the last one's graph outputs are done with
    # An instance attribute: nn.Module.__call__ finds it before the class's forward.
    module.forward = types.MethodType(_COMPILED_FORWARDS[key], module)
    try:
        yield
    finally:
        del module.forward


def length_chunks(sorted_lengths, max_items: int, pass_cost: int) -> list[slice]:
    """Consecutive slices of titles sorted by length that minimise the padded wordpieces (each slice padded to its
    longest title) plus `pass_cost` a slice, each slice within `max_items` padded wordpieces (a title longer than
    that alone).

    A forward pass costs fixed work besides its wordpieces (each layer's kernel launches and thread start-ups), so
    larger passes pay until their padding costs more. Cuts fall where the length changes (or within a run of one
    length too long for one pass): moving a cut into such a run never saves padding. Dynamic programming over
    those candidate cuts, a few dozen a batch.
    """
    lengths = [int(length) for length in sorted_lengths]
    bounds = [0]  # candidate cuts, as title positions
    run_ends = [end for end in range(1, len(lengths)) if lengths[end] != lengths[end - 1]] + [len(lengths)]
    for end in run_ends if lengths else []:
        start = bounds[-1]
        per_pass = max(1, max_items // max(lengths[start], 1))
        bounds.extend(range(start + per_pass, end, per_pass))
        bounds.append(end)
    best, cut_before = [0] * len(bounds), [0] * len(bounds)  # best cost of the titles before bounds[j]
    for j in range(1, len(bounds)):
        width = lengths[bounds[j] - 1]
        best[j] = None
        for i in range(j - 1, -1, -1):
            items = (bounds[j] - bounds[i]) * width
            if items > max_items and i < j - 1:
                break  # wider slices only grow
            cost = best[i] + items + pass_cost
            if best[j] is None or cost < best[j]:
                best[j], cut_before[j] = cost, i
    chunks, j = [], len(bounds) - 1
    while j > 0:
        chunks.append(slice(bounds[cut_before[j]], bounds[j]))
        j = cut_before[j]
    return chunks[::-1]


def encode_chunk(shim, ids, mask, pooling: str, is_train: bool):
    """The encoder on one padded chunk (numpy ids and mask), pooled per title: a float32 torch tensor."""
    import torch

    device = shim._model.device
    mask_tensor = torch.from_numpy(mask).to(device)
    inputs = ArgsKwargs(args=(), kwargs={"input_ids": torch.from_numpy(ids).to(device), "attention_mask": mask_tensor})
    with attention_kernels(device):
        output, backprop = shim(inputs, is_train)
    hidden = output.last_hidden_state
    if pooling == "first":
        pooled = hidden[:, 0]
    else:
        weights = mask_tensor.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    return pooled.float(), backprop  # fp16 under mixed precision; thinc's layers on top are float32


def attention_kernels(device):
    """On a GPU, scaled-dot-product attention without cuDNN's kernels; elsewhere torch's choice.

    On Hopper GPUs torch prefers cuDNN's attention, which builds an execution plan for every new shape: 2.4 ms of
    CPU a call on an H200, 12 layers twice a step, and titles come in batches of ever new sizes (count × longest
    title): a fresh process's first 30 training steps took 362 ms each with it, 56 ms without. Flash attention and
    the memory-efficient kernel need no plan (the backward pass follows the forward's choice).
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def to_numpy(tensor) -> numpy.ndarray:
    """A float32 torch tensor (pooled vectors) as a numpy array for the head on the CPU: one copy a batch."""
    return tensor.detach().cpu().numpy()


def no_gradient(d_pooled) -> list:
    raise ValueError("titlecat.TransformerTitleClassifier.v1: no gradient outside training (is_train=False)")
