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
(K-quant scale bytes and 2-byte scales padded to nothing, just regrouped). One exception
in size: IQ4_XS's 16-bit high-scale field goes two blocks to a word at the end of the row's
aux, so a row of an odd number of its blocks carries 2 bytes of padding.

Every type is decoded in *units* of 8 elements: unit u of a row yields two runs of 4
consecutive columns, ``c0 .. c0+3`` and ``c1 .. c1+3`` (``unit_columns``). One unit is one
qs word for the 4-bit types (its 4 low nibbles and 4 high nibbles), two words for Q8_0,
half a word for Q2_K/Q3_K (two of the four 2-bit fields of each byte: the units 16 apart
share the word), 8 consecutive values for F16/F32. ``decode_units_numpy`` is the vectorised
twin of the device decoder (``qdecode.unit_decode``) and is checked against the CPU
reference dequantisers.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ...errors import KernelInputError
from ...gguf.constants import GGMLType
from ..ref_legacy import IQ4_NL_KVALUES

log = logging.getLogger("abi.kernels.cuda")
_KVALUES = IQ4_NL_KVALUES.astype(np.float32)

T = GGMLType
# types the device decodes natively; any other stored type is widened at upload
NATIVE = (T.F32, T.F16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL,
          T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS)


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
        dm.reshape(rows, -1), _EMPTY_F32, int(t))


# --- the unit map and the numpy twin of the device decoder --------------------------------

def unit_columns(ggml_type: int, u: np.ndarray):
    """Columns (c0, c1) of the two 4-element runs of unit(s) u (the device's unit_cols)."""
    t = T(ggml_type)
    u = np.asarray(u, np.int64)
    if t in (T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.IQ4_NL, T.IQ4_XS):
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
    if t in (T.Q2_K, T.Q3_K):                    # qs word w, fields 2p and 2p+1: 32 apart
        w, p = u % 16, (u // 16) % 2
        c0 = 256 * (u // 32) + 128 * (w // 8) + 64 * p + 4 * (w % 8)
        return c0, c0 + 32
    return 8 * u, 8 * u + 4                      # F16, F32


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
    elif t in (T.Q2_K, T.Q3_K):
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
