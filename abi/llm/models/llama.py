"""Llama family (SmolLM2, TinyLlama, Llama 2/3, Mistral): pre-RMSNorm blocks, RoPE,
grouped-query attention, SwiGLU feed-forward, tied or separate output matrix."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import UnsupportedModelError
from ..cache import KVCache
from ..layers import Rope, attention, rms_norm, rope_config, silu
from ..weights import WeightLoader


@dataclass(frozen=True)
class ModelArgs:
    arch: str
    n_vocab: int
    n_embd: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    norm_eps: float
    rope_base: float
    n_rot: int
    rope_neox: bool = False
    rope_freq_scale: float = 1.0
    rope_yarn_orig_ctx: int = 0      # > 0 when the file asks for YaRN scaling
    rope_attn_factor: float = 1.0
    rope_yarn_log_mul: float = 0.0

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        arch = metadata["general.architecture"]

        def get(key, default=None):
            value = metadata.get(f"{arch}.{key}", default)
            if value is None:
                raise UnsupportedModelError(f"metadata key '{arch}.{key}' is missing")
            return value

        n_embd, n_heads = get("embedding_length"), get("attention.head_count")
        head_dim = get("attention.key_length", n_embd // n_heads)
        n_vocab = metadata.get(f"{arch}.vocab_size") or len(metadata.get("tokenizer.ggml.tokens", ()))
        scaling = metadata.get(f"{arch}.rope.scaling.type", "none")
        freq_scale, yarn_ctx = 1.0, 0
        if scaling in ("linear", "yarn"):
            factor = float(metadata.get(f"{arch}.rope.scaling.factor", 1.0) or 1.0)
            freq_scale = 1.0 / factor if factor > 0 else 1.0
            if scaling == "yarn":
                yarn_ctx = int(metadata.get(f"{arch}.rope.scaling.original_context_length")
                               or get("context_length"))
        elif scaling not in ("none", None):
            raise UnsupportedModelError(f"RoPE scaling type {scaling!r} is not supported "
                                        f"(supported: none, linear, yarn, per-frequency factors)")
        return cls(
            arch=arch, n_vocab=n_vocab, n_embd=n_embd, n_layers=get("block_count"),
            n_heads=n_heads, n_kv_heads=get("attention.head_count_kv", n_heads),
            head_dim=head_dim, n_ff=get("feed_forward_length"),
            n_ctx_train=get("context_length"),
            norm_eps=get("attention.layer_norm_rms_epsilon", 1e-5),
            rope_base=float(get("rope.freq_base", 10000.0)),
            n_rot=get("rope.dimension_count", head_dim),
            rope_neox=cls.rope_neox, rope_freq_scale=freq_scale, rope_yarn_orig_ctx=yarn_ctx,
            rope_attn_factor=float(metadata.get(f"{arch}.rope.scaling.attn_factor", 1.0) or 1.0),
            rope_yarn_log_mul=float(metadata.get(f"{arch}.rope.scaling.yarn_log_multiplier", 0.0) or 0.0),
        )


class Block:
    """One decoder layer's weights."""

    def __init__(self, w: WeightLoader, i: int, qkv_bias: bool):
        p = f"blk.{i}."
        self.attn_norm = w.vector(p + "attn_norm.weight")
        bias = (lambda n: p + n + ".bias") if qkv_bias else (lambda n: None)
        self.wq = w.linear(p + "attn_q.weight", bias("attn_q"))
        self.wk = w.linear(p + "attn_k.weight", bias("attn_k"))
        self.wv = w.linear(p + "attn_v.weight", bias("attn_v"))
        self.wo = w.linear(p + "attn_output.weight")
        self.ffn_norm = w.vector(p + "ffn_norm.weight")
        self.w_gate = w.linear(p + "ffn_gate.weight")
        self.w_up = w.linear(p + "ffn_up.weight")
        self.w_down = w.linear(p + "ffn_down.weight")


class Model:
    qkv_bias = False

    def __init__(self, args: ModelArgs, weights: WeightLoader):
        self.args = args
        self.tok_embd = weights.embedding("token_embd.weight")
        self.layers = [Block(weights, i, self.qkv_bias) for i in range(args.n_layers)]
        self.output_norm = weights.vector("output_norm.weight")
        self.output = weights.linear("output.weight") if weights.has("output.weight") \
            else self.tok_embd.as_linear()
        self.rope = Rope(rope_config(args, args.rope_base, weights.optional_vector("rope_freqs.weight")))
        self.scale = 1.0 / math.sqrt(args.head_dim)

    def new_cache(self, n_ctx: int, dtype=np.float32) -> KVCache:
        a = self.args
        return KVCache(a.n_layers, a.n_kv_heads, a.head_dim, n_ctx, dtype)

    def forward(self, ids, cache: KVCache, output: str = "last") -> np.ndarray:
        """Run tokens ``ids`` after the cache's contents. ``output``: "last" -> logits of the
        last position (1, V); "all" -> logits (T, V); "hidden" -> final-norm states (T, D)."""
        a = self.args
        T, start = len(ids), cache.length
        cache.reserve(start + T)
        x = self.tok_embd(ids)  # (T, D)
        for i, layer in enumerate(self.layers):
            h = rms_norm(x, layer.attn_norm, a.norm_eps)
            q = layer.wq(h).reshape(T, a.n_heads, a.head_dim)
            k = layer.wk(h).reshape(T, a.n_kv_heads, a.head_dim)
            v = layer.wv(h).reshape(T, a.n_kv_heads, a.head_dim)
            self.rope(q, start)
            self.rope(k, start)
            keys, values = cache.store(i, start, k, v)  # (n_kv, start+T, hd)
            x = x + layer.wo(attention(q, keys, values, start, self.scale))
            h = rms_norm(x, layer.ffn_norm, a.norm_eps)
            x = x + layer.w_down(silu(layer.w_gate(h)) * layer.w_up(h))
        cache.length = start + T
        cache.tokens.extend(int(t) for t in ids)
        if output == "none":  # a prompt batch before the last: only the cache matters
            return None
        if output == "last":
            x = x[-1:]
        x = rms_norm(x, self.output_norm, a.norm_eps)
        return x if output == "hidden" else self.output(x)
