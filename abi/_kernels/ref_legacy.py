"""Numpy references for the 32-element block types (ggml's "legacy" quants and IQ4_NL).

Every function takes or returns ``(n_blocks, type_size)`` uint8 blocks / ``(n_blocks, 32)``
float32 values. Arithmetic is float32 in the same order as the Cython twins, so both agree
bit for bit (and with the ``gguf`` package where it implements the type).

Block layouts (byte offsets; f16 = IEEE half; element i of the block):

    Q4_0  [d:f16][qs:16]             x_i = d * (q_i - 8)
    Q4_1  [d:f16][m:f16][qs:16]      x_i = d * q_i + m
    Q5_0  [d:f16][qh:4][qs:16]       x_i = d * (q_i - 16)
    Q5_1  [d:f16][m:f16][qh:4][qs:16] x_i = d * q_i + m
    Q8_0  [d:f16][qs:32 int8]        x_i = d * q_i
    Q8_1  [d:f16][s:f16][qs:32 int8] x_i = d * q_i,  s = d * sum(q)  (activations only)
    IQ4_NL [d:f16][qs:16]            x_i = d * KVALUES[q_i]

    qs (4-bit types): byte j holds q_j in its low nibble and q_{j+16} in its high nibble
    qh (5-bit types): little-endian u32, bit i is bit 4 of q_i
"""
from __future__ import annotations

import numpy as np

QK = 32
IQ4_NL_KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                          dtype=np.int8)


# --- helpers ------------------------------------------------------------------------------

def _f16(raw: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 -> (n, 1) float32."""
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    """(n, 1) float32 -> (n, 2) uint8, rounded to nearest even."""
    with np.errstate(over="ignore"):  # a scale past 65504 is inf, as in ggml's FP32_TO_FP16
        return np.ascontiguousarray(v.astype(np.float16)).view(np.uint8)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) packed -> (n, 32): low nibbles are elements 0..15, high nibbles 16..31."""
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=1)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    return (q[:, :16] & np.uint8(0x0F)) | (q[:, 16:] << np.uint8(4))


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """(n, 4) little-endian u32 -> (n, 32) of 0/1 (bit i of the u32 is element i)."""
    return np.unpackbits(np.ascontiguousarray(qh), axis=1, bitorder="little")


def _pack_fifth_bits(q: np.ndarray) -> np.ndarray:
    return np.packbits(q >> np.uint8(4), axis=1, bitorder="little")


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C's roundf (ties away from zero) on float32, exactly (floor(a + 0.5) is not)."""
    a = np.abs(v)
    f = np.floor(a)
    return np.copysign(f + (a - f >= np.float32(0.5)).astype(np.float32), v)


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _trunc_clip(v: np.ndarray, top: int) -> np.ndarray:
    """trunc(v) clipped to [0, top] as uint8; v is NaN-free here."""
    return np.clip(np.trunc(v), 0, top).astype(np.uint8)


def _signed_absmax(x: np.ndarray) -> np.ndarray:
    """The element of largest magnitude (first one on ties), keeping its sign: (n, 1)."""
    idx = np.abs(x).argmax(axis=1)
    return x[np.arange(x.shape[0]), idx][:, None]


# --- dequantise ---------------------------------------------------------------------------

def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    d = _f16(blocks[:, 0:2])
    q = _nibbles(blocks[:, 2:18]).astype(np.float32) - np.float32(8)
    return d * q


def dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    d, m = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    q = _nibbles(blocks[:, 4:20]).astype(np.float32)
    return d * q + m


def dequantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    d = _f16(blocks[:, 0:2])
    q = _nibbles(blocks[:, 6:22]) | (_fifth_bits(blocks[:, 2:6]) << np.uint8(4))
    return d * (q.astype(np.float32) - np.float32(16))


def dequantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    d, m = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    q = _nibbles(blocks[:, 8:24]) | (_fifth_bits(blocks[:, 4:8]) << np.uint8(4))
    return d * q.astype(np.float32) + m


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    d = _f16(blocks[:, 0:2])
    return d * blocks[:, 2:34].view(np.int8).astype(np.float32)


def dequantize_q8_1(blocks: np.ndarray) -> np.ndarray:
    d = _f16(blocks[:, 0:2])
    return d * blocks[:, 4:36].view(np.int8).astype(np.float32)


def dequantize_iq4_nl(blocks: np.ndarray) -> np.ndarray:
    d = _f16(blocks[:, 0:2])
    return d * IQ4_NL_KVALUES[_nibbles(blocks[:, 2:18])].astype(np.float32)


# --- quantise (bit-exact with gguf.quants for Q4_0 .. Q8_0) --------------------------------

def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    """d = (signed absmax) / -8, q = trunc(x / d + 8.5) clipped to 0..15."""
    d = _signed_absmax(x) / np.float32(-8)
    q = _trunc_clip(x * _inverse(d) + np.float32(8.5), 15)
    return np.concatenate([_f16_bytes(d), _pack_nibbles(q)], axis=1)


def quantize_q4_1(x: np.ndarray) -> np.ndarray:
    """d = (max - min) / 15, m = min, q = trunc((x - m) / d + 0.5) clipped to 0..15."""
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    d = (hi - lo) / np.float32(15)
    q = _trunc_clip((x - lo) * _inverse(d) + np.float32(0.5), 15)
    return np.concatenate([_f16_bytes(d), _f16_bytes(lo), _pack_nibbles(q)], axis=1)


def quantize_q5_0(x: np.ndarray) -> np.ndarray:
    d = _signed_absmax(x) / np.float32(-16)
    q = _trunc_clip(x * _inverse(d) + np.float32(16.5), 31)
    return np.concatenate([_f16_bytes(d), _pack_fifth_bits(q), _pack_nibbles(q)], axis=1)


def quantize_q5_1(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    d = (hi - lo) / np.float32(31)
    q = _trunc_clip((x - lo) * _inverse(d) + np.float32(0.5), 31)
    return np.concatenate([_f16_bytes(d), _f16_bytes(lo), _pack_fifth_bits(q), _pack_nibbles(q)], axis=1)


def _q8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)
    q = round_half_away(x * _inverse(d)).astype(np.int8)
    return d, q


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """d = absmax / 127, q = round(x / d) (ties away from zero)."""
    d, q = _q8(x)
    return np.concatenate([_f16_bytes(d), q.view(np.uint8)], axis=1)


def quantize_q8_1(x: np.ndarray) -> np.ndarray:
    """As Q8_0, plus s = d * sum(q) (d before its rounding to f16), used by Q4_1/Q5_1 products."""
    d, q = _q8(x)
    s = d * q.astype(np.int32).sum(axis=1, keepdims=True).astype(np.float32)
    return np.concatenate([_f16_bytes(d), _f16_bytes(s), q.view(np.uint8)], axis=1)
