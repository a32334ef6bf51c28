"""Dequantisation in registers: one *unit* (8 values) of a packed row at a time.

``unit_decode(t, qs, aux, dm, fw, r, u, v)`` writes unit u of row r into the 8-float local
array v; ``unit_cols(t, u)`` gives the columns (c0, c1) of its two runs of 4; ``col_unit``
is the inverse (for tiles that start at a column). The bit layouts are drawn in
``layout.py``; ``layout.decode_units_numpy`` is this file's numpy twin. The type id ``t``
is the same in every thread of a launch, so the branches never diverge within a warp.

Integer fields are cast to int32 before any arithmetic: numba types mixed uint32/int64
expressions as int64, the simulator as numpy uint32, and only signed int32 agrees in both.

IQ4_NL/IQ4_XS look their 4-bit codes up in a 16-entry table held in constant memory
(``cuda.const.array_like`` of a module-level array: the simulator hands back the array)."""
from __future__ import annotations

import numpy as np

from ..ref_legacy import IQ4_NL_KVALUES
from .device import cuda, float32, int32

F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS = 10, 11, 12, 13, 14, 20, 23
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
def unit_cols(t, u):
    if t == Q4_0 or t == Q4_1 or t == Q5_0 or t == Q5_1 or t == IQ4_NL or t == IQ4_XS:
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
    if t == Q2_K or t == Q3_K:
        w = u & 15
        c0 = 256 * (u >> 5) + 128 * (w >> 3) + 64 * ((u >> 4) & 1) + 4 * (w & 7)
        return c0, c0 + 32
    return 8 * u, 8 * u + 4


@cuda.jit(device=True)
def col_unit(t, c):
    """(unit, half) holding column c (a multiple of 4): half 0 is the run at c0, 1 at c1."""
    if t == Q4_0 or t == Q4_1 or t == Q5_0 or t == Q5_1 or t == IQ4_NL or t == IQ4_XS:
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
    if t == Q2_K or t == Q3_K:
        e = c & 255
        f = (e & 127) >> 5                            # the 2-bit field: unit 16 * (f >> 1), half f & 1
        return 32 * (c >> 8) + 16 * (f >> 1) + 8 * (e >> 7) + ((e & 31) >> 2), f & 1
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
    elif t == F16:
        for k in range(8):
            v[k] = float32(dm[r, 8 * u + k])
    else:
        for k in range(8):
            v[k] = fw[r, 8 * u + k]
