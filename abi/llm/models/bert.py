"""BERT encoders (all-MiniLM, bge, e5 ...): learned absolute positions and token types,
post-LayerNorm blocks, bidirectional attention, exact (erf) GELU feed-forward.

``Model.encode(ids, attention_mask)`` takes padded batches and runs only their real tokens,
packed one sequence after another, through the compiled forward (``abi/llm/_encode.pyx``):
padding costs nothing, and each sequence attends to its own tokens. Weights are turned into
float32 once at load (the model is small) and packed for the compiled pass's own float32
kernel; every product is computed in float32.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

import numpy as np

from ... import _kernels
from .. import _encode
from ...errors import ContextLengthExceeded, InvalidRequestError, UnsupportedModelError
from ..hparams import MAX_LAYERS, Metadata, require, vocab_size
from ..layers import layer_norm
from .. import threads

POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last"}


@dataclass(frozen=True)
class ModelArgs:
    arch: str
    n_vocab: int
    n_embd: int
    n_layers: int
    n_heads: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    n_token_types: int
    norm_eps: float
    pooling: str          # mean, cls, last or none ({arch}.pooling_type)
    causal: bool = False

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        arch = metadata.get("general.architecture")
        if arch != "bert":
            raise UnsupportedModelError(f"architecture {arch!r} is not bert")

        m = Metadata(metadata, arch)
        n_embd, n_heads = m.int("embedding_length"), m.int("attention.head_count")
        require(n_embd % n_heads == 0, f"{arch}.embedding_length {n_embd} is not divisible by "
                f"{arch}.attention.head_count {n_heads}")
        pooling = m.int("pooling_type", 1, lo=0)  # a file without the key: mean, the common case
        if pooling not in POOLING_NAMES:
            raise UnsupportedModelError(f"{arch}.pooling_type {pooling} is not supported "
                                        f"(supported: {', '.join(f'{k}={v}' for k, v in POOLING_NAMES.items())})")
        if metadata.get(f"{arch}.attention.causal", False):
            raise UnsupportedModelError("a causal bert model is not supported")
        types = metadata.get("tokenizer.ggml.token_type_count", 2)
        require(isinstance(types, int) and not isinstance(types, bool) and 1 <= types <= 1 << 16,
                f"tokenizer.ggml.token_type_count must be an integer in [1, 65536], found {types!r}")
        return cls(arch=arch, n_vocab=vocab_size(metadata, arch), n_embd=n_embd,
                   n_layers=m.int("block_count", hi=MAX_LAYERS), n_heads=n_heads, head_dim=n_embd // n_heads,
                   n_ff=m.int("feed_forward_length"), n_ctx_train=m.int("context_length"),
                   n_token_types=types, norm_eps=m.float("attention.layer_norm_epsilon", 1e-12),
                   pooling=POOLING_NAMES[pooling])


class Block:
    """One encoder layer; q, k and v are fused into one (3D, D) product."""

    def __init__(self, w, i: int, a: ModelArgs):
        p, D, F = f"blk.{i}.", a.n_embd, a.n_ff
        self.wqkv = np.concatenate([w.dense(p + f"attn_{t}.weight", (D, D)) for t in "qkv"])
        self.bqkv = np.concatenate([w.dense(p + f"attn_{t}.bias", (D,)) for t in "qkv"])
        self.wo, self.bo = w.dense(p + "attn_output.weight", (D, D)), w.dense(p + "attn_output.bias", (D,))
        self.attn_norm = (w.dense(p + "attn_output_norm.weight", (D,)), w.dense(p + "attn_output_norm.bias", (D,)))
        self.w_up, self.b_up = w.dense(p + "ffn_up.weight", (F, D)), w.dense(p + "ffn_up.bias", (F,))
        self.w_down, self.b_down = w.dense(p + "ffn_down.weight", (D, F)), w.dense(p + "ffn_down.bias", (D,))
        self.out_norm = (w.dense(p + "layer_output_norm.weight", (D,)), w.dense(p + "layer_output_norm.bias", (D,)))


class Model:
    def __init__(self, args: ModelArgs, weights, n_threads: int | None = None):
        a = self.args = args
        self.n_threads = max(1, int(n_threads or _kernels.default_num_threads()))
        self._threads = {few: threads.ThreadChooser(self.n_threads) for few in (False, True)}
        D = a.n_embd
        self.tok_embd = weights.dense("token_embd.weight", (a.n_vocab, D))
        self.pos_embd = weights.dense("position_embd.weight", (a.n_ctx_train, D))
        self.type_embd = weights.dense("token_types.weight", (a.n_token_types, D)) \
            if weights.has("token_types.weight") else np.zeros((1, D), np.float32)
        self.embd_norm = (weights.dense("token_embd_norm.weight", (D,)), weights.dense("token_embd_norm.bias", (D,)))
        # the compiled pass keeps its packed copy of the weights, not these
        self.compiled = _encode.Encoder([Block(weights, i, a) for i in range(a.n_layers)],
                                        D, a.n_ff, a.n_heads, a.norm_eps)

    def new_cache(self, *args, **kwargs):
        raise UnsupportedModelError("a bert model is an encoder for embeddings: it does not "
                                    "generate; use abi.embeddings.Encoder(path)")

    forward = new_cache

    def _check(self, ids, attention_mask, token_type_ids):
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise InvalidRequestError(f"ids must be a (batch, tokens) integer array, got {ids.dtype} {ids.shape}")
        mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
        if mask.shape != ids.shape:
            raise InvalidRequestError(f"attention_mask shape {mask.shape} differs from ids {ids.shape}")
        lengths = mask.sum(axis=1)
        if lengths.size and lengths.max() > self.args.n_ctx_train:
            raise ContextLengthExceeded(f"a sequence of {int(lengths.max())} tokens exceeds the model's "
                                        f"context of {self.args.n_ctx_train}; truncate it")
        real = ids[mask]
        if real.size and (real.min() < 0 or real.max() >= self.args.n_vocab):
            raise InvalidRequestError(f"token ids must lie in [0, {self.args.n_vocab})")
        types = np.zeros(ids.shape, np.int64) if token_type_ids is None else np.asarray(token_type_ids)
        if types.shape != ids.shape or (types[mask].size and
                                        (types[mask].min() < 0 or types[mask].max() >= len(self.type_embd))):
            raise InvalidRequestError(f"token_type_ids must match ids and lie in [0, {len(self.type_embd)})")
        return ids, mask, types

    def encode(self, ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """Final hidden states (B, T, D) float32 of padded batches ``ids`` (B, T); positions
        where ``attention_mask`` is 0 are padding and come back as zeros."""
        ids, mask, types = self._check(ids, attention_mask, token_type_ids)
        a = self.args
        B, T = ids.shape
        sel = np.flatnonzero(mask)  # packed order of the real tokens
        pos = (np.cumsum(mask, axis=1) - 1).reshape(-1)[sel]
        x = self.tok_embd[ids.reshape(-1)[sel]] + self.pos_embd[pos] + self.type_embd[types.reshape(-1)[sel]]
        x = np.ascontiguousarray(layer_norm(x, *self.embd_norm, a.norm_eps), np.float32)  # (N, D)
        lengths = mask.sum(axis=1)
        ends = np.cumsum(lengths)
        seq_lo = np.repeat(ends - lengths, lengths).astype(np.int32)
        seq_hi = np.repeat(ends, lengths).astype(np.int32)
        # with a core kept busy by another process, one thread can beat two: time both now
        # and then and keep the faster, as decode steps do; one chooser per kind of pass,
        # fed the time per row (plus a few rows' worth for the few-token pass's weight read)
        few = len(x) <= _encode.FEW_TOKENS
        chooser = self._threads[few]
        n = chooser.pick()
        t0 = time.perf_counter()
        with _single_threaded_blas():
            self.compiled.run(x, seq_lo, seq_hi, n)
        chooser.record(n, (time.perf_counter() - t0) / (len(x) + (8 if few else 0)))
        threads.release_unless_computing()   # embeddings come from request threads (threads.py)
        out = np.zeros((B * T, a.n_embd), np.float32)
        out[sel] = x
        return out.reshape(B, T, a.n_embd)


# -- BLAS threads --------------------------------------------------------------------------
# Each of the forward's threads calls BLAS on its own rows, so BLAS must not start a thread
# team of its own meanwhile (two teams would fight over the cores; OpenBLAS's spins at its
# barriers and collapses when the machine is busy).

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit = None
_blas_controller = None  # scanning the loaded libraries costs ~ms: once per process


@contextlib.contextmanager
def _single_threaded_blas():
    """BLAS limited to one thread while any encode runs (set by the first, restored by the last)."""
    global _blas_users, _blas_limit, _blas_controller
    with _blas_lock:
        if _blas_users == 0:
            if _blas_controller is None:
                from threadpoolctl import ThreadpoolController

                _blas_controller = ThreadpoolController()
            _blas_limit = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None
