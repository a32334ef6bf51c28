"""Numpy references for the lattice ("IQ") types, the ternary types and MXFP4.

Functions take ``(n_blocks, type_size)`` uint8 and return ``(n_blocks, block_size)`` float32,
with float32 arithmetic in the same order as the Cython twins (``_dq_*`` in dequant.pyx), so
both agree bit for bit, and with the ``gguf`` package. The grids (rows of 8 or 4 element
values, looked up by an index stored in the block) come from ``iq_tables`` and are decoded
on first use. Layouts (byte offsets; multi-byte fields little-endian; e = element 0..255;
sign(b) = -1 if bit b of the sign byte is set else +1; ls = a 4-bit scale):

    IQ2_XXS (66)  [d:f16][8 groups of 32: u32 a, u32 b]
                  a: four grid indices (bytes); b: four 7-bit sign indices at bits 0, 7, 14,
                  21, ls at bits 28..31. db = d * (0.5 + ls) * 0.25; elements 8k..8k+7 of a
                  group: db * IQ2XXS_GRID[a.byte k][j] * sign_j(KSIGNS[b >> 7k & 127])
    IQ2_XS  (74)  [d:f16][qs:32 u16][scales:8]
                  qs[l] (8 elements each): grid index l & 511, sign index l >> 9;
                  ls of qs[l] = scales[l // 4] nibble (low for l % 4 < 2, else high);
                  x = db * IQ2XS_GRID[idx][j] * sign_j(KSIGNS[sidx]), db as IQ2_XXS
    IQ2_S   (82)  [d:f16][qs:32][signs:32][qh:8][scales:8]
                  group l (8 elements): idx = qs[l] | (qh[l // 4] >> 2 (l % 4) & 3) << 8,
                  sign bits = signs[l]; ls as IQ2_XS; x = db * IQ2S_GRID[idx][j] * sign_j
    IQ3_XXS (98)  [d:f16][qs:64][8 groups of 32: u32 s]
                  s: four 7-bit sign indices at bits 0, 7, 14, 21, ls at 28..31;
                  db = d * (0.5 + ls) * 0.5; grid rows hold 4 values: elements 8k + 4m + j
                  of group g: db * IQ3XXS_GRID[qs[8g + 2k + m]][j] * sign_{4m+j}(KSIGNS[s >> 7k & 127])
    IQ3_S  (110)  [d:f16][qs:64][qh:8][signs:32][scales:4]
                  row l (4 elements, 8 rows a group of 32): idx = qs[l] | (qh[l // 8] >> l % 8 & 1) << 8;
                  db_g = d * (1 + 2 ls_g), ls_g = scales[g // 2] nibble (low for even g);
                  x_e = db_g * IQ3S_GRID[idx][j] * sign(signs[e // 8] bit e % 8)
    IQ1_S   (50)  [d:f16][qs:32][qh:8 u16]
                  group g of 32 uses qh[g]: dl = d * (2 (qh >> 12 & 7) + 1),
                  delta = -1/8 if qh bit 15 else +1/8; row k (8 elements):
                  idx = qs[4g + k] | (qh >> 3k & 7) << 8; x = dl * (IQ1S_GRID[idx][j] + delta)
    IQ1_M   (56)  [qs:32][qh:16][sc:4 u16]
                  d: f16 whose four nibbles are the top nibbles of sc[0], sc[1], sc[2], sc[3]
                  (low to high); 16 three-bit scales s_k = sc[k // 4] >> 3 (k % 4) & 7, one per
                  16 elements; row r (8 elements): nibble n = qh[r // 2] >> 4 (r % 2),
                  idx = qs[r] | (n & 7) << 8, delta = -1/8 if n & 8 else +1/8;
                  x = (d * (2 s_{r // 2} + 1)) * (IQ1S_GRID[idx][j] + delta)
    TQ1_0   (54)  [qs:48][qh:4][d:f16]   ternary, five (qh: four) base-3 digits a byte:
                  digit n of byte b is ((b * 3^n mod 256) * 3) >> 8; e = 32n + i from qs[i]
                  (i < 32), 160 + 16n + i from qs[32 + i], 240 + 4n + i from qh[i];
                  x = d * (digit - 1)
    TQ2_0   (66)  [qs:64][d:f16]   e = 128h + 32s + i: q = qs[32h + i] >> 2s & 3; x = d * (q - 1)
    MXFP4   (17)  [e:u8][qs:16]   (32 elements) half-scale h = 2^(e - 128) as float32 bits
                  (e < 2: 0x00200000 << e, a subnormal; else (e - 1) << 23); low nibble of
                  qs[i] is element i, high nibble element i + 16: x = h * KVALUES_MXFP4[nibble]
                  (doubled E2M1 values; e = 255 gives h = 2^127, so large codes overflow to inf)
"""
from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import numpy as np

