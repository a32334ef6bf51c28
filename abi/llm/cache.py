"""Per-sequence KV cache: keys and values as two arrays (n_layers, n_kv_heads, capacity,
row), grown by doubling up to the context length, so memory follows the tokens held (or
allocated whole at start-up with ``reserve(n_ctx)`` + ``commit()``, for a server).
One contiguous array per K and V lets compiled decode steps address every layer.

Element types (``KV_DTYPES``): f32, f16, and q8_0 (llama.cpp's quantised KV: each head's row
in blocks of 32 values, an f16 scale and 32 int8, 34 bytes; needs head_dim % 32 == 0)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ContextLengthExceeded

KV_DTYPES = ("f32", "f16", "q8_0")
Q8_0_BLOCK, Q8_0_BYTES = 32, 34


def kv_row_bytes(kv_dtype: str, head_dim: int) -> int:
    """Bytes one head's key or value row of ``head_dim`` values takes in the cache."""
    if kv_dtype == "f32":
        return 4 * head_dim
    if kv_dtype == "f16":
        return 2 * head_dim
    if kv_dtype == "q8_0":
        return head_dim // Q8_0_BLOCK * Q8_0_BYTES
    raise ConfigError(f"kv_dtype must be one of {', '.join(KV_DTYPES)}; got {kv_dtype!r}", "kv_dtype")


def check_kv_dtype(kv_dtype: str, head_dims=()) -> str:
    kv_row_bytes(kv_dtype, 32)
    if kv_dtype == "q8_0":
        bad = [d for d in head_dims if d % Q8_0_BLOCK]
        if bad:
            raise ConfigError(f"kv_dtype 'q8_0' needs head sizes divisible by {Q8_0_BLOCK}; this "
                              f"model's are {sorted(set(head_dims))}: use f16 or f32", "kv_dtype")
    return kv_dtype


class KVCache:
    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, n_ctx: int,
                 kv_dtype: str = "f32", head_dim_v: int | None = None):
        self.n_layers, self.n_kv_heads, self.head_dim = n_layers, n_kv_heads, head_dim
        self.head_dim_v = head_dim_v or head_dim
        self.n_ctx = n_ctx
        self.kv_dtype = check_kv_dtype(kv_dtype, (head_dim, self.head_dim_v))
        # element type of the arrays: raw bytes for the block format
        self.dtype = np.dtype({"f32": np.float32, "f16": np.float16, "q8_0": np.uint8}[kv_dtype])
        self.length = 0  # positions 0..length-1 are filled in every layer
        self.capacity = 0
        self.k = self._alloc(0, head_dim)
        self.v = self._alloc(0, self.head_dim_v)
        self.tokens: list[int] = []  # the ids whose keys/values are held, for prefix reuse

    def _row(self, hd: int) -> int:
        return kv_row_bytes(self.kv_dtype, hd) // self.dtype.itemsize

    def _alloc(self, cap: int, hd: int) -> np.ndarray:
        return np.zeros((self.n_layers, self.n_kv_heads, cap, self._row(hd)), self.dtype)

    @property
    def bytes_per_token(self) -> int:
        return self.n_layers * self.n_kv_heads * (kv_row_bytes(self.kv_dtype, self.head_dim)
                                                  + kv_row_bytes(self.kv_dtype, self.head_dim_v))

    def reserve(self, n: int) -> None:
        """Make room for ``n`` positions in total."""
        if n > self.n_ctx:
            raise ContextLengthExceeded(
                f"{n} tokens do not fit the context of {self.n_ctx} tokens")
        if n <= self.capacity:
            return
        cap = min(self.n_ctx, max(n, 2 * self.capacity, 64))
        new_k, new_v = self._alloc(cap, self.head_dim), self._alloc(cap, self.head_dim_v)
        new_k[:, :, :self.length] = self.k[:, :, :self.length]
        new_v[:, :, :self.length] = self.v[:, :, :self.length]
        self.k, self.v, self.capacity = new_k, new_v, cap

    def commit(self) -> None:
        """Touch every page of the arrays, so the memory is really held now (zeros are
        mapped lazily by the OS) and a request can never fail to get it later."""
        for a in (self.k, self.v):
            a.reshape(-1)[::max(1, 4096 // a.itemsize)] = 0

    def _encode(self, x: np.ndarray) -> np.ndarray:
        """float32 (..., hd) -> the stored row format."""
        if self.kv_dtype != "q8_0":
            return x
        from .. import _kernels
        from ..gguf import GGMLType

        flat = np.ascontiguousarray(x, np.float32).reshape(-1, x.shape[-1])
        return _kernels.quantize(flat, GGMLType.Q8_0).reshape(x.shape[:-1] + (-1,))

    def _decode(self, rows: np.ndarray, hd: int) -> np.ndarray:
        """Stored rows (..., row) -> float32 (..., hd)."""
        if self.kv_dtype != "q8_0":
            return rows.astype(np.float32, copy=False)
        from .. import _kernels
        from ..gguf import GGMLType

        flat = np.ascontiguousarray(rows).reshape(-1, rows.shape[-1])
        return _kernels.dequantize(flat, GGMLType.Q8_0, (flat.shape[0], hd)).reshape(rows.shape[:-1] + (hd,))

    def store(self, layer: int, start: int, k: np.ndarray, v: np.ndarray):
        """Write k, v (T, n_kv, hd) at positions start.. and return the layer's filled
        keys and values (n_kv, start+T, hd) as float32 (the numpy reference forward's view)."""
        end = start + k.shape[0]
        self.k[layer][:, start:end] = self._encode(k.transpose(1, 0, 2))
        self.v[layer][:, start:end] = self._encode(v.transpose(1, 0, 2))
        return (self._decode(self.k[layer][:, :end], self.head_dim),
                self._decode(self.v[layer][:, :end], self.head_dim_v))

    def copy_prefix(self, src: "KVCache", n: int) -> None:
        """Hold ``src``'s first ``n`` positions (its rows copied; a prompt shared by several
        choices is prefilled once). ``src`` may keep writing positions >= n meanwhile."""
        if n > src.length:
            raise ValueError(f"the source cache holds {src.length} positions, not {n}")
        self.truncate(0)
        self.reserve(n)
        self.k[:, :, :n] = src.k[:, :, :n]
        self.v[:, :, :n] = src.v[:, :, :n]
        self.length = n
        self.tokens[:] = src.tokens[:n]

    def truncate(self, n: int) -> None:
        """Forget positions n.. (keeping the first n for reuse)."""
        self.length = min(self.length, n)
        del self.tokens[self.length:]

    def clear(self) -> None:
        self.truncate(0)
