"""Dequantisation in registers: one *unit* (8 values) of a packed row at a time.

``unit_decode(t, qs, aux, dm, fw, r, u, v)`` writes unit u of row r into the 8-float local
array v; ``unit_cols(t, u)`` gives the columns (c0, c1) of its two runs of 4; ``col_unit``
is the inverse (for tiles that start at a column). The bit layouts are drawn in
``layout.py``; ``layout.decode_units_numpy`` is this file's numpy twin. The type id ``t``
is the same in every thread of a launch, so the branches never diverge within a warp.

Integer fields are cast to int32 before any arithmetic: numba types mixed uint32/int64
expressions as int64, the simulator as numpy uint32, and only signed int32 agrees in both.

IQ4_NL/IQ4_XS/MXFP4 look their 4-bit codes up in a 16-entry table held in constant memory
(``cuda.const.array_like`` of a module-level array: the simulator hands back the array);
so do the lattice types their grid rows (``layout.IQ*_W``: a row of 8 bytes is two uint32
words, a row of 4 one) and sign bytes, and TQ1_0 its powers of 3.

The kernels are compiled per type (``matmul.typed``): t is a constant there and every
branch but its own folds away."""
from __future__ import annotations

import numpy as np

from ..ref_legacy import IQ4_NL_KVALUES
from .device import float32, int32, int_as_float, kcuda as cuda  # see device.kcuda
from .layout import (IQ1S_W, IQ2S_W, IQ2XS_W, IQ2XXS_W, IQ3S_W, IQ3XXS_W, KSIGNS, KVALUES_MXFP4,
                     POW3)

F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS = 10, 11, 12, 13, 14, 20, 23
IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ3_S, IQ2_S, IQ1_M = 16, 17, 18, 19, 21, 22, 29
TQ1_0, TQ2_0, MXFP4 = 34, 35, 39
# float32 so a lookup is the reference's KVALUES[q].astype(float32), with no conversion
_KVALUES = IQ4_NL_KVALUES.astype(np.float32)


@cuda.jit(device=True)
def _scale_k4(w0, w1, w2, j):
    """(scale, min) of sub-block j from a K-quant's 12 packed scale bytes (words w0..w2)."""
    if j < 4:
        sh = 8 * j
        sc = int32((w0 >> sh) & 63)
        mn = int32((w1 >> sh) & 63)
    else:
        sh = 8 * (j - 4)
        lo = int32((w2 >> sh) & 255)                  # byte j + 4
        sc = (lo & 15) | (int32((w0 >> (sh + 6)) & 3) << 4)
        mn = (lo >> 4) | (int32((w1 >> (sh + 6)) & 3) << 4)
    return float32(sc), float32(mn)


@cuda.jit(device=True)
def _signed8(db, w0, w1, sg, v):
    """v = db * the 8 grid bytes of words w0, w1, negated where bit j of sg is set."""
    for k in range(4):
        x0 = db * float32(int32((w0 >> (8 * k)) & 255))
        x1 = db * float32(int32((w1 >> (8 * k)) & 255))
        if (sg >> k) & 1:
            x0 = -x0
        if (sg >> (k + 4)) & 1:
            x1 = -x1
        v[k] = x0
        v[4 + k] = x1


@cuda.jit(device=True)
def _iq1_8(dl, delta, w0, w1, v):
    """v = dl * (grid + delta) for the 8 int8 grid bytes of words w0, w1."""
    for k in range(4):
        b0 = int32((w0 >> (8 * k)) & 255)
        b1 = int32((w1 >> (8 * k)) & 255)
        v[k] = dl * (float32(b0 - ((b0 & 128) << 1)) + delta)
        v[4 + k] = dl * (float32(b1 - ((b1 & 128) << 1)) + delta)


@cuda.jit(device=True)
def _half_scale(d, ls, tail):
    """d * (0.5 + ls) * tail, rounded after each step as the reference."""
    return (d * (float32(0.5) + float32(ls))) * tail