from .ref_legacy import _f16

QK_K = 256
_F05, _F025 = np.float32(0.5), np.float32(0.25)
_BITS8 = np.arange(8, dtype=np.uint8)


@lru_cache(maxsize=None)
def tables() -> SimpleNamespace:
    """The grids as arrays: (rows, width) uint8 (IQ1S_GRID int8), read on first use."""
    from . import iq_tables as T

    def grid(name: str, dtype=np.uint8) -> np.ndarray:
        a = np.frombuffer(getattr(T, name), dtype=dtype)
        return a.reshape(-1, getattr(T, name + "_WIDTH"))

    return SimpleNamespace(
        iq2xxs=grid("IQ2XXS_GRID"), iq2xs=grid("IQ2XS_GRID"), iq2s=grid("IQ2S_GRID"),
        iq3xxs=grid("IQ3XXS_GRID"), iq3s=grid("IQ3S_GRID"), iq1s=grid("IQ1S_GRID", np.int8),
        ksigns=np.frombuffer(T.KSIGNS_IQ2XS, dtype=np.uint8),
        kvalues_mxfp4=np.frombuffer(T.KVALUES_MXFP4, dtype=np.int8),
        iq1s_delta=np.float32(T.IQ1S_DELTA),
    )


def _sign_bits(b: np.ndarray) -> np.ndarray:
    """(...) uint8 -> (..., 8) bools, bit j of each byte."""
    return ((b[..., None] >> _BITS8) & np.uint8(1)).astype(bool)


def _signed(v: np.ndarray, neg: np.ndarray) -> np.ndarray:
    # v * -1.0f in C is an exact negation, sign of zero included
    return np.where(neg, -v, v)


