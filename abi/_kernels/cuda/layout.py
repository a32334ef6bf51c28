"""How quantised weights sit in GPU memory: GGUF blocks repacked, bit for bit, into
word-aligned planes so every thread of a warp reads whole 32-bit words.

GGUF blocks are 18, 20, 22, 34, 84, 110, 136, 144, 176 or 210 bytes: their quant bytes are
not 4-byte aligned, which would force byte loads on the GPU. At upload each block is split into

    qs   uint32 (rows, words)    the packed quants (nibbles, 2-bit fields, int8s, Q6_K's low 4 bits)
    aux  uint32 (rows, words)    high bits (Q5_*, Q3_K's hmask, Q6_K) and sub-block scales
                                 (K-quants, IQ4_XS)
    dm   float16 (rows, n)       block scale d (and min m / dmin, interleaved d0 m0 d1 m1 ...);
                                 F16 weights are the matrix itself
    fw   float32 (rows, cols)    F32 weights (BF16 is widened to F32 at upload)

Nothing is dequantised: the device reads the same bits per row as the file stores
(K-quant scale bytes and 2-byte scales padded to nothing, just regrouped). Exceptions in
size: IQ4_XS's 16-bit high-scale field goes two blocks to a word at the end of the row's
aux, so a row of an odd number of its blocks carries 2 bytes of padding; MXFP4's exponent
bytes go four blocks to an aux word (a row pads to a multiple of 4 blocks); IQ1_M's f16
scale, spread over the top nibbles of its four scale words, is also gathered into dm (2
bytes a block more; the scale words stay whole).

The lattice types keep the block minus its f16 d as qs, in file order (every field then
sits at a fixed byte of the block's words): IQ2_XXS 16 words, IQ2_XS 18 (qs, scales),
IQ2_S 20 (qs, signs, qh, scales), IQ3_XXS 24 (qs, sign/scale words), IQ3_S 26 (qs, qh,
signs; its 4 scale bytes are the aux word), IQ1_S 12 (qs, qh), IQ1_M the whole block, 14
words. TQ1_0: 13 qs words (qs, qh), TQ2_0: 16; d in dm. MXFP4: 4 qs words a block.

Every type is decoded in *units* of 8 elements: unit u of a row yields two runs of 4
consecutive columns, ``c0 .. c0+3`` and ``c1 .. c1+3`` (``unit_columns``). One unit is one
qs word for the 4-bit types (its 4 low nibbles and 4 high nibbles; MXFP4 too), two words for
Q8_0, half a word for Q2_K/Q3_K/TQ2_0 (two of the four 2-bit fields of each byte: the units
16 apart share the word), one grid row of 8 (IQ3: two rows of 4) for the lattice types and 8
consecutive values for F16/F32 (both ``8u .. 8u+7``). TQ1_0's units take one base-3 digit of
4 bytes twice: digit n of qs words w and w + 4 (w < 4: elements 32n + 4w and 16 further),
of words 8 + w and 10 + w (w < 2: 160 + 16n + 4w and 8 further), or digits 2m, 2m + 1 of
the qh word (240 + 8m). ``decode_units_numpy`` is the vectorised
twin of the device decoder (``qdecode.unit_decode``) and is checked against the CPU
reference dequantisers.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ...errors import KernelInputError
from ...gguf.constants import GGMLType
from ..ref_iquants import tables as _iq_tables
from ..ref_legacy import IQ4_NL_KVALUES

log = logging.getLogger("abi.kernels.cuda")
_KVALUES = IQ4_NL_KVALUES.astype(np.float32)

T = GGMLType
# types the device decodes natively; any other stored type is widened at upload
NATIVE = (T.F32, T.F16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL,
          T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS,
          T.TQ1_0, T.TQ2_0, T.MXFP4,
          T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S, T.IQ1_M)
# types whose qs plane is the block minus its leading f16 d, in file order
_D_FIRST = (T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ3_XXS, T.IQ3_S, T.IQ1_S)
# types decoded as runs of 8 consecutive columns (unit u: 8u .. 8u+7)
_RUNS_OF_8 = (T.F16, T.F32) + _D_FIRST + (T.IQ1_M,)


def _table_words(grid: np.ndarray) -> np.ndarray:
    """A grid's rows as little-endian uint32 words: (rows, 2) for rows of 8 bytes, (rows,)
    for rows of 4 (one load per 4 values on the device; the same bytes)."""
    w = np.ascontiguousarray(grid).view("<u4").astype(np.uint32)
    return w[:, 0].copy() if w.shape[1] == 1 else w


_tb = _iq_tables()
# the lookup tables the device holds in constant memory (qdecode) and this twin reads
IQ2XXS_W, IQ2XS_W, IQ2S_W = _table_words(_tb.iq2xxs), _table_words(_tb.iq2xs), _table_words(_tb.iq2s)
IQ3XXS_W, IQ3S_W = _table_words(_tb.iq3xxs), _table_words(_tb.iq3s)
IQ1S_W = _table_words(_tb.iq1s.view(np.uint8))         # int8 values, two's complement bytes
KSIGNS = _tb.ksigns.copy()                              # uint8 (128,)
KVALUES_MXFP4 = _tb.kvalues_mxfp4.astype(np.float32)    # doubled E2M1 values
POW3 = np.array([1, 3, 9, 27, 81], np.int32)
del _tb


@dataclass
class PackedWeight:
    """One matrix (rows, cols) in the device layout; ``ggml_type`` is the format decoded."""

    ggml_type: int
    rows: int
    cols: int
    qs: np.ndarray
    aux: np.ndarray
    dm: np.ndarray
    fw: np.ndarray
    source_type: int

    @property
    def units(self) -> int:
        return self.cols // 8

    @property
    def nbytes(self) -> int:
        """Bytes a full pass over the matrix reads (placeholders excluded)."""
        return sum(a.nbytes for a in (self.qs, self.aux, self.dm, self.fw) if a.size > 1)


def _words(b: np.ndarray) -> np.ndarray:
    """(n, 4k) uint8 -> (n, k) little-endian uint32."""
    return np.ascontiguousarray(b).view("<u4").astype(np.uint32)


def _halves(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f2").astype(np.float16)


_EMPTY_U32 = np.zeros((1, 1), np.uint32)
_EMPTY_F16 = np.zeros((1, 1), np.float16)
_EMPTY_F32 = np.zeros((1, 1), np.float32)


def pack(raw, ggml_type, shape) -> PackedWeight:
    """The device layout of a stored matrix ``shape`` = (rows, cols) of ``ggml_type``."""
    from .. import _raw_bytes, _shape, _type, dequantize, DEQUANTIZE_TYPES

    t = _type(ggml_type, DEQUANTIZE_TYPES, "cuda pack")
    shape = _shape(shape)
    if len(shape) != 2:
        raise KernelInputError(f"cuda pack: expected a matrix, got shape {shape}")
    rows, cols = shape
    if cols % 8:
        raise KernelInputError(f"cuda pack: rows must be a multiple of 8 elements, got {cols}")
    data = _raw_bytes(raw, t, shape, "cuda pack")
    if t == T.F32:
        fw = data.view(np.float32).reshape(rows, cols)
        return PackedWeight(int(T.F32), rows, cols, _EMPTY_U32, _EMPTY_U32, _EMPTY_F16, fw.copy(), int(t))
    if t == T.F16:
        dm = data.view(np.float16).reshape(rows, cols)
        return PackedWeight(int(T.F16), rows, cols, _EMPTY_U32, _EMPTY_U32, dm.copy(), _EMPTY_F32, int(t))
    if t not in NATIVE:
        # exact for BF16 (F32); other types lose only f16 rounding of already-quantised values
        wide = T.F32 if t == T.BF16 else T.F16
        if t != T.BF16:
            log.warning("cuda: %s has no GPU kernel; %d x %d matrix widened to F16", t.name, rows, cols)
        dense = dequantize(data, t, shape)
        raw_wide = dense.astype(np.float32 if wide == T.F32 else np.float16)
        packed = pack(raw_wide.view(np.uint8), wide, shape)
        packed.source_type = int(t)
        return packed
    nb = cols // t.block_size
    blocks = data.reshape(rows * nb, t.type_size)
    qs = aux = None
    if t == T.Q4_0:
        dm, qs = _halves(blocks[:, 0:2]), _words(blocks[:, 2:18])
    elif t == T.Q4_1:
        dm, qs = _halves(blocks[:, 0:4]), _words(blocks[:, 4:20])
    elif t == T.Q5_0:
        dm, aux, qs = _halves(blocks[:, 0:2]), _words(blocks[:, 2:6]), _words(blocks[:, 6:22])
    elif t == T.Q5_1:
        dm, aux, qs = _halves(blocks[:, 0:4]), _words(blocks[:, 4:8]), _words(blocks[:, 8:24])
    elif t == T.Q8_0:
        dm, qs = _halves(blocks[:, 0:2]), _words(blocks[:, 2:34])
    elif t == T.IQ4_NL:
        dm, qs = _halves(blocks[:, 0:2]), _words(blocks[:, 2:18])
    elif t == T.IQ4_XS:  # aux row: nb words of 4-bit low scales, then the 16-bit highs two per word
        dm, qs = _halves(blocks[:, 0:2]), _words(blocks[:, 8:136])
        high = blocks[:, 2:4].reshape(rows, 2 * nb)
        if nb % 2:
            high = np.concatenate([high, np.zeros((rows, 2), np.uint8)], axis=1)
        aux = np.concatenate([_words(blocks[:, 4:8]).reshape(rows, nb), _words(high)], axis=1)
    elif t in _D_FIRST:
        dm, qs = _halves(blocks[:, 0:2]), _words(blocks[:, 2:])
        if t == T.IQ3_S:  # qs, qh, signs in qs (26 words); the scale bytes are the aux word
            qs, aux = _words(blocks[:, 2:106]), _words(blocks[:, 106:110])
    elif t == T.IQ1_M:  # d's four nibbles (top of each scale u16, low to high) gathered
        sc = np.ascontiguousarray(blocks[:, 48:56]).view("<u2").astype(np.uint16)
        bits = ((sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0x00F0) | ((sc[:, 2] >> 4) & 0x0F00)
                | (sc[:, 3] & 0xF000)).astype(np.uint16)
        dm, qs = bits.view(np.float16), _words(blocks)
    elif t == T.TQ1_0:
        dm, qs = _halves(blocks[:, 52:54]), _words(blocks[:, 0:52])
    elif t == T.TQ2_0:
        dm, qs = _halves(blocks[:, 64:66]), _words(blocks[:, 0:64])
    elif t == T.MXFP4:  # aux row: the exponent bytes, four blocks a word
        qs, dm = _words(blocks[:, 1:17]), _EMPTY_F16
        e = blocks[:, 0].reshape(rows, nb)
        if nb % 4:
            e = np.concatenate([e, np.zeros((rows, 4 - nb % 4), np.uint8)], axis=1)
        aux = _words(e)
    elif t == T.Q2_K:
        dm, aux, qs = _halves(blocks[:, 80:84]), _words(blocks[:, 0:16]), _words(blocks[:, 16:80])
    elif t == T.Q3_K:  # aux: 3 scale words, then 8 hmask words (as Q5_K)
        dm, qs = _halves(blocks[:, 108:110]), _words(blocks[:, 32:96])
        aux = np.concatenate([_words(blocks[:, 96:108]), _words(blocks[:, 0:32])], axis=1)
    elif t == T.Q4_K:
        dm, aux, qs = _halves(blocks[:, 0:4]), _words(blocks[:, 4:16]), _words(blocks[:, 16:144])
    elif t == T.Q5_K:  # aux: 3 scale words, then 8 high-bit words
        dm, qs = _halves(blocks[:, 0:4]), _words(blocks[:, 48:176])
        aux = np.concatenate([_words(blocks[:, 4:16]), _words(blocks[:, 16:48])], axis=1)
    else:  # Q6_K; aux: 16 high-bit words, then 4 words of int8 scales
        qs, dm = _words(blocks[:, 0:128]), _halves(blocks[:, 208:210])
        aux = np.concatenate([_words(blocks[:, 128:192]), _words(blocks[:, 192:208])], axis=1)
    return PackedWeight(
        int(t), rows, cols, qs.reshape(rows, -1),
        aux.reshape(rows, -1) if aux is not None else _EMPTY_U32,
        dm if dm is _EMPTY_F16 else dm.reshape(rows, -1), _EMPTY_F32, int(t))


# --- the unit map and the numpy twin of the device decoder --------------------------------

def unit_columns(ggml_type: int, u: np.ndarray):
    """Columns (c0, c1) of the two 4-element runs of unit(s) u (the device's unit_cols)."""
    t = T(ggml_type)
    u = np.asarray(u, np.int64)
    if t in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.IQ4_NL, T.IQ4_XS, T.MXFP4):
        # word w of a 32-element block (IQ4_XS: sub-block): nibbles of elements 4w.., 16+4w..
        c0 = 32 * (u // 4) + 4 * (u % 4)
        return c0, c0 + 16
    if t == T.Q8_0:                              # words 2v, 2v+1 of block b: elements 8v .. 8v+7
        c0 = 32 * (u // 4) + 8 * (u % 4)
        return c0, c0 + 4
    if t in (T.Q4_K, T.Q5_K):                    # word w: chunk w//8, low and high nibbles 32 apart
        w = u % 32
        c0 = 256 * (u // 32) + 64 * (w // 8) + 4 * (w % 8)
        return c0, c0 + 32
    if t == T.Q6_K:                              # ql word w: half w//16, low and high nibbles 64 apart
        w = u % 32
        c0 = 256 * (u // 32) + 128 * (w // 16) + 4 * (w % 16)
        return c0, c0 + 64
    if t == T.TQ1_0:
        l, base = u % 32, 256 * (u // 32)
        a = 32 * (l // 4) + 4 * (l % 4)                             # l < 20: digit l // 4
        b = 160 + 16 * ((l - 20) // 2) + 4 * ((l - 20) % 2)         # l < 30: digit (l - 20) // 2
        c = 240 + 8 * (l - 30)                                      # the qh word
        c0 = base + np.where(l < 20, a, np.where(l < 30, b, c))
        return c0, c0 + np.where(l < 20, 16, np.where(l < 30, 8, 4))
    if t in (T.Q2_K, T.Q3_K, T.TQ2_0):           # qs word w, fields 2p and 2p+1: 32 apart
        w, p = u % 16, (u // 16) % 2
        c0 = 256 * (u // 32) + 128 * (w // 8) + 64 * p + 4 * (w % 8)
        return c0, c0 + 32
    assert t in _RUNS_OF_8, t
    return 8 * u, 8 * u + 4                      # F16, F32, the lattice types


def _nib(q: np.ndarray, k: int, high: bool) -> np.ndarray:
    return ((q >> np.uint32(8 * k + (4 if high else 0))) & np.uint32(15)).astype(np.int32)


def _byte(w: np.ndarray, k) -> np.ndarray:
    return ((w >> (np.uint32(8) * np.asarray(k, np.uint32))) & np.uint32(255)).astype(np.int32)


def _scale_min_k4(b: np.ndarray):
    """(..., 12) packed bytes -> 6-bit scales and mins (..., 8), by the device's per-j rule."""
    sc = np.empty(b.shape[:-1] + (8,), np.float32)
    mn = np.empty_like(sc)
    for j in range(8):
        if j < 4:
            sc[..., j] = b[..., j] & 63
            mn[..., j] = b[..., j + 4] & 63
        else:
            sc[..., j] = (b[..., j + 4] & 15) | ((b[..., j - 4] >> 6) << 4)
            mn[..., j] = (b[..., j + 4] >> 4) | ((b[..., j] >> 6) << 4)
    return sc, mn


def _q3k_scale(w0, w1, w2, j):
    """Q3_K's signed 6-bit scale j from its 12 scale bytes (words w0..w2), as the device."""
    lo = np.where(j % 8 < 4, w0, w1) >> (8 * (j % 4) + 4 * (j // 8)).astype(np.uint32)
    hi = w2 >> (8 * (j % 4) + 2 * (j // 4)).astype(np.uint32)
    lo, hi = lo & np.uint32(15), hi & np.uint32(3)
    return (lo | (hi << np.uint32(4))).astype(np.int32) - 32


# --- the ternary types, MXFP4 and the lattice types: (rows, U) units -> (rows, U, 8) values

_F05, _F025, _EIGHTH = np.float32(0.5), np.float32(0.25), np.float32(0.125)


def _bits(w, sh, n):
    """int32 field of n bits at bit sh of uint32 word(s) w."""
    return ((w >> np.asarray(sh, np.uint32)) & np.uint32((1 << n) - 1)).astype(np.int32)


def _grid8(table, idx):
    """(..., 8) int32 bytes of 8-wide grid rows idx (uint8, or int8 for IQ1S_W)."""
    w = table[idx]                                                   # (..., 2)
    b = np.stack([_bits(w[..., j // 4], 8 * (j % 4), 8) for j in range(8)], axis=-1)
    return b - ((b & 128) << 1) if table is IQ1S_W else b


def _grid4x2(table, i0, i1):
    """(..., 8): two 4-wide grid rows i0, i1 side by side."""
    return np.stack([_bits(table[i], 8 * j, 8) for i in (i0, i1) for j in range(4)], axis=-1)


def _signed8(db, g, sign_byte):
    """db * g, negated where bit j of the sign byte is set (the reference's exact negation)."""
    v = db[..., None] * g.astype(np.float32)
    neg = np.stack([(sign_byte >> j) & 1 for j in range(8)], axis=-1).astype(bool)
    return np.where(neg, -v, v)


def _twin_tq1_0(pw, u):
    s, l = u // 32, u % 32
    d = pw.dm[:, s].astype(np.float32)[..., None]
    wa = np.where(l < 20, l % 4, np.where(l < 30, 8 + (l - 20) % 2, 12))
    wb = np.where(l < 20, wa + 4, np.where(l < 30, wa + 2, 12))
    n0 = np.where(l < 20, l // 4, np.where(l < 30, (l - 20) // 2, 2 * (l - 30)))
    n1 = np.where(l < 30, n0, n0 + 1)
    out = []
    for w, n in ((wa, n0), (wb, n1)):
        q = pw.qs[:, 13 * s + w]
        for k in range(4):
            b = _bits(q, 8 * k, 8)
            out.append((((b * POW3[n]) & 255) * 3) >> 8)             # the base-3 digit n
    return d * (np.stack(out, axis=-1) - 1).astype(np.float32)


def _twin_tq2_0(pw, u):
    s, w, p = u // 32, u % 16, (u // 16) % 2
    q = pw.qs[:, 16 * s + w]
    d = pw.dm[:, s].astype(np.float32)[..., None]
    f = np.stack([_bits(q, 8 * k + 4 * p + 2 * half, 2) for half in (0, 1) for k in range(4)], axis=-1)
    return d * (f - 1).astype(np.float32)


def _twin_mxfp4(pw, u):
    b = u // 4
    e = _bits(pw.aux[:, b // 4], 8 * (b % 4), 8).astype(np.uint32)
    h = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23)).astype(np.uint32)
    h = h.view(np.float32)[..., None]
    nib = np.stack([_bits(pw.qs, 8 * k + 4 * half, 4) for half in (0, 1) for k in range(4)], axis=-1)
    with np.errstate(over="ignore"):
        return h * KVALUES_MXFP4[nib]


def _half_scale(d, ls, tail):
    return (d * (_F05 + ls.astype(np.float32))) * tail


def _twin_iq2_xxs(pw, u):
    s, g, k = u // 32, (u % 32) // 4, u % 4
    a, b = pw.qs[:, 16 * s + 2 * g], pw.qs[:, 16 * s + 2 * g + 1]
    db = _half_scale(pw.dm[:, s].astype(np.float32), _bits(b, 28, 4), _F025)
    return _signed8(db, _grid8(IQ2XXS_W, _bits(a, 8 * k, 8)), KSIGNS[_bits(b, 7 * k, 7)])


def _iq2_ls(pw, s, l, base):
    """IQ2_XS/IQ2_S 4-bit scale of unit l: nibble (l // 2) % 2 of scale byte l // 4."""
    return _bits(pw.qs[:, base * s + base - 2 + l // 16], 8 * ((l // 4) % 4) + 4 * ((l // 2) % 2), 4)


def _twin_iq2_xs(pw, u):
    s, l = u // 32, u % 32
    q = _bits(pw.qs[:, 18 * s + l // 2], 16 * (l % 2), 16)
    db = _half_scale(pw.dm[:, s].astype(np.float32), _iq2_ls(pw, s, l, 18), _F025)
    return _signed8(db, _grid8(IQ2XS_W, q & 511), KSIGNS[q >> 9])


def _twin_iq2_s(pw, u):
    s, l = u // 32, u % 32
    w = 20 * s
    hi = _bits(pw.qs[:, w + 16 + l // 16], 8 * ((l // 4) % 4) + 2 * (l % 4), 2)
    idx = _bits(pw.qs[:, w + l // 4], 8 * (l % 4), 8) | (hi << 8)
    db = _half_scale(pw.dm[:, s].astype(np.float32), _iq2_ls(pw, s, l, 20), _F025)
    return _signed8(db, _grid8(IQ2S_W, idx), _bits(pw.qs[:, w + 8 + l // 4], 8 * (l % 4), 8))


def _twin_iq3_xxs(pw, u):
    s, g, k = u // 32, (u % 32) // 4, u % 4
    q = pw.qs[:, 24 * s + 2 * g + k // 2]
    sw = pw.qs[:, 24 * s + 16 + g]
    db = _half_scale(pw.dm[:, s].astype(np.float32), _bits(sw, 28, 4), _F05)
    grid = _grid4x2(IQ3XXS_W, _bits(q, 16 * (k % 2), 8), _bits(q, 16 * (k % 2) + 8, 8))
    return _signed8(db, grid, KSIGNS[_bits(sw, 7 * k, 7)])


def _twin_iq3_s(pw, u):
    s, l = u // 32, u % 32
    w = 26 * s
    q = pw.qs[:, w + l // 2]
    qh = _bits(pw.qs[:, w + 16 + l // 16], 8 * ((l // 4) % 4) + 2 * (l % 4), 2)
    i0 = _bits(q, 16 * (l % 2), 8) | ((qh & 1) << 8)
    i1 = _bits(q, 16 * (l % 2) + 8, 8) | ((qh >> 1) << 8)
    ls = _bits(pw.aux[:, s], 4 * (l // 4), 4)
    db = pw.dm[:, s].astype(np.float32) * (1 + 2 * ls).astype(np.float32)
    return _signed8(db, _grid4x2(IQ3S_W, i0, i1), _bits(pw.qs[:, w + 18 + l // 4], 8 * (l % 4), 8))


def _iq1(dl, idx, neg_delta):
    delta = np.where(neg_delta, -_EIGHTH, _EIGHTH).astype(np.float32)
    return dl[..., None] * (_grid8(IQ1S_W, idx).astype(np.float32) + delta[..., None])


def _twin_iq1_s(pw, u):
    s, g, k = u // 32, (u % 32) // 4, u % 4
    qh = _bits(pw.qs[:, 12 * s + 8 + g // 2], 16 * (g % 2), 16)
    dl = pw.dm[:, s].astype(np.float32) * (2 * ((qh >> 12) & 7) + 1).astype(np.float32)
    idx = _bits(pw.qs[:, 12 * s + g], 8 * k, 8) | (((qh >> (3 * k)) & 7) << 8)
    return _iq1(dl, idx, (qh >> 15) != 0)


def _twin_iq1_m(pw, u):
    s, l = u // 32, u % 32
    w = 14 * s
    nib = _bits(pw.qs[:, w + 8 + l // 8], 8 * ((l // 2) % 4) + 4 * (l % 2), 4)
    sc = _bits(pw.qs[:, w + 12 + l // 16], 16 * ((l // 8) % 2) + 3 * ((l // 2) % 4), 3)
    dl = pw.dm[:, s].astype(np.float32) * (2 * sc + 1).astype(np.float32)
    idx = _bits(pw.qs[:, w + l // 4], 8 * (l % 4), 8) | ((nib & 7) << 8)
    return _iq1(dl, idx, (nib & 8) != 0)


_TWINS = {T.TQ1_0: _twin_tq1_0, T.TQ2_0: _twin_tq2_0, T.MXFP4: _twin_mxfp4,
          T.IQ2_XXS: _twin_iq2_xxs, T.IQ2_XS: _twin_iq2_xs, T.IQ2_S: _twin_iq2_s,
          T.IQ3_XXS: _twin_iq3_xxs, T.IQ3_S: _twin_iq3_s, T.IQ1_S: _twin_iq1_s, T.IQ1_M: _twin_iq1_m}


def decode_units_numpy(pw: PackedWeight) -> np.ndarray:
    """(rows, cols) float32 from the packed planes, unit by unit, in the device's arithmetic."""
    t = T(pw.ggml_type)
    rows, n_units = pw.rows, pw.units
    u = np.arange(n_units)[None, :]                          # (1, U)
    out = np.zeros((rows, pw.cols), np.float32)
    c0, c1 = unit_columns(t, u[0])
    vals = np.zeros((rows, n_units, 8), np.float32)
    if t == T.F32:
        vals = pw.fw.reshape(rows, n_units, 8)
    elif t == T.F16:
        vals = pw.dm.astype(np.float32).reshape(rows, n_units, 8)
    elif t in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        q = pw.qs                                            # (rows, U): one word per unit
        b = u // 4
        two = t in (T.Q4_1, T.Q5_1)
        d = pw.dm[:, (2 * b if two else b)[0]].astype(np.float32)
        m = pw.dm[:, 2 * b[0] + 1].astype(np.float32) if two else None
        for k in range(4):
            for half in (0, 1):
                n = _nib(q, k, bool(half))
                if t in (T.Q5_0, T.Q5_1):
                    bit = 4 * (u % 4) + k + 16 * half       # element index inside the block
                    qh = pw.aux[:, b[0]]
                    n = n | (((qh >> bit.astype(np.uint32)) & np.uint32(1)).astype(np.int32) << 4)
                if m is None:
                    off = 16 if t == T.Q5_0 else 8
                    vals[:, :, 4 * half + k] = d * (n - off).astype(np.float32)
                else:
                    vals[:, :, 4 * half + k] = d * n.astype(np.float32) + m
    elif t == T.Q8_0:
        b, v = u // 4, u % 4
        d = pw.dm[:, b[0]].astype(np.float32)
        for half in (0, 1):
            w = pw.qs[:, (8 * b + 2 * v + half)[0]]
            for k in range(4):
                x = _byte(w, k)
                vals[:, :, 4 * half + k] = d * np.where(x > 127, x - 256, x).astype(np.float32)
    elif t in (T.Q4_K, T.Q5_K):
        s, w = u // 32, u % 32
        d = pw.dm[:, 2 * s[0]].astype(np.float32)
        dmin = pw.dm[:, 2 * s[0] + 1].astype(np.float32)
        na = 11 if t == T.Q5_K else 3
        nsb = pw.cols // 256
        sc_bytes = np.ascontiguousarray(pw.aux.reshape(rows, nsb, na)[:, :, :3]).view(np.uint8)
        sc_all, mn_all = _scale_min_k4(sc_bytes.astype(np.int32))   # (rows, nsb, 8)
        for half in (0, 1):
            j = 2 * (w // 8) + half                                   # sub-block of these elements
            dl = d * sc_all[:, s[0], j[0]]
            ml = dmin * mn_all[:, s[0], j[0]]
            for k in range(4):
                n = _nib(pw.qs, k, bool(half))
                if t == T.Q5_K:
                    qh = pw.aux[:, (11 * s + 3 + w % 8)[0]]
                    bit = (np.uint32(8 * k) + j[0].astype(np.uint32))
                    n = n | (((qh >> bit) & np.uint32(1)).astype(np.int32) << 4)
                vals[:, :, 4 * half + k] = dl * n.astype(np.float32) - ml
    elif t in (T.IQ4_NL, T.IQ4_XS):
        if t == T.IQ4_NL:
            d = pw.dm[:, (u // 4)[0]].astype(np.float32)
        else:
            s, j = (u // 32)[0], ((u // 4) % 8)[0]
            lo = (pw.aux[:, s] >> (4 * j).astype(np.uint32)) & np.uint32(15)
            hw = pw.aux[:, pw.cols // 256 + s // 2]               # the 16-bit highs, two blocks a word
            hi = (hw >> (16 * (s % 2) + 2 * j).astype(np.uint32)) & np.uint32(3)
            ls = (lo | (hi << np.uint32(4))).astype(np.int32) - 32
            d = pw.dm[:, s].astype(np.float32) * ls.astype(np.float32)
        for k in range(4):
            for half in (0, 1):
                vals[:, :, 4 * half + k] = d * _KVALUES[_nib(pw.qs, k, bool(half))]
    elif t in (T.Q2_K, T.Q3_K):  # TQ2_0: the same fields (_twin_tq2_0)
        s, w, p = (u // 32)[0], (u % 16)[0], ((u // 16) % 2)[0]
        q = pw.qs[:, 16 * s + w]
        j0 = 8 * (w // 8) + 4 * p + (w % 8) // 4             # sub-block (of 16) of the first run
        if t == T.Q3_K:
            w0, w1, w2 = (pw.aux[:, 11 * s + i] for i in range(3))
            hm = pw.aux[:, 11 * s + 3 + w % 8]
        for half in (0, 1):
            j = j0 + 2 * half
            sh = (4 * p + 2 * half).astype(np.uint32)        # the 2-bit field of each byte
            if t == T.Q2_K:
                sc = _byte(pw.aux[:, 4 * s + j // 4], j % 4)
                dl = pw.dm[:, 2 * s].astype(np.float32) * (sc & 15).astype(np.float32)
                ml = pw.dm[:, 2 * s + 1].astype(np.float32) * (sc >> 4).astype(np.float32)
            else:
                dl = pw.dm[:, s].astype(np.float32) * _q3k_scale(w0, w1, w2, j).astype(np.float32)
                hs = (4 * (w // 8) + 2 * p + half).astype(np.uint32)  # hmask bit of these elements
            for k in range(4):
                n = ((q >> (np.uint32(8 * k) + sh)) & np.uint32(3)).astype(np.int32)
                if t == T.Q2_K:
                    vals[:, :, 4 * half + k] = dl * n.astype(np.float32) - ml
                else:
                    n = (n | (((hm >> (np.uint32(8 * k) + hs)) & np.uint32(1)).astype(np.int32) << 2)) - 4
                    vals[:, :, 4 * half + k] = dl * n.astype(np.float32)
    elif t in _TWINS:
        vals = _TWINS[t](pw, u[0]).astype(np.float32)
    elif t == T.Q6_K:
        s, w = u // 32, u % 32
        h, j = w // 16, 4 * (w % 16)
        d = pw.dm[:, s[0]].astype(np.float32)
        qh = pw.aux[:, (20 * s + 8 * h + (j % 32) // 4)[0]]
        for half in (0, 1):
            idx = 8 * h + 4 * half + j // 16
            scw = pw.aux[:, (20 * s + 16 + idx // 4)[0]]
            sc = _byte(scw, (idx % 4)[0])
            sc = np.where(sc > 127, sc - 256, sc).astype(np.float32)
            shift = (2 * (2 * half + j // 32)).astype(np.uint32)
            for k in range(4):
                lo = _nib(pw.qs, k, bool(half))
                hi = ((qh >> (np.uint32(8 * k) + shift[0])) & np.uint32(3)).astype(np.int32)
                vals[:, :, 4 * half + k] = (d * sc) * ((lo | (hi << 4)) - 32).astype(np.float32)
    else:
        raise KernelInputError(f"no device decoder for {t.name}")
    for k in range(4):
        out[:, c0 + k] = vals[:, :, k]
        out[:, c1 + k] = vals[:, :, 4 + k]
    return out
