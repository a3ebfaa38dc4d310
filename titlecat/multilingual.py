"""The multilingual pipeline: a frozen pretrained encoder's title vector beside the title's n-grams.

Two registered pieces, shipped inside the wheels with `spacy package --code`:

- the `titlecat_title_encoder` component runs a multilingual encoder (multilingual-e5-small by default, any
  BERT / XLM-R folder) once per title and sets `doc._.title_vector`, the mean of its last hidden states,
  L2-normalised. On CPU it runs the encoder's layers as an int8 ONNX Runtime graph (AVX-512 VNNI kernels) and
  looks the piece embeddings up in numpy; on a GPU (`spacy.require_gpu`), the fp16 weights in torch. Titles are
  tokenised per batch, sorted by length and run in chunks, each distinct text once.
- `titlecat.MultilingualTitleClassifier.v1`: an exclusive textcat whose logits are a linear function of the
  title's hashed n-grams (as `titlecat.TitleNgramClassifier.v2`) plus one of its title vector;
  `titlecat.fit_multilingual_title_classifier.v1` fits both by logistic regression, as the CPU pipeline is fitted.

In a combined pipeline the two textcats read the one encoder's vector: the encoder runs once per title.

This module must stay importable inside a wheel without titlecat: it imports spaCy, thinc, numpy and its
sibling `components` (shipped beside it); onnxruntime, tokenizers and safetensors when a pipeline is loaded;
torch, transformers and onnx only to build an encoder (training) or to run it on a GPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

import catalogue
import numpy as np
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Linear, Model, SparseLinear_v2, with_cpu, zero_init
from thinc.types import Floats2d

try:  # inside titlecat, and inside a wheel that ships both files beside each other
    from .components import (
        extract_title_features,
        fit_linear_by_logistic_regression,
        hashed_design_matrix,
        read_corpus_docs,
        title_text,
        unscored_if_blank,
    )
except ImportError:  # this file loaded on its own (spacy package/train --code), titlecat installed
    from titlecat.components import (
        extract_title_features,
        fit_linear_by_logistic_regression,
        hashed_design_matrix,
        read_corpus_docs,
        title_text,
        unscored_if_blank,
    )

ENCODER_FACTORY = "titlecat_title_encoder"
VECTOR_ATTR = "title_vector"
# The piece embeddings (fp16, memory-mapped: a title touches a few rows), the layers in fp16 (torch, on a GPU) and
# as the int8 ONNX graph the CPU runs, the tokenizer and the model's config.
# Where `titlecat encoder` saves the runtime it built, inside the encoder folder, so that every training loads it.
RUNTIME_DIR = "titlecat-runtime"
ENCODER_FILES = ("config.json", "embeddings.npy", "layers.safetensors", "layers-int8.onnx", "tokenizer.json")
if not Doc.has_extension(VECTOR_ATTR):
    Doc.set_extension(VECTOR_ATTR, default=None)


def is_blank(doc: Doc) -> bool:
    return not title_text(doc).strip()


class EncoderRuntime:
    """A frozen encoder: tokenizer, piece embeddings (fp16) and its layers as an int8 ONNX graph (rowwise_int8).

    Everything it needs is bytes and arrays, so it pickles (nlp.pipe(n_process=...)) and saves as it runs.
    """

    def __init__(
        self,
        config: dict,
        tokenizer_json: str,
        embeddings: np.ndarray,
        body_onnx: bytes,
        threads: int = 0,
        layers_path: str | None = None,
        layers: dict | None = None,
        embedding_name: str = "embeddings.word_embeddings.weight",
    ):
        from tokenizers import Tokenizer

        self.config, self.tokenizer_json, self.embeddings, self.body_onnx = (
            config,
            tokenizer_json,
            embeddings,
            body_onnx,
        )
        self.threads, self.layers_path, self._layers, self.embedding_name = threads, layers_path, layers, embedding_name
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()
        self._session = None
        self._torch_model = None
        self.pad_id = int(config.get("pad_token_id") or 0)

    def __getstate__(self) -> dict:
        keys = ("config", "tokenizer_json", "body_onnx", "threads", "layers_path", "embedding_name")
        state = {key: getattr(self, key) for key in keys}
        return {**state, "embeddings": np.asarray(self.embeddings), "layers": self._layers}

    def save(self, path: Path) -> None:
        """ENCODER_FILES in `path`: what `load` reads back, with no torch, transformers or network."""
        from safetensors.numpy import save_file

        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")
        (path / "tokenizer.json").write_text(self.tokenizer_json, encoding="utf-8")
        (path / "layers-int8.onnx").write_bytes(self.body_onnx)
        np.save(path / "embeddings.npy", self.embeddings, allow_pickle=False)
        layers = {name: array for name, array in self.state_dict.items() if name != self.embedding_name}
        save_file(layers, str(path / "layers.safetensors"), metadata={"format": "pt"})

    @classmethod
    def load(cls, path: Path, threads: int = 0) -> EncoderRuntime:
        missing = [name for name in ENCODER_FILES if not (path / name).exists()]
        if missing:
            raise FileNotFoundError(f"{path}: the title encoder's files {missing} are missing")
        return cls(
            json.loads((path / "config.json").read_text()),
            (path / "tokenizer.json").read_text(encoding="utf-8"),
            np.load(path / "embeddings.npy", mmap_mode="r", allow_pickle=False),
            (path / "layers-int8.onnx").read_bytes(),
            threads,
            layers_path=str(path / "layers.safetensors"),
        )

    @property
    def state_dict(self) -> dict[str, np.ndarray]:
        """Every weight in fp16, the piece embeddings under `embedding_name` (read from disk on first use)."""
        if self._layers is None:
            from safetensors.numpy import load_file

            self._layers = load_file(self.layers_path)
        return {**self._layers, self.embedding_name: self.embeddings}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    @property
    def width(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def session(self):
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            # One thread a run: the chunks run side by side instead (`workers`), one a core. ONNX Runtime's own
            # threads split each op of a chunk and wait for each other after every op (spinning while they wait):
            # on 2 cores, chunks side by side ran 1.1-2.2x faster, most when the cores are shared (docs/speed.md).
            options.intra_op_num_threads = 1
            self._session = onnxruntime.InferenceSession(self.body_onnx, options, providers=["CPUExecutionProvider"])
        return self._session

    @property
    def workers(self) -> int:
        """How many chunks run at once (threads: 0 = one a core this process may use)."""
        if self.threads:
            return self.threads
        import os

        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.body_onnx)
        digest.update(self.tokenizer_json.encode("utf-8"))
        digest.update(np.ascontiguousarray(self.embeddings[:: max(1, len(self.embeddings) // 4096)]).tobytes())
        return digest.hexdigest()[:16]

    def piece_ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        self.tokenizer.enable_truncation(max_length)
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def encode(
        self, texts: list[str], prefix: str, max_length: int, chunk_size: int, torch_device: str | None = None
    ) -> np.ndarray:
        """The L2-normalised mean of the last hidden states of each text (prefix + text): [len(texts), width].

        By the int8 ONNX graph, or by the fp16 weights in torch on `torch_device` (fp32 on "cpu")."""
        vectors = np.zeros((len(texts), self.width), dtype="float32")
        if not texts:
            return vectors
        ids = self.piece_ids([prefix + text for text in texts], max_length)
        chunks = list(self.padded_chunks(ids, chunk_size))
        if torch_device:
            for rows, matrix, mask in chunks:
                vectors[rows] = self._torch_forward(matrix, mask, torch_device)
        else:
            session = self.session

            def run(chunk) -> None:
                rows, matrix, mask = chunk
                vectors[rows] = session.run(None, self.onnx_inputs(matrix, mask))[0]

            # A title's vector reads only its own rows (rowwise_int8), so which chunk runs where changes no bit.
            workers = min(self.workers, len(chunks))
            if workers > 1:
                from concurrent.futures import ThreadPoolExecutor

                # ONNX Runtime's run is thread-safe and lets go of the GIL: the chunks share one session.
                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(run, chunks))
            else:
                for chunk in chunks:
                    run(chunk)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def padded_chunks(self, ids: list[list[int]], chunk_size: int):
        """(rows, piece ids, attention mask) of each chunk, padded to its longest title. Sorted by length first, so
        a chunk's titles need (almost) no padding."""
        lengths = np.fromiter(map(len, ids), dtype="int64", count=len(ids))
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), chunk_size):
            rows = order[start : start + chunk_size]
            width = int(lengths[rows].max())
            matrix = np.full((len(rows), width), self.pad_id, dtype="int64")
            mask = np.zeros((len(rows), width), dtype="int64")
            for row, index in enumerate(rows):
                matrix[row, : lengths[index]] = ids[index]
                mask[row, : lengths[index]] = 1
            yield rows, matrix, mask

    def onnx_inputs(self, matrix: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        return {"inputs_embeds": self.embeddings[matrix].astype("float32"), "attention_mask": mask}

    def _torch_forward(self, matrix: np.ndarray, mask: np.ndarray, device: str) -> np.ndarray:
        import torch

        model = self.torch_model(device)
        device = next(model.parameters()).device
        with torch.inference_mode():
            ids = torch.from_numpy(matrix).to(device)
            weights = torch.from_numpy(mask).to(device)
            hidden = model(input_ids=ids, attention_mask=weights).last_hidden_state.float()
            weights = weights.unsqueeze(-1).float()
            return ((hidden * weights).sum(1) / weights.sum(1)).cpu().numpy()

    def torch_model(self, device: str):
        """The encoder in torch (fp16 on a GPU, fp32 on the CPU), built from the saved fp16 weights."""
        if self._torch_model is None or str(next(self._torch_model.parameters()).device.type) != device.split(":")[0]:
            self._torch_model = build_torch_encoder(self.config, self.state_dict, device)
        return self._torch_model


def build_torch_encoder(config: dict, state_dict: dict, device: str):
    import torch
    from transformers import AutoConfig, AutoModel

    hf_config = AutoConfig.for_model(**config)
    model = AutoModel.from_config(hf_config, add_pooling_layer=False)
    tensors = {name: torch.from_numpy(np.array(array)) for name, array in state_dict.items()}
    # Only the integer buffers (position ids) are not saved: they are rebuilt from the config.
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    weights_missing = [name for name in missing if model.state_dict()[name].is_floating_point()]
    if weights_missing or unexpected:
        raise ValueError(
            f"the saved encoder does not fit its config: missing {weights_missing}, unexpected {unexpected}"
        )
    dtype = torch.float16 if device != "cpu" else torch.float32
    return model.to(device=device, dtype=dtype).eval()


class TitleVectorPipe(Pipe):
    """A component that sets `doc._.title_vector` (None for a blank title), each distinct title of a batch once:
    the title encoder here, the fast pipeline's piece vectors (piece_vectors.py). Subclasses give `vectors`."""

    # Title -> vector, only while training (the fit callback turns it on): the loop's update batches and dev
    # scoring then reuse the vectors the fit computed. Never saved; a loaded pipeline has none.
    memo: dict[str, np.ndarray] | None = None

    def vectors(self, texts: list[str]) -> np.ndarray:
        """[len(texts), width]: the texts' vectors."""
        raise NotImplementedError

    def __call__(self, doc: Doc) -> Doc:
        return next(iter(self.pipe([doc])))

    def pipe(self, stream, *, batch_size: int = 1000):
        from spacy.util import minibatch

        for docs in minibatch(stream, size=batch_size):
            self.set_vectors(docs)
            yield from docs

    def set_vectors(self, docs: list[Doc]) -> None:
        memo = self.memo if self.memo is not None else {}
        texts = list(dict.fromkeys(title_text(d) for d in docs if not is_blank(d) and title_text(d) not in memo))
        found = {**memo, **dict(zip(texts, self.vectors(texts), strict=True))}
        if self.memo is not None:
            self.memo = found
        for doc in docs:
            doc._.set(VECTOR_ATTR, found.get(title_text(doc)))

    def to_bytes(self, *, exclude=tuple()) -> bytes:
        raise NotImplementedError(f"[{self.name}]: save the pipeline with nlp.to_disk (its vectors' tables are large)")

    def from_bytes(self, bytes_data, *, exclude=tuple()):
        raise NotImplementedError(f"[{self.name}]: load the pipeline with spacy.load from its folder")


class TitleEncoder(TitleVectorPipe):
    """Sets `doc._.title_vector`: a frozen multilingual encoder's vector of the title (None for a blank title)."""

    def __init__(self, nlp: Language, name: str, prefix: str, max_length: int, chunk_size: int, threads: int):
        self.nlp, self.name = nlp, name
        self.cfg = {"prefix": prefix, "max_length": max_length, "chunk_size": chunk_size, "threads": threads}
        self.runtime: EncoderRuntime | None = None
        # None: the int8 ONNX layers on a CPU, torch on the GPU spaCy uses; "cpu" runs the fp32 torch forward (the
        # benchmark compares the two). Not saved.
        self.torch_device: str | None = None

    def initialize(self, get_examples=None, *, nlp=None, encoder_path: str | None = None) -> None:
        """The runtime of a Hugging Face encoder folder: the one `titlecat encoder` built beside it (RUNTIME_DIR), or
        built now (torch, transformers and onnx needed)."""
        if not encoder_path:
            raise ValueError(f"[{self.name}]: initialize needs encoder_path, a Hugging Face encoder folder")
        built = Path(encoder_path) / RUNTIME_DIR
        if (built / "layers-int8.onnx").exists():
            self.runtime = EncoderRuntime.load(built, self.cfg["threads"])
        else:
            self.runtime = build_runtime(Path(encoder_path), self.cfg["threads"])
        self.cfg.update(fingerprint=self.runtime.fingerprint(), width=self.runtime.width)

    def _require_runtime(self) -> EncoderRuntime:
        if self.runtime is None:
            raise ValueError(f"[{self.name}]: the title encoder has no encoder yet: initialize or load the pipeline")
        return self.runtime

    def vectors(self, texts: list[str]) -> np.ndarray:
        from thinc.api import get_current_ops

        runtime = self._require_runtime()
        ops = get_current_ops()
        # On a GPU (spacy.require_gpu), the fp16 weights in torch on the same device.
        device = f"cuda:{ops.device_id}" if ops.device_type == "gpu" else self.torch_device
        return runtime.encode(texts, self.cfg["prefix"], self.cfg["max_length"], self.cfg["chunk_size"], device)

    def signature(self) -> str:
        """What makes two encoders give the same vectors: the model's fingerprint and the settings that shape input."""
        settings = {key: self.cfg[key] for key in ("prefix", "max_length")}
        return f"{self._require_runtime().fingerprint()}:{json.dumps(settings, sort_keys=True)}"

    def to_disk(self, path, *, exclude=tuple()) -> None:
        path = Path(path)
        self._require_runtime().save(path)
        (path / "cfg").write_text(json.dumps(self.cfg, indent=2) + "\n")

    def from_disk(self, path, *, exclude=tuple()) -> TitleEncoder:
        path = Path(path)
        if not (path / "cfg").exists():
            raise FileNotFoundError(f"{path}: the title encoder's cfg is missing")
        self.cfg.update(json.loads((path / "cfg").read_text()))
        self.runtime = EncoderRuntime.load(path, self.cfg["threads"])
        return self


def make_title_encoder(
    nlp: Language, name: str, prefix: str, max_length: int, chunk_size: int, threads: int
) -> TitleEncoder:
    return TitleEncoder(nlp, name, prefix, max_length, chunk_size, threads)


# A wheel may ship this file where titlecat is installed too: the factory is registered once (as in combined.py).
if not catalogue.check_exists(*registry.factories.namespace, ENCODER_FACTORY):
    Language.factory(
        ENCODER_FACTORY, default_config={"prefix": "query: ", "max_length": 64, "chunk_size": 64, "threads": 0}
    )(make_title_encoder)


def embedding_name(state_dict: dict) -> str:
    names = [name for name in state_dict if name.endswith("embeddings.word_embeddings.weight")]
    if len(names) != 1:
        raise ValueError(f"the encoder has {len(names)} word embedding matrices, expected one: {names}")
    return names[0]


def build_runtime(folder: Path, threads: int = 0) -> EncoderRuntime:
    """Load a Hugging Face encoder folder, round its weights to fp16 (what the pipeline saves) and compile its layers
    to an int8 ONNX graph whose activations are quantised per row (`titlecat.rowwise_int8`). Needs torch,
    transformers and onnx."""
    import tempfile

    import onnx
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(folder).to_dict()
    tokenizer_json = read_tokenizer_json(folder)
    # No pooler: the title vector is the mean of the last hidden states, as e5 was trained.
    model = AutoModel.from_pretrained(folder, torch_dtype=torch.float32, add_pooling_layer=False)
    state_dict = {
        name: tensor.detach().to(torch.float16).numpy()
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point()
    }
    # The fp32 graph is built from the fp16-rounded weights, so that the saved weights reproduce it.
    torch_model = build_torch_encoder(config, state_dict, "cpu")
    with tempfile.TemporaryDirectory() as tmp, quiet_export():
        fp32_path = Path(tmp) / "layers.onnx"
        export_body(torch_model, fp32_path)
        fp32_model = onnx.load(str(fp32_path))
    embeddings = embedding_name(state_dict)
    layers = {name: array for name, array in state_dict.items() if name != embeddings}
    runtime = EncoderRuntime(
        config, tokenizer_json, state_dict[embeddings], b"", threads, layers=layers, embedding_name=embeddings
    )
    runtime.body_onnx = quantize_rows_int8(runtime, fp32_model)
    return runtime


def quantize_rows_int8(runtime: EncoderRuntime, fp32_model) -> bytes:
    """The layers' weight MatMuls in int8, activations quantised per row after smoothing measured on the
    calibration titles (with and without the e5 prefix: the vector is asked for both ways).

    Per row, so a title's vector never depends on the other titles of its batch: dynamic quantisation
    (`quantize_dynamic`) scales each activation matrix as a whole, and changed answers with the batch (3% of them,
    up to 0.12 in a score)."""
    from .rowwise_int8 import CALIBRATION_TITLES, activation_maxima_of, rowwise_int8

    texts = [*CALIBRATION_TITLES, *(f"query: {title}" for title in CALIBRATION_TITLES)]
    feeds, masks = [], []
    for _, matrix, mask in runtime.padded_chunks(runtime.piece_ids(texts, 64), chunk_size=64):
        feeds.append(runtime.onnx_inputs(matrix, mask))
        masks.append(mask)
    maxima = activation_maxima_of(fp32_model, feeds, masks)
    return rowwise_int8(fp32_model, maxima).SerializeToString()


@contextlib.contextmanager
def quiet_export():
    """Without the tracer's and the quantiser's advice, which is about other models (ours: fixed inputs, no
    pre-processing needed)."""
    import logging
    import warnings

    loggers = [logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def read_tokenizer_json(folder: Path) -> str:
    if (folder / "tokenizer.json").exists():
        return (folder / "tokenizer.json").read_text(encoding="utf-8")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not tokenizer.is_fast:
        raise ValueError(f"{folder}: the encoder needs a fast tokenizer (tokenizer.json)")
    return tokenizer.backend_tokenizer.to_str()


def export_body(model, path: Path) -> None:
    """The encoder after its piece lookup, mean-pooled: (inputs_embeds, attention_mask) -> vector, as ONNX."""
    import torch

    class MeanPooledBody(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, inputs_embeds, attention_mask):
            hidden = self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1)

    width = model.config.hidden_size
    example = (torch.zeros((2, 8, width)), torch.ones((2, 8), dtype=torch.int64))
    dynamic = {"inputs_embeds": {0: "titles", 1: "pieces"}, "attention_mask": {0: "titles", 1: "pieces"}}
    torch.onnx.export(
        MeanPooledBody(model).eval(),
        example,
        str(path),
        input_names=["inputs_embeds", "attention_mask"],
        output_names=["vector"],
        dynamic_axes={**dynamic, "vector": {0: "titles"}},
        opset_version=17,
        dynamo=False,
    )


# ---- the classifier


def title_vectors(width: int, weight: float) -> Model[list[Doc], Floats2d]:
    """Each doc's `doc._.title_vector` times `weight` (zeros for a blank title), [n_docs, width]."""
    return Model("title_vectors", _title_vectors_forward, attrs={"width": width, "weight": weight})


def _title_vectors_forward(model: Model, docs: list[Doc], is_train: bool):
    # Module level, its settings in model.attrs (as thinc's own layers): a pipeline pickles (nlp.pipe(n_process=...)
    # under the spawn and forkserver start methods), which a closure would not.
    width, weight = model.attrs["width"], model.attrs["weight"]
    vectors = np.zeros((len(docs), width), dtype="float32")
    for row, doc in enumerate(docs):
        vector = doc._.get(VECTOR_ATTR)
        if vector is None:
            if is_blank(doc):
                continue
            raise ValueError(
                f"no title vector on {doc.text[:60]!r}: this titlecat textcat reads the vector its pipeline's "
                "'title_encoder' component sets before it; add that too, e.g. "
                "nlp.add_pipe('title_encoder', source=<the titlecat pipeline>, first=True)"
            )
        vectors[row] = vector
    return model.ops.asarray(vectors * weight), _no_vector_gradient


def _no_vector_gradient(d_vectors) -> list:
    return []  # the title vectors are fixed inputs


def _scores_forward(model: Model, docs: list[Doc], is_train: bool):
    features, ngram_linear, vectors, vector_linear = model.layers
    ngram_scores, backprop_ngrams = ngram_linear(features.predict(docs), is_train)
    vector_scores, backprop_vectors = vector_linear(vectors.predict(docs), is_train)
    scores = model.ops.softmax(ngram_scores + vector_scores)

    def backprop(d_scores):
        # As thinc's softmax output layers: the gradient of cross-entropy through the softmax is (scores - truth).
        backprop_ngrams(d_scores)
        backprop_vectors(d_scores)
        return []

    return scores, backprop


def _scores_init(model: Model, X=None, Y=None) -> None:
    # No forward pass here: the docs spaCy initialises with carry no title vectors yet.
    n_labels = model.get_dim("nO")
    for layer in (model.layers[1], model.layers[3]):
        layer.set_dim("nO", n_labels, force=True)
        layer.initialize()
    model.layers[1].set_param("b", model.ops.alloc1f(n_labels))


def _resize_output(model: Model, new_nO: int) -> Model:
    scores = model.layers[0]
    if scores.layers[1].has_param("W") and scores.layers[1].get_param("W") is not None:
        raise ValueError("a fitted titlecat multilingual classifier cannot take new labels: train a new one")
    for layer in (model, scores, scores.layers[1], scores.layers[3]):
        layer.set_dim("nO", new_nO, force=True)
    return model


@registry.architectures("titlecat.MultilingualTitleClassifier.v1")
def build_multilingual_title_classifier(
    width: int = 384,
    vector_weight: float = 1.0,
    min_n: int = 2,
    max_n: int = 5,
    length: int = 2**18,
    nO: int | None = None,
) -> Model[list[Doc], Floats2d]:
    """Exclusive classes (a softmax) from a linear function of the title's hashed n-grams (the features of
    TitleNgramClassifier) plus one of its encoder vector (`doc._.title_vector`, `width` wide, times `vector_weight`).

    Fitted by `titlecat.fit_multilingual_title_classifier.v1`; its temperature (titlecat.combined) scales both
    linear layers, referenced as `output_layer` and `vector_output_layer`.
    """
    ngram_linear = SparseLinear_v2(nO=nO, length=length)
    vector_linear = Linear(nO=nO, nI=width, init_W=zero_init)
    scores = Model(
        "multilingual_title_scores",
        _scores_forward,
        init=_scores_init,
        layers=[extract_title_features(min_n, max_n), ngram_linear, title_vectors(width, vector_weight), vector_linear],
        dims={"nO": nO},
    )
    # One layer from docs to scores (softmax inside): thinc's chain would run it while initialising, on docs that
    # have no title vector yet.
    model = with_cpu(scores, scores.ops)
    if nO is not None:
        model.set_dim("nO", nO)
    model.set_ref("output_layer", ngram_linear)
    model.set_ref("vector_output_layer", vector_linear)
    model.attrs["multi_label"] = False
    model.attrs["resize_output"] = _resize_output
    # A title with no text scores 0.0 for every label, alone and in a batch (components.unscored_if_blank).
    return unscored_if_blank(model)


@registry.callbacks("titlecat.fit_multilingual_title_classifier.v1")
def make_fit_multilingual_title_classifier(
    path: str,
    component: str = "textcat",
    encoder: str = "title_encoder",
    C: float = 10.0,
    class_weight: str | None = None,
    max_iter: int = 3000,
):
    """An `[initialize.after_init]` callback: fit both linear layers of a MultilingualTitleClassifier by
    L2-regularised logistic regression on the training corpus at `path`, its titles' vectors from `encoder`."""

    def fit(nlp):
        from wasabi import msg

        textcat = nlp.get_pipe(component)
        model = textcat.model
        scores = next((layer for layer in model.walk() if layer.name == "multilingual_title_scores"), None)
        if scores is None:
            raise ValueError(f"[{component}]: {FIT_NAME} fits a titlecat.MultilingualTitleClassifier")
        features, ngram_linear, vectors, vector_linear = scores.layers
        docs = read_corpus_docs(path, nlp)
        title_encoder = nlp.get_pipe(encoder)
        title_encoder.memo = {}
        start = time.perf_counter()
        docs = list(title_encoder.pipe(docs))
        msg.info(
            f"Encoded the {len(title_encoder.memo):,} distinct titles of {path} with {encoder} "
            f"({len(title_encoder.memo) / (time.perf_counter() - start):.0f} titles/s)"
        )
        keys, values, lengths = features.predict(docs)
        n_weights = ngram_linear.get_dim("length")
        ngrams = hashed_design_matrix(np.asarray(keys), np.asarray(values), np.asarray(lengths), n_weights)
        msg.info(f"Fitting {component} by logistic regression (C={C}, class_weight={class_weight}) on {len(docs):,}")
        ngram_weights, vector_weights, bias = fit_ngrams_and_vectors(
            ngrams, np.asarray(vectors.predict(docs)), docs, list(textcat.labels), f"{path}: fitting {component}", C,
            class_weight, max_iter,
        )  # fmt: skip
        ngram_linear.set_param("W", ngram_linear.ops.asarray(ngram_weights.ravel()))
        ngram_linear.set_param("b", ngram_linear.ops.asarray(bias))
        vector_linear.set_param("W", vector_linear.ops.asarray(vector_weights))
        vector_linear.set_param("b", vector_linear.ops.alloc1f(len(bias)))
        return nlp

    return fit


FIT_NAME = "titlecat.fit_multilingual_title_classifier.v1"


def fit_ngrams_and_vectors(
    ngrams, vectors: np.ndarray, docs: list[Doc], labels: list[str], what: str, C: float, class_weight, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logistic regression over the hashed n-gram design matrix beside the (weighted) title vectors: the n-gram
    weights [n_labels, n_hashed], the vector weights [n_labels, width] and the biases.

    The vectors are centred for the fit and the centre folded into the biases afterwards: the same optimum (the
    intercept is not penalised), reached in a third of L-BFGS's iterations (e5's vectors share a large mean).
    """
    import scipy.sparse

    centre = vectors.mean(axis=0)
    matrix = scipy.sparse.hstack([ngrams, scipy.sparse.csr_matrix((vectors - centre).astype("float64"))], format="csr")
    weights, bias = fit_linear_by_logistic_regression(matrix, docs, labels, what, C, class_weight, max_iter)
    n_hashed = ngrams.shape[1]
    ngram_weights, vector_weights = (
        np.ascontiguousarray(weights[:, :n_hashed]),
        np.ascontiguousarray(weights[:, n_hashed:]),
    )
    return ngram_weights, vector_weights, (bias - vector_weights @ centre).astype("float32")
