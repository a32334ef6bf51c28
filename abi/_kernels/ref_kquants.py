"""Numpy references for the 256-element super-block types (k-quants and IQ4_XS).

Functions take or return ``(n_blocks, type_size)`` uint8 / ``(n_blocks, 256)`` float32, with
float32 arithmetic in the same order as the Cython twins (bit-exact with each other, and
with the ``gguf`` package for dequantisation). Layouts (byte offsets, e = element 0..255):

    Q2_K (84)  [scales:16][qs:64][d:f16][dmin:f16]
               16 sub-blocks of 16; scales[j] = sc | m << 4 (4 bits each)
               q_e = qs[32h + i] >> 2s & 3 with e = 128h + 32s + i
               x_e = (d * sc_j) * q_e - (dmin * m_j),  j = e // 16
    Q3_K (110) [hmask:32][qs:64][scales:12][d:f16]
               q_e = (qs[32h + i] >> 2s & 3) - 4 * (1 - (hmask[i'] >> k & 1)), e = 128h + 32s + i
               = 32k + i'; 16 six-bit scales: low 4 bits in nibbles of bytes 0..7 (j < 8: low
               nibble of byte j, else high nibble of byte j - 8), top 2 bits in bytes 8..11
               (byte 8 + j % 4, bits 2 * (j // 4)); x_e = (d * (sc_j - 32)) * q_e
    Q4_K (144) [d:f16][dmin:f16][scales:12][qs:128]
               8 sub-blocks of 32 with 6-bit (sc_j, m_j) packed in 12 bytes:
                 bytes 0-3: sc_0..3 | (sc_4..7 >> 4) << 6,  bytes 4-7: m_0..3 | (m_4..7 >> 4) << 6,
                 bytes 8-11: (sc_4..7 & 15) | (m_4..7 & 15) << 4
               qs[32c + i]: low nibble is sub-block 2c, high nibble sub-block 2c + 1
               x = (d * sc_j) * q - (dmin * m_j)
    Q5_K (176) [d:f16][dmin:f16][scales:12][qh:32][qs:128]   as Q4_K, plus bit 4 of q from
               qh[i] >> j & 1 (sub-block j, element i)
    Q6_K (210) [ql:128][qh:64][scales:16 int8][d:f16]
               16 sub-blocks of 16; e = 128h + r: low 4 bits = ql[64h + r % 64] >> 4 * (r // 64),
               high 2 bits = qh[32h + r % 32] >> 2 * (r // 32); x = (d * sc_j) * (q - 32)
    Q8_K (292) [d:f32][qs:256 int8][bsums:16 int16]   x = d * q; bsums are sums of 16 q's
    IQ4_XS (136) [d:f16][scales_h:u16][scales_l:4][qs:128]
               8 sub-blocks of 32, 6-bit scale ls_j = (scales_l[j // 2] >> 4 * (j % 2) & 15
               | (scales_h >> 2j & 3) << 4) - 32; qs[16j + i]: low nibble element i, high
               nibble element i + 16; x = (d * ls_j) * KVALUES[q]
"""
from __future__ import annotations

import numpy as np

from .ref_legacy import IQ4_NL_KVALUES, _f16

QK_K = 256


# --- unpacking shared by Q4_K / Q5_K -------------------------------------------------------

