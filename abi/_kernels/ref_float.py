"""Numpy references for the float types. A "block" is one element.

    F32   [f32]            4 bytes, little-endian IEEE single
    F16   [f16]            2 bytes, IEEE half
    BF16  [bf16]           2 bytes, the top half of an f32 (sign, 8-bit exponent, 7-bit mantissa)
"""
from __future__ import annotations

import numpy as np


def dequantize_f32(blocks: np.ndarray) -> np.ndarray:
    return blocks.reshape(-1, 4).copy().view(np.float32)


def dequantize_f16(blocks: np.ndarray) -> np.ndarray:
    return blocks.reshape(-1, 2).copy().view(np.float16).astype(np.float32)


def dequantize_bf16(blocks: np.ndarray) -> np.ndarray:
    bits = blocks.reshape(-1, 2).copy().view(np.uint16).astype(np.uint32) << np.uint32(16)
    return bits.view(np.float32)


def quantize_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 1).view(np.uint8)


def quantize_f16(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # past 65504 is inf, as ggml's conversion gives
        return np.ascontiguousarray(x, dtype=np.float32).astype(np.float16).reshape(-1, 1).view(np.uint8)


def quantize_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even; a NaN stays a (quiet) NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    out = np.where(is_nan, (bits >> 16) | 64, rounded).astype(np.uint16)
    return out.reshape(-1, 1).view(np.uint8)
