"""Random GGML blocks for the kernel tests: random bytes everywhere, with the scale fields
drawn from finite values that include the edges (zeros of both signs, subnormals, the
largest half). NaN is never produced, so results compare bit for bit (MXFP4's E8M0 scale
byte takes every value: the largest make inf, which compares bit for bit too)."""
from __future__ import annotations

import numpy as np

from abi.gguf.constants import GGMLType

# byte offsets of the f16 scale fields in each block
F16_FIELDS = {
    GGMLType.Q4_0: (0,), GGMLType.Q4_1: (0, 2), GGMLType.Q5_0: (0,), GGMLType.Q5_1: (0, 2),
    GGMLType.Q8_0: (0,), GGMLType.Q8_1: (0, 2), GGMLType.IQ4_NL: (0,), GGMLType.IQ4_XS: (0,),
    GGMLType.Q2_K: (80, 82), GGMLType.Q3_K: (108,), GGMLType.Q4_K: (0, 2), GGMLType.Q5_K: (0, 2),
    GGMLType.Q6_K: (208,),
    GGMLType.IQ2_XXS: (0,), GGMLType.IQ2_XS: (0,), GGMLType.IQ2_S: (0,), GGMLType.IQ3_XXS: (0,),
    GGMLType.IQ3_S: (0,), GGMLType.IQ1_S: (0,), GGMLType.TQ1_0: (52,), GGMLType.TQ2_0: (64,),
}
# IQ1_M spreads its f16 scale over the top nibbles of its four u16 scale words: nibble k of
# the f16 (low to high) is the high nibble of byte 49 + 2k
IQ1_M_SCALE_BYTES = (49, 51, 53, 55)
E8M0_EDGES = np.array([0, 1, 2, 126, 127, 128, 252, 253, 254, 255], dtype=np.uint8)
F16_EDGES = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00],
                     dtype=np.uint16)
F32_EDGES = np.array([0x00000000, 0x80000000, 0x00000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF,
                      0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x3F800000], dtype=np.uint32)


def finite_f16_bits(n: int, rng) -> np.ndarray:
    bits = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    bits[(bits & 0x7C00) == 0x7C00] &= np.uint16(0xBFFF)     # exponent 31 (inf/nan) -> finite
    edge = rng.random(n) < 0.1
    bits[edge] = rng.choice(F16_EDGES, int(edge.sum()))
    return bits


def non_nan_f32_bits(n: int, rng) -> np.ndarray:
    bits = rng.integers(0, 1 << 32, n, dtype=np.uint32)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    bits[nan] &= np.uint32(0xFF7FFFFF)                        # clear one exponent bit: finite
    edge = rng.random(n) < 0.1
    bits[edge] = rng.choice(F32_EDGES, int(edge.sum()))
    return bits


def finite_f32_bits(n: int, rng) -> np.ndarray:
    bits = non_nan_f32_bits(n, rng)
    inf = (bits & 0x7FFFFFFF) == 0x7F800000
    bits[inf] &= np.uint32(0xFF7FFFFF)
    return bits


def random_blocks(t: GGMLType, n_blocks: int, rng) -> np.ndarray:
    """(n_blocks, type_size) uint8."""
    if t == GGMLType.F32:
        return non_nan_f32_bits(n_blocks, rng).view(np.uint8).reshape(n_blocks, 4)
    if t == GGMLType.F16:
        return finite_f16_bits(n_blocks, rng).view(np.uint8).reshape(n_blocks, 2)
    if t == GGMLType.BF16:   # a bf16 is the top half of an f32
        return (non_nan_f32_bits(n_blocks, rng) >> 16).astype(np.uint16).view(np.uint8).reshape(n_blocks, 2)
    blocks = rng.integers(0, 256, (n_blocks, t.type_size), dtype=np.uint8)
    if t == GGMLType.Q8_K:
        blocks[:, 0:4] = finite_f32_bits(n_blocks, rng).view(np.uint8).reshape(n_blocks, 4)
    if t == GGMLType.MXFP4:
        edge = rng.random(n_blocks) < 0.1
        blocks[edge, 0] = rng.choice(E8M0_EDGES, int(edge.sum()))
    _set_scales(t, blocks, lambda: finite_f16_bits(n_blocks, rng))
    return blocks


def _set_scales(t: GGMLType, blocks: np.ndarray, draw) -> None:
    """Writes f16 bits from ``draw()`` ((n,) uint16, one call per field) into t's scale fields."""
    n = blocks.shape[0]
    for off in F16_FIELDS.get(t, ()):
        blocks[:, off:off + 2] = draw().view(np.uint8).reshape(n, 2)
    if t == GGMLType.IQ1_M:
        d = draw()
        for k, byte in enumerate(IQ1_M_SCALE_BYTES):
            nib = ((d >> np.uint16(4 * k)) & np.uint16(15)).astype(np.uint8)
            blocks[:, byte] = (blocks[:, byte] & np.uint8(15)) | (nib << np.uint8(4))


def sane_blocks(t: GGMLType, n_blocks: int, rng, scale: float = 0.01) -> np.ndarray:
    """Random blocks whose f16 scales are small positive numbers (weights of a real model)."""
    blocks = rng.integers(0, 256, (n_blocks, t.type_size), dtype=np.uint8)
    if t == GGMLType.Q8_K:    # its d is an f32
        d = rng.uniform(0.2, 1.0, n_blocks).astype(np.float32) * np.float32(scale)
        blocks[:, 0:4] = d.view(np.uint8).reshape(n_blocks, 4)

    def draw():
        vals = rng.uniform(0.2, 1.0, n_blocks).astype(np.float32) * np.float32(scale)
        return vals.astype(np.float16).view(np.uint16)

    _set_scales(t, blocks, draw)
    if t == GGMLType.MXFP4:   # E8M0: half-scale 2^(e - 128) near scale / 8 (values go to +-12)
        e = int(np.floor(np.log2(scale))) + 125
        blocks[:, 0] = rng.integers(e - 1, e + 1, n_blocks, endpoint=True).astype(np.uint8)
    return blocks


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    b = np.ascontiguousarray(b, dtype=np.float32).reshape(-1)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))
