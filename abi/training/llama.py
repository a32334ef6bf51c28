"""The llama architecture in numpy, forward and backward, for training small models.

Parameters are named and shaped as in a GGUF file (numpy order, ``W @ x`` convention):

    token_embd.weight          (V, D)
    blk.N.attn_norm.weight     (D,)
    blk.N.attn_q.weight        (H*hd, D)      blk.N.attn_k.weight / attn_v.weight (Hkv*hd, D)
    blk.N.attn_output.weight   (D, H*hd)
    blk.N.ffn_norm.weight      (D,)
    blk.N.ffn_gate.weight      (F, D)         blk.N.ffn_up.weight (F, D)
    blk.N.ffn_down.weight      (D, F)
    output_norm.weight         (D,)
    output.weight              (V, D)         absent when tied to token_embd

RoPE is llama.cpp's "normal" mode used by its llama architecture: it rotates *adjacent*
pairs (x[2i], x[2i+1]) by pos * base^(-2i/hd). (Hugging Face rotates the two halves
instead; llama.cpp's converter permutes attn_q/attn_k rows to compensate, so GGUF weights
already follow this convention.) Weights loaded from a GGUF, trained here and exported
again therefore need no permutation, and an exported model computes what we computed.

Every activation is float32 (float64 when the parameters are, for gradient checks).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError, UnsupportedModelError


@dataclass(frozen=True)
class LlamaConfig:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    context_length: int = 2048
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self) -> None:
        for name in ("n_vocab", "n_embd", "n_layer", "n_head", "n_head_kv", "n_ff",
                     "context_length"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}", field=name)
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}",
                              field="n_head")
        if self.head_dim % 2:
            raise ConfigError(f"head size {self.head_dim} must be even for RoPE", field="n_head")
        if self.n_head % self.n_head_kv:
            raise ConfigError(f"n_head {self.n_head} is not a multiple of n_head_kv "
                              f"{self.n_head_kv}", field="n_head_kv")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_gguf(cls, gf) -> "LlamaConfig":
        """From a parsed GGUF file of architecture ``llama``."""
        if gf.architecture != "llama":
            raise UnsupportedModelError(
                f"architecture {gf.architecture!r} is not supported for training; supported: llama")
        def need(key):
            value = gf.arch_get(key)
            if value is None:
                raise UnsupportedModelError(f"GGUF lacks llama.{key}")
            return value

        n_embd, n_head = int(need("embedding_length")), int(need("attention.head_count"))
        rope_dims = gf.arch_get("rope.dimension_count", n_embd // n_head)
        if rope_dims != n_embd // n_head:
            raise UnsupportedModelError(f"partial RoPE ({rope_dims} of {n_embd // n_head} dims) "
                                        "is not supported for training")
        scaling = gf.arch_get("rope.scaling.type", "none")
        if scaling not in ("none", None) and gf.arch_get("rope.scaling.factor", 1.0) != 1.0:
            raise UnsupportedModelError(f"RoPE scaling {scaling!r} is not supported for training")
        tokens = gf.get("tokenizer.ggml.tokens")
        n_vocab = gf.arch_get("vocab_size") or (len(tokens) if tokens is not None else None)
        if n_vocab is None:
            n_vocab = gf.tensors["token_embd.weight"].shape[0]
        cfg = cls(n_vocab=int(n_vocab), n_embd=n_embd, n_layer=int(need("block_count")),
                  n_head=n_head, n_head_kv=int(gf.arch_get("attention.head_count_kv", n_head)),
                  n_ff=int(need("feed_forward_length")),
                  context_length=int(gf.arch_get("context_length", 2048)),
                  rope_freq_base=_f32_value(gf.arch_get("rope.freq_base", 10000.0)),
                  rms_eps=_f32_value(gf.arch_get("attention.layer_norm_rms_epsilon", 1e-5)),
                  tie_embeddings="output.weight" not in gf.tensors)
        cfg.validate()
        return cfg


def _f32_value(v) -> float:
    """A GGUF float32 as the shortest decimal that rounds to it (1e-05, not 9.9999997e-06),
    so a config survives export and reload unchanged."""
    return float(str(np.float32(v)))


def param_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    D, F, V, hd = cfg.n_embd, cfg.n_ff, cfg.n_vocab, cfg.head_dim
    shapes = {"token_embd.weight": (V, D)}
    for i in range(cfg.n_layer):
        b = f"blk.{i}."
        shapes.update({
            b + "attn_norm.weight": (D,), b + "attn_q.weight": (cfg.n_head * hd, D),
            b + "attn_k.weight": (cfg.n_head_kv * hd, D), b + "attn_v.weight": (cfg.n_head_kv * hd, D),
            b + "attn_output.weight": (D, cfg.n_head * hd), b + "ffn_norm.weight": (D,),
            b + "ffn_gate.weight": (F, D), b + "ffn_up.weight": (F, D), b + "ffn_down.weight": (D, F)})
    shapes["output_norm.weight"] = (D,)
    if not cfg.tie_embeddings:
        shapes["output.weight"] = (V, D)
    return shapes


def init_params(cfg: LlamaConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """GPT-2 style init: N(0, 0.02) matrices, residual projections scaled by 1/sqrt(2L),
    unit norm gains."""
    out = {}
    resid = 0.02 / np.sqrt(2 * cfg.n_layer)
    for name, shape in param_shapes(cfg).items():
        if len(shape) == 1:
            out[name] = np.ones(shape, np.float32)
        else:
            std = resid if name.endswith(("attn_output.weight", "ffn_down.weight")) else 0.02
            out[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    return out


def rope_tables(cfg: LlamaConfig, T: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    hd = cfg.head_dim
    inv = cfg.rope_freq_base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)   # (hd/2,)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]                   # (T, hd/2)
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Rotate adjacent pairs of x (B, h, T, hd); ``inverse`` rotates back (the backward)."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    s = -sin if inverse else sin
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * s
    out[..., 1::2] = x0 * s + x1 * cos
    return out


def _rms(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + x.dtype.type(eps))
    return x * r, r


def _rms_back(dn: np.ndarray, n: np.ndarray, r: np.ndarray) -> np.ndarray:
    return r * (dn - n * np.mean(dn * n, axis=-1, keepdims=True))


def _silu_parts(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sig = 1.0 / (1.0 + np.exp(-g))
    return g * sig, sig


class LlamaModel:
    """Holds ``config`` and ``params`` (a dict of arrays, updated in place by optimisers)."""

    def __init__(self, config: LlamaConfig, params: dict[str, np.ndarray]):
        config.validate()
        shapes = param_shapes(config)
        if set(params) != set(shapes):
            missing, extra = set(shapes) - set(params), set(params) - set(shapes)
            raise ConfigError(f"parameters do not match the config (missing {sorted(missing)[:4]}, "
                              f"unexpected {sorted(extra)[:4]})", field="params")
        for name, shape in shapes.items():
            if params[name].shape != shape:
                raise ConfigError(f"{name} has shape {params[name].shape}, expected {shape}",
                                  field="params")
        self.config = config
        self.params = params

    @property
    def n_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def _out_weight(self) -> np.ndarray:
        return self.params["token_embd.weight" if self.config.tie_embeddings else "output.weight"]

    # -- forward -----------------------------------------------------------------------------
    def forward(self, tokens: np.ndarray, keep: bool = False):
        """Logits (B, T, V) for token ids (B, T); with ``keep`` also the activations the
        backward pass needs."""
        cfg, P = self.config, self.params
        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        B, T = tokens.shape
        if T > cfg.context_length:
            raise ConfigError(f"sequence of {T} tokens exceeds the context length "
                              f"{cfg.context_length}", field="seq_len")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= cfg.n_vocab):
            raise ConfigError(f"token ids must lie in [0, {cfg.n_vocab})", field="tokens")
        dt = P["token_embd.weight"].dtype
        H, Hkv, hd = cfg.n_head, cfg.n_head_kv, cfg.head_dim
        group = H // Hkv
        scale = dt.type(1.0 / np.sqrt(hd))
        cos, sin = rope_tables(cfg, T, dt)
        mask = np.triu(np.ones((T, T), bool), 1)
        x = P["token_embd.weight"][tokens]                                  # (B, T, D)
        caches = []
        for i in range(cfg.n_layer):
            b = f"blk.{i}."
            n1, r1 = _rms(x, cfg.rms_eps)
            h1 = n1 * P[b + "attn_norm.weight"]                              # (B, T, D)
            q = (h1 @ P[b + "attn_q.weight"].T).reshape(B, T, H, hd).transpose(0, 2, 1, 3)
            k = (h1 @ P[b + "attn_k.weight"].T).reshape(B, T, Hkv, hd).transpose(0, 2, 1, 3)
            v = (h1 @ P[b + "attn_v.weight"].T).reshape(B, T, Hkv, hd).transpose(0, 2, 1, 3)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)                    # (B, h, T, hd)
            kr = np.repeat(k, group, axis=1) if group > 1 else k             # (B, H, T, hd)
            vr = np.repeat(v, group, axis=1) if group > 1 else v
            s = (q @ kr.transpose(0, 1, 3, 2)) * scale                       # (B, H, T, T)
            s[..., mask] = -np.inf
            s -= s.max(axis=-1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=-1, keepdims=True)
            ctx = (p @ vr).transpose(0, 2, 1, 3).reshape(B, T, H * hd)      # (B, T, H*hd)
            x_mid = x + ctx @ P[b + "attn_output.weight"].T
            n2, r2 = _rms(x_mid, cfg.rms_eps)
            h2 = n2 * P[b + "ffn_norm.weight"]
            gate = h2 @ P[b + "ffn_gate.weight"].T                           # (B, T, F)
            up = h2 @ P[b + "ffn_up.weight"].T
            sg, sig = _silu_parts(gate)
            act = sg * up
            x_out = x_mid + act @ P[b + "ffn_down.weight"].T
            if keep:
                caches.append((n1, r1, h1, q, kr, vr, p, ctx, n2, r2, h2, gate, up, sg, sig, act))
            x = x_out
        nf, rf = _rms(x, cfg.rms_eps)
        hf = nf * P["output_norm.weight"]
        logits = hf @ self._out_weight().T                                   # (B, T, V)
        if keep:
            return logits, (tokens, caches, nf, rf, hf, cos, sin)
        return logits

    # -- loss and backward -------------------------------------------------------------------
    def loss_and_grads(self, inputs: np.ndarray, targets: np.ndarray,
                       grads: dict[str, np.ndarray] | None = None, grad_scale: float = 1.0):
        """Mean next-token cross-entropy over (B, T) targets, and its gradients added into
        ``grads`` (multiplied by ``grad_scale``; a new dict when None)."""
        cfg, P = self.config, self.params
        logits, (tokens, caches, nf, rf, hf, cos, sin) = self.forward(inputs, keep=True)
        B, T, V = logits.shape
        dt = logits.dtype
        H, Hkv, hd, D = cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_embd
        group = H // Hkv
        scale = dt.type(1.0 / np.sqrt(hd))
        targets = np.asarray(targets).reshape(B, T)
        if targets.min() < 0 or targets.max() >= V:
            raise ConfigError(f"target ids must lie in [0, {V})", field="tokens")

        # softmax cross-entropy, in place on the logits
        logits -= logits.max(axis=-1, keepdims=True)
        np.exp(logits, out=logits)
        sums = logits.sum(axis=-1, keepdims=True)
        logits /= sums
        bi, ti = np.meshgrid(np.arange(B), np.arange(T), indexing="ij")
        picked = logits[bi, ti, targets]
        loss = float(-np.mean(np.log(np.maximum(picked, np.finfo(dt).tiny))))
        dlogits = logits                                                      # (B, T, V)
        dlogits[bi, ti, targets] -= 1
        dlogits *= dt.type(grad_scale / (B * T))

        if grads is None:
            grads = {k: np.zeros_like(v) for k, v in P.items()}

        def acc(name, g):
            grads[name] += g

        dl2 = dlogits.reshape(-1, V)
        out_name = "token_embd.weight" if cfg.tie_embeddings else "output.weight"
        acc(out_name, dl2.T @ hf.reshape(-1, D))
        dhf = dlogits @ self._out_weight()                                   # (B, T, D)
        del dlogits, dl2, logits
        acc("output_norm.weight", (dhf * nf).reshape(-1, D).sum(0))
        dx = _rms_back(dhf * P["output_norm.weight"], nf, rf)

        for i in reversed(range(cfg.n_layer)):
            b = f"blk.{i}."
            n1, r1, h1, q, kr, vr, p, ctx, n2, r2, h2, gate, up, sg, sig, act = caches[i]
            # feed-forward
            F = gate.shape[-1]
            acc(b + "ffn_down.weight", dx.reshape(-1, D).T @ act.reshape(-1, F))
            dact = dx @ P[b + "ffn_down.weight"]                              # (B, T, F)
            dup = dact * sg
            dgate = dact * up * sig * (1 + gate * (1 - sig))
            h2f = h2.reshape(-1, D)
            acc(b + "ffn_gate.weight", dgate.reshape(-1, F).T @ h2f)
            acc(b + "ffn_up.weight", dup.reshape(-1, F).T @ h2f)
            dh2 = dgate @ P[b + "ffn_gate.weight"] + dup @ P[b + "ffn_up.weight"]
            acc(b + "ffn_norm.weight", (dh2 * n2).reshape(-1, D).sum(0))
            dx = dx + _rms_back(dh2 * P[b + "ffn_norm.weight"], n2, r2)      # into x_mid
            # attention
            acc(b + "attn_output.weight", dx.reshape(-1, D).T @ ctx.reshape(-1, H * hd))
            do = (dx @ P[b + "attn_output.weight"]).reshape(B, T, H, hd).transpose(0, 2, 1, 3)
            dp = do @ vr.transpose(0, 1, 3, 2)                                # (B, H, T, T)
            dvr = p.transpose(0, 1, 3, 2) @ do                                # (B, H, T, hd)
            ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
            ds *= scale
            dq = ds @ kr                                                      # (B, H, T, hd)
            dkr = ds.transpose(0, 1, 3, 2) @ q
            if group > 1:
                dkr = dkr.reshape(B, Hkv, group, T, hd).sum(2)
                dvr = dvr.reshape(B, Hkv, group, T, hd).sum(2)
            dq = _rope(dq, cos, sin, inverse=True).transpose(0, 2, 1, 3).reshape(B, T, H * hd)
            dk = _rope(dkr, cos, sin, inverse=True).transpose(0, 2, 1, 3).reshape(B, T, Hkv * hd)
            dv = dvr.transpose(0, 2, 1, 3).reshape(B, T, Hkv * hd)
            h1f = h1.reshape(-1, D)
            acc(b + "attn_q.weight", dq.reshape(-1, H * hd).T @ h1f)
            acc(b + "attn_k.weight", dk.reshape(-1, Hkv * hd).T @ h1f)
            acc(b + "attn_v.weight", dv.reshape(-1, Hkv * hd).T @ h1f)
            dh1 = dq @ P[b + "attn_q.weight"] + dk @ P[b + "attn_k.weight"] \
                + dv @ P[b + "attn_v.weight"]
            acc(b + "attn_norm.weight", (dh1 * n1).reshape(-1, D).sum(0))
            dx = dx + _rms_back(dh1 * P[b + "attn_norm.weight"], n1, r1)
            caches[i] = None  # free activations as we go
        np.add.at(grads["token_embd.weight"], tokens.reshape(-1), dx.reshape(-1, D))
        return loss, grads

    def loss(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        logits = self.forward(inputs)
        B, T, _ = logits.shape
        m = logits.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(logits - m).sum(axis=-1)) + m[..., 0]
        bi, ti = np.meshgrid(np.arange(B), np.arange(T), indexing="ij")
        return float(np.mean(lse - logits[bi, ti, np.asarray(targets).reshape(B, T)]))
