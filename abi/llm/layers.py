"""The numeric pieces every architecture is built from: norms, RoPE, activations and
grouped-query attention over a KV cache. Float32 throughout; shapes in comments."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x (..., D) -> x / rms(x) * weight, computed in float32 like ggml."""
    ms = np.einsum("...i,...i->...", x, x, dtype=np.float32) / np.float32(x.shape[-1])
    return x * (1.0 / np.sqrt(ms + np.float32(eps)))[..., None] * weight


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = np.einsum("...i,...i->...", xc, xc, dtype=np.float32)[..., None] / np.float32(x.shape[-1])
    y = xc / np.sqrt(var + np.float32(eps)) * weight
    return y + bias if bias is not None else y


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def _gelu_table() -> np.ndarray:
    """GELU (tanh approximation, in ggml's float32 form) of every f16 value, rounded to f16:
    the table ggml's CPU backend looks GELU up in."""
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(all="ignore"):
        g = np.float32(0.5) * h * (np.float32(1.0) + np.tanh(
            np.float32(_SQRT_2_OVER_PI) * h * (np.float32(1.0) + np.float32(0.044715) * h * h)))
    return g.astype(np.float16).astype(np.float32)


GELU_TABLE = _gelu_table()   # indexed by an input's f16 bits


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU with the tanh approximation as llama.cpp computes it on the CPU (Gemma's GeGLU):
    0 below -10, x above 10, else the f16 table at x rounded to f16. Matching its f16
    rounding keeps a Gemma run inside llama.cpp's noise (the exact tanh form parts from it
    by up to 2^-11 per activation)."""
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore"):
        y = GELU_TABLE[x.astype(np.float16).view(np.uint16)]
    return np.where(x <= -10.0, np.float32(0.0), np.where(x >= 10.0, x, y))


def softcap(x: np.ndarray, cap: float) -> np.ndarray:
    return np.tanh(x / np.float32(cap)) * np.float32(cap)


@dataclass(frozen=True)
class RopeConfig:
    """One RoPE variant. ``neox`` rotates (x[i], x[i + n_rot/2]); otherwise consecutive pairs.

    Scaling as GGUF records it: ``freq_scale`` (1 / rope.scaling.factor) divides positions
    for "linear"; "yarn" blends scaled and unscaled frequencies per dimension and scales
    cos/sin by ``mscale`` (llama.cpp's rope_yarn, with its default beta_fast 32, beta_slow 1).
    """

    n_rot: int
    base: float
    neox: bool
    freq_scale: float = 1.0            # linear / yarn: 1 / rope.scaling.factor
    freq_factors: tuple | None = None  # per-frequency divisors (rope_freqs.weight, Llama 3)
    yarn_orig_ctx: int = 0             # > 0: YaRN with this original context length
    attn_factor: float = 1.0           # rope.scaling.attn_factor
    yarn_log_mul: float = 0.0          # rope.scaling.yarn_log_multiplier

    def inv_freq(self) -> np.ndarray:
        """Per-pair angle per position (float32), scaling included."""
        half = self.n_rot // 2
        i = np.arange(half, dtype=np.float64)
        base = np.float64(self.base) ** (-2.0 * i / self.n_rot)
        if self.freq_factors is not None:
            base = base / np.asarray(self.freq_factors, np.float64)[:half]
        if not self.yarn_orig_ctx:
            return (base * self.freq_scale).astype(np.float32)
        low, high = self._yarn_corr_dims()
        mix = 1.0 - np.clip((i - low) / max(0.001, high - low), 0.0, 1.0)  # 1: keep unscaled
        return (base * (self.freq_scale * (1.0 - mix) + mix)).astype(np.float32)

    def _yarn_corr_dims(self) -> tuple[float, float]:
        def dim(beta):
            return self.n_rot * math.log(self.yarn_orig_ctx / (beta * 2 * math.pi)) / (2 * math.log(self.base))
        return max(0.0, math.floor(dim(32.0))), min(self.n_rot - 1.0, math.ceil(dim(1.0)))

    @property
    def mscale(self) -> float:
        """The factor on cos and sin (1 unless YaRN)."""
        if not self.yarn_orig_ctx or self.freq_scale >= 1.0:
            return self.attn_factor
        factor = 1.0 / self.freq_scale

        def get(m):
            return 0.1 * m * math.log(factor) + 1.0
        # rope_yarn's magnitude correction, over llama.cpp's all-dims factor when the file has one
        return self.attn_factor * get(1.0) / (get(self.yarn_log_mul) if self.yarn_log_mul else 1.0)


def rope_config(args, base: float, factors=None, scaled: bool = True) -> RopeConfig:
    """The RoPE of a model's layers from its ModelArgs (``scaled=False``: no scaling, e.g.
    Gemma 3's sliding-window layers)."""
    return RopeConfig(args.n_rot, base, args.rope_neox,
                      args.rope_freq_scale if scaled else 1.0,
                      tuple(factors.tolist()) if factors is not None else None,
                      args.rope_yarn_orig_ctx if scaled else 0,
                      args.rope_attn_factor if scaled else 1.0,
                      args.rope_yarn_log_mul if scaled else 0.0)


class Rope:
    """Rotary embedding with cos/sin tables grown on demand."""

    def __init__(self, cfg: RopeConfig):
        self.cfg = cfg
        self.inv_freq = cfg.inv_freq()
        self.mscale = np.float32(cfg.mscale)
        half = cfg.n_rot // 2
        self.cos = np.zeros((0, half), np.float32)
        self.sin = np.zeros((0, half), np.float32)

    def _grow(self, n: int) -> None:
        size = max(n, 2 * len(self.cos), 256)
        angles = np.arange(size, dtype=np.float64)[:, None] * self.inv_freq[None, :].astype(np.float64)
        self.cos = (np.cos(angles) * self.mscale).astype(np.float32)
        self.sin = (np.sin(angles) * self.mscale).astype(np.float32)

    def __call__(self, x: np.ndarray, start: int) -> np.ndarray:
        """x (T, H, head_dim) at positions start..start+T-1, rotated in place and returned."""
        T = x.shape[0]
        if start + T > len(self.cos):
            self._grow(start + T)
        cos = self.cos[start:start + T, None, :]  # (T, 1, half)
        sin = self.sin[start:start + T, None, :]
        n_rot = self.cfg.n_rot
        if self.cfg.neox:
            a, b = x[..., :n_rot // 2], x[..., n_rot // 2:n_rot]
        else:
            a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        a2 = a * cos - b * sin
        b2 = a * sin + b * cos
        a[...] = a2
        b[...] = b2
        return x


def swiglu_oai(g: np.ndarray, u: np.ndarray, alpha: float = 1.702, limit: float = 7.0) -> np.ndarray:
    """gpt-oss's gated unit: the gate clamped above, the up input clamped both ways and
    shifted by one, and a sigmoid of alpha * gate (llama.cpp's swiglu_oai)."""
    x = np.minimum(g, np.float32(limit))
    y = np.clip(u, np.float32(-limit), np.float32(limit))
    return x / (np.float32(1.0) + np.exp(np.float32(-alpha) * x)) * (y + np.float32(1.0))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int, scale: float,
              window: int = 0, softcap_value: float = 0.0, sinks: np.ndarray | None = None) -> np.ndarray:
    """Causal grouped-query attention.

    q (T, n_head, hd) for positions start..start+T-1; k, v (n_kv, S, hd) holding positions
    0..S-1 with S = start + T. ``window`` > 0 restricts each query to the last ``window``
    positions (sliding-window layers). Returns (T, n_head * hd).
    """
    T, n_head, hd = q.shape
    n_kv, S, _ = k.shape
    group = n_head // n_kv
    lo = 0
    if window > 0:
        lo = max(0, start - window + 1)  # keys older than this are masked for every query
    kk, vv = k[:, lo:S], v[:, lo:S]
    qg = q.transpose(1, 0, 2).reshape(n_kv, group * T, hd)
    scores = np.matmul(qg, kk.transpose(0, 2, 1)).reshape(n_kv, group, T, S - lo)
    scores *= np.float32(scale)
    if softcap_value:
        scores = softcap(scores, softcap_value)
    qpos = np.arange(start, start + T)[:, None]
    kpos = np.arange(lo, S)[None, :]
    masked = kpos > qpos
    if window > 0:
        masked |= qpos - kpos >= window
    if masked.any():
        scores[:, :, masked] = -np.inf
    top = scores.max(axis=-1, keepdims=True)
    if sinks is not None:   # a learned logit per head in every softmax, itself attending to nothing
        sink = np.asarray(sinks, np.float32).reshape(n_kv, group, 1, 1)
        top = np.maximum(top, sink)
    scores -= top
    np.exp(scores, out=scores)
    total = scores.sum(axis=-1, keepdims=True)
    if sinks is not None:
        total = total + np.exp(sink - top)
    scores /= total
    out = np.matmul(scores.reshape(n_kv, group * T, S - lo), vv)  # (n_kv, group*T, hd)
    return out.reshape(n_head, T, hd).transpose(1, 0, 2).reshape(T, n_head * hd)
