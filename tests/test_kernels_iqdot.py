"""The integer row dot products of the IQ, ternary and MXFP4 types (``_qdot_iq.pxd``, reached
through the test hook ``abi._kernels.iqdot_check``): the dispatched path (AVX2 where built)
and the scalar path agree bit for bit, and both match float64 dequantise(w) . dequantise(x)
to float32 rounding.

Stated tolerance: each block's integer sum S is exact, and the row is
sum_blocks (s_w * d_x) * S in float32, so |y - exact| <= (nb + 2) * 2^-24 * sum_e |w_e x_e|;
we allow 1e-5 * sum_e |w_e x_e| (nb <= 8 here)."""
from __future__ import annotations

import numpy as np
import pytest

import abi._kernels as K
from abi.gguf.constants import GGMLType
from kernel_blocks import random_blocks, sane_blocks

iqdot = pytest.importorskip("abi._kernels.iqdot_check")

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
    a = GGMLType(iqdot.activation_type(int(t)))
    xq = iqdot.quantize_activation(int(t), x)
    xd = K.dequantize_reference(xq, a, (cols,)).astype(np.float64)
    w = K.dequantize_reference(raw, t, (rows, cols)).astype(np.float64)
    exact, scale = w @ xd, np.abs(w) @ np.abs(xd)
    fast, scalar = iqdot.row_dots(raw, int(t), xq)
    assert np.array_equal(fast.view(np.uint32), scalar.view(np.uint32))
    assert np.all(np.abs(scalar - exact) <= RTOL * scale + 1e-30), np.max(np.abs(scalar - exact) / scale)
    return exact, scalar


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


def test_dot_rejects_unknown_types_and_ragged_rows():
    with pytest.raises(ValueError):
        iqdot.activation_type(int(GGMLType.Q4_K))
    xq = iqdot.quantize_activation(int(GGMLType.IQ2_XXS), np.zeros(256, np.float32))
    with pytest.raises(ValueError):
        iqdot.row_dots(np.zeros(65, np.uint8), int(GGMLType.IQ2_XXS), xq)
