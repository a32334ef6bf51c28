"""Per-sequence KV cache: keys and values as two arrays (n_layers, n_kv_heads, capacity,
head_dim), grown by doubling up to the context length, so memory follows the tokens held.
One contiguous array per K and V lets compiled decode steps address every layer."""
from __future__ import annotations

import numpy as np

from ..errors import ContextLengthExceeded


class KVCache:
    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, n_ctx: int,
                 dtype=np.float32, head_dim_v: int | None = None):
        self.n_layers, self.n_kv_heads, self.head_dim = n_layers, n_kv_heads, head_dim
        self.head_dim_v = head_dim_v or head_dim
        self.n_ctx = n_ctx
        self.dtype = np.dtype(dtype)
        self.length = 0  # positions 0..length-1 are filled in every layer
        self.capacity = 0
        self.k = np.zeros((n_layers, n_kv_heads, 0, head_dim), self.dtype)
        self.v = np.zeros((n_layers, n_kv_heads, 0, self.head_dim_v), self.dtype)
        self.tokens: list[int] = []  # the ids whose keys/values are held, for prefix reuse

    def reserve(self, n: int) -> None:
        """Make room for ``n`` positions in total."""
        if n > self.n_ctx:
            raise ContextLengthExceeded(
                f"{n} tokens do not fit the context of {self.n_ctx} tokens")
        if n <= self.capacity:
            return
        cap = min(self.n_ctx, max(n, 2 * self.capacity, 64))
        new_k = np.zeros((self.n_layers, self.n_kv_heads, cap, self.head_dim), self.dtype)
        new_v = np.zeros((self.n_layers, self.n_kv_heads, cap, self.head_dim_v), self.dtype)
        new_k[:, :, :self.length] = self.k[:, :, :self.length]
        new_v[:, :, :self.length] = self.v[:, :, :self.length]
        self.k, self.v, self.capacity = new_k, new_v, cap

    def store(self, layer: int, start: int, k: np.ndarray, v: np.ndarray):
        """Write k, v (T, n_kv, hd) at positions start.. and return the layer's filled
        keys and values (n_kv, start+T, hd) as float32."""
        end = start + k.shape[0]
        self.k[layer][:, start:end] = k.transpose(1, 0, 2)
        self.v[layer][:, start:end] = v.transpose(1, 0, 2)
        kk, vv = self.k[layer][:, :end], self.v[layer][:, :end]
        if self.dtype != np.float32:
            kk, vv = kk.astype(np.float32), vv.astype(np.float32)
        return kk, vv

    def truncate(self, n: int) -> None:
        """Forget positions n.. (keeping the first n for reuse)."""
        self.length = min(self.length, n)
        del self.tokens[self.length:]

    def clear(self) -> None:
        self.truncate(0)
