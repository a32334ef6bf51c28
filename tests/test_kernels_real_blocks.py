"""Kernels on real blocks: rows of tensors that llama.cpp's llama-quantize wrote (one file per
type in tests/fixtures/quant/, made by tools/quant_fidelity.py from SmolLM2 and Gemma 3),
dequantised bit for bit as the gguf package does, and multiplied within the stated bound."""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

import abi._kernels as K
from abi._kernels import matmul
from abi.gguf.constants import GGMLType

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "quant").glob("*.npz"))
# every type the quant-types issue lists, whose real blocks must be in the fixtures
LISTED = {"Q2_K", "Q3_K", "IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S",
          "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0"}


def _load(path):
    with np.load(path) as f:
        return GGMLType(int(f["ggml_type"])), np.ascontiguousarray(f["raw"]), int(f["cols"])


def test_fixtures_cover_the_listed_types():
    have = {_load(p)[0].name for p in FIXTURES}
    assert LISTED <= have, f"missing real-block fixtures: {sorted(LISTED - have)}"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_dequantise_real_blocks_bit_exact(path):
    t, raw, cols = _load(path)
    shape = (raw.shape[0], cols)
    expected = gguf.quants.dequantize(raw.reshape(-1, t.type_size), gguf.GGMLQuantizationType(int(t)))
    expected = np.asarray(expected, np.float32).reshape(shape)
    for got in (K.dequantize(raw, t, shape, n_threads=2), K.dequantize_reference(raw, t, shape)):
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_product_on_real_blocks_within_bound(path):
    """T = 1: |y - W @ x| <= (bound + 1e-5) * sum_c |W[r, c]| * absmax(x block of c), the
    activation-quantisation bound qmatmul documents (1e-5: float32 rounding)."""
    t, raw, cols = _load(path)
    rows = raw.shape[0]
    w = K.dequantize_reference(raw, t, (rows, cols)).astype(np.float64)
    x = np.random.default_rng(int(t)).standard_normal(cols).astype(np.float32)
    y = K.qmatmul(raw, t, (rows, cols), x).astype(np.float64)
    at = matmul.activation_type(int(t))
    block = GGMLType(at).block_size if at >= 0 else 1
    absmax = np.repeat(np.abs(x.reshape(-1, block)).max(axis=1), block).astype(np.float64)
    bound = (K.activation_error_bound(t) + 1e-5) * (np.abs(w) @ absmax) + 1e-6
    assert np.all(np.abs(y - w @ x.astype(np.float64)) <= bound)
