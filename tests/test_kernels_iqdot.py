"""The integer row dot products of the IQ, ternary and MXFP4 types (``_qdot_iq.pxd``, through
matmul's ``gemv_rows``): the SIMD path (AVX2 where built) and the portable scalar path both
match float64 dequantise(w) . dequantise(x) to float32 rounding.

Stated tolerance: each block's integer sum S is exact, and the row is
sum_blocks (s_w * d_x) * S in float32, so |y - exact| <= (nb + 2) * 2^-24 * sum_e |w_e x_e|;
we allow 1e-5 * sum_e |w_e x_e| (nb <= 8 here)."""
from __future__ import annotations

import numpy as np
import pytest

import abi._kernels as K
from abi.gguf.constants import GGMLType
from kernel_blocks import random_blocks, sane_blocks

from abi._kernels import matmul

TYPES = [GGMLType[n] for n in "IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M TQ1_0 TQ2_0 MXFP4".split()]
RTOL = 1e-5


def _weights(t, rows, cols, rng, kind):
    nb = rows * cols // t.block_size
    if kind == "sane":
        return sane_blocks(t, nb, rng).reshape(-1)
    blocks = random_blocks(t, nb, rng)
    if t == GGMLType.MXFP4:      # keep 2^(e - 128) * 12 * |x| finite
        blocks[:, 0] = rng.integers(1, 200, nb, dtype=np.uint8)
    return blocks.reshape(-1)


def _check(t, rows, cols, rng, kind, x=None):
    raw = _weights(t, rows, cols, rng, kind)
    if x is None:
        x = rng.standard_normal(cols).astype(np.float32)
    a = GGMLType(matmul.activation_type(int(t)))
    xq = np.empty(cols // a.block_size * a.type_size, np.uint8)
    matmul.quantize_activation_into(int(t), x, xq)
    xd = K.dequantize_reference(xq, a, (cols,)).astype(np.float64)
    w = K.dequantize_reference(raw, t, (rows, cols)).astype(np.float64)
    exact, scale = w @ xd, np.abs(w) @ np.abs(xd)
    for portable in (False, True):
        y = np.full(rows, np.nan, np.float32)
        matmul._gemv_rows_into(raw, int(t), 0, rows, cols, x, y, portable=portable)
        assert np.all(np.abs(y - exact) <= RTOL * scale + 1e-30), (portable, np.max(np.abs(y - exact) / scale))
    return exact, y


@pytest.mark.parametrize("kind", ["sane", "random"])
@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_dot_matches_float64_and_paths_agree(t, kind):
    rng = np.random.default_rng(int(t) * 10 + (kind == "random"))
    for nb in (1, 3, 8):
        _check(t, 9, nb * 256, rng, kind)


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_dot_extreme_activations(t):
    """Full-range activations (q = +-127 everywhere, and one spike) reach the integer sums'
    largest magnitudes."""
    rng = np.random.default_rng(int(t) + 99)
    cols = 512
    signs = np.where(rng.random(cols) < 0.5, -1.0, 1.0).astype(np.float32)
    _check(t, 6, cols, rng, "sane", x=signs * np.float32(3.0))
    spike = np.zeros(cols, np.float32)
    spike[rng.integers(cols)] = 1.0
    exact, y = _check(t, 6, cols, rng, "sane", x=spike)
    assert np.any(exact != 0)
