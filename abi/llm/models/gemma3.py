"""Gemma 3: embeddings scaled by sqrt(D), RMSNorm before and after both attention and
feed-forward, per-head RMSNorm of Q and K, GeGLU, NeoX RoPE, and sliding-window layers
(own RoPE base) interleaved with global ones. GGUF norm weights already include Gemma's +1."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidModelError
from ..cache import KVCache
from ..hparams import Metadata
from ..layers import Rope, attention, gelu_tanh, rms_norm, rope_config, softcap
from ..weights import WeightLoader
from . import llama


@dataclass(frozen=True)
class ModelArgs(llama.ModelArgs):
    rope_neox: bool = True
    sliding_window: int = 0
    swa_pattern: tuple = ()       # True where a layer uses the sliding window
    rope_base_swa: float = 10000.0
    final_softcap: float = 0.0
    attn_softcap: float = 0.0

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        base = llama.ModelArgs.from_gguf.__func__(cls, metadata)
        arch = base.arch
        m = Metadata(metadata, arch)
        window = m.int("attention.sliding_window", 0, lo=0)
        pattern = metadata.get(f"{arch}.attention.sliding_window_pattern", 6)
        if isinstance(pattern, list):
            swa = tuple(bool(p) for p in pattern)
        elif window > 0:  # every n-th layer is global, as llama.cpp's set_swa_pattern(n)
            n = m.int("attention.sliding_window_pattern", 6, lo=0)
            swa = tuple(n == 0 or i % n < n - 1 for i in range(base.n_layers))
        else:
            swa = (False,) * base.n_layers
        if len(swa) != base.n_layers:
            raise InvalidModelError(f"{arch}.attention.sliding_window_pattern has {len(swa)} entries "
                                    f"for {base.n_layers} layers")
        return cls(**{**base.__dict__, "sliding_window": window, "swa_pattern": swa,
                      "rope_base_swa": m.float("rope.freq_base_swa", 10000.0),
                      "final_softcap": m.float("final_logit_softcapping", 0.0, lo_open=False),
                      "attn_softcap": m.float("attn_logit_softcapping", 0.0, lo_open=False)})


class Block:
    def __init__(self, w: WeightLoader, i: int, a: ModelArgs):
        p = f"blk.{i}."
        D, Q, KV, F = a.n_embd, a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim, a.n_ff
        self.attn_norm = w.vector(p + "attn_norm.weight", D)
        self.wq = w.linear(p + "attn_q.weight", (Q, D))
        self.wk = w.linear(p + "attn_k.weight", (KV, D))
        self.wv = w.linear(p + "attn_v.weight", (KV, D))
        self.q_norm = w.vector(p + "attn_q_norm.weight", a.head_dim)
        self.k_norm = w.vector(p + "attn_k_norm.weight", a.head_dim)
        self.wo = w.linear(p + "attn_output.weight", (D, Q))
        self.post_attn_norm = w.vector(p + "post_attention_norm.weight", D)
        self.ffn_norm = w.vector(p + "ffn_norm.weight", D)
        self.w_gate = w.linear(p + "ffn_gate.weight", (F, D))
        self.w_up = w.linear(p + "ffn_up.weight", (F, D))
        self.w_down = w.linear(p + "ffn_down.weight", (D, F))
        self.post_ffn_norm = w.vector(p + "post_ffw_norm.weight", D)


class Model:
    def __init__(self, args: ModelArgs, weights: WeightLoader):
        self.args = args
        self.tok_embd = weights.embedding("token_embd.weight", (args.n_vocab, args.n_embd))
        self.layers = [Block(weights, i, args) for i in range(args.n_layers)]
        self.output_norm = weights.vector("output_norm.weight", args.n_embd)
        self.output = weights.linear("output.weight", (args.n_vocab, args.n_embd)) \
            if weights.has("output.weight") else self.tok_embd.as_linear()
        self.rope_global = Rope(rope_config(args, args.rope_base))
        self.rope_local = Rope(rope_config(args, args.rope_base_swa, scaled=False))
        # Gemma 3 27B scales by the model width per head; the others by the head size
        width = args.n_embd // args.n_heads if args.n_layers == 62 else args.head_dim
        self.scale = 1.0 / math.sqrt(width)
        self.embd_scale = np.float32(math.sqrt(args.n_embd))

    def new_cache(self, n_ctx: int, dtype=np.float32) -> KVCache:
        a = self.args
        return KVCache(a.n_layers, a.n_kv_heads, a.head_dim, n_ctx, dtype)

    def forward(self, ids, cache: KVCache, output: str = "last") -> np.ndarray:
        a = self.args
        T, start = len(ids), cache.length
        cache.reserve(start + T)
        x = self.tok_embd(ids) * self.embd_scale  # (T, D)
        for i, layer in enumerate(self.layers):
            local = a.swa_pattern[i]
            rope = self.rope_local if local else self.rope_global
            h = rms_norm(x, layer.attn_norm, a.norm_eps)
            q = rms_norm(layer.wq(h).reshape(T, a.n_heads, a.head_dim), layer.q_norm, a.norm_eps)
            k = rms_norm(layer.wk(h).reshape(T, a.n_kv_heads, a.head_dim), layer.k_norm, a.norm_eps)
            v = layer.wv(h).reshape(T, a.n_kv_heads, a.head_dim)
            rope(q, start)
            rope(k, start)
            keys, values = cache.store(i, start, k, v)
            attn = attention(q, keys, values, start, self.scale,
                             window=a.sliding_window if local else 0, softcap_value=a.attn_softcap)
            x = x + rms_norm(layer.wo(attn), layer.post_attn_norm, a.norm_eps)
            h = rms_norm(x, layer.ffn_norm, a.norm_eps)
            ffn = layer.w_down(gelu_tanh(layer.w_gate(h)) * layer.w_up(h))
            x = x + rms_norm(ffn, layer.post_ffn_norm, a.norm_eps)
        cache.length = start + T
        cache.tokens.extend(int(t) for t in ids)
        if output == "none":  # a prompt batch before the last: only the cache matters
            return None
        if output == "last":
            x = x[-1:]
        x = rms_norm(x, self.output_norm, a.norm_eps)
        if output == "hidden":
            return x
        logits = self.output(x)
        return softcap(logits, a.final_softcap) if a.final_softcap else logits