@cuda.jit(device=True)
def unit_cols(t, u):
    if (t == Q4_0 or t == Q4_1 or t == Q5_0 or t == Q5_1 or t == IQ4_NL or t == IQ4_XS
            or t == MXFP4):
        c0 = 32 * (u >> 2) + 4 * (u & 3)
        return c0, c0 + 16
    if t == Q8_0:
        c0 = 32 * (u >> 2) + 8 * (u & 3)
        return c0, c0 + 4
    if t == Q4_K or t == Q5_K:
        w = u & 31
        c0 = 256 * (u >> 5) + 64 * (w >> 3) + 4 * (w & 7)
        return c0, c0 + 32
    if t == Q6_K:
        w = u & 31
        c0 = 256 * (u >> 5) + 128 * (w >> 4) + 4 * (w & 15)
        return c0, c0 + 64
    if t == Q2_K or t == Q3_K or t == TQ2_0:
        w = u & 15
        c0 = 256 * (u >> 5) + 128 * (w >> 3) + 64 * ((u >> 4) & 1) + 4 * (w & 7)
        return c0, c0 + 32
    if t == TQ1_0:
        l = u & 31
        base = 256 * (u >> 5)
        if l < 20:
            c0 = base + 32 * (l >> 2) + 4 * (l & 3)
            return c0, c0 + 16
        if l < 30:
            c0 = base + 160 + 16 * ((l - 20) >> 1) + 4 * ((l - 20) & 1)
            return c0, c0 + 8
        c0 = base + 240 + 8 * (l - 30)
        return c0, c0 + 4
    return 8 * u, 8 * u + 4                           # F16, F32, the lattice types


@cuda.jit(device=True)
def col_unit(t, c):
    """(unit, half) holding column c (a multiple of 4): half 0 is the run at c0, 1 at c1."""
    if (t == Q4_0 or t == Q4_1 or t == Q5_0 or t == Q5_1 or t == IQ4_NL or t == IQ4_XS
            or t == MXFP4):
        i = c & 31
        return 4 * (c >> 5) + ((i & 15) >> 2), i >> 4
    if t == Q8_0:
        i = c & 31
        return 4 * (c >> 5) + (i >> 3), (i & 7) >> 2
    if t == Q4_K or t == Q5_K:
        e = c & 255
        rr = e & 63
        return 32 * (c >> 8) + 8 * (e >> 6) + ((rr & 31) >> 2), rr >> 5
    if t == Q6_K:
        e = c & 255
        rr = e & 127
        return 32 * (c >> 8) + 16 * (e >> 7) + ((rr & 63) >> 2), rr >> 6
    if t == Q2_K or t == Q3_K or t == TQ2_0:
        e = c & 255
        f = (e & 127) >> 5                            # the 2-bit field: unit 16 * (f >> 1), half f & 1
        return 32 * (c >> 8) + 16 * (f >> 1) + 8 * (e >> 7) + ((e & 31) >> 2), f & 1
    if t == TQ1_0:
        e = c & 255
        base = 32 * (c >> 8)
        if e < 160:                                   # digit e // 32 of words w & 3, half w >> 2
            w = (e & 31) >> 2
            return base + 4 * (e >> 5) + (w & 3), w >> 2
        if e < 240:
            w = ((e - 160) & 15) >> 2
            return base + 20 + 2 * ((e - 160) >> 4) + (w & 1), w >> 1
        k = (e - 240) >> 2
        return base + 30 + (k >> 1), k & 1
    return c >> 3, (c & 7) >> 2


