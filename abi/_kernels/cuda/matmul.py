"""Quantised products on the GPU: ``gemv`` for decoding (one activation row, memory-bound)
and ``gemm`` for prompts (many rows, compute-bound), plus ``dequant_rows`` (embedding
look-ups, and the kernels' own tests). Weights stay packed (``layout.py``); values are
decoded in registers (gemv) or into a shared-memory tile (gemm), never to global memory.
Accumulation is float32 with float32 activations: the exact product of the dequantised
weights, up to summation order (no activation quantisation as in the CPU decode path).

Every weight is passed as its four planes (qs, aux, dm, fw); its type is not an argument
but a compile-time constant: ``typed(t)`` builds (once per type) gemv/gemm/dequant_rows as
closures over the Python int t, so numba/NVVM fold every ``t == ...`` branch of the decoder
away and one type's decoding costs no registers in another type's kernel (one generic
kernel held every type's live values: 161 registers on sm_90 once Q3_K joined)."""
from __future__ import annotations

import math
from functools import lru_cache
from types import SimpleNamespace

from ...gguf.constants import GGMLType
from .device import (GEMM_KT, GEMM_KTP, GEMM_OUT, GEMM_RPT, GEMM_TM, GEMM_TN, GEMM_TPT, GEMM_TX, GEMM_TY,
                     GEMV_THREADS, NORM_THREADS, RMAX, RMAX2, cuda, float32, jit)
from .qdecode import col_unit, unit_cols, unit_decode

MODE_PLAIN, MODE_SWIGLU, MODE_GEGLU, MODE_SWIGLU_OAI = 0, 1, 2, 3
_GELU_C = float32(math.sqrt(2.0 / math.pi))
_OAI_ALPHA, _OAI_LIMIT = float32(1.702), float32(7.0)   # gpt-oss's constants (layers.swiglu_oai)


@cuda.jit(device=True)
def activate(mode, g, u):
    """The gated unit: silu(g) * u, as layers.silu; gpt-oss's clamped SwiGLU, as
    layers.swiglu_oai; or gelu(g) * u in GELU's float32 tanh form (layers.gelu_tanh looks it
    up in llama.cpp's CPU f16 table: up to 2^-11 apart)."""
    if mode == MODE_SWIGLU:
        return g / (float32(1.0) + math.exp(-g)) * u
    if mode == MODE_SWIGLU_OAI:
        # clamps written so a NaN passes through, as np.minimum/np.clip pass it
        x = _OAI_LIMIT if g > _OAI_LIMIT else g
        y = _OAI_LIMIT if u > _OAI_LIMIT else (-_OAI_LIMIT if u < -_OAI_LIMIT else u)
        return x / (float32(1.0) + math.exp(-_OAI_ALPHA * x)) * (y + float32(1.0))
    inner = _GELU_C * (g + float32(0.044715) * g * g * g)
    return float32(0.5) * g * (float32(1.0) + math.tanh(inner)) * u


@cuda.jit(device=True)
def _dot8(t, qs, aux, dm, fw, r, u, xv):
    """Unit u of row r, decoded in registers, dotted with the unit's 8 x values."""
    wv = cuda.local.array(8, float32)
    unit_decode(t, qs, aux, dm, fw, r, u, wv)
    s = float32(0.0)
    for k in range(8):
        s += wv[k] * xv[k]
    return s


