"""LoRA on a GGUF model: forward and backward in numpy through the runtime's decoder recipe
(``abi/llm/models/decoder.py``), the base weights frozen and read from the quantised file.

Each base matrix is dequantised when a layer needs it and dropped after (a bounded cache
keeps the most recent ones): never a float copy of the whole model. Only the adapters get
gradients. By default the backward recomputes each layer's forward from its saved input
(activation checkpointing), so the activations kept are one (B, T, D) state per adapted layer
plus one layer's intermediates; ``recompute=False`` keeps every adapted layer's
intermediates instead (a forward less per step, for short sequences or few layers). Layers below the first adapted one run forward only.

Recipe steps the backward covers: pre-norms (or none), post-norms, Q/K biases and any other
bias, Q/K norm per head or over all heads, RoPE of each layer (the runtime's tables: scaled,
windowed, per-frequency factors), grouped-query attention with its scale, sliding window
and soft-cap, SiLU and GELU (tanh form) GLUs, embedding, residual and logit scales and the
final soft-cap. Anything else (mixtures of experts, attention sinks, fused QKV or gate-up
tensors as targets, other activations) is refused with a TrainingError naming it.
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import numpy as np

from .. import _kernels
from ..errors import ConfigError, TrainingError
from ..gguf import load as load_gguf
from ..llm.models import get_architecture
from ..llm.models import decoder
from ..llm.weights import WeightLoader
from .llama import _rms_back

# --targets names -> the runtime Block's attributes
TARGETS = {"q": "wq", "k": "wk", "v": "wv", "o": "wo", "gate": "w_gate", "up": "w_up", "down": "w_down"}
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# the recipe fields whose every value the backward follows (RoPE's fields, before the
# recipe's, come with the runtime's tables); any other field away from its default is refused
HANDLED = frozenset({"attn_norm", "post_norms", "qk_norm", "qkv_bias", "embd_scale", "attn_scale",
                     "residual_scale", "logit_scale", "attn_softcap", "final_softcap",
                     "sliding_window", "swa_layers", "rope_base_swa", "swa_rope_scaled",
                     "nope_layers", "ffn_norm_tensor", "gate_up_fused", "rope_orig_ctx"})
ACTIVATIONS = ("silu", "gelu")


def check_recipe(a: decoder.ModelArgs) -> None:
    """Refuse (TrainingError naming it) a recipe feature the LoRA backward does not have:
    an activation it lacks, or any other field (mixtures of experts, attention sinks, and
    whatever the recipe gains later) set away from its default."""
    defaults = {f.name: f.default for f in dataclasses.fields(decoder.ModelArgs)}
    unsupported = [f"{name}={getattr(a, name)!r}" for name in decoder.RECIPE_FIELDS
                   if name not in HANDLED and name != "activation" and getattr(a, name) != defaults[name]]
    if a.activation not in ACTIVATIONS:
        unsupported.append(f"activation={a.activation!r}")
    if unsupported:
        raise TrainingError(f"LoRA training does not support the recipe's {', '.join(unsupported)} "
                            f"(architecture {a.arch!r}); it trains dense decoders with "
                            f"{' or '.join(ACTIVATIONS)} gated FFNs")


class WeightCache:
    """Dequantised base matrices, most recent first, within ``budget`` bytes."""

    def __init__(self, dtype, budget: int, n_threads: int | None = None):
        self.dtype, self.budget, self.used, self.n_threads = np.dtype(dtype), int(budget), 0, n_threads
        self._d: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, lin) -> np.ndarray:
        w = self._d.get(lin.name)
        if w is not None:
            self._d.move_to_end(lin.name)
            return w
        w = _kernels.dequantize(lin.raw, lin.ggml_type, lin.shape, self.n_threads).reshape(lin.shape)
        w = np.ascontiguousarray(w, dtype=self.dtype)
        if w.nbytes <= self.budget:
            self._d[lin.name] = w
            self.used += w.nbytes
            while self.used > self.budget:
                self.used -= self._d.popitem(last=False)[1].nbytes
        return w


def _rms(x, w, eps):
    """(y, n, r): y = n * w with n = x * r, r = 1 / rms(x)."""
    r = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    n = x * r
    return n * w, n, r


def _gelu(g):
    """GELU, tanh form, and its derivative (the runtime's table is this, rounded to f16)."""
    u = _SQRT_2_OVER_PI * (g + 0.044715 * g ** 3)
    t = np.tanh(u)
    d = 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * g * g)
    return 0.5 * g * (1 + t), d


