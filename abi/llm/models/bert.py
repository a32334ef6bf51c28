"""BERT encoders (all-MiniLM, bge, e5 ...): learned absolute positions and token types,
post-LayerNorm blocks, bidirectional attention, exact (erf) GELU feed-forward.

``Model.encode(ids, attention_mask)`` runs padded batches: the matrix products run on the
packed real tokens only (padding costs nothing there); attention runs per sequence on the
padded layout with padded keys masked. Weights are turned into float32 once at load (the
model is small): every product is a float32 BLAS sgemm, which is what the kernels' qmatmul
does for T > 1 too, less its dequantising on every call.
"""
from __future__ import annotations

import contextlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ... import _kernels
from ...errors import ContextLengthExceeded, InvalidRequestError, UnsupportedModelError
from ...gguf import GGMLType
from ..layers import layer_norm

POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last"}
_ATTN_BYTES = 64 << 20  # bound on one attention score block (B * H * T * T floats)
_MIN_ROWS_PER_THREAD = 32


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

        def get(key, default=None):
            value = metadata.get(f"{arch}.{key}", default)
            if value is None:
                raise UnsupportedModelError(f"metadata key '{arch}.{key}' is missing")
            return value

        n_embd, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
        if n_heads <= 0 or n_embd % n_heads:
            raise UnsupportedModelError(f"embedding length {n_embd} is not divisible by {n_heads} heads")
        pooling = int(get("pooling_type", 1))  # a file without the key: mean, the common case
        if pooling not in POOLING_NAMES:
            raise UnsupportedModelError(f"{arch}.pooling_type {pooling} is not supported "
                                        f"(supported: {', '.join(f'{k}={v}' for k, v in POOLING_NAMES.items())})")
        if get("attention.causal", False):
            raise UnsupportedModelError("a causal bert model is not supported")
        n_vocab = metadata.get(f"{arch}.vocab_size") or len(metadata.get("tokenizer.ggml.tokens", ()))
        return cls(arch=arch, n_vocab=int(n_vocab), n_embd=n_embd,
                   n_layers=int(get("block_count")), n_heads=n_heads, head_dim=n_embd // n_heads,
                   n_ff=int(get("feed_forward_length")), n_ctx_train=int(get("context_length")),
                   n_token_types=int(metadata.get("tokenizer.ggml.token_type_count", 2)),
                   norm_eps=float(get("attention.layer_norm_epsilon", 1e-12)),
                   pooling=POOLING_NAMES[pooling])


