"""The CUDA forward pass: ``CudaDecoder`` mirrors the CPU ``_decode.Decoder``
(``forward(tokens, cache, output)``) for decoder recipes (``abi/llm/models/decoder.py``), on numba-cuda
kernels (``abi._kernels.cuda``), and adds ``steps()``, generation with sampling on the
device so each decode step returns a single token id to the host.

Memory: weights are packed and uploaded once (``layout.pack``; quantised bits unchanged);
activations, logits and sampler buffers are allocated once for ``n_batch`` tokens. The
KV cache lives on the device in f16, one per ``KVCache`` object, sized by doubling up to
n_ctx like the host cache (so a decode step allocates only when it crosses a power of
two); the host ``KVCache`` keeps only ``length`` and ``tokens`` (prefix reuse and
truncation work as on the CPU).

Every step of the recipe has a kernel (``unsupported_recipe`` names any that would not).
A mixture of experts routes on the device (``ops.moe_route``); when decoding, the expert
products are gemvs over the (token, expert) pairs, each reading its expert's rows of the
stacked weights; a prompt batch groups the pairs by expert (``ops.moe_group``) and runs one
tiled product per expert over the tokens that chose it. The weighted sum is part of the
next residual add, as is a shared expert's output (a dense FFN over the batch) times its gate.

Launches: a decode step is ~9 kernels per layer with fixed arguments -- the position,
the input token and the chosen experts are read from device memory -- so on numba-cuda
with cuda.core the step is captured once into a CUDA graph and replayed (one launch per
token instead of hundreds of Python-level launches). Prompts run eagerly, batch by batch.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import weakref

import numpy as np

from ..errors import (BackendUnavailable, ConfigError, ContextLengthExceeded, KernelInputError,
                      UnsupportedModelError)
from .._kernels.cuda import layout, sampling_ref as sref

log = logging.getLogger("abi.llm")


def _kernels():
    from .._kernels.cuda import attention, device, matmul, ops, sampling

    return device, matmul, ops, attention, sampling


class DeviceWeight:
    """A packed matrix on the device: ``args`` is (qs, aux, dm, fw) for ``kernels``, the
    gemv/gemm/dequant_rows compiled for its type (``matmul.typed``)."""

    def __init__(self, cuda, packed: layout.PackedWeight, kernels, bias=None):
        self.ggml_type, self.rows, self.cols = packed.ggml_type, packed.rows, packed.cols
        self.units = packed.units
        self.nbytes = packed.nbytes
        self.kernels = kernels
        self.args = tuple(cuda.to_device(np.ascontiguousarray(a)) for a in (packed.qs, packed.aux, packed.dm, packed.fw))
        # an expert stack's biases come as (n_expert, rows): flat, bias[row] is that row's
        self.bias = None if bias is None else cuda.to_device(np.ascontiguousarray(bias, np.float32).ravel())


def _concat(parts: list[layout.PackedWeight]) -> layout.PackedWeight:
    """Stack same-type, same-width matrices by rows (one launch computes all of them)."""
    first = parts[0]

    def cat(name):
        arrays = [getattr(p, name) for p in parts]
        return arrays[0] if arrays[0].size == 1 else np.concatenate(arrays, axis=0)

    return layout.PackedWeight(first.ggml_type, sum(p.rows for p in parts), first.cols, cat("qs"),
                               cat("aux"), cat("dm"), cat("fw"), first.source_type)


def _pack(lin) -> layout.PackedWeight:
    return layout.pack(lin.raw, lin.ggml_type, lin.shape)


class _Layer:
    pass


def _expert_biases(experts):
    """The experts' biases as (n_expert, rows) float32 (zeros for an expert without one, where
    another has one), or None where no expert has one."""
    if all(lin.bias is None for lin in experts):
        return None
    return np.stack([np.zeros(lin.out_features, np.float32) if lin.bias is None else
                     np.asarray(lin.bias, np.float32) for lin in experts])


def _or(a, default):
    return default if a is None else a


class _DeviceCache:
    """One sequence's K and V (n_layers, n_kv, capacity, hd) f16 and its position state."""

    def __init__(self, cuda, shape, capacity: int):
        n_layers, n_kv, hd = shape
        self.k = cuda.device_array((n_layers, n_kv, capacity, hd), np.float16)
        self.v = cuda.device_array((n_layers, n_kv, capacity, hd), np.float16)
        self.state = cuda.to_device(np.zeros(2, np.int32))   # [position of the batch, tokens]
        self.capacity = capacity
        self.valid = 0          # positions whose keys/values are on the device
        self.plans = {}         # fixed decode launches and their graphs, per output kind