def _silu(g):
    s = 1.0 / (1.0 + np.exp(-g))
    return g * s, s * (1 + g * (1 - s))


class Adapter:
    """One LoRA pair on a base ``Linear``: y += scale * drop(x) @ A.T @ B.T."""

    def __init__(self, name: str, a: np.ndarray, b: np.ndarray, scale: float):
        self.name, self.a, self.b, self.scale = name, a, b, scale


class LoraModel:
    """A GGUF model with LoRA adapters. ``params`` (name -> array, the optimizer's view)
    holds ``<base>.lora_a`` and ``<base>.lora_b`` for every adapted base weight."""

    def __init__(self, model_path: str, *, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 targets=("q", "v"), lora_layers: int | None = None, seed: int = 0,
                 dtype=np.float32, cache_bytes: int = 64 << 20, init_b: float = 0.0,
                 n_threads: int | None = None, recompute: bool = True):
        if rank < 1:
            raise ConfigError(f"rank must be >= 1, got {rank}", "rank")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}", "dropout")
        bad = [t for t in targets if t not in TARGETS]
        if bad or not targets:
            raise ConfigError(f"unknown LoRA targets {bad or targets}; choose from "
                              f"{', '.join(TARGETS)}", "targets")
        self.gguf = load_gguf(model_path)
        arch = self.gguf.architecture
        module = get_architecture(arch)
        if module.Model is not decoder.Model:
            raise TrainingError(f"LoRA training runs the decoder recipe; architecture {arch!r} "
                                "is not a decoder-only generator")
        a = self.args = module.ModelArgs.from_gguf(self.gguf.metadata)
        check_recipe(a)
        self.base = decoder.Model(a, WeightLoader(self.gguf))   # raw quantised views only
        self.dtype = np.dtype(dtype)
        self.weights = WeightCache(self.dtype, cache_bytes, n_threads)
        self.rank, self.alpha, self.dropout = int(rank), float(alpha), float(dropout)
        self.recompute = bool(recompute)   # False: keep every adapted layer's intermediates
        self.targets = tuple(targets)
        n = a.n_layers if lora_layers is None else int(lora_layers)
        if not 1 <= n <= a.n_layers:
            raise ConfigError(f"lora_layers must be in 1..{a.n_layers}, got {lora_layers}", "lora_layers")
        self.first = a.n_layers - n          # adapters on the last n layers
        rng = np.random.default_rng(seed)
        self.adapters: list[dict[str, Adapter]] = [{} for _ in range(a.n_layers)]
        self.params: dict[str, np.ndarray] = {}
        scale = self.alpha / self.rank
        for i in range(self.first, a.n_layers):
            block = self.base.layers[i]
            for t in self.targets:
                lin = getattr(block, TARGETS[t])
                if lin is None or "[" in lin.name:
                    raise TrainingError(f"layer {i} has no separate {t!r} projection to adapt "
                                        f"({lin.name if lin else 'absent'})")
                n_out, n_in = lin.shape
                bound = 1.0 / math.sqrt(n_in)    # A uniform as PEFT/mlx-lm, B zero: no change at start
                A = rng.uniform(-bound, bound, (self.rank, n_in)).astype(self.dtype)
                B = (rng.standard_normal((n_out, self.rank)) * init_b).astype(self.dtype)
                self.params[lin.name + ".lora_a"], self.params[lin.name + ".lora_b"] = A, B
                self.adapters[i][t] = Adapter(lin.name, A, B, scale)

    # -- pieces ---------------------------------------------------------------------------
    def _vec(self, v):
        return None if v is None else v.astype(self.dtype, copy=False)

    def _linear(self, lin, x, ad: Adapter | None, drop_rng, saved: dict, key: str):
        """x (N, n_in) -> (N, n_out); saves what the backward needs under ``key``."""
        y = x @ self.weights.get(lin).T
        if lin.bias is not None:
            y += lin.bias.astype(self.dtype, copy=False)
        if ad is not None:
            xd = x
            if self.dropout and drop_rng is not None:
                keep = (drop_rng.random(x.shape) >= self.dropout).astype(self.dtype) / (1 - self.dropout)
                xd = x * keep
                saved[key + ".keep"] = keep
            xa = xd @ ad.a.T                     # (N, r)
            y += ad.scale * (xa @ ad.b.T)
            saved[key + ".xd"], saved[key + ".xa"] = xd, xa
        return y

    def _linear_back(self, lin, dy, ad, saved, key, grads):
        dx = dy @ self.weights.get(lin)
        if ad is not None:
            xd, xa = saved[key + ".xd"], saved[key + ".xa"]
            dyb = dy @ ad.b                      # (N, r)
            grads[ad.name + ".lora_b"] += ad.scale * (dy.T @ xa)
            grads[ad.name + ".lora_a"] += ad.scale * (dyb.T @ xd)
            dxd = ad.scale * (dyb @ ad.a)
            if key + ".keep" in saved:
                dxd *= saved[key + ".keep"]
            dx += dxd
        return dx

    def _rope_tables(self, i: int, T: int):
        rope = self.base.layer_ropes[i]
        if rope is None:
            return None
        if len(rope.cos) < T:
            rope._grow(T)
        return (rope.cos[:T].astype(self.dtype)[None, :, None, :],
                rope.sin[:T].astype(self.dtype)[None, :, None, :], rope.cfg)

    @staticmethod
    def _rope_halves(x, cfg):
        n = cfg.n_rot
        return (x[..., :n // 2], x[..., n // 2:n]) if cfg.neox else (x[..., 0:n:2], x[..., 1:n:2])

    def _rope(self, x, tables, inverse=False):
        """Rotate x (B, T, H, hd); ``inverse``: the transposed rotation (the backward)."""
        if tables is None:
            return x
        cos, sin, cfg = tables
        x = x.copy()
        a, b = self._rope_halves(x, cfg)
        s = -sin if inverse else sin
        a2, b2 = a * cos - b * s, a * s + b * cos
        a[...], b[...] = a2, b2
        return x

    # -- one layer ------------------------------------------------------------------------
    def _layer(self, i: int, x: np.ndarray, drop_seed, need_grad: bool):
        """x (B, T, D) -> (B, T, D), and the saved values when ``need_grad``."""
        a, L = self.args, self.base.layers[i]
        ads = self.adapters[i]
        eps = a.norm_eps
        B, T, D = x.shape
        H, KV, hd = a.n_heads, a.n_kv_heads, a.head_dim
        drop = np.random.default_rng(drop_seed) if drop_seed is not None else None
        s: dict = {}
        xf = x.reshape(B * T, D)
        if L.attn_norm is not None:
            h, s["n1"], s["r1"] = _rms(xf, self._vec(L.attn_norm), eps)
        else:
            h = xf
        q = self._linear(L.wq, h, ads.get("q"), drop, s, "q")
        k = self._linear(L.wk, h, ads.get("k"), drop, s, "k")
        v = self._linear(L.wv, h, ads.get("v"), drop, s, "v")
        if a.qk_norm == "full":
            q, s["qn"], s["qr"] = _rms(q, self._vec(L.q_norm), eps)
            k, s["kn"], s["kr"] = _rms(k, self._vec(L.k_norm), eps)
        q, k, v = q.reshape(B, T, H, hd), k.reshape(B, T, KV, hd), v.reshape(B, T, KV, hd)
        if a.qk_norm == "head":
            q, s["qn"], s["qr"] = _rms(q, self._vec(L.q_norm), eps)
            k, s["kn"], s["kr"] = _rms(k, self._vec(L.k_norm), eps)
        tables = self._rope_tables(i, T)
        q, k = self._rope(q, tables), self._rope(k, tables)
        group = H // KV
        qh = q.transpose(0, 2, 1, 3)                                        # (B, H, T, hd)
        kh = np.repeat(k.transpose(0, 2, 1, 3), group, axis=1)
        vh = np.repeat(v.transpose(0, 2, 1, 3), group, axis=1)
        z = (qh @ kh.transpose(0, 1, 3, 2)) * a.kq_scale                    # (B, H, T, T)
        if a.attn_softcap:
            tz = np.tanh(z / a.attn_softcap)
            z = tz * a.attn_softcap
            s["tz"] = tz
        qpos, kpos = np.arange(T)[:, None], np.arange(T)[None, :]
        masked = kpos > qpos
        if a.is_swa(i):
            masked |= qpos - kpos >= a.sliding_window
        z = np.where(masked, -np.inf, z)
        z -= z.max(axis=-1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=-1, keepdims=True)
        o = (p @ vh).transpose(0, 2, 1, 3).reshape(B * T, H * hd)
        att = self._linear(L.wo, o, ads.get("o"), drop, s, "o")
        if L.post_attn_norm is not None:
            att, s["n2"], s["r2"] = _rms(att, self._vec(L.post_attn_norm), eps)
        x1 = xf + a.residual_scale * att
        if L.ffn_norm is not None:
            h2, s["n3"], s["r3"] = _rms(x1, self._vec(L.ffn_norm), eps)
        else:
            h2 = x1
        g = self._linear(L.w_gate, h2, ads.get("gate"), drop, s, "gate")
        u = self._linear(L.w_up, h2, ads.get("up"), drop, s, "up")
        act, dact = (_gelu if a.activation == "gelu" else _silu)(g)
        m = act * u
        f = self._linear(L.w_down, m, ads.get("down"), drop, s, "down")
        if L.post_ffn_norm is not None:
            f, s["n4"], s["r4"] = _rms(f, self._vec(L.post_ffn_norm), eps)
        out = (x1 + a.residual_scale * f).reshape(B, T, D)
        if need_grad:
            s.update(h=h, h2=h2, qh=qh, kh=kh, vh=vh, p=p, o=o, act=act, dact=dact, u=u, m=m,
                     tables=tables)
        return out, s

    def _layer_back(self, i: int, s: dict, dout: np.ndarray, grads) -> np.ndarray:
        a, L = self.args, self.base.layers[i]
        ads = self.adapters[i]
        B, T, D = dout.shape
        H, KV, hd = a.n_heads, a.n_kv_heads, a.head_dim
        rs = a.residual_scale
        dx1 = dout.reshape(B * T, D).copy()
        df = rs * dx1
        if L.post_ffn_norm is not None:
            df = _rms_back(df * self._vec(L.post_ffn_norm), s["n4"], s["r4"])
        dm = self._linear_back(L.w_down, df, ads.get("down"), s, "down", grads)
        dg = dm * s["u"] * s["dact"]
        du = dm * s["act"]
        dh2 = self._linear_back(L.w_gate, dg, ads.get("gate"), s, "gate", grads)
        dh2 += self._linear_back(L.w_up, du, ads.get("up"), s, "up", grads)
        if L.ffn_norm is not None:
            dh2 = _rms_back(dh2 * self._vec(L.ffn_norm), s["n3"], s["r3"])
        dx1 += dh2
        datt = rs * dx1
        if L.post_attn_norm is not None:
            datt = _rms_back(datt * self._vec(L.post_attn_norm), s["n2"], s["r2"])
        do = self._linear_back(L.wo, datt, ads.get("o"), s, "o", grads)
        do = do.reshape(B, T, H, hd).transpose(0, 2, 1, 3)                  # (B, H, T, hd)
        p = s["p"]
        dvh = p.transpose(0, 1, 3, 2) @ do
        dp = do @ s["vh"].transpose(0, 1, 3, 2)
        dz = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
        if a.attn_softcap:
            dz = dz * (1 - s["tz"] ** 2)
        dz *= a.kq_scale
        dqh = dz @ s["kh"]
        dkh = dz.transpose(0, 1, 3, 2) @ s["qh"]
        group = H // KV
        dk = dkh.reshape(B, KV, group, T, hd).sum(axis=2).transpose(0, 2, 1, 3)   # (B, T, KV, hd)
        dv = dvh.reshape(B, KV, group, T, hd).sum(axis=2).transpose(0, 2, 1, 3)
        dq = dqh.transpose(0, 2, 1, 3)
        dq, dk = self._rope(dq, s["tables"], inverse=True), self._rope(dk, s["tables"], inverse=True)
        if a.qk_norm == "head":
            dq = _rms_back(dq * self._vec(L.q_norm), s["qn"], s["qr"])
            dk = _rms_back(dk * self._vec(L.k_norm), s["kn"], s["kr"])
        dq, dk, dv = dq.reshape(B * T, -1), dk.reshape(B * T, -1), dv.reshape(B * T, -1)
        if a.qk_norm == "full":
            dq = _rms_back(dq * self._vec(L.q_norm), s["qn"], s["qr"])
            dk = _rms_back(dk * self._vec(L.k_norm), s["kn"], s["kr"])
        dh = self._linear_back(L.wq, dq, ads.get("q"), s, "q", grads)
        dh += self._linear_back(L.wk, dk, ads.get("k"), s, "k", grads)
        dh += self._linear_back(L.wv, dv, ads.get("v"), s, "v", grads)
        if L.attn_norm is not None:
            dh = _rms_back(dh * self._vec(L.attn_norm), s["n1"], s["r1"])
        return (dx1 + dh).reshape(B, T, D)

    # -- the whole model ------------------------------------------------------------------
    def _embed(self, ids: np.ndarray) -> np.ndarray:
        B, T = ids.shape
        x = self.base.tok_embd(ids.reshape(-1)).astype(self.dtype).reshape(B, T, -1)
        return x * self.args.embd_scale if self.args.embd_scale != 1.0 else x

    def hidden_before(self, ids: np.ndarray, layer: int) -> np.ndarray:
        """The residual stream entering ``layer`` (no adapters below it change it)."""
        x = self._embed(ids)
        for i in range(layer):
            x, _ = self._layer(i, x, None, False)
        return x

    def _head_rows(self, tile: int):
        """The output matrix in dequantised tiles of rows: (r0, r1, W[r0:r1])."""
        out = self.base.output
        rows = out.raw.reshape(out.shape[0], -1)
        for r0 in range(0, out.shape[0], tile):
            r1 = min(r0 + tile, out.shape[0])
            w = _kernels.dequantize(rows[r0:r1], out.ggml_type, (r1 - r0, out.shape[1]),
                                    self.weights.n_threads)
            yield r0, r1, np.asarray(w, self.dtype).reshape(r1 - r0, -1)

    def loss_and_grads(self, ids: np.ndarray, targets: np.ndarray, mask: np.ndarray,
                       grads: dict | None, weight: float = 1.0, drop_seed: int | None = None,
                       start_hidden: np.ndarray | None = None, tile: int = 8192):
        """Mean cross-entropy of ``targets`` (B, T) where ``mask`` (B, T) is true, given
        inputs ``ids`` (B, T). With ``grads``, adds ``weight`` x the adapters' gradients into
        it. ``start_hidden``: the stream entering the first adapted layer, when the caller
        kept it (it does not depend on the adapters). Returns (loss, n_tokens)."""
        a = self.args
        mask = np.asarray(mask, bool)
        n_tok = int(mask.sum())
        if n_tok == 0:
            return 0.0, 0
        x = start_hidden.astype(self.dtype) if start_hidden is not None else \
            self.hidden_before(ids, self.first)
        seeds = (np.random.SeedSequence(drop_seed).generate_state(a.n_layers)
                 if drop_seed is not None and self.dropout else [None] * a.n_layers)
        inputs, kept = [], []
        for i in range(self.first, a.n_layers):
            inputs.append(x)
            x, saved = self._layer(i, x, seeds[i], grads is not None and not self.recompute)
            kept.append(saved if grads is not None and not self.recompute else None)
        xs = x[mask]                                                        # (N, D)
        y, n, r = _rms(xs, self._vec(self.base.output_norm), a.norm_eps)
        logits = np.empty((n_tok, a.n_vocab), self.dtype)
        for r0, r1, w in self._head_rows(tile):
            logits[:, r0:r1] = y @ w.T
        if a.logit_scale != 1.0:
            logits *= a.logit_scale
        if a.final_softcap:
            tl = np.tanh(logits / a.final_softcap)
            logits = tl * a.final_softcap
        tgt = np.asarray(targets)[mask]
        rows = np.arange(n_tok)
        logits -= logits.max(axis=-1, keepdims=True)      # in place: (N, V) is the largest array
        picked = logits[rows, tgt]
        np.exp(logits, out=logits)
        total = logits.sum(axis=-1)
        loss = float(np.mean(np.log(total) - picked))
        if grads is None:
            return loss, n_tok
        dl = logits
        dl /= total[:, None]                               # the softmax
        dl[rows, tgt] -= 1.0
        dl *= weight / n_tok
        if a.final_softcap:
            dl *= 1 - tl ** 2
        if a.logit_scale != 1.0:
            dl *= a.logit_scale
        dy = np.zeros_like(y)
        for r0, r1, w in self._head_rows(tile):
            dy += dl[:, r0:r1] @ w
        dxs = _rms_back(dy * self._vec(self.base.output_norm), n, r)
        dx = np.zeros_like(x)
        dx[mask] = dxs
        for i in range(a.n_layers - 1, self.first - 1, -1):
            saved = kept[i - self.first]
            if saved is None:    # recompute the layer from its input (same dropout seed)
                _, saved = self._layer(i, inputs[i - self.first], seeds[i], True)
            kept[i - self.first] = None
            dx = self._layer_back(i, saved, dx, grads)
        return loss, n_tok

    def adapter_tensors(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{base_name: (A, B)}`` for ``write_lora_adapter``."""
        return {ad.name: (ad.a, ad.b) for layer in self.adapters for ad in layer.values()}