@lru_cache(maxsize=None)
def typed(t: int) -> SimpleNamespace:
    """gemv, gemm and dequant_rows for weights of type t (``layout.NATIVE``), compiled with
    t as a constant. The closures capture only the int t, so numba's on-disk cache keys
    each type's kernels apart (it hashes closure contents)."""
    t = int(t)
    name = GGMLType(t).name

    def dequant_rows(qs, aux, dm, fw, units, rows, n, scale, out):
        """out[i, :] = scale * W[rows[i], :] for i < n (grid n, NORM_THREADS threads)."""
        i = cuda.blockIdx.x
        if i >= n:
            return
        r = rows[i]
        v = cuda.local.array(8, float32)
        for u in range(cuda.threadIdx.x, units, NORM_THREADS):
            c0, c1 = unit_cols(t, u)
            unit_decode(t, qs, aux, dm, fw, r, u, v)
            for k in range(4):
                out[i, c0 + k] = v[k] * scale
                out[i, c1 + k] = v[4 + k] * scale

    def gemv(qs, aux, dm, fw, n_out, units, x, xrow, y, yrow, ycol, bias, has_bias, mode, tpr, nrows,
             softcap, sel, rstride, xdiv):
        """y[yrow, ycol + r] = W[r] . x[xrow] for r < n_out; with mode SWIGLU/GEGLU, W holds the gate
        rows then the up rows (2 n_out) and y = act(gate) * up. Optional bias and tanh softcap.

        Expert products (rstride > 0): grid row p = blockIdx.y reads the rows of W from
        sel[p] * rstride on (one expert of a stack; no other expert's rows are read), x row
        xrow + p // xdiv and writes y row yrow + p. Otherwise the grid has one row and p = 0.

        A block is GEMV_THREADS threads in groups of ``tpr`` lanes; a group owns ``nrows`` (<=
        RMAX) consecutive rows. Lanes stride over the row's units, load the unit's 8 x values
        once and reuse them for every row of the group; partial sums meet in shared memory."""
        red = cuda.shared.array((RMAX2, GEMV_THREADS), float32)
        tid = cuda.threadIdx.x
        lane = tid % tpr
        groups = GEMV_THREADS // tpr
        p = cuda.blockIdx.y
        rb = 0
        if rstride > 0:
            rb = sel[p] * rstride
        xr = xrow + p // xdiv
        yr = yrow + p
        r0 = (cuda.blockIdx.x * groups + tid // tpr) * nrows
        w0 = rb + r0  # the group's first row in W
        xv = cuda.local.array(8, float32)
        # a scalar per row (gate rows in a0..a3, up rows in u0..u3): registers, where a local
        # array indexed inside a loop would live in (cached) local memory
        a0 = a1 = a2 = a3 = u0 = u1 = u2 = u3 = float32(0.0)
        n = nrows if n_out - r0 > nrows else n_out - r0
        gated = mode != MODE_PLAIN
        for u in range(lane, units, tpr):
            c0, c1 = unit_cols(t, u)
            for k in range(4):
                xv[k] = x[xr, c0 + k]
                xv[4 + k] = x[xr, c1 + k]
            if n > 0:
                a0 += _dot8(t, qs, aux, dm, fw, w0, u, xv)
                if gated:
                    u0 += _dot8(t, qs, aux, dm, fw, w0 + n_out, u, xv)
            if n > 1:
                a1 += _dot8(t, qs, aux, dm, fw, w0 + 1, u, xv)
                if gated:
                    u1 += _dot8(t, qs, aux, dm, fw, w0 + 1 + n_out, u, xv)
            if n > 2:
                a2 += _dot8(t, qs, aux, dm, fw, w0 + 2, u, xv)
                if gated:
                    u2 += _dot8(t, qs, aux, dm, fw, w0 + 2 + n_out, u, xv)
            if n > 3:
                a3 += _dot8(t, qs, aux, dm, fw, w0 + 3, u, xv)
                if gated:
                    u3 += _dot8(t, qs, aux, dm, fw, w0 + 3 + n_out, u, xv)
        red[0, tid] = a0
        red[1, tid] = a1
        red[2, tid] = a2
        red[3, tid] = a3
        red[4, tid] = u0
        red[5, tid] = u1
        red[6, tid] = u2
        red[7, tid] = u3
        cuda.syncthreads()
        step = tpr // 2
        while step > 0:
            if lane < step:
                for i in range(RMAX2):
                    red[i, tid] += red[i, tid + step]
            cuda.syncthreads()
            step //= 2
        if lane == 0:
            for i in range(RMAX):
                r = r0 + i
                if i < nrows and r < n_out:
                    val = red[i, tid]
                    if has_bias:
                        val += bias[rb + r]
                    if mode != MODE_PLAIN:
                        up = red[RMAX + i, tid]
                        if has_bias:  # the up rows' bias follows the gate rows'
                            up += bias[rb + n_out + r]
                        val = activate(mode, val, up)
                    if softcap > float32(0.0):
                        val = math.tanh(val / softcap) * softcap
                    y[yr, ycol + r] = val

    def gemm(qs, aux, dm, fw, n_rows, cols, x, n_tok, y, ycol, bias, has_bias, softcap, perm, offsets,
             rstride, xdiv):
        """y[tok, ycol + r] = W[r] . x[tok] (+ bias, tanh softcap) for tok < n_tok, r < n_rows.

        Block (GEMM_TX, GEMM_TY) computes a GEMM_TM x GEMM_TN tile of (rows x tokens): per
        K-tile of GEMM_KT columns the block decodes W's tile into shared memory a run of 4
        columns at a time and stages x's tile beside it; each thread then accumulates
        GEMM_RPT x GEMM_TPT outputs (rows ty + TY*i, tokens tx + TX*j) from shared memory.

        Expert products grouped by expert (rstride > 0): block z is expert e, whose rows of
        the stack W start at e * rstride (n_rows of them, the bias alike); its "tokens" are
        the (token, expert) pairs p = perm[s] for s in offsets[e] .. offsets[e + 1] (those
        that chose e, ``ops.moe_group``): x row p // xdiv in, y row p out. Each expert's
        weights are decoded once per tile of its pairs, not once per pair."""
        ws = cuda.shared.array((GEMM_TM, GEMM_KTP), float32)
        xs = cuda.shared.array((GEMM_TN, GEMM_KTP), float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * GEMM_TX + tx
        nth = GEMM_TX * GEMM_TY
        row0 = cuda.blockIdx.x * GEMM_TM
        tok0 = cuda.blockIdx.y * GEMM_TN
        wrow = 0      # the first row of W this product reads
        first = 0     # the first slot of perm (grouped)
        if rstride > 0:
            expert = cuda.blockIdx.z
            wrow = expert * rstride
            first = offsets[expert]
            n_tok = offsets[expert + 1] - first
            if tok0 >= n_tok:   # the whole block: no pairs of e in this tile
                return
        acc = cuda.local.array(GEMM_OUT, float32)
        wv = cuda.local.array(8, float32)
        wr = cuda.local.array(GEMM_RPT, float32)
        xr = cuda.local.array(GEMM_TPT, float32)
        for i in range(GEMM_RPT * GEMM_TPT):
            acc[i] = float32(0.0)
        runs = GEMM_KT // 4
        for k0 in range(0, cols, GEMM_KT):
            for e in range(tid, GEMM_TM * runs, nth):
                rr = e // runs
                cc = 4 * (e % runs)
                r = row0 + rr
                c = k0 + cc
                if r < n_rows and c < cols:
                    u, half = col_unit(t, c)
                    unit_decode(t, qs, aux, dm, fw, wrow + r, u, wv)
                    if half == 0:
                        for k in range(4):
                            ws[rr, cc + k] = wv[k]
                    else:
                        for k in range(4):
                            ws[rr, cc + k] = wv[4 + k]
                else:
                    for k in range(4):
                        ws[rr, cc + k] = float32(0.0)
            for e in range(tid, GEMM_TN * GEMM_KT, nth):
                tt = e // GEMM_KT
                cc = e % GEMM_KT
                if tok0 + tt < n_tok and k0 + cc < cols:
                    xr0 = tok0 + tt if rstride == 0 else perm[first + tok0 + tt] // xdiv
                    xs[tt, cc] = x[xr0, k0 + cc]
                else:
                    xs[tt, cc] = float32(0.0)
            cuda.syncthreads()
            for kk in range(GEMM_KT):
                for i in range(GEMM_RPT):
                    wr[i] = ws[ty + GEMM_TY * i, kk]
                for j in range(GEMM_TPT):
                    xr[j] = xs[tx + GEMM_TX * j, kk]
                for i in range(GEMM_RPT):
                    for j in range(GEMM_TPT):
                        acc[i * GEMM_TPT + j] += wr[i] * xr[j]
            cuda.syncthreads()
        for i in range(GEMM_RPT):
            r = row0 + ty + GEMM_TY * i
            if r < n_rows:
                for j in range(GEMM_TPT):
                    tok = tok0 + tx + GEMM_TX * j
                    if tok < n_tok:
                        val = acc[i * GEMM_TPT + j]
                        if has_bias:
                            val += bias[wrow + r]
                        if softcap > float32(0.0):
                            val = math.tanh(val / softcap) * softcap
                        y[tok if rstride == 0 else perm[first + tok], ycol + r] = val

    for fn in (dequant_rows, gemv, gemm):  # distinct names: launches, the PTX check and the cache
        fn.__name__ = fn.__qualname__ = f"{fn.__name__}[{name}]"
    return SimpleNamespace(t=t, dequant_rows=jit(dequant_rows), gemv=jit(gemv), gemm=jit(gemm))


@jit
def glu(gu, n_tok, n_ff, mode, out):
    """out[t, i] = act(gu[t, i]) * gu[t, n_ff + i] (prompt batches; decode fuses this in gemv)."""
    t = cuda.blockIdx.x
    if t >= n_tok:
        return
    for i in range(cuda.threadIdx.x, n_ff, NORM_THREADS):
        out[t, i] = activate(mode, gu[t, i], gu[t, n_ff + i])


def gemv_shape(n_out: int, units: int, n_sm: int = 132) -> tuple[int, int, int]:
    """(grid, lanes per row, rows per group) for a gemv: enough lanes to cover a row in a
    few strides, and rows per group only while the grid still fills the device twice."""
    tpr = 32
    while tpr > 8 and units < 2 * tpr:
        tpr //= 2
    tpr = min(tpr, GEMV_THREADS)
    groups = GEMV_THREADS // tpr
    nrows = RMAX
    while nrows > 1 and -(-n_out // (groups * nrows)) < 2 * n_sm:
        nrows //= 2
    return -(-n_out // (groups * nrows)), tpr, nrows