def _u32(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view("<u4").astype(np.uint32)


def _u16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view("<u2").astype(np.uint16)


def _half_scale(d: np.ndarray, ls: np.ndarray, tail: np.float32) -> np.ndarray:
    """d * (0.5 + ls) * tail in float32, rounded after each step as the C is."""
    return (d * (_F05 + ls.astype(np.float32))) * tail


# --- IQ2 ----------------------------------------------------------------------------------

def dequantize_iq2_xxs(blocks: np.ndarray) -> np.ndarray:
    t = tables()
    n = blocks.shape[0]
    d = _f16(blocks[:, 0:2])                                         # (n, 1)
    g = blocks[:, 2:66].reshape(n, 8, 8)
    idx = g[:, :, 0:4]                                               # (n, 8, 4)
    b = _u32(g[:, :, 4:8])                                           # (n, 8, 1)
    db = _half_scale(d, b[:, :, 0] >> 28, _F025)                     # (n, 8)
    sidx = (b >> np.array([0, 7, 14, 21], dtype=np.uint32)) & np.uint32(127)
    neg = _sign_bits(t.ksigns[sidx])                                 # (n, 8, 4, 8)
    v = db[:, :, None, None] * t.iq2xxs[idx].astype(np.float32)
    return _signed(v, neg).reshape(n, QK_K)


def _iq2_scales(scales: np.ndarray) -> np.ndarray:
    """(n, 8) packed nibbles -> (n, 16): low nibble of byte i is scale 2i, high 2i + 1."""
    return np.stack([scales & np.uint8(15), scales >> np.uint8(4)], axis=2).reshape(scales.shape[0], 16)


def dequantize_iq2_xs(blocks: np.ndarray) -> np.ndarray:
    t = tables()
    n = blocks.shape[0]
    d = _f16(blocks[:, 0:2])
    qs = _u16(blocks[:, 2:66])                                       # (n, 32)
    db = _half_scale(d, _iq2_scales(blocks[:, 66:74]), _F025)        # (n, 16)
    neg = _sign_bits(t.ksigns[qs >> np.uint16(9)])                   # (n, 32, 8)
    v = db.repeat(2, axis=1)[:, :, None] * t.iq2xs[qs & np.uint16(511)].astype(np.float32)
    return _signed(v, neg).reshape(n, QK_K)


def dequantize_iq2_s(blocks: np.ndarray) -> np.ndarray:
    t = tables()
    n = blocks.shape[0]
    d = _f16(blocks[:, 0:2])
    qs, signs, qh = blocks[:, 2:34], blocks[:, 34:66], blocks[:, 66:74]
    high = (qh[:, :, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & np.uint8(3)   # (n, 8, 4)
    idx = qs.astype(np.uint16) | (high.reshape(n, 32).astype(np.uint16) << np.uint16(8))
    db = _half_scale(d, _iq2_scales(blocks[:, 74:82]), _F025)        # (n, 16)
    v = db.repeat(2, axis=1)[:, :, None] * t.iq2s[idx].astype(np.float32)
    return _signed(v, _sign_bits(signs)).reshape(n, QK_K)


# --- IQ3 ----------------------------------------------------------------------------------

def dequantize_iq3_xxs(blocks: np.ndarray) -> np.ndarray:
    t = tables()
    n = blocks.shape[0]
    d = _f16(blocks[:, 0:2])
    qs = blocks[:, 2:66]
    s = _u32(blocks[:, 66:98])                                       # (n, 8)
    db = _half_scale(d, s >> 28, _F05)                               # (n, 8)
    sidx = (s[:, :, None] >> np.array([0, 7, 14, 21], dtype=np.uint32)) & np.uint32(127)
    neg = _sign_bits(t.ksigns[sidx])                                 # (n, 8, 4, 8)
    grid = t.iq3xxs[qs].reshape(n, 8, 4, 8).astype(np.float32)      # two 4-rows per 8 signs
    return _signed(db[:, :, None, None] * grid, neg).reshape(n, QK_K)


def dequantize_iq3_s(blocks: np.ndarray) -> np.ndarray:
    t = tables()
    n = blocks.shape[0]
    d = _f16(blocks[:, 0:2])
    qs, qh, signs, scales = blocks[:, 2:66], blocks[:, 66:74], blocks[:, 74:106], blocks[:, 106:110]
    high = (qh[:, :, None] >> _BITS8) & np.uint8(1)                  # (n, 8, 8)
    idx = qs.astype(np.uint16) | (high.reshape(n, 64).astype(np.uint16) << np.uint16(8))
    ls = np.stack([scales & np.uint8(15), scales >> np.uint8(4)], axis=2).reshape(n, 8)
    db = d * (np.uint8(1) + np.uint8(2) * ls).astype(np.float32)    # (n, 8)
    grid = t.iq3s[idx].reshape(n, 8, 32).astype(np.float32)
    neg = _sign_bits(signs).reshape(n, 8, 32)
    return _signed(db[:, :, None] * grid, neg).reshape(n, QK_K)


# --- IQ1 ----------------------------------------------------------------------------------

def _iq1_values(dl: np.ndarray, idx: np.ndarray, neg_delta: np.ndarray) -> np.ndarray:
    """dl (n, 32) per row of 8, idx (n, 32) grid rows, neg_delta (n, 32) -> (n, 256)."""
    t = tables()
    delta = np.where(neg_delta, -t.iq1s_delta, t.iq1s_delta).astype(np.float32)
    grid = t.iq1s[idx].astype(np.float32)                            # (n, 32, 8)
    return (dl[:, :, None] * (grid + delta[:, :, None])).reshape(dl.shape[0], QK_K)


def dequantize_iq1_s(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d = _f16(blocks[:, 0:2])
    qs = blocks[:, 2:34]
    qh = _u16(blocks[:, 34:50])                                      # (n, 8)
    dl = d * (np.uint16(2) * ((qh >> np.uint16(12)) & np.uint16(7)) + np.uint16(1)).astype(np.float32)
    high = (qh[:, :, None] >> np.array([0, 3, 6, 9], dtype=np.uint16)) & np.uint16(7)   # (n, 8, 4)
    idx = qs.astype(np.uint16) | (high.reshape(n, 32) << np.uint16(8))
    neg = ((qh >> np.uint16(15)) != 0).repeat(4, axis=1)
    return _iq1_values(dl.repeat(4, axis=1), idx, neg)


def dequantize_iq1_m(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    qs, qh = blocks[:, 0:32], blocks[:, 32:48]
    sc = _u16(blocks[:, 48:56])                                      # (n, 4)
    d_bits = ((sc[:, 0] >> np.uint16(12)) | ((sc[:, 1] >> np.uint16(8)) & np.uint16(0x00F0))
              | ((sc[:, 2] >> np.uint16(4)) & np.uint16(0x0F00)) | (sc[:, 3] & np.uint16(0xF000)))
    d = d_bits.view(np.float16).astype(np.float32)[:, None]
    s = (sc[:, :, None] >> np.array([0, 3, 6, 9], dtype=np.uint16)) & np.uint16(7)   # (n, 4, 4)
    dl = d * (np.uint16(2) * s.reshape(n, 16) + np.uint16(1)).astype(np.float32)     # (n, 16)
    nib = np.stack([qh & np.uint8(15), qh >> np.uint8(4)], axis=2).reshape(n, 32)
    idx = qs.astype(np.uint16) | ((nib & np.uint8(7)).astype(np.uint16) << np.uint16(8))
    return _iq1_values(dl.repeat(2, axis=1), idx, (nib & np.uint8(8)) != 0)


# --- ternary ------------------------------------------------------------------------------

_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def _trits(b: np.ndarray, digits: int) -> np.ndarray:
    """(n, m) bytes -> (n, digits * m) int8 in -1..1, digit-major (e = m * digit + i)."""
    scaled = b[:, None, :] * _POW3[:digits, None]                    # uint8: wraps mod 256
    q = (scaled.astype(np.uint16) * np.uint16(3)) >> np.uint16(8)
    return (q.astype(np.int8) - np.int8(1)).reshape(b.shape[0], -1)


def dequantize_tq1_0(blocks: np.ndarray) -> np.ndarray:
    d = _f16(blocks[:, 52:54])
    q = np.concatenate([_trits(blocks[:, 0:32], 5), _trits(blocks[:, 32:48], 5),
                        _trits(blocks[:, 48:52], 4)], axis=1)
    return d * q.astype(np.float32)


def dequantize_tq2_0(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d = _f16(blocks[:, 64:66])
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]
    q = (blocks[:, 0:64].reshape(n, 2, 1, 32) >> shifts) & np.uint8(3)     # (n, h, s, i)
    return d * (q.reshape(n, QK_K).astype(np.int8) - np.int8(1)).astype(np.float32)


# --- MXFP4 --------------------------------------------------------------------------------

def e8m0_half(e: np.ndarray) -> np.ndarray:
    """E8M0 exponent byte -> 2^(e - 128) as float32 (half the scale: the values are doubled)."""
    e32 = e.astype(np.uint32)
    bits = np.where(e32 < 2, np.uint32(0x00200000) << e32, (e32 - np.uint32(1)) << np.uint32(23))
    return bits.astype(np.uint32).view(np.float32)


def dequantize_mxfp4(blocks: np.ndarray) -> np.ndarray:
    t = tables()
    h = e8m0_half(blocks[:, 0:1])                                    # (n, 1)
    qs = blocks[:, 1:17]
    k = t.kvalues_mxfp4[np.concatenate([qs & np.uint8(15), qs >> np.uint8(4)], axis=1)]
    with np.errstate(over="ignore"):            # e >= 253 with large codes: inf, as in C
        return h * k.astype(np.float32)
