"""``Encoder``: text -> embedding vectors with a GGUF model.

A ``bert`` file (the default all-MiniLM-L6-v2, bge, e5 ...) runs on the BERT encoder with the
pooling its file names; any decoder GGUF (llama, qwen2, gemma3 ...) serves embeddings too,
by mean or last-token pooling of its final-norm hidden states.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError, ContextLengthExceeded, InvalidRequestError
from .pooling import POOLING, l2_normalize, pool

DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"


class _BertBackend:
    def __init__(self, gguf, n_threads: int | None):
        from ..llm.models import bert
        from ..llm.tokenizer_wpm import WordPieceTokenizer
        from ..llm.weights import WeightLoader

        self.args = bert.ModelArgs.from_gguf(gguf.metadata)
        self.model = bert.Model(self.args, WeightLoader(gguf), n_threads=n_threads)
        self.tokenizer = WordPieceTokenizer.from_gguf(gguf)
        self.dimension = self.args.n_embd
        self.n_ctx = self.args.n_ctx_train
        self.default_pooling = self.args.pooling if self.args.pooling in POOLING else "mean"

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        # special=True: "[SEP]" typed in a text is the token, as in sentence-transformers
        return self.tokenizer.encode_batch(texts, add_bos=True, special=True)

    def truncate(self, ids: list[int], limit: int) -> list[int]:
        return ids[:limit - 1] + ids[-1:]  # keep the closing [SEP]

    def embed(self, batch: list[list[int]], pooling: str) -> np.ndarray:
        T = max(len(ids) for ids in batch)
        ids = np.full((len(batch), T), self.tokenizer.pad_id or 0, np.int64)
        mask = np.zeros((len(batch), T), bool)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = True
        return pool(self.model.encode(ids, mask), mask, pooling)


class _DecoderBackend:
    """A generative model's final-norm hidden states, one text at a time."""

    def __init__(self, path: str, n_threads: int | None):
        from .. import llm

        self.model = llm.load_model(path, **({"n_threads": n_threads} if n_threads else {}))
        if not hasattr(self.model, "hidden_states"):
            raise ConfigError(f"{path}: this model offers no hidden states for embeddings", "model")
        self.dimension = int(self.model.args.n_embd)
        self.n_ctx = int(self.model.n_ctx)
        self.default_pooling = "mean"

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [self.model.tokenize(t) for t in texts]

    def truncate(self, ids: list[int], limit: int) -> list[int]:
        return ids[:limit]

    def embed(self, batch: list[list[int]], pooling: str) -> np.ndarray:
        out = np.zeros((len(batch), self.dimension), np.float32)
        for row, seq in enumerate(batch):
            if not seq:
                continue
            hidden = np.asarray(self.model.hidden_states(seq), np.float32)  # (T, D)
            out[row] = pool(hidden[None], np.ones((1, len(seq)), bool), pooling)[0]
        return out


class Encoder:
    """Embeddings of texts.

    ``model``: a GGUF path or a model-cache name (None: all-MiniLM-L6-v2, fetched on first
    use). ``normalize``: unit-length vectors. ``batch_size``: texts per forward pass.
    ``pooling``: mean, cls or last (None: the file's ``{arch}.pooling_type``, else mean).
    ``max_tokens``: token limit per text (default and upper bound: the model's context).
    A longer text raises ContextLengthExceeded unless ``truncate=True``.
    ``n_threads``: CPU threads (default: ``ABI_NUM_THREADS``, else every CPU available).
    """

    def __init__(self, model: str | os.PathLike | None = None, normalize: bool = True,
                 batch_size: int = 32, *, pooling: str | None = None, truncate: bool = False,
                 max_tokens: int | None = None, n_threads: int | None = None):
        from ..gguf import load
        from ..models_hub import resolve_model

        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}", "batch_size")
        if n_threads is not None and not (isinstance(n_threads, int) and n_threads > 0):
            raise ConfigError(f"n_threads must be a positive integer, got {n_threads!r}", "n_threads")
        if pooling is not None and pooling not in POOLING:
            raise ConfigError(f"pooling {pooling!r} is not supported; choose one of "
                              f"{', '.join(POOLING)}", "pooling")
        self.path = str(resolve_model(DEFAULT_EMBEDDING_MODEL if model is None else model))
        gguf = load(self.path)
        if gguf.architecture == "bert":
            self._backend = _BertBackend(gguf, n_threads)
        else:
            del gguf
            self._backend = _DecoderBackend(self.path, n_threads)
        self.normalize = bool(normalize)
        self.batch_size = batch_size
        self.pooling = pooling or self._backend.default_pooling
        self.truncate = bool(truncate)
        n_ctx = self._backend.n_ctx
        if max_tokens is not None and not (isinstance(max_tokens, int) and 2 <= max_tokens <= n_ctx):
            raise ConfigError(f"max_tokens must be an integer in [2, {n_ctx}], got {max_tokens!r}",
                              "max_tokens")
        self.max_tokens = max_tokens or n_ctx

    @property
    def dimension(self) -> int:
        return self._backend.dimension

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """The token ids each text is embedded from (after truncation, when enabled)."""
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidRequestError(f"text {i} is a {type(t).__name__}, not a str")
        out = self._backend.tokenize(list(texts))
        for i, ids in enumerate(out):
            if len(ids) > self.max_tokens:
                if not self.truncate:
                    raise ContextLengthExceeded(
                        f"text {i} is {len(ids)} tokens, over the limit of {self.max_tokens}; "
                        "shorten it or create the Encoder with truncate=True")
                out[i] = self._backend.truncate(ids, self.max_tokens)
        return out

    def encode_batch(self, texts) -> np.ndarray:
        """float32 (len(texts), dimension), one row per text, in order."""
        if isinstance(texts, str):
            raise InvalidRequestError("encode_batch takes a list of texts; use encode() for one text")
        ids = self.tokenize(list(texts))
        out = np.zeros((len(ids), self.dimension), np.float32)
        # similar lengths share a batch, so little is padded
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        for s in range(0, len(order), self.batch_size):
            rows = order[s:s + self.batch_size]
            out[rows] = self._backend.embed([ids[i] for i in rows], self.pooling)
        return l2_normalize(out) if self.normalize else out

    def encode(self, text: str) -> np.ndarray:
        """float32 (dimension,) for one text."""
        if not isinstance(text, str):
            raise InvalidRequestError(f"encode takes a str, not {type(text).__name__}")
        return self.encode_batch([text])[0]

    def __repr__(self) -> str:
        return (f"Encoder({os.path.basename(self.path)!r}, dimension={self.dimension}, "
                f"pooling={self.pooling!r}, normalize={self.normalize})")