@cuda.jit(device=True)
def unit_decode(t, qs, aux, dm, fw, r, u, v):
    if t == Q4_0 or t == Q5_0:
        b = u >> 2
        q = qs[r, u]
        d = float32(dm[r, b])
        for k in range(4):
            lo = int32((q >> (8 * k)) & 15)
            hi = int32((q >> (8 * k + 4)) & 15)
            if t == Q5_0:
                qh = aux[r, b]
                i = 4 * (u & 3) + k
                lo = lo | (int32((qh >> i) & 1) << 4)
                hi = hi | (int32((qh >> (i + 16)) & 1) << 4)
                lo -= 16
                hi -= 16
            else:
                lo -= 8
                hi -= 8
            v[k] = d * float32(lo)
            v[4 + k] = d * float32(hi)
    elif t == Q4_1 or t == Q5_1:
        b = u >> 2
        q = qs[r, u]
        d = float32(dm[r, 2 * b])
        m = float32(dm[r, 2 * b + 1])
        for k in range(4):
            lo = int32((q >> (8 * k)) & 15)
            hi = int32((q >> (8 * k + 4)) & 15)
            if t == Q5_1:
                qh = aux[r, b]
                i = 4 * (u & 3) + k
                lo = lo | (int32((qh >> i) & 1) << 4)
                hi = hi | (int32((qh >> (i + 16)) & 1) << 4)
            v[k] = d * float32(lo) + m
            v[4 + k] = d * float32(hi) + m
    elif t == Q8_0:
        b = u >> 2
        d = float32(dm[r, b])
        w0 = qs[r, 8 * b + 2 * (u & 3)]
        w1 = qs[r, 8 * b + 2 * (u & 3) + 1]
        for k in range(4):
            x0 = int32((w0 >> (8 * k)) & 255)
            x1 = int32((w1 >> (8 * k)) & 255)
            if x0 > 127:
                x0 -= 256
            if x1 > 127:
                x1 -= 256
            v[k] = d * float32(x0)
            v[4 + k] = d * float32(x1)
    elif t == Q4_K or t == Q5_K:
        s = u >> 5
        w = u & 31
        j0 = 2 * (w >> 3)
        base = 11 * s if t == Q5_K else 3 * s
        d = float32(dm[r, 2 * s])
        dmin = float32(dm[r, 2 * s + 1])
        w0 = aux[r, base]
        w1 = aux[r, base + 1]
        w2 = aux[r, base + 2]
        sc0, mn0 = _scale_k4(w0, w1, w2, j0)
        sc1, mn1 = _scale_k4(w0, w1, w2, j0 + 1)
        dl0, ml0 = d * sc0, dmin * mn0
        dl1, ml1 = d * sc1, dmin * mn1
        q = qs[r, u]
        qh = aux[r, base + 3 + (w & 7)] if t == Q5_K else q
        for k in range(4):
            lo = int32((q >> (8 * k)) & 15)
            hi = int32((q >> (8 * k + 4)) & 15)
            if t == Q5_K:
                lo = lo | (int32((qh >> (8 * k + j0)) & 1) << 4)
                hi = hi | (int32((qh >> (8 * k + j0 + 1)) & 1) << 4)
            v[k] = dl0 * float32(lo) - ml0
            v[4 + k] = dl1 * float32(hi) - ml1
    elif t == Q6_K:
        s = u >> 5
        w = u & 31
        h = w >> 4
        j = 4 * (w & 15)
        d = float32(dm[r, s])
        q = qs[r, u]
        qh = aux[r, 20 * s + 8 * h + ((j & 31) >> 2)]
        idx = 8 * h + (j >> 4)                        # int8 scales of the two runs: idx, idx + 4
        sc0 = int32((aux[r, 20 * s + 16 + (idx >> 2)] >> (8 * (idx & 3))) & 255)
        sc1 = int32((aux[r, 20 * s + 17 + (idx >> 2)] >> (8 * (idx & 3))) & 255)
        if sc0 > 127:
            sc0 -= 256
        if sc1 > 127:
            sc1 -= 256
        dl0 = d * float32(sc0)
        dl1 = d * float32(sc1)
        sh = 2 * (j >> 5)
        for k in range(4):
            lo = int32((q >> (8 * k)) & 15) | (int32((qh >> (8 * k + sh)) & 3) << 4)
            hi = int32((q >> (8 * k + 4)) & 15) | (int32((qh >> (8 * k + sh + 4)) & 3) << 4)
            v[k] = dl0 * float32(lo - 32)
            v[4 + k] = dl1 * float32(hi - 32)
    elif t == Q2_K or t == Q3_K:
        s = u >> 5
        w = u & 15
        p = (u >> 4) & 1
        # 2-bit fields 2p (run 0) and 2p + 1 (run 1) of each byte, shifted down once to bits
        # 0-1 and 2-3: the loop below then shifts by constants only
        q = int32((qs[r, 16 * s + w] >> (4 * p)) & 0x0F0F0F0F)
        j0 = 8 * (w >> 3) + 4 * p + ((w & 7) >> 2)    # sub-blocks of 16: j0 and j0 + 2
        if t == Q2_K:
            a = aux[r, 4 * s + (j0 >> 2)]             # both scale bytes: j0 & 3 is 0 or 1
            b0 = int32((a >> (8 * (j0 & 3))) & 255)
            b1 = int32((a >> (8 * (j0 & 3) + 16)) & 255)
            d = float32(dm[r, 2 * s])
            dmin = float32(dm[r, 2 * s + 1])
            dl0, ml0 = d * float32(b0 & 15), dmin * float32(b0 >> 4)
            dl1, ml1 = d * float32(b1 & 15), dmin * float32(b1 >> 4)
            for k in range(4):
                v[k] = dl0 * float32((q >> (8 * k)) & 3) - ml0
                v[4 + k] = dl1 * float32((q >> (8 * k + 2)) & 3) - ml1
        else:
            # signed 6-bit scales: the low 4 bits of scale j are a nibble of byte j & 7 (high
            # nibble for j >= 8), the top 2 bits of byte 8 + j % 4 (bits 2 * (j // 4)). j0 and
            # j0 + 2 share both words, 16 bits apart
            base = 11 * s
            wl = aux[r, base + ((j0 >> 2) & 1)]
            wh = aux[r, base + 2]
            sl = 8 * (j0 & 3) + 4 * (j0 >> 3)
            shh = 8 * (j0 & 3) + 2 * (j0 >> 2)
            lo4 = int32((wl >> sl) & 0x000F000F)     # one shift for both: j0 in bits 0-3, j0 + 2 in 16-19
            hi2 = int32((wh >> shh) & 0x00030003)
            sc0 = (lo4 & 15) | ((hi2 & 3) << 4)
            sc1 = (lo4 >> 16) | ((hi2 >> 16) << 4)
            d = float32(dm[r, s])
            dl0 = d * float32(sc0 - 32)
            dl1 = d * float32(sc1 - 32)
            # hmask bits 4h + 2p (run 0) and + 1 (run 1) of bytes i0.., shifted down once
            hm = int32((aux[r, base + 3 + (w & 7)] >> (4 * (w >> 3) + 2 * p)) & 0x03030303)
            for k in range(4):
                lo = ((q >> (8 * k)) & 3) | (((hm >> (8 * k)) & 1) << 2)
                hi = ((q >> (8 * k + 2)) & 3) | (((hm >> (8 * k + 1)) & 1) << 2)
                v[k] = dl0 * float32(lo - 4)
                v[4 + k] = dl1 * float32(hi - 4)
    elif t == IQ4_NL or t == IQ4_XS:
        kv = cuda.const.array_like(_KVALUES)
        q = qs[r, u]
        if t == IQ4_NL:
            d = float32(dm[r, u >> 2])
        else:
            s = u >> 5
            j = (u >> 2) & 7
            lo = int32((aux[r, s] >> (4 * j)) & 15)
            hi = int32((aux[r, (qs.shape[1] >> 5) + (s >> 1)] >> (16 * (s & 1) + 2 * j)) & 3)
            d = float32(dm[r, s]) * float32((lo | (hi << 4)) - 32)
        for k in range(4):
            v[k] = d * kv[int32((q >> (8 * k)) & 15)]
            v[4 + k] = d * kv[int32((q >> (8 * k + 4)) & 15)]
    elif t == TQ2_0:                                  # Q2_K's fields; x = d * (q - 1)
        s = u >> 5
        p = (u >> 4) & 1
        q = int32((qs[r, 16 * s + (u & 15)] >> (4 * p)) & 0x0F0F0F0F)
        d = float32(dm[r, s])
        for k in range(4):
            v[k] = d * float32(((q >> (8 * k)) & 3) - 1)
            v[4 + k] = d * float32(((q >> (8 * k + 2)) & 3) - 1)
    elif t == TQ1_0:
        p3 = cuda.const.array_like(POW3)
        s = u >> 5
        l = u & 31
        if l < 20:                                    # words l & 3 and + 4, digit l >> 2
            wa = l & 3
            wb = wa + 4
            n0 = l >> 2
            n1 = n0
        elif l < 30:                                  # words 8 + (l & 1) and + 2
            wa = 8 + ((l - 20) & 1)
            wb = wa + 2
            n0 = (l - 20) >> 1
            n1 = n0
        else:                                         # the qh word, digits 2m and 2m + 1
            wa = 12
            wb = 12
            n0 = 2 * (l - 30)
            n1 = n0 + 1
        qa = qs[r, 13 * s + wa]
        qb = qs[r, 13 * s + wb]
        pa = p3[n0]
        pb = p3[n1]
        d = float32(dm[r, s])
        for k in range(4):
            ba = int32((qa >> (8 * k)) & 255)
            bb = int32((qb >> (8 * k)) & 255)
            v[k] = d * float32(((((ba * pa) & 255) * 3) >> 8) - 1)   # base-3 digit: (b * 3^n mod 256) * 3 >> 8
            v[4 + k] = d * float32(((((bb * pb) & 255) * 3) >> 8) - 1)
    elif t == MXFP4:
        kv = cuda.const.array_like(KVALUES_MXFP4)
        b = u >> 2
        e = int32((aux[r, b >> 2] >> (8 * (b & 3))) & 255)
        # half the E8M0 scale, 2^(e - 128), built as float32 bits (e < 2: a subnormal)
        h = int_as_float(int32(0x00200000 << e) if e < 2 else int32((e - 1) << 23))
        q = qs[r, u]
        for k in range(4):
            v[k] = h * kv[int32((q >> (8 * k)) & 15)]
            v[4 + k] = h * kv[int32((q >> (8 * k + 4)) & 15)]
    elif t == IQ2_XXS or t == IQ3_XXS:
        ks = cuda.const.array_like(KSIGNS)
        s = u >> 5
        g = (u >> 2) & 7
        k = u & 3
        d = float32(dm[r, s])
        if t == IQ2_XXS:                              # words a (4 grid indices), b (signs, scale)
            g2 = cuda.const.array_like(IQ2XXS_W)
            b = qs[r, 16 * s + 2 * g + 1]
            idx = int32((qs[r, 16 * s + 2 * g] >> (8 * k)) & 255)
            db = _half_scale(d, int32(b >> 28), float32(0.25))
            _signed8(db, g2[idx, 0], g2[idx, 1], int32(ks[int32((b >> (7 * k)) & 127)]), v)
        else:                                         # two rows of 4; sign/scale word 16 + g
            g3 = cuda.const.array_like(IQ3XXS_W)
            q = qs[r, 24 * s + 2 * g + (k >> 1)]
            b = qs[r, 24 * s + 16 + g]
            i0 = int32((q >> (16 * (k & 1))) & 255)
            i1 = int32((q >> (16 * (k & 1) + 8)) & 255)
            db = _half_scale(d, int32(b >> 28), float32(0.5))
            _signed8(db, g3[i0], g3[i1], int32(ks[int32((b >> (7 * k)) & 127)]), v)
    elif t == IQ2_XS or t == IQ2_S:
        s = u >> 5
        l = u & 31
        nw = 18 if t == IQ2_XS else 20
        w = nw * s
        # 4-bit scale: nibble (l >> 1) & 1 of scale byte l >> 2 (the block's last 2 words)
        ls = int32((qs[r, w + nw - 2 + (l >> 4)] >> (8 * ((l >> 2) & 3) + 4 * ((l >> 1) & 1))) & 15)
        db = _half_scale(float32(dm[r, s]), ls, float32(0.25))
        if t == IQ2_XS:                               # u16 l: 9-bit grid index, 7-bit sign index
            ks = cuda.const.array_like(KSIGNS)
            gx = cuda.const.array_like(IQ2XS_W)
            q = int32((qs[r, w + (l >> 1)] >> (16 * (l & 1))) & 0xFFFF)
            idx = q & 511
            _signed8(db, gx[idx, 0], gx[idx, 1], int32(ks[q >> 9]), v)
        else:                                         # qs byte l, 2 high bits from qh, sign byte l
            gs = cuda.const.array_like(IQ2S_W)
            hi = int32((qs[r, w + 16 + (l >> 4)] >> (8 * ((l >> 2) & 3) + 2 * (l & 3))) & 3)
            idx = int32((qs[r, w + (l >> 2)] >> (8 * (l & 3))) & 255) | (hi << 8)
            sg = int32((qs[r, w + 8 + (l >> 2)] >> (8 * (l & 3))) & 255)
            _signed8(db, gs[idx, 0], gs[idx, 1], sg, v)
    elif t == IQ3_S:                                  # rows 2l, 2l + 1 of 4; qh bits 2l, 2l + 1
        g3 = cuda.const.array_like(IQ3S_W)
        s = u >> 5
        l = u & 31
        w = 26 * s
        q = qs[r, w + (l >> 1)]
        qh = int32((qs[r, w + 16 + (l >> 4)] >> (8 * ((l >> 2) & 3) + 2 * (l & 3))) & 3)
        i0 = int32((q >> (16 * (l & 1))) & 255) | ((qh & 1) << 8)
        i1 = int32((q >> (16 * (l & 1) + 8)) & 255) | ((qh >> 1) << 8)
        ls = int32((aux[r, s] >> (4 * (l >> 2))) & 15)
        db = float32(dm[r, s]) * float32(1 + 2 * ls)
        sg = int32((qs[r, w + 18 + (l >> 2)] >> (8 * (l & 3))) & 255)
        _signed8(db, g3[i0], g3[i1], sg, v)
    elif t == IQ1_S or t == IQ1_M:
        g1 = cuda.const.array_like(IQ1S_W)
        s = u >> 5
        l = u & 31
        if t == IQ1_S:                                # u16 qh of group l >> 2: scale, delta, 3 bits a row
            w = 12 * s
            qh = int32((qs[r, w + 8 + (l >> 3)] >> (16 * ((l >> 2) & 1))) & 0xFFFF)
            dl = float32(dm[r, s]) * float32(2 * ((qh >> 12) & 7) + 1)
            neg = qh >> 15
            hi = (qh >> (3 * (l & 3))) & 7
        else:                                         # qh nibble l, 3-bit scale of 16 elements
            w = 14 * s
            nib = int32((qs[r, w + 8 + (l >> 3)] >> (8 * ((l >> 1) & 3) + 4 * (l & 1))) & 15)
            sc = int32((qs[r, w + 12 + (l >> 4)] >> (16 * ((l >> 3) & 1) + 3 * ((l >> 1) & 3))) & 7)
            dl = float32(dm[r, s]) * float32(2 * sc + 1)
            neg = nib >> 3
            hi = nib & 7
        idx = int32((qs[r, w + (l >> 2)] >> (8 * (l & 3))) & 255) | (hi << 8)
        delta = float32(-0.125) if neg else float32(0.125)
        _iq1_8(dl, delta, g1[idx, 0], g1[idx, 1], v)
    elif t == F16:
        for k in range(8):
            v[k] = float32(dm[r, 8 * u + k])
    else:
        for k in range(8):
            v[k] = fw[r, 8 * u + k]