def _check_sizes(model, d) -> None:
    """Every weight the kernels index has the shape the decoder's sizes say (``pack`` checks
    each one's bytes against its shape): device kernels do not check their bounds."""
    D, F, QD, KD, V = d.n_embd, d.n_ff, d.n_head * d.hd, d.n_kv * d.hd, d.n_vocab
    E, FE = d.n_expert, d.n_ff_exp

    def need(obj, shape, what):
        found = None if obj is None else tuple(obj.shape)
        if found != shape:
            raise KernelInputError(f"cuda forward: {what} has shape {found}, expected {shape}")

    a = model.args
    ok = d.n_layers == len(model.layers) == len(model.layer_ropes) and d.n_rot % 2 == 0 and 0 < d.n_rot <= d.hd
    if not ok:
        raise KernelInputError("cuda forward: layer count or RoPE size inconsistent with the weights")
    need(model.tok_embd, (V, D), "token_embd")
    need(model.output, (V, D), "output")
    need(model.output_norm, (D,), "output_norm")
    for r in model.layer_ropes:
        if r is not None and r.inv_freq.shape[0] < d.n_rot // 2:
            raise KernelInputError("cuda forward: fewer RoPE frequencies than rotated pairs")
    if E and not 0 < d.n_used <= E:
        raise KernelInputError(f"cuda forward: {d.n_used} experts used of {E}")
    FS = a.n_ff_shexp
    for i, b in enumerate(model.layers):
        mats = [("wq", (QD, D)), ("wk", (KD, D)), ("wv", (KD, D)), ("wo", (D, QD))]
        if (b.router is not None) != a.is_moe(i) or (b.gate_shexp is not None) != bool(a.is_moe(i) and FS) \
                or (b.shexp_gate is not None) != bool(a.is_moe(i) and a.shexp_gate):
            raise KernelInputError(f"cuda forward: layer {i}'s experts disagree with the recipe")
        if a.is_moe(i):
            mats.append(("router", (E, D)))
            if FS:
                mats += [("gate_shexp", (FS, D)), ("up_shexp", (FS, D)), ("down_shexp", (D, FS))]
            if a.shexp_gate:
                mats.append(("shexp_gate", (1, D)))
            if b.probs_bias is not None:
                need(b.probs_bias, (E,), f"layer {i} probs_bias")
            for name, shape in (("gate_exps", (FE, D)), ("up_exps", (FE, D)), ("down_exps", (D, FE))):
                experts = getattr(b, name) or []
                if len(experts) != E:
                    raise KernelInputError(f"cuda forward: layer {i} {name} has {len(experts)} experts, expected {E}")
                for e, lin in enumerate(experts):
                    need(lin, shape, f"layer {i} {name}[{e}]")
                    if lin.bias is not None:
                        need(lin.bias, (shape[0],), f"layer {i} {name}[{e}] bias")
        else:
            mats += [("w_gate", (F, D)), ("w_up", (F, D)), ("w_down", (D, F))]
        for name, shape in mats:
            lin = getattr(b, name)
            need(lin, shape, f"layer {i} {name}")
            if lin.bias is not None:
                need(lin.bias, (shape[0],), f"layer {i} {name} bias")
        norms = (("attn_norm", D), ("ffn_norm", D)) if a.attn_norm else ()
        norms += (("post_attn_norm", D), ("post_ffn_norm", D)) if a.post_norms else ()
        norms += {"none": (), "head": (("q_norm", d.hd), ("k_norm", d.hd)),
                  "full": (("q_norm", QD), ("k_norm", KD))}[a.qk_norm]
        norms += (("sinks", d.n_head),) if a.attn_sinks else ()
        for name, n in norms:
            need(getattr(b, name), (n,), f"layer {i} {name}")


# the recipe's activation -> the gated unit's mode in matmul (named: the kernels load lazily)
_GLU_MODES = {"silu": "MODE_SWIGLU", "gelu": "MODE_GEGLU", "swiglu_oai": "MODE_SWIGLU_OAI"}


def unsupported_recipe(a) -> str | None:
    """The first step of the recipe the device kernels do not implement, or None."""
    checks = ((f"the {a.activation} activation", a.activation not in _GLU_MODES),
              (f"the Q/K norm {a.qk_norm!r}", a.qk_norm not in ("none", "head", "full")),
              (f"{a.expert_gating} expert gating", a.expert_gating not in ("softmax", "sigmoid")))
    return next((name for name, missing in checks if missing), None)


