"""The decoder-only transformer every generating architecture is an instance of, described
by a declarative recipe in its frozen ``ModelArgs``: which norms sit where, Q/K norms,
biases, the GLU's activation, RoPE per layer (scaled, unscaled or none), sliding windows,
soft-caps and scale multipliers. An architecture module maps its GGUF metadata to a recipe
(``from_gguf``); this module's ``Model`` is the numpy reference forward of any recipe, and
the compiled (``abi/llm/_decode.pyx``) and CUDA (``abi/llm/cuda_forward.py``) forwards read
the same fields: no forward tests for an architecture by name.

One layer, with every optional step of the recipe (x: the residual stream)::

    h = attn_norm(x)                       # skipped without attn_norm (OLMo 2)
    q, k, v = Wq h + bq, Wk h + bk, Wv h + bv
    q, k = qk_norm(q), qk_norm(k)          # per head ("head") or over all heads ("full")
    q, k = rope_l(q), rope_l(k)            # layer l's RoPE: global, windowed, or none (NoPE)
    a = Wo attention(q, k, v; scale, window_l, softcap)
    x = x + residual_scale * post_attn_norm(a)      # post-norm only where post_norms
    h = ffn_norm(x)
    f = W_down (act(W_gate h) * W_up h)    # dense: the first n_dense_lead layers, or no experts
    f = sum_j w_j expert_j(h)              # else: the router's top-k (``route``) ...
        + sigmoid(g_s . h) * shared(h)     # ... and a shared expert, gated where shexp_gate
    x = x + residual_scale * post_ffn_norm(f)
    logits = softcap(logit_scale * W_out out_norm(x))
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ...errors import UnsupportedModelError
from ..cache import KVCache
from ..hparams import MAX_LAYERS, Metadata, require, vocab_size
from ..layers import Rope, attention, gelu_tanh, rms_norm, rope_config, silu, softcap, swiglu_oai
from ..weights import Linear, WeightLoader

# the gated unit of the FFN: f(gate, up)
ACTIVATIONS = {"silu": lambda g, u: silu(g) * u, "gelu": lambda g, u: gelu_tanh(g) * u,
               "swiglu_oai": swiglu_oai}
QK_NORMS = ("none", "head", "full")
GATING_FUNCS = {1: "softmax", 2: "sigmoid"}   # llama.cpp's expert_gating_func values


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
    # -- the layer recipe -------------------------------------------------------------------
    attn_norm: bool = True           # RMSNorm before attention and before the FFN
    post_norms: bool = False         # RMSNorm of the attention and FFN outputs
    qk_norm: str = "none"            # "head": per-head RMSNorm of Q and K; "full": over all heads
    qkv_bias: bool = False
    activation: str = "silu"         # the GLU's gate: silu or gelu (tanh approximation)
    embd_scale: float = 1.0
    attn_scale: float = 0.0          # 0: 1 / sqrt(head_dim)
    residual_scale: float = 1.0
    logit_scale: float = 1.0         # the logits are multiplied by it
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    sliding_window: int = 0
    swa_layers: tuple = ()           # True where a layer attends within the window
    rope_base_swa: float = 0.0       # the windowed layers' RoPE base (0: rope_base)
    swa_rope_scaled: bool = True     # whether the windowed layers keep the RoPE scaling
    nope_layers: tuple = ()          # True where a layer has no RoPE
    n_expert: int = 0                # > 0: the FFN is a mixture of experts
    n_expert_used: int = 0           # experts per token (top-k of the router's probabilities)
    n_ff_exp: int = 0                # an expert's FFN width
    expert_gating: str = "softmax"   # the router's probabilities: softmax or sigmoid of its logits
    expert_norm: bool = True         # the top-k weights renormalised to sum to 1
    expert_probs_bias: bool = False  # experts selected by probability + exp_probs_b, where a layer has it
    expert_weights_scale: float = 0.0  # a multiplier on the weights (0: none)
    n_dense_lead: int = 0            # the first layers have a dense FFN (n_ff wide), not experts
    n_ff_shexp: int = 0              # > 0: a shared expert this wide runs beside the routed ones
    shexp_gate: bool = False         # the shared expert scaled by sigmoid(ffn_gate_inp_shexp . h)
    attn_sinks: bool = False         # a learned per-head logit in every attention softmax
    ffn_norm_tensor: str = "ffn_norm"  # the pre-FFN norm's tensor name (gpt-oss: post_attention_norm)
    gate_up_fused: bool = False      # one ffn_up tensor holding the gate rows, then the up rows
    rope_orig_ctx: int = 0           # LongRoPE: contexts beyond it use the long factors

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        """The keys every llama-like architecture shares; subclasses add their recipe."""
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
        n_expert = m.int("expert_count", 0, lo=0, hi=1 << 16)
        n_used = m.int("expert_used_count", 0, lo=0, hi=max(n_expert, 0))
        require((n_expert == 0) == (n_used == 0), f"{arch}.expert_count {n_expert} and "
                f"{arch}.expert_used_count {n_used}: both or neither must be set")
        return cls(
            n_expert=n_expert, n_expert_used=n_used,
            n_ff_exp=m.int("expert_feed_forward_length", m.int("feed_forward_length")) if n_expert else 0,
            expert_weights_scale=m.float("expert_weights_scale", 0.0, lo_open=False),
            arch=arch, n_vocab=vocab_size(metadata, arch), n_embd=n_embd,
            n_layers=m.int("block_count", hi=MAX_LAYERS), n_heads=n_heads, n_kv_heads=n_kv,
            head_dim=head_dim, n_ff=m.int("feed_forward_length"), n_ctx_train=m.int("context_length"),
            norm_eps=m.float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_base=m.float("rope.freq_base", 10000.0),
            n_rot=n_rot, rope_neox=cls.rope_neox, rope_freq_scale=freq_scale, rope_yarn_orig_ctx=yarn_ctx,
            rope_attn_factor=m.float("rope.scaling.attn_factor", 1.0, lo_open=False) or 1.0,
            rope_yarn_log_mul=m.float("rope.scaling.yarn_log_multiplier", 0.0, lo_open=False),
        )

    def with_recipe(self, **fields) -> "ModelArgs":
        """A copy with recipe fields set, checked for consistency."""
        args = dataclasses.replace(self, **fields)
        require(args.qk_norm in QK_NORMS, f"unknown Q/K norm {args.qk_norm!r}")
        require(args.activation in ACTIVATIONS, f"unknown activation {args.activation!r}")
        require(args.expert_gating in GATING_FUNCS.values(), f"unknown expert gating {args.expert_gating!r}")
        require(0 <= args.n_dense_lead <= args.n_layers and args.n_ff_shexp >= 0
                and (args.n_expert or not (args.n_dense_lead or args.n_ff_shexp or args.shexp_gate
                                           or args.expert_probs_bias))
                and (args.n_ff_shexp or not args.shexp_gate),
                f"{args.arch}: inconsistent mixture of experts (dense lead {args.n_dense_lead}, shared "
                f"expert width {args.n_ff_shexp}, gated {args.shexp_gate})")
        for name in ("swa_layers", "nope_layers"):
            layers = getattr(args, name)
            require(len(layers) in (0, args.n_layers), f"{args.arch}: {name} has {len(layers)} "
                    f"entries for {args.n_layers} layers")
        require(args.sliding_window >= 0 and all(math.isfinite(v) for v in (
            args.embd_scale, args.attn_scale, args.residual_scale, args.logit_scale)),
            f"{args.arch}: a scale or the sliding window is out of range")
        return args

    # -- per-layer views of the recipe ------------------------------------------------------
    def is_swa(self, layer: int) -> bool:
        return bool(self.sliding_window > 0 and self.swa_layers and self.swa_layers[layer])

    def is_moe(self, layer: int) -> bool:
        return bool(self.n_expert and layer >= self.n_dense_lead)

    def has_rope(self, layer: int) -> bool:
        return not (self.nope_layers and self.nope_layers[layer])

    @property
    def kq_scale(self) -> float:
        return self.attn_scale or 1.0 / math.sqrt(self.head_dim)

    def recipe(self) -> dict:
        """The recipe fields, for ``abi llm info``."""
        return {name: getattr(self, name) for name in RECIPE_FIELDS}


RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(ModelArgs))[
    [f.name for f in dataclasses.fields(ModelArgs)].index("attn_norm"):]


def expert_gating(m: Metadata) -> str:
    """The file's ``expert_gating_func`` (required), for the families whose llama.cpp graph
    reads it (the others' graphs fix their gating, as their recipes do)."""
    gating = m.int("expert_gating_func", lo=0)
    if gating not in GATING_FUNCS:
        raise UnsupportedModelError(f"{m.arch}.expert_gating_func {gating}: abi supports softmax (1) "
                                    f"and sigmoid (2) gating")
    return GATING_FUNCS[gating]


def every_nth_global(n_layers: int, n: int) -> tuple:
    """llama.cpp's set_swa_pattern(n): every n-th layer global, the others windowed."""
    return tuple(n == 0 or i % n < n - 1 for i in range(n_layers))


def route(logits: np.ndarray, a: ModelArgs, bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weights, experts), each (T, n_expert_used), in llama.cpp's order (build_moe_ffn): the
    router's probabilities (softmax or sigmoid), the top-k of probabilities + ``bias`` (the
    selection bias exp_probs_b, where the layer has one) in descending order, their unbiased
    probabilities, renormalised (sum clamped below at f16's smallest normal) and scaled where
    the recipe says."""
    if a.expert_gating == "sigmoid":
        probs = np.float32(1.0) / (np.float32(1.0) + np.exp(-logits))
    else:
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
    select = probs if bias is None else probs + bias
    chosen = np.argsort(-select, axis=-1, kind="stable")[:, :a.n_expert_used]
    weights = np.take_along_axis(probs, chosen, axis=-1)
    if a.expert_norm:
        weights = weights / np.maximum(weights.sum(axis=-1, keepdims=True), np.float32(6.103515625e-5))
    if a.expert_weights_scale not in (0.0, 1.0):
        weights = weights * np.float32(a.expert_weights_scale)
    return weights.astype(np.float32), chosen


class Block:
    """One layer's weights; a step the recipe does not have is None."""

    def __init__(self, w: WeightLoader, i: int, a: ModelArgs):
        p = f"blk.{i}."
        D, Q, KV, F = a.n_embd, a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim, a.n_ff
        norm = lambda name, n: w.vector(p + name, n)  # noqa: E731
        self.attn_norm = norm("attn_norm.weight", D) if a.attn_norm else None
        def bias(n, required=False):   # llama.cpp reads any product's bias a file has
            name = p + n + ".bias"
            return name if required or w.has(name) else None
        if w.has(p + "attn_qkv.weight"):   # fused, as llama.cpp accepts for any architecture
            self.wq, self.wk, self.wv = w.split(p + "attn_qkv.weight", (Q, KV, KV), D)
        else:
            self.wq = w.linear(p + "attn_q.weight", (Q, D), bias("attn_q", a.qkv_bias))
            self.wk = w.linear(p + "attn_k.weight", (KV, D), bias("attn_k", a.qkv_bias))
            self.wv = w.linear(p + "attn_v.weight", (KV, D), bias("attn_v", a.qkv_bias))
        qn, kn = {"none": (0, 0), "head": (a.head_dim, a.head_dim), "full": (Q, KV)}[a.qk_norm]
        self.q_norm = norm("attn_q_norm.weight", qn) if qn else None
        self.k_norm = norm("attn_k_norm.weight", kn) if kn else None
        self.wo = w.linear(p + "attn_output.weight", (D, Q), bias("attn_output"))
        self.post_attn_norm = norm("post_attention_norm.weight", D) if a.post_norms else None
        self.ffn_norm = norm(a.ffn_norm_tensor + ".weight", D) if a.attn_norm else None
        self.sinks = norm("attn_sinks.weight", a.n_heads) if a.attn_sinks else None
        self.router = self.gate_exps = self.up_exps = self.down_exps = self.probs_bias = None
        self.w_gate = self.w_up = self.w_down = None
        self.shexp_gate = self.gate_shexp = self.up_shexp = self.down_shexp = None
        if a.is_moe(i):
            E, FE, FS = a.n_expert, a.n_ff_exp, a.n_ff_shexp
            self.router = w.linear(p + "ffn_gate_inp.weight", (E, D), bias("ffn_gate_inp"))
            self.probs_bias = w.optional_vector(p + "exp_probs_b.bias", E) if a.expert_probs_bias else None
            self.gate_exps = w.experts(p + "ffn_gate_exps.weight", (E, FE, D))
            self.up_exps = w.experts(p + "ffn_up_exps.weight", (E, FE, D))
            self.down_exps = w.experts(p + "ffn_down_exps.weight", (E, D, FE))
            if FS:
                self.gate_shexp = w.linear(p + "ffn_gate_shexp.weight", (FS, D))
                self.up_shexp = w.linear(p + "ffn_up_shexp.weight", (FS, D))
                self.down_shexp = w.linear(p + "ffn_down_shexp.weight", (D, FS))
            if a.shexp_gate:   # a (D,) vector: a one-row product
                name = p + "ffn_gate_inp_shexp.weight"
                w.vector(name, D)
                self.shexp_gate = Linear(w.gguf.tensor_data(name), w.gguf.tensors[name].ggml_type, (1, D), name=name)
        elif a.gate_up_fused:
            self.w_gate, self.w_up = w.split(p + "ffn_up.weight", (F, F), D)
            self.w_down = w.linear(p + "ffn_down.weight", (D, F), bias("ffn_down"))
        else:
            self.w_gate = w.linear(p + "ffn_gate.weight", (F, D), bias("ffn_gate"))
            self.w_up = w.linear(p + "ffn_up.weight", (F, D), bias("ffn_up"))
            self.w_down = w.linear(p + "ffn_down.weight", (D, F), bias("ffn_down"))
        self.post_ffn_norm = norm("post_ffw_norm.weight", D) if a.post_norms else None


class Model:
    def __init__(self, args: ModelArgs, weights: WeightLoader, n_ctx: int | None = None):
        a = self.args = args
        self.tok_embd = weights.embedding("token_embd.weight", (a.n_vocab, a.n_embd))
        self.layers = [Block(weights, i, a) for i in range(a.n_layers)]
        self.output_norm = weights.vector("output_norm.weight", a.n_embd)
        self.output = weights.linear("output.weight", (a.n_vocab, a.n_embd)) \
            if weights.has("output.weight") else self.tok_embd.as_linear()
        factors = weights.optional_vector("rope_freqs.weight", a.n_rot // 2)
        if factors is None and weights.has("rope_factors_long.weight"):
            # LongRoPE: the long factors where the context runs past the original one
            long = (n_ctx or a.n_ctx_train) > (a.rope_orig_ctx or a.n_ctx_train)
            factors = weights.vector("rope_factors_long.weight", a.n_rot // 2) if long else \
                weights.vector("rope_factors_short.weight", a.n_rot // 2)
            weights.read.update(("rope_factors_long.weight", "rope_factors_short.weight"))
        rope = Rope(rope_config(a, a.rope_base, factors))
        swa_rope = Rope(rope_config(a, a.rope_base_swa or a.rope_base, factors, scaled=a.swa_rope_scaled))
        # each layer's RoPE (None: no position encoding), shared objects so tables grow once
        self.layer_ropes = [None if not a.has_rope(i) else swa_rope if a.is_swa(i) else rope
                            for i in range(a.n_layers)]
        self.act = ACTIVATIONS[a.activation]
        unread = weights.unread()
        if unread:   # fail closed: a layer tensor no step reads would change llama.cpp's output
            raise UnsupportedModelError(
                f"{weights.gguf.path}: {len(unread)} layer tensors are not part of the {a.arch!r} "
                f"recipe abi runs (first: {unread[0]!r}); refusing rather than ignoring them")

    def _moe(self, layer: Block, h: np.ndarray) -> np.ndarray:
        """Mixture of experts: each token's top-k experts by the router (``route``), their
        outputs summed with the routing weights; only selected experts run. Then the shared
        expert's output is added (times its sigmoid gate, where the recipe has one)."""
        a = self.args
        weights, chosen = route(layer.router(h), a, layer.probs_bias)
        out = np.zeros((len(h), a.n_embd), np.float32)
        for e in np.unique(chosen):
            rows, slots = np.nonzero(chosen == e)
            x = h[rows]
            y = layer.down_exps[e](self.act(layer.gate_exps[e](x), layer.up_exps[e](x)))
            out[rows] += weights[rows, slots, None] * y
        if layer.gate_shexp is not None:
            shared = layer.down_shexp(self.act(layer.gate_shexp(h), layer.up_shexp(h)))
            if layer.shexp_gate is not None:
                shared *= np.float32(1.0) / (np.float32(1.0) + np.exp(-layer.shexp_gate(h)))
            out += shared
        return out

    def new_cache(self, n_ctx: int, kv_dtype: str = "f32") -> KVCache:
        a = self.args
        return KVCache(a.n_layers, a.n_kv_heads, a.head_dim, n_ctx, kv_dtype)

    def forward(self, ids, cache: KVCache, output: str = "last") -> np.ndarray:
        """Run tokens ``ids`` after the cache's contents. ``output``: "last" -> logits of the
        last position (1, V); "all" -> logits (T, V); "hidden" -> final-norm states (T, D)."""
        a = self.args
        T, start = len(ids), cache.length
        cache.reserve(start + T)
        x = self.tok_embd(ids)  # (T, D)
        if a.embd_scale != 1.0:
            x = x * np.float32(a.embd_scale)
        residual = np.float32(a.residual_scale)
        for i, layer in enumerate(self.layers):
            h = rms_norm(x, layer.attn_norm, a.norm_eps) if layer.attn_norm is not None else x
            q, k, v = layer.wq(h), layer.wk(h), layer.wv(h)
            if a.qk_norm == "full":
                q, k = rms_norm(q, layer.q_norm, a.norm_eps), rms_norm(k, layer.k_norm, a.norm_eps)
            q = q.reshape(T, a.n_heads, a.head_dim)
            k = k.reshape(T, a.n_kv_heads, a.head_dim)
            v = v.reshape(T, a.n_kv_heads, a.head_dim)
            if a.qk_norm == "head":
                q, k = rms_norm(q, layer.q_norm, a.norm_eps), rms_norm(k, layer.k_norm, a.norm_eps)
            rope = self.layer_ropes[i]
            if rope is not None:
                rope(q, start)
                rope(k, start)
            keys, values = cache.store(i, start, k, v)  # (n_kv, start+T, hd)
            att = layer.wo(attention(q, keys, values, start, a.kq_scale,
                                     window=a.sliding_window if a.is_swa(i) else 0,
                                     softcap_value=a.attn_softcap, sinks=layer.sinks))
            if layer.post_attn_norm is not None:
                att = rms_norm(att, layer.post_attn_norm, a.norm_eps)
            x = x + (att * residual if a.residual_scale != 1.0 else att)
            h = rms_norm(x, layer.ffn_norm, a.norm_eps) if layer.ffn_norm is not None else x
            if layer.router is not None:
                ffn = self._moe(layer, h)
            else:
                ffn = layer.w_down(self.act(layer.w_gate(h), layer.w_up(h)))
            if layer.post_ffn_norm is not None:
                ffn = rms_norm(ffn, layer.post_ffn_norm, a.norm_eps)
            x = x + (ffn * residual if a.residual_scale != 1.0 else ffn)
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
        if a.logit_scale != 1.0:
            logits *= np.float32(a.logit_scale)
        return softcap(logits, a.final_softcap) if a.final_softcap else logits