def unpack_scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 12) packed -> two (n, 8) uint8: the 6-bit scales and mins."""
    a, b, c = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = np.concatenate([a & 63, (c & 15) | ((a >> 6) << 4)], axis=1)
    mn = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=1)
    return sc, mn


def pack_scale_min_k4(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    a = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    b = (mn[:, 0:4] & 63) | ((mn[:, 4:8] >> 4) << 6)
    c = (sc[:, 4:8] & 15) | ((mn[:, 4:8] & 15) << 4)
    return np.concatenate([a, b, c], axis=1).astype(np.uint8)


# --- dequantise ---------------------------------------------------------------------------

def dequantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    scales, qs = blocks[:, 0:16], blocks[:, 16:80]
    d, dmin = _f16(blocks[:, 80:82]), _f16(blocks[:, 82:84])
    dl = (d * (scales & 15).astype(np.float32))[:, :, None]     # (n, 16, 1)
    ml = (dmin * (scales >> 4).astype(np.float32))[:, :, None]
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]
    q = (qs.reshape(n, 2, 1, 32) >> shifts) & np.uint8(3)        # (n, h, s, i)
    q = q.reshape(n, 16, 16).astype(np.float32)
    return (dl * q - ml).reshape(n, QK_K)


def _q3_k_scales(scales: np.ndarray) -> np.ndarray:
    low = np.concatenate([scales[:, 0:8] & 15, scales[:, 0:8] >> 4], axis=1)          # (n, 16)
    high = np.concatenate([(scales[:, 8:12] >> s) & 3 for s in (0, 2, 4, 6)], axis=1)  # (n, 16)
    return (low | (high << 4)).astype(np.int8) - np.int8(32)


def dequantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    hmask, qs, scales = blocks[:, 0:32], blocks[:, 32:96], blocks[:, 96:108]
    d = _f16(blocks[:, 108:110])
    dl = (d * _q3_k_scales(scales).astype(np.float32))[:, :, None]
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]
    low = ((qs.reshape(n, 2, 1, 32) >> shifts) & np.uint8(3)).reshape(n, QK_K).astype(np.int8)
    bits = np.arange(8, dtype=np.uint8)[None, :, None]
    high = ((hmask.reshape(n, 1, 32) >> bits) & np.uint8(1)).reshape(n, QK_K).astype(np.int8)
    q = (low - np.int8(4) * (np.int8(1) - high)).astype(np.float32).reshape(n, 16, 16)
    return (dl * q).reshape(n, QK_K)


def _k4_values(blocks: np.ndarray, qs: np.ndarray, qh: np.ndarray | None) -> np.ndarray:
    n = blocks.shape[0]
    d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    sc, mn = unpack_scale_min_k4(blocks[:, 4:16])
    dl = (d * sc.astype(np.float32))[:, :, None]                 # (n, 8, 1)
    ml = (dmin * mn.astype(np.float32))[:, :, None]
    q = qs.reshape(n, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8)[None, None, :, None]
    q = (q & np.uint8(15)).reshape(n, 8, 32)
    if qh is not None:
        high = (qh.reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8)[None, :, None]) & np.uint8(1)
        q = q | (high << np.uint8(4))
    return (dl * q.astype(np.float32) - ml).reshape(n, QK_K)


def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    return _k4_values(blocks, blocks[:, 16:144], None)


def dequantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    return _k4_values(blocks, blocks[:, 48:176], blocks[:, 16:48])


def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    ql, qh, scales = blocks[:, 0:128], blocks[:, 128:192], blocks[:, 192:208]
    d = _f16(blocks[:, 208:210])
    dl = (d * scales.view(np.int8).astype(np.float32))[:, :, None]   # (n, 16, 1)
    low = (ql.reshape(n, 2, 1, 64) >> np.array([0, 4], dtype=np.uint8)[None, None, :, None]) & np.uint8(15)
    high = (qh.reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]) & np.uint8(3)
    q = (low.reshape(n, QK_K) | (high.reshape(n, QK_K) << np.uint8(4))).astype(np.int8) - np.int8(32)
    return (dl * q.astype(np.float32).reshape(n, 16, 16)).reshape(n, QK_K)


def dequantize_q8_k(blocks: np.ndarray) -> np.ndarray:
    d = np.ascontiguousarray(blocks[:, 0:4]).view(np.float32)
    return d * blocks[:, 4:260].view(np.int8).astype(np.float32)


def dequantize_iq4_xs(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d = _f16(blocks[:, 0:2])
    scales_h = np.ascontiguousarray(blocks[:, 2:4]).view(np.uint16)     # (n, 1)
    scales_l = blocks[:, 4:8]
    low = np.stack([scales_l & 15, scales_l >> 4], axis=2).reshape(n, 8)
    high = ((scales_h >> (2 * np.arange(8, dtype=np.uint16))[None, :]) & 3).astype(np.uint8)
    ls = (low | (high << 4)).astype(np.int8) - np.int8(32)
    dl = (d * ls.astype(np.float32))[:, :, None]
    qs = blocks[:, 8:136].reshape(n, 8, 16)
    q = np.concatenate([qs & 15, qs >> 4], axis=2)                          # (n, 8, 32)
    return (dl * IQ4_NL_KVALUES[q].astype(np.float32)).reshape(n, QK_K)


# --- quantise (the Q8_K activations; the k-quant weight quantisers are in ref_search.py) ---

def quantize_q8_k(x: np.ndarray) -> np.ndarray:
    """llama.cpp's quantize_row_q8_K: m = the first element of largest |x|, iscale = -127 / m,
    q = min(127, round-half-even(iscale * x)), d = 1 / iscale (f32; 0 for an all-zero block),
    bsums = sums of 16 consecutive q."""
    n = x.shape[0]
    m = x[np.arange(n), np.abs(x).argmax(axis=1)][:, None]
    zero = m == 0
    iscale = np.where(zero, np.float32(0), np.float32(-127) / np.where(zero, np.float32(1), m))
    q = np.minimum(np.rint(x * iscale), np.float32(127)).astype(np.int8)
    d = np.where(zero, np.float32(0), np.float32(1) / np.where(zero, np.float32(1), iscale))
    bsums = q.reshape(n, 16, 16).astype(np.int16).sum(axis=2, dtype=np.int16)
    return np.concatenate([d.astype(np.float32).view(np.uint8), q.view(np.uint8),
                           np.ascontiguousarray(bsums).view(np.uint8)], axis=1)