class CudaDecoder:
    """Forward passes of a decoder recipe on a CUDA device (``unsupported_recipe`` lists the
    steps it has no kernel for)."""

    def __init__(self, model, n_batch: int = 512, use_graphs: bool | None = None):
        from numba import cuda

        device, matmul, ops, attention, sampling = self.k = _kernels()
        self.cuda = cuda
        if not device.SIM and not cuda.is_available():
            raise BackendUnavailable("no usable CUDA device for the cuda backend; use --backend cpu")
        a = model.args
        missing = unsupported_recipe(a)
        if missing is not None:   # fail closed: the device kernels would skip the step
            raise UnsupportedModelError(f"the cuda backend does not run {a.arch!r}: it has no kernel for "
                                        f"{missing}; use --backend cpu")
        if a.head_dim > device.HD_MAX or a.n_heads % a.n_kv_heads:
            raise UnsupportedModelError(f"cuda attention needs head_dim <= {device.HD_MAX} and "
                                        f"n_heads a multiple of n_kv_heads ({a.head_dim}, {a.n_heads}, {a.n_kv_heads})")
        if n_batch <= 0:
            raise ConfigError(f"n_batch must be positive, got {n_batch}", "n_batch")
        self.n_layers, self.n_embd, self.n_head, self.n_kv = a.n_layers, a.n_embd, a.n_heads, a.n_kv_heads
        self.hd, self.n_ff, self.n_rot, self.neox = a.head_dim, a.n_ff, a.n_rot, int(a.rope_neox)
        self.n_vocab = model.output.shape[0]
        self.eps, self.scale = np.float32(a.norm_eps), np.float32(a.kq_scale)
        self.embd_scale = np.float32(a.embd_scale)
        self.window = int(a.sliding_window)
        self.attn_softcap = np.float32(a.attn_softcap)
        self.final_softcap = np.float32(a.final_softcap)
        self.glu_mode = getattr(matmul, _GLU_MODES[a.activation])
        self.res_scale, self.logit_scale = np.float32(a.residual_scale), np.float32(a.logit_scale)
        self.qk_norm = a.qk_norm
        self.n_expert, self.n_used, self.n_ff_exp = a.n_expert, a.n_expert_used, a.n_ff_exp
        self.expert_norm, self.expert_wscale = int(a.expert_norm), np.float32(a.expert_weights_scale)
        self.sigmoid_gating = int(a.expert_gating == "sigmoid")
        self.n_ff_shexp = a.n_ff_shexp
        self.n_batch = n_batch
        self.lock = threading.Lock()
        self.stream = cuda.stream()
        try:
            self.n_sm = int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
        except Exception:  # the simulator's device has no attributes: one SM, the fewest blocks
            self.n_sm = 1
        self.n_split = max(2, min(64, -(-2 * self.n_sm // self.n_head)))
        self.weight_bytes = 0
        _check_sizes(model, self)
        self._upload(model)
        self._alloc_scratch()
        self._caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        env = os.environ.get("ABI_CUDA_GRAPHS")
        self.use_graphs = (env != "0") if use_graphs is None else bool(use_graphs)
        self._graph_api = None if device.SIM or not self.use_graphs else _graph_api()
        self.use_graphs = self._graph_api is not None
        log.info("cuda decoder: %d layers, %.1f MiB of weights on the device, graphs %s",
                 self.n_layers, self.weight_bytes / 2 ** 20, "on" if self.use_graphs else "off")

    # -- upload ------------------------------------------------------------------------------
    def _weight(self, packed, bias=None) -> DeviceWeight:
        w = DeviceWeight(self.cuda, packed, self.k[1].typed(packed.ggml_type), bias)
        self.weight_bytes += w.nbytes + (0 if bias is None else np.asarray(bias).nbytes)
        return w

    def _vec(self, v):
        if v is None:
            return None
        arr = self.cuda.to_device(np.ascontiguousarray(v, np.float32))
        self.weight_bytes += arr.nbytes
        return arr

    def _upload(self, model) -> None:
        cuda = self.cuda
        self.dummy = cuda.to_device(np.zeros(1, np.float32))
        embd = layout.pack(model.tok_embd.raw, model.tok_embd.ggml_type, model.tok_embd.shape)
        self.embd = self._weight(embd)
        tied = model.output.raw is model.tok_embd.raw
        self.output = self.embd if tied else self._weight(_pack(model.output))
        self.out_norm = self._vec(model.output_norm)
        tables = {}   # one device table per distinct RoPE
        self.layers = []
        for i, blk in enumerate(model.layers):
            L = _Layer()
            L.attn_norm, L.ffn_norm = self._vec(blk.attn_norm), self._vec(blk.ffn_norm)
            L.q_norm, L.k_norm = self._vec(blk.q_norm), self._vec(blk.k_norm)
            L.post_attn, L.post_ffn = self._vec(blk.post_attn_norm), self._vec(blk.post_ffn_norm)
            L.swa = model.args.is_swa(i)
            L.sinks = self._vec(blk.sinks)
            rope = model.layer_ropes[i]
            if rope is None:   # NoPE: qk_prep rotates no pair
                L.inv_freq, L.rope_mscale, L.n_rot = self.dummy, 1.0, 0
            else:
                if id(rope) not in tables:
                    tables[id(rope)] = self._vec(rope.inv_freq)
                L.inv_freq, L.rope_mscale, L.n_rot = tables[id(rope)], float(rope.mscale), self.n_rot
            L.qkv = self._products([blk.wq, blk.wk, blk.wv])
            L.wo = self._weight(_pack(blk.wo), blk.wo.bias)
            L.router = L.shared = L.probs_bias = None
            if blk.router is not None:
                # the experts as stacks: expert e's rows from e * (rows of one expert) on;
                # gate and up interleaved per expert, so the fused gemv finds e's up rows
                # n_ff_exp after its gate rows; their biases stacked alike (bias[row] is that row's).
                # The shared expert's one-row gate is the router's row n_expert.
                L.router = self._products([blk.router] + ([blk.shexp_gate] if blk.shexp_gate is not None else []))
                L.probs_bias = self._vec(blk.probs_bias)
                L.shared_gated = blk.shexp_gate is not None
                if blk.gate_shexp is not None:
                    L.shared = self._ffn_weights(blk.gate_shexp, blk.up_shexp, blk.down_shexp)
                gates, ups = [_pack(x) for x in blk.gate_exps], [_pack(x) for x in blk.up_exps]
                gb, ub, db = (_expert_biases(x) for x in (blk.gate_exps, blk.up_exps, blk.down_exps))
                if gates[0].ggml_type == ups[0].ggml_type:
                    interleaved = [p for g, u in zip(gates, ups) for p in (g, u)]
                    bias = None if gb is None else np.concatenate([gb, ub], axis=1)
                    L.gate_up, L.gate, L.up = self._weight(_concat(interleaved), bias), None, None
                else:
                    L.gate_up, L.gate, L.up = None, self._weight(_concat(gates), gb), self._weight(_concat(ups), ub)
                L.down = self._weight(_concat([_pack(x) for x in blk.down_exps]), db)
            else:
                L.gate_up, L.gate, L.up, L.down = self._ffn_weights(blk.w_gate, blk.w_up, blk.w_down)
            self.layers.append(L)

    def _ffn_weights(self, gate, up, down) -> tuple:
        """(gate_up, gate, up, down) of a dense FFN: gate and up as one stacked weight where
        they share a type (gate and up None), else each its own (gate_up None)."""
        gate_up = self._products([gate, up])
        fused = gate_up[0][0] if len(gate_up) == 1 else None
        g, u = (None, None) if fused is not None else (gate_up[0][0], gate_up[1][0])
        return fused, g, u, self._weight(_pack(down), down.bias)

    def _products(self, lins) -> list:
        """[(weight, first output column)] computing the products ``lins`` side by side: one
        stacked weight where they share a type, else one each; biases stacked alike (zeros
        for a product without one, where another has one)."""
        packed = [_pack(lin) for lin in lins]
        biases = [lin.bias for lin in lins]
        if any(b is not None for b in biases):
            biases = [b if b is not None else np.zeros(lin.out_features, np.float32) for b, lin in zip(biases, lins)]
        else:
            biases = [None] * len(lins)
        if len({p.ggml_type for p in packed}) == 1:
            bias = None if biases[0] is None else np.concatenate(biases)
            return [(self._weight(_concat(packed), bias), 0)]
        offsets = np.cumsum([0] + [p.rows for p in packed])[:len(lins)]
        return [(self._weight(p, b), int(o)) for p, b, o in zip(packed, biases, offsets)]

    def _alloc_scratch(self) -> None:
        cuda, n = self.cuda, self.n_batch
        D, QD, KD = self.n_embd, self.n_head * self.hd, self.n_kv * self.hd
        # a mixture of experts runs n_used (token, expert) pairs per token through the FFN
        F = max(self.n_ff_exp, self.n_ff_shexp, self.n_ff)
        nk = n * max(1, self.n_used)
        f32 = np.float32
        self.tokens = cuda.to_device(np.zeros(n, np.int32))
        self.x, self.h = (cuda.device_array((n, D), f32) for _ in range(2))
        self.delta = cuda.device_array((nk, D), f32)
        self.qkv = cuda.device_array((n, QD + 2 * KD), f32)
        self.q_view, self.k_view = self.qkv[:, :QD], self.qkv[:, QD:QD + KD]
        self.att = cuda.device_array((n, QD), f32)
        self.gu = cuda.device_array((nk, 2 * F), f32)
        self.g = cuda.device_array((nk, F), f32)
        self.rlog = cuda.device_array((n, self.n_expert + 1), f32)   # the last: a shared expert's gate
        self.shared = cuda.device_array((n, D) if self.n_ff_shexp else (1, 1), f32)  # its output
        self.shw = cuda.to_device(np.ones(n, np.float32))   # and its gate
        self.sel = cuda.to_device(np.zeros(nk, np.int32))     # each pair's expert
        self.perm = cuda.to_device(np.zeros(nk, np.int32))    # the pairs grouped by expert
        self.offsets = cuda.to_device(np.zeros(self.n_expert + 1, np.int32))   # each expert's first
        self.selw = cuda.to_device(np.zeros(nk, np.float32))  # and its weight
        self.logits = cuda.device_array((1, self.n_vocab), f32)
        self.logits_all = None  # made on the first output="all" (_logits_all)
        self.part_m = cuda.device_array((self.n_head, self.n_split), f32)
        self.part_l = cuda.device_array((self.n_head, self.n_split), f32)
        self.part_o = cuda.device_array((self.n_head, self.n_split, self.hd), f32)
        self.iparams = cuda.to_device(np.zeros(sref.N_IPARAMS, np.int32))
        self.fparams = cuda.to_device(np.zeros(sref.N_FPARAMS, np.float32))
        self.hist = cuda.to_device(np.zeros(sref.HIST_MAX, np.int32))
        self.bias_ids = cuda.to_device(np.zeros(sref.BIAS_MAX, np.int32))
        self.bias_vals = cuda.to_device(np.zeros(sref.BIAS_MAX, np.float32))
        self.out_token = cuda.to_device(np.zeros(1, np.int32))
        self.host_token = cuda.pinned_array(1, np.int32)

    # -- device caches -------------------------------------------------------------------------
    def _device_cache(self, cache, need: int) -> _DeviceCache:
        """The device cache of ``cache`` with room for ``need`` positions; keys/values the
        host cache holds beyond what the device has (a cache filled on the CPU) are uploaded."""
        dc = self._caches.get(cache)
        if dc is None or dc.capacity < need:
            cap = min(cache.n_ctx, max(need, 256, 2 * (dc.capacity if dc else 0)))
            new = _DeviceCache(self.cuda, (self.n_layers, self.n_kv, self.hd), cap)
            if dc is not None and dc.valid:
                n = min(dc.valid, cache.length)
                for layer in range(self.n_layers):
                    for g in range(self.n_kv):
                        new.k[layer, g, :n].copy_to_device(dc.k[layer, g, :n], stream=self.stream)
                        new.v[layer, g, :n].copy_to_device(dc.v[layer, g, :n], stream=self.stream)
                new.valid = n
            self._caches[cache] = dc = new
        if cache.length > dc.valid:
            if cache.capacity < cache.length:
                raise ValueError(f"the cache claims {cache.length} positions but holds no keys for "
                                 f"{dc.valid}..{cache.length}")
            n0, n1 = dc.valid, cache.length
            for layer in range(self.n_layers):
                for g in range(self.n_kv):
                    for src, dst in ((cache.k, dc.k), (cache.v, dc.v)):
                        dst[layer, g, n0:n1].copy_to_device(
                            np.ascontiguousarray(src[layer, g, n0:n1], np.float16), stream=self.stream)
        dc.valid = cache.length
        return dc

    # -- the launches of one batch -----------------------------------------------------------------
    def _matmul(self, plan, w: DeviceWeight, x, xrow, y, ycol, T, mode=0, softcap=np.float32(0.0)):
        """y[:, ycol:] = x @ W.T for T tokens (gemv when T == 1, else gemm)."""
        matmul = self.k[1]
        bias = w.bias if w.bias is not None else self.dummy
        has_bias = int(w.bias is not None)
        n_out = w.rows // 2 if mode else w.rows
        if T == 1:
            grid, tpr, nrows = matmul.gemv_shape(n_out, w.units, self.n_sm)
            plan.append((w.kernels.gemv, grid, matmul.GEMV_THREADS,
                         (*w.args, n_out, w.units, x, xrow, y, 0, ycol, bias, has_bias, mode, tpr, nrows, softcap,
                          self.sel, 0, 1)))
            return
        dev = self.k[0]
        grid = (-(-w.rows // dev.GEMM_TM), -(-T // dev.GEMM_TN))
        plan.append((w.kernels.gemm, grid, (dev.GEMM_TX, dev.GEMM_TY),
                     (*w.args, w.rows, w.cols, x, T, y, ycol, bias, has_bias, softcap, self.perm, self.offsets, 0, 1)))
        if mode:
            plan.append((matmul.glu, T, dev.NORM_THREADS, (y, T, n_out, mode, self.g)))

    def _experts(self, plan, w: DeviceWeight, x, xdiv, y, ycol, pairs, rstride, mode=0):
        """y[p, ycol:] = (expert sel[p]'s rows of the stack w) @ x[p // xdiv] for the (token,
        expert) pairs p < pairs; an expert's rows start at sel[p] * rstride. A prompt batch
        (more than one token) runs a tiled product per expert over the pairs that chose it
        (``moe_group``'s perm), so each expert's weights are decoded once per tile of its
        tokens rather than once per token; decoding runs a gemv per pair (mode: the gated
        unit fused, as for a dense product)."""
        matmul = self.k[1]
        bias = w.bias if w.bias is not None else self.dummy
        if pairs > self.n_used:
            dev = self.k[0]
            grid = (-(-rstride // dev.GEMM_TM), -(-(pairs // self.n_used) // dev.GEMM_TN), self.n_expert)
            plan.append((w.kernels.gemm, grid, (dev.GEMM_TX, dev.GEMM_TY),
                         (*w.args, rstride, w.cols, x, 0, y, ycol, bias, int(w.bias is not None), np.float32(0.0),
                          self.perm, self.offsets, rstride, xdiv)))
            return
        n_out = rstride // 2 if mode else rstride
        grid, tpr, nrows = matmul.gemv_shape(n_out, w.units, self.n_sm)
        plan.append((w.kernels.gemv, (grid, pairs), matmul.GEMV_THREADS,
                     (*w.args, n_out, w.units, x, 0, y, 0, ycol, bias, int(w.bias is not None), mode, tpr, nrows,
                      np.float32(0.0), self.sel, rstride, xdiv)))

    def _residual(self, rows, has_delta, n_sel, shared, post, norm, hscale=np.float32(1.0), row0=0):
        """The residual_norm launch: x += the branch in delta (n_sel experts' rows per token,
        or one; with ``shared``, plus the shared expert's output times its gate), post-normed
        where ``post``, then h = norm(x) (x itself where norm is None)."""
        ops, dummy = self.k[2], self.dummy
        return (ops.residual_norm, rows, self.k[0].NORM_THREADS,
                (self.x, self.delta, has_delta, n_sel, self.selw, self.shared, int(shared), self.shw,
                 self.res_scale, _or(post, dummy),
                 int(post is not None), _or(norm, dummy), int(norm is not None), hscale, self.h, self.eps,
                 self.n_embd, row0))

    def _moe(self, plan, L, T) -> None:
        """The mixture of experts for T tokens: the router's product, the routing (each
        token's experts into sel, weights into selw), each (token, expert) pair's gated
        unit into g and its down product into delta row p; then a shared expert's FFN into
        ``shared``. The weighted sum over a token's experts (and the shared expert's output
        times its gate) happens in the next residual_norm."""
        matmul, ops, NT = self.k[1], self.k[2], self.k[0].NORM_THREADS
        k, FE = self.n_used, self.n_ff_exp
        for w, col in L.router:
            self._matmul(plan, w, self.h, 0, self.rlog, col, T)
        has_bias = L.probs_bias is not None
        plan.append((ops.moe_route, -(-T // NT), NT, (
            self.rlog, T, self.n_expert, k, self.expert_norm, self.expert_wscale, self.sigmoid_gating,
            _or(L.probs_bias, self.dummy), int(has_bias), int(L.shared_gated),
            self.shw, self.sel, self.selw)))
        mode = self.glu_mode
        pairs = T * k
        if T > 1:
            plan.append((ops.moe_group, 1, NT, (self.sel, pairs, self.n_expert, self.offsets, self.perm)))
        if L.gate_up is not None and T > 1:   # the tiled products have no fused gated unit
            self._experts(plan, L.gate_up, self.h, k, self.gu, 0, pairs, 2 * FE)
            plan.append((matmul.glu, pairs, NT, (self.gu, pairs, FE, mode, self.g)))
        elif L.gate_up is not None:
            self._experts(plan, L.gate_up, self.h, k, self.g, 0, pairs, 2 * FE, mode)
        else:
            self._experts(plan, L.gate, self.h, k, self.gu, 0, pairs, FE)
            self._experts(plan, L.up, self.h, k, self.gu, FE, pairs, FE)
            plan.append((matmul.glu, pairs, NT, (self.gu, pairs, FE, mode, self.g)))
        self._experts(plan, L.down, self.g, 1, self.delta, 0, pairs, self.n_embd)
        if L.shared is not None:
            self._ffn(plan, *L.shared, self.n_ff_shexp, T, self.shared)

    def _ffn(self, plan, gate_up, gate, up, down, F, T, out) -> None:
        """A dense FFN (F wide) of h for T tokens into out."""
        matmul, NT = self.k[1], self.k[0].NORM_THREADS
        mode = self.glu_mode
        if gate_up is not None:
            self._matmul(plan, gate_up, self.h, 0, self.gu if T > 1 else self.g, 0, T, mode)
        else:
            self._matmul(plan, gate, self.h, 0, self.gu, 0, T)
            self._matmul(plan, up, self.h, 0, self.gu, F, T)
            plan.append((matmul.glu, T, NT, (self.gu, T, F, mode, self.g)))
        self._matmul(plan, down, self.g, 0, out, 0, T)

    def _plan(self, T: int, dc: _DeviceCache, output: str) -> list:
        """Every launch of a batch of T tokens: (kernel, grid, block, args)."""
        device, matmul, ops, attention, _ = self.k
        plan = []
        NT = device.NORM_THREADS
        dummy, one = self.dummy, np.float32(1.0)
        e = self.embd
        plan.append((e.kernels.dequant_rows, T, NT, (*e.args, e.units, self.tokens, T, self.embd_scale, self.x)))
        prev_post, prev_sel, prev_shared = None, 0, False   # the last FFN's post-norm and experts
        for li, L in enumerate(self.layers):
            plan.append(self._residual(T, int(li > 0), prev_sel, prev_shared, prev_post, L.attn_norm))
            for w, col in L.qkv:
                self._matmul(plan, w, self.h, 0, self.qkv, col, T)
            if self.qk_norm == "full":  # over all heads at once: in place, before the per-head work
                for view, norm in ((self.q_view, L.q_norm), (self.k_view, L.k_norm)):
                    plan.append((ops.residual_norm, T, NT, (view, self.delta, 0, 0, self.selw, self.shared, 0,
                                                            self.shw, one, dummy, 0,
                                                            norm, 1, one, view, self.eps, view.shape[1], 0)))
            plan.append((ops.qk_prep, (T, self.n_head + self.n_kv), NT,
                         (self.qkv, self.n_head, self.n_kv, self.hd, _or(L.q_norm, dummy), _or(L.k_norm, dummy),
                          int(self.qk_norm == "head"), self.eps, L.inv_freq, L.n_rot, self.neox,
                          L.rope_mscale, dc.k, dc.v, li, dc.state)))
            window = self.window if L.swa else 0
            sinks = (_or(L.sinks, dummy), int(L.sinks is not None))
            if T == 1:
                plan.append((attention.attn_decode, (self.n_head, self.n_split), device.DEC_THREADS,
                             (self.qkv, self.n_head, self.n_kv, self.hd, dc.k, dc.v, li, dc.state, self.scale,
                              window, self.attn_softcap, self.part_m, self.part_l, self.part_o)))
                plan.append((attention.attn_combine, self.n_head, min(128, device.DEC_THREADS),
                             (self.part_m, self.part_l, self.part_o, self.hd, *sinks, self.att)))
            else:
                plan.append((attention.attn_prefill, (-(-T // device.ATT_BQ), self.n_head), device.ATT_THREADS,
                             (self.qkv, T, self.n_head, self.n_kv, self.hd, dc.k, dc.v, li, dc.state, self.scale,
                              window, self.attn_softcap, *sinks, self.att)))
            self._matmul(plan, L.wo, self.att, 0, self.delta, 0, T)
            plan.append(self._residual(T, 1, 0, False, L.post_attn, L.ffn_norm))
            if L.router is not None:
                self._moe(plan, L, T)
                prev_sel, prev_shared = self.n_used, L.shared is not None
            else:
                self._ffn(plan, L.gate_up, L.gate, L.up, L.down, self.n_ff, T, self.delta)
                prev_sel, prev_shared = 0, False
            prev_post = L.post_ffn
        if output == "none":
            return plan
        row0 = T - 1 if output == "last" else 0
        # the logit scale rides on the final norm's output, except where that is the result
        hscale = one if output == "hidden" else self.logit_scale
        plan.append(self._residual(T - row0, 1, prev_sel, prev_shared, prev_post, self.out_norm, hscale, row0))
        if output == "last":
            self._matmul(plan, self.output, self.h, T - 1, self.logits, 0, 1, softcap=self.final_softcap)
        elif output == "all":
            self._matmul(plan, self.output, self.h, 0, self._logits_all(T), 0, T, softcap=self.final_softcap)
        return plan

    def _logits_all(self, rows: int):
        """(>= rows, n_vocab) logits for output="all", grown by doubling up to n_batch rows
        (a 262k vocabulary makes n_batch rows half a gigabyte)."""
        if self.logits_all is None or self.logits_all.shape[0] < rows:
            have = 0 if self.logits_all is None else self.logits_all.shape[0]
            n = min(self.n_batch, max(rows, 2 * have, 16))
            self.logits_all = None
            self.logits_all = self.cuda.device_array((n, self.n_vocab), np.float32)
        return self.logits_all

    def _launch(self, plan, launchers=None) -> None:
        """Run a plan; ``launchers``: its kernels already configured (fixed decode plans)."""
        if launchers is not None:
            for launch, (_, _, _, args) in zip(launchers, plan):
                launch(*args)
            return
        s = self.stream
        for kernel, grid, block, args in plan:
            kernel[grid, block, s](*args)

    def _decode_step(self, dc: _DeviceCache, kind: str) -> None:
        """One T=1 step, "last" (logits) or "sample" (logits, penalties, the draw): the fixed
        launches, replayed from a CUDA graph where available."""
        entry = dc.plans.get(kind)
        if entry is None:
            plan = self._plan(1, dc, "last")
            if kind == "sample":
                plan += self._sample_plan(dc)
            # the simulator's kernel[grid, block] configures the kernel object itself (the last
            # configuration would win for a kernel launched twice): configure at each launch there
            launchers = None if self.k[0].SIM else [kernel[grid, block, self.stream]
                                                    for kernel, grid, block, _ in plan]
            entry = dc.plans[kind] = [plan, None, 0, launchers]
        plan, graph, runs, launchers = entry
        if graph is not None:
            graph.launch(self._graph_api[1](self.stream))
            return
        self._launch(plan, launchers)
        entry[2] += 1
        if self._graph_api is not None and entry[2] == 2:  # compiled and run once: capture
            try:
                entry[1] = _capture(self._graph_api[0], plan)
            except Exception as exc:  # graphs are a speed-up; eager launches stay correct
                log.warning("cuda: CUDA graph capture failed (%s); launching kernels one by one", exc)
                self._graph_api = None

    def _sample_plan(self, dc: _DeviceCache) -> list:
        sampling, NT = self.k[4], self.k[0].SAMPLE_THREADS
        return [(sampling.penalize, 1, NT, (self.logits, 0, self.iparams, self.fparams, self.hist,
                                            self.bias_ids, self.bias_vals)),
                (sampling.sample, 1, NT, (self.logits, 0, self.iparams, self.fparams, self.hist,
                                          dc.state, self.tokens, self.out_token))]

    # -- the CPU Decoder's interface ---------------------------------------------------------------
    def _check(self, tokens, cache, output):
        if output not in ("last", "all", "hidden", "none"):
            raise KernelInputError(f"unknown output {output!r}")
        ids = np.ascontiguousarray(tokens, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise KernelInputError("no tokens to run")
        if ids.min() < 0 or ids.max() >= self.n_vocab:
            raise KernelInputError(f"token ids must lie in [0, {self.n_vocab})")
        if cache.length + ids.size > cache.n_ctx:
            raise ContextLengthExceeded(f"{cache.length + ids.size} tokens do not fit the context "
                                        f"of {cache.n_ctx} tokens")
        return ids.astype(np.int32)

    def _set_batch(self, dc: _DeviceCache, ids: np.ndarray, pos: int) -> None:
        s = self.stream
        self.tokens[:ids.size].copy_to_device(ids, stream=s)
        dc.state.copy_to_device(np.array([pos, ids.size], np.int32), stream=s)

    def _run_batches(self, ids, cache, output, should_stop=None):
        """Batches of at most n_batch tokens; returns device-side results of the last one
        (None for "none"), or None without running on when should_stop() says so."""
        dc = self._device_cache(cache, cache.length + ids.size)
        results = []
        for s in range(0, ids.size, self.n_batch):
            if should_stop is not None and s and should_stop():
                return None, dc, True
            chunk = ids[s:s + self.n_batch]
            last = s + self.n_batch >= ids.size
            want = output if (output != "last" or last) else "none"
            pos = cache.length
            if chunk.size == 1 and want in ("last", "none"):
                self._set_batch(dc, chunk, pos)
                self._decode_step(dc, "last")
            else:
                self._set_batch(dc, chunk, pos)
                self._launch(self._plan(chunk.size, dc, want))
            cache.length = pos + chunk.size
            cache.tokens.extend(int(t) for t in chunk)
            dc.valid = cache.length
            if want == "all":
                results.append(self.logits_all[:chunk.size].copy_to_host(stream=self.stream))
            elif want == "hidden":
                results.append(self.h[:chunk.size].copy_to_host(stream=self.stream))
        self.stream.synchronize()
        return results, dc, False

    def forward(self, tokens, cache, output: str = "last"):
        """Run ``tokens`` after the cache's contents. ``output``: "last" -> logits (1, V) of
        the last token; "all" -> (T, V); "hidden" -> final-norm states (T, D); "none"."""
        ids = self._check(tokens, cache, output)
        with self.lock:
            results, dc, _ = self._run_batches(ids, cache, output)
            if output == "last":
                logits = self.logits.copy_to_host(stream=self.stream)
                self.stream.synchronize()
                return logits
        if output == "none":
            return None
        return results[0] if len(results) == 1 else np.concatenate(results)

    # -- generation with sampling on the device -----------------------------------------------------
    def steps(self, cache, new_ids, params: "DeviceSampling", should_stop=None):
        """Prefill ``new_ids`` after the cache's contents, then yield sampled token ids one by
        one, feeding each back on the device (only the id crosses to the host)."""
        ids = self._check(new_ids, cache, "last")
        with self.lock:
            results, dc, stopped = self._run_batches(ids, cache, "last", should_stop)
            if stopped:
                return
            self._load_sampler(params, cache.tokens)
            self._launch(self._sample_plan(dc))
            token = self._fetch_token()
        while True:
            yield token
            if should_stop is not None and should_stop():
                return
            if cache.length + 1 > cache.n_ctx:
                raise ContextLengthExceeded(f"{cache.length + 1} tokens do not fit the context "
                                            f"of {cache.n_ctx} tokens")
            with self.lock:
                if self._caches.get(cache) is not dc or dc.capacity < cache.length + 1:
                    # the cache moved on (used elsewhere, or grew): re-seat position and input
                    dc = self._device_cache(cache, cache.length + 1)
                    self._set_batch(dc, np.array([token], np.int32), cache.length)
                    self._load_sampler(params, list(cache.tokens) + [token], keep_counter=True)
                self._decode_step(dc, "sample")
                cache.length += 1
                cache.tokens.append(int(token))
                dc.valid = cache.length
                token = self._fetch_token()

    def _fetch_token(self) -> int:
        self.out_token.copy_to_host(self.host_token, stream=self.stream)
        self.stream.synchronize()
        return int(self.host_token[0])

    def _load_sampler(self, p: "DeviceSampling", history, keep_counter: bool = False) -> None:
        ip = np.zeros(sref.N_IPARAMS, np.int32)
        fp = np.zeros(sref.N_FPARAMS, np.float32)
        ip[sref.IP_TOP_K], ip[sref.IP_SEED] = min(p.top_k, 2 ** 31 - 1), np.int64(p.seed & 0xFFFFFFFF).astype(np.int32)
        ip[sref.IP_GREEDY] = int(p.temperature == 0)
        fp[[sref.FP_TEMP, sref.FP_TOP_P, sref.FP_MIN_P]] = p.temperature, p.top_p, p.min_p
        fp[[sref.FP_REP, sref.FP_PRES, sref.FP_FREQ]] = p.repetition_penalty, p.presence, p.frequency
        recent = np.asarray(list(history)[-p.window:] if p.window > 0 else [], np.int32)
        ip[sref.IP_WINDOW], ip[sref.IP_N_HIST] = p.window, recent.size
        ip[sref.IP_HEAD] = recent.size % p.window if p.window > 0 else 0
        ip[sref.IP_N_BIAS] = len(p.bias_ids)
        ip[sref.IP_COUNTER] = p.counter
        if keep_counter:
            ip[sref.IP_COUNTER] = self.iparams.copy_to_host()[sref.IP_COUNTER]
        s = self.stream
        if recent.size:
            self.hist[:recent.size].copy_to_device(recent, stream=s)
        if len(p.bias_ids):
            self.bias_ids[:len(p.bias_ids)].copy_to_device(np.asarray(p.bias_ids, np.int32), stream=s)
            self.bias_vals[:len(p.bias_ids)].copy_to_device(np.asarray(p.bias_vals, np.float32), stream=s)
        self.iparams.copy_to_device(ip, stream=s)
        self.fparams.copy_to_device(fp, stream=s)

    def decode_bytes(self) -> int:
        """Weight bytes one decode step reads: every layer matrix and vector (of the expert
        stacks, the n_used experts' share), the output matrix (the embedding table is read
        only where it doubles as the output) and the final norm. The numerator of the
        bandwidth bound in tools/bench_gpu.py."""
        def size(w):
            return w.nbytes + (w.bias.nbytes if w.bias is not None else 0)

        total = self.output.nbytes + self.out_norm.nbytes
        for L in self.layers:
            mats = [w for w, _ in L.qkv + (L.router or [])] + [L.wo]
            mats += [w for w in (L.shared or ()) if w is not None]
            ffn = [L.down] + [w for w in (L.gate_up, L.gate, L.up) if w is not None]
            share = self.n_used / self.n_expert if L.router is not None else 1.0
            total += sum(size(w) for w in mats) + share * sum(size(w) for w in ffn)
            vecs = (L.attn_norm, L.ffn_norm, L.q_norm, L.k_norm, L.post_attn, L.post_ffn, L.sinks, L.probs_bias)
            total += sum(v.nbytes for v in vecs if v is not None)
        return int(total)


class DeviceSampling:
    """Sampler and logits-processor settings the device sampler can reproduce."""

    def __init__(self, temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, seed=None,
                 repetition_penalty=1.0, presence=0.0, frequency=0.0, window=64, bias=None):
        self.temperature, self.top_k, self.top_p, self.min_p = float(temperature), int(top_k), float(top_p), float(min_p)
        self.seed = secrets.randbits(32) if seed is None else int(seed)
        self.repetition_penalty, self.presence, self.frequency = float(repetition_penalty), float(presence), float(frequency)
        self.window = int(window)
        bias = bias or {}
        self.bias_ids = [int(k) for k in bias]
        self.bias_vals = [float(v) for v in bias.values()]
        self.counter = 0

    @classmethod
    def from_callables(cls, sampler, processors) -> "DeviceSampling | None":
        """Settings from ``make_sampler`` / ``make_logits_processors`` results (their
        ``spec`` attributes); None when something has no device equivalent."""
        spec = getattr(sampler, "spec", None)
        if spec is None:
            return None
        opts = dict(spec)
        windows = []
        for proc in processors:
            pspec = getattr(proc, "spec", None)
            if pspec is None:
                return None
            kind = pspec[0]
            if kind == "logit_bias":
                opts["bias"] = pspec[1]
            elif kind == "repetition_penalty":
                opts["repetition_penalty"] = pspec[1]
                windows.append(pspec[2])
            elif kind == "presence_frequency":
                opts["presence"], opts["frequency"] = pspec[1], pspec[2]
                windows.append(pspec[3])
            else:
                return None
        window = windows[0] if windows else 0
        # one window, of a length the device keeps (the host reads "<= 0" as all tokens)
        if len(set(windows)) > 1 or (windows and not 0 < window <= sref.HIST_MAX):
            return None
        if len(opts.get("bias") or {}) > sref.BIAS_MAX:
            return None
        return cls(window=window, **opts)


def device_steps(model, cache, new_ids, sampler, processors, should_stop=None):
    """Token ids from ``CudaDecoder.steps`` for ``generate_step``'s fast path, as
    (token, None) pairs; None when the sampler or a processor has no device equivalent."""
    decoder = model._decoder()
    params = DeviceSampling.from_callables(sampler, processors)
    if not isinstance(decoder, CudaDecoder) or params is None:
        return None
    if any(not 0 <= i < decoder.n_vocab for i in params.bias_ids):
        return None  # the host processor reports the bad id
    model.check_context(cache.length + len(new_ids))
    return ((t, None) for t in decoder.steps(cache, list(new_ids), params, should_stop))


def _graph_api():
    """(Device class, stream converter) where numba-cuda can launch into a cuda.core
    GraphBuilder; None elsewhere (the built-in numba.cuda, older numba-cuda)."""
    try:
        from numba.cuda.cudadrv import driver

        driver.GraphBuilder  # noqa: B018  (present only where launches can be captured)
        from cuda.core import Device

        return Device, driver._to_core_stream
    except Exception:
        return None


def _capture(device_cls, plan):
    dev = device_cls()
    dev.set_current()
    builder = dev.create_graph_builder()
    builder.begin_building()
    for kernel, grid, block, args in plan:
        kernel[grid, block, builder](*args)
    return builder.end_building().complete()