def _dense(weights, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A tensor as float32 of the expected shape (a view for F32, dequantised once otherwise)."""
    if not weights.has(name):
        raise UnsupportedModelError(f"{weights.gguf.path}: tensor {name!r} is missing for a bert model")
    info = weights.gguf.tensors[name]
    if tuple(info.shape) != tuple(shape):
        raise UnsupportedModelError(f"tensor {name!r} has shape {info.shape}; expected {shape}")
    if info.ggml_type == GGMLType.F32:  # a plain ndarray view of the map: no copy
        return np.asarray(weights.gguf.tensor_array(name))
    raw = weights.gguf.tensor_data(name)
    return np.ascontiguousarray(_kernels.dequantize(raw, info.ggml_type, info.shape).reshape(shape),
                                dtype=np.float32)


class Block:
    """One encoder layer; q, k and v are fused into one (3D, D) product."""

    def __init__(self, w, i: int, a: ModelArgs):
        p, D, F = f"blk.{i}.", a.n_embd, a.n_ff
        self.wqkv = np.concatenate([_dense(w, p + f"attn_{t}.weight", (D, D)) for t in "qkv"])
        self.bqkv = np.concatenate([_dense(w, p + f"attn_{t}.bias", (D,)) for t in "qkv"])
        self.wo, self.bo = _dense(w, p + "attn_output.weight", (D, D)), _dense(w, p + "attn_output.bias", (D,))
        self.attn_norm = (_dense(w, p + "attn_output_norm.weight", (D,)), _dense(w, p + "attn_output_norm.bias", (D,)))
        self.w_up, self.b_up = _dense(w, p + "ffn_up.weight", (F, D)), _dense(w, p + "ffn_up.bias", (F,))
        self.w_down, self.b_down = _dense(w, p + "ffn_down.weight", (D, F)), _dense(w, p + "ffn_down.bias", (D,))
        self.out_norm = (_dense(w, p + "layer_output_norm.weight", (D,)), _dense(w, p + "layer_output_norm.bias", (D,)))


class Model:
    def __init__(self, args: ModelArgs, weights, n_threads: int | None = None):
        a = self.args = args
        self.threads = _RowThreads(n_threads or _kernels.default_num_threads())
        D = a.n_embd
        self.tok_embd = _dense(weights, "token_embd.weight", (a.n_vocab, D))
        self.pos_embd = _dense(weights, "position_embd.weight", (a.n_ctx_train, D))
        self.type_embd = _dense(weights, "token_types.weight", (a.n_token_types, D)) \
            if weights.has("token_types.weight") else np.zeros((1, D), np.float32)
        self.embd_norm = (_dense(weights, "token_embd_norm.weight", (D,)), _dense(weights, "token_embd_norm.bias", (D,)))
        self.layers = [Block(weights, i, a) for i in range(a.n_layers)]
        self.scale = np.float32(1.0 / math.sqrt(a.head_dim))

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
        D = a.n_embd
        sel = np.flatnonzero(mask)  # packed order of the real tokens
        pos = (np.cumsum(mask, axis=1) - 1).reshape(-1)[sel]
        x = self.tok_embd[ids.reshape(-1)[sel]] + self.pos_embd[pos] + self.type_embd[types.reshape(-1)[sel]]
        x = layer_norm(x, *self.embd_norm, a.norm_eps)  # (N, D)
        # padded keys get -inf; a row with no real token keeps zeros (its output is dropped)
        key_bias = np.where(mask | ~mask.any(axis=1, keepdims=True), 0.0, -np.inf).astype(np.float32)
        linear = self.threads.linear
        def add_norm(x, norm):
            def post(y, lo, hi):  # y = layer_norm(x + y), rows lo..hi
                y += x[lo:hi]
                y[...] = layer_norm(y, *norm, a.norm_eps)
            return post

        def gelu_rows(y, lo, hi):
            gelu_(y)

        with self.threads.blas_single():
            for layer in self.layers:
                qkv = linear(x, layer.wqkv, layer.bqkv)  # (N, 3D)
                attn = self._attention(qkv, sel, key_bias)
                x = linear(attn, layer.wo, layer.bo, add_norm(x, layer.attn_norm))  # (N, D)
                h = linear(x, layer.w_up, layer.b_up, gelu_rows)  # (N, F)
                x = linear(h, layer.w_down, layer.b_down, add_norm(x, layer.out_norm))  # (N, D)
        out = np.zeros((B * T, D), np.float32)
        out[sel] = x
        return out.reshape(B, T, D)

    def _attention(self, qkv: np.ndarray, sel: np.ndarray, key_bias: np.ndarray) -> np.ndarray:
        """Bidirectional multi-head attention of packed (N, 3D) q|k|v -> packed (N, D)."""
        a = self.args
        B, T = key_bias.shape
        H, hd, D = a.n_heads, a.head_dim, a.n_embd
        padded = np.zeros((B * T, 3 * D), np.float32)
        padded[sel] = qkv
        q, k, v = padded.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)  # each (B, H, T, hd)
        out = np.empty((B, T, H, hd), np.float32)

        def rows(b0: int, b1: int) -> None:
            s = np.matmul(q[b0:b1] * self.scale, k[b0:b1].transpose(0, 1, 3, 2))  # (b, H, T, T)
            s += key_bias[b0:b1, None, None, :]
            s -= s.max(axis=-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=-1, keepdims=True)
            out[b0:b1] = np.matmul(s, v[b0:b1]).transpose(0, 2, 1, 3)  # (b, T, H, hd)

        # sequences split over the threads, in blocks that bound the scores of long texts
        step = max(1, min(-(-B // self.threads.n), _ATTN_BYTES // (4 * H * T * T)))
        self.threads.run(rows, [(b0, min(B, b0 + step)) for b0 in range(0, B, step)])
        return out.reshape(B * T, D)[sel]


# -- threads -------------------------------------------------------------------------------
# BLAS's own thread team spins at its barriers and collapses when the machine is busy (a
# (312, 384) x (384, 1536) product took 20 ms on 2 threads vs 2.5 ms on 1 with the load
# at 13 here). Rows split over plain threads, each running single-threaded BLAS and
# blocking on a join, use both cores when they are free and degrade gracefully when not.

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


class _RowThreads:
    """``linear(x, w, b)`` = x @ w.T + b with the rows of x split over ``n`` threads."""

    def __init__(self, n: int):
        try:
            import threadpoolctl  # noqa: F401
            self.pinned = True
        except ImportError:  # cannot pin BLAS to one thread: let BLAS thread instead
            self.pinned, n = False, 1
        self.n = max(1, int(n))
        self.pool = ThreadPoolExecutor(self.n - 1, thread_name_prefix="abi-bert") if self.n > 1 else None

    def blas_single(self):
        return _single_threaded_blas() if self.pinned else contextlib.nullcontext()

    @staticmethod
    def _part(x, w, b, out, post, lo, hi):
        np.matmul(x, w.T, out=out)
        out += b
        if post is not None:
            post(out, lo, hi)

    def run(self, fn, args_list: list[tuple]) -> None:
        """fn(*args) for each args; the calling thread takes every n-th, the pool the rest."""
        if self.pool is None or len(args_list) == 1:
            for args in args_list:
                fn(*args)
            return
        mine = args_list[::self.n]
        jobs = [self.pool.submit(fn, *args) for i, args in enumerate(args_list) if i % self.n]
        for args in mine:
            fn(*args)
        for job in jobs:
            job.result()

    def linear(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, post=None) -> np.ndarray:
        """``post(rows_out, lo, hi)``, if given, finishes each block of rows in place on the
        thread that computed it (row-wise work: GELU, residual + LayerNorm)."""
        N = x.shape[0]
        out = np.empty((N, w.shape[0]), np.float32)
        parts = min(self.n, max(1, N // _MIN_ROWS_PER_THREAD))
        bounds = [N * i // parts for i in range(parts + 1)]
        self.run(self._part, [(x[lo:hi], w, b, out[lo:hi], post, lo, hi)
                              for lo, hi in zip(bounds, bounds[1:])])
        return out


# -- exact GELU ------------------------------------------------------------------------
# HF's "gelu" is x * Phi(x) with erf; scipy's erf runs in float64 and costs more than the
# matrix products here, so a float32 rational erf (max error 5e-7) runs in a C loop that
# the compiler vectorises (abi/_kernels/activations.pyx).


def gelu_(h: np.ndarray) -> np.ndarray:
    """Exact GELU in place on a C-contiguous float32 array."""
    from ..._kernels.activations import gelu_erf_

    gelu_erf_(h.reshape(-1))
    return h
