"""Llama family (SmolLM2, TinyLlama, Llama 2/3, Mistral): pre-RMSNorm blocks, RoPE,
grouped-query attention, SwiGLU feed-forward, tied or separate output matrix."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import UnsupportedModelError
from ..cache import KVCache
from ..hparams import MAX_LAYERS, Metadata, require, vocab_size
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
        m = Metadata(metadata, arch)
        n_embd, n_heads = m.int("embedding_length"), m.int("attention.head_count")
        if f"{arch}.attention.key_length" in metadata:
            head_dim = m.int("attention.key_length")
        else:
            require(n_embd % n_heads == 0, f"{arch}.embedding_length {n_embd} is not divisible by "
                    f"{arch}.attention.head_count {n_heads} (and the file has no key_length)")
            head_dim = n_embd // n_heads
        value_dim = m.int("attention.value_length", head_dim)
        if value_dim != head_dim:
            raise UnsupportedModelError(f"{arch}.attention.value_length {value_dim} differs from the "
                                        f"key length {head_dim}, which abi does not support")
        n_kv = m.int("attention.head_count_kv", n_heads)
        require(n_heads % n_kv == 0, f"{arch}.attention.head_count {n_heads} is not a multiple of "
                f"{arch}.attention.head_count_kv {n_kv}")
        n_rot = m.int("rope.dimension_count", head_dim)
        require(n_rot <= head_dim and n_rot % 2 == 0, f"{arch}.rope.dimension_count {n_rot} must be "
                f"even and at most the head size {head_dim}")
        scaling = m.str("rope.scaling.type", "none")
        freq_scale, yarn_ctx = 1.0, 0
        if scaling in ("linear", "yarn"):
            # a factor of 0 means "no scaling", as llama.cpp reads it
            freq_scale = 1.0 / (m.float("rope.scaling.factor", 1.0, lo_open=False) or 1.0)
            if scaling == "yarn":
                yarn_ctx = m.int("rope.scaling.original_context_length", m.int("context_length"))
        elif scaling != "none":
            raise UnsupportedModelError(f"RoPE scaling type {scaling!r} is not supported "
                                        f"(supported: none, linear, yarn, per-frequency factors)")
        return cls(
            arch=arch, n_vocab=vocab_size(metadata, arch), n_embd=n_embd,
            n_layers=m.int("block_count", hi=MAX_LAYERS), n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim,
            n_ff=m.int("feed_forward_length"), n_ctx_train=m.int("context_length"),
            norm_eps=m.float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_base=m.float("rope.freq_base", 10000.0),
            n_rot=n_rot, rope_neox=cls.rope_neox, rope_freq_scale=freq_scale, rope_yarn_orig_ctx=yarn_ctx,
            rope_attn_factor=m.float("rope.scaling.attn_factor", 1.0, lo_open=False) or 1.0,
            rope_yarn_log_mul=m.float("rope.scaling.yarn_log_multiplier", 0.0, lo_open=False),
        )


class Block:
    """One decoder layer's weights."""

    def __init__(self, w: WeightLoader, i: int, a: ModelArgs, qkv_bias: bool):
        p = f"blk.{i}."
        D, Q, KV, F = a.n_embd, a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim, a.n_ff
        self.attn_norm = w.vector(p + "attn_norm.weight", D)
        bias = (lambda n: p + n + ".bias") if qkv_bias else (lambda n: None)
        self.wq = w.linear(p + "attn_q.weight", (Q, D), bias("attn_q"))
        self.wk = w.linear(p + "attn_k.weight", (KV, D), bias("attn_k"))
        self.wv = w.linear(p + "attn_v.weight", (KV, D), bias("attn_v"))
        self.wo = w.linear(p + "attn_output.weight", (D, Q))
        self.ffn_norm = w.vector(p + "ffn_norm.weight", D)
        self.w_gate = w.linear(p + "ffn_gate.weight", (F, D))
        self.w_up = w.linear(p + "ffn_up.weight", (F, D))
        self.w_down = w.linear(p + "ffn_down.weight", (D, F))


class Model:
    qkv_bias = False

    def __init__(self, args: ModelArgs, weights: WeightLoader):
        self.args = args
        self.tok_embd = weights.embedding("token_embd.weight", (args.n_vocab, args.n_embd))
        self.layers = [Block(weights, i, args, self.qkv_bias) for i in range(args.n_layers)]
        self.output_norm = weights.vector("output_norm.weight", args.n_embd)
        self.output = weights.linear("output.weight", (args.n_vocab, args.n_embd)) \
            if weights.has("output.weight") else self.tok_embd.as_linear()
        self.rope = Rope(rope_config(args, args.rope_base,
                                     weights.optional_vector("rope_freqs.weight", args.n_rot // 2)))
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
