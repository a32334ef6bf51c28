"""Dequantisation: the Cython kernels and their numpy references against the gguf package,
bit for bit, on random blocks with edge-value scales and on every tensor of the default model."""
from __future__ import annotations

import numpy as np
import pytest

import gguf  # the oracle: a test dependency, never skipped

import abi._kernels as K
from abi.errors import KernelInputError, UnsupportedTensorType
from abi.gguf.constants import GGMLType
from kernel_blocks import random_blocks, same_bits, sane_blocks

REQUIRED = [GGMLType[n] for n in ("F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K "
                                   "Q6_K Q8_K IQ4_NL IQ4_XS IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S "
                                   "IQ1_S IQ1_M TQ1_0 TQ2_0 MXFP4").split()]
# the gguf package has no Q8_K / Q8_1 dequantiser: the numpy reference is the oracle there
NO_ORACLE = {GGMLType.Q8_K, GGMLType.Q8_1}


def _oracle(blocks: np.ndarray, t: GGMLType) -> np.ndarray:
    with np.errstate(over="ignore"):     # MXFP4's largest scales overflow to inf, as in C
        return gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(int(t))).reshape(-1)


def test_every_required_type_is_supported():
    assert set(REQUIRED) <= set(K.DEQUANTIZE_TYPES)


@pytest.mark.parametrize("t", [t for t in K.DEQUANTIZE_TYPES if t not in NO_ORACLE], ids=lambda t: t.name)
def test_bit_exact_against_gguf(t):
    rng = np.random.default_rng(int(t))
    n_blocks = 3000 if t.block_size > 1 else 100_000
    blocks = random_blocks(t, n_blocks, rng)
    expected = _oracle(blocks, t)
    shape = (n_blocks * t.block_size,)
    assert same_bits(K.dequantize(blocks, t, shape, n_threads=2), expected)
    assert same_bits(K.dequantize_reference(blocks, t, shape), expected)


@pytest.mark.parametrize("t", sorted(NO_ORACLE), ids=lambda t: t.name)
def test_activation_types_match_reference_and_formula(t):
    rng = np.random.default_rng(int(t))
    blocks = random_blocks(t, 500, rng)
    with np.errstate(over="ignore"):           # a huge d times q overflows to inf, as in C
        ref = K.dequantize_reference(blocks, t, (500 * t.block_size,))
    assert same_bits(K.dequantize(blocks, t, (500 * t.block_size,)), ref)
    # x = d * q with d the leading f32 (Q8_K) or f16 (Q8_1) and q the int8 values
    if t == GGMLType.Q8_K:
        d, q = blocks[:, 0:4].copy().view(np.float32), blocks[:, 4:260].view(np.int8)
    else:
        d, q = blocks[:, 0:2].copy().view(np.float16).astype(np.float32), blocks[:, 4:36].view(np.int8)
    with np.errstate(over="ignore"):
        assert same_bits(ref, d * q.astype(np.float32))


def test_threads_and_chunking_do_not_change_bits():
    rng = np.random.default_rng(5)
    for t in (GGMLType.Q4_K, GGMLType.Q4_1, GGMLType.F16, GGMLType.IQ2_S, GGMLType.MXFP4):
        n_blocks = 70_001 // t.block_size + 3      # not a multiple of the per-thread chunk
        blocks = random_blocks(t, n_blocks, rng)
        shape = (n_blocks * t.block_size,)
        assert same_bits(K.dequantize(blocks, t, shape, n_threads=1), K.dequantize(blocks, t, shape, n_threads=2))


def test_shapes_and_input_forms():
    rng = np.random.default_rng(0)
    blocks = random_blocks(GGMLType.Q8_0, 12, rng)
    flat = K.dequantize(blocks.reshape(-1), GGMLType.Q8_0, (4, 96))
    assert flat.shape == (4, 96) and flat.dtype == np.float32
    assert same_bits(K.dequantize(blocks.reshape(4, -1), int(GGMLType.Q8_0), (4, 96)), flat)
    f16 = np.arange(8, dtype=np.float16)                       # typed arrays are read as bytes
    assert np.array_equal(K.dequantize(f16, GGMLType.F16, (2, 4)), f16.astype(np.float32).reshape(2, 4))
    assert K.dequantize(np.zeros(0, np.uint8), GGMLType.Q4_0, (0, 32)).shape == (0, 32)


def test_bad_input_is_a_typed_error():
    raw = np.zeros(18 * 4, np.uint8)
    with pytest.raises(KernelInputError, match="needs 72 bytes"):
        K.dequantize(raw[:-1], GGMLType.Q4_0, (4, 32))
    with pytest.raises(KernelInputError, match="multiple of 32"):
        K.dequantize(raw, GGMLType.Q4_0, (8, 16))
    with pytest.raises(KernelInputError):
        K.dequantize(raw, GGMLType.Q4_0, (-4, 32))
    with pytest.raises(UnsupportedTensorType, match="NVFP4"):
        K.dequantize(np.zeros(36, np.uint8), GGMLType.NVFP4, (64,))
    with pytest.raises(UnsupportedTensorType, match="99"):
        K.dequantize(raw, 99, (4, 32))


def test_iq_tables_are_what_gguf_gives():
    """The committed iq_tables.h / iq_tables.py are the generator's output for this gguf."""
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parent.parent / "tools" / "make_iq_tables.py"
    res = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_iq_tables_load_on_first_use_only():
    import subprocess
    import sys

    code = ("import sys, numpy as np, abi._kernels as K; from abi.gguf.constants import GGMLType as G; "
            "a = 'abi._kernels.iq_tables' in sys.modules; "
            "K.dequantize_reference(np.zeros(66, np.uint8), G.IQ2_XXS, (256,)); "
            "print(a, 'abi._kernels.iq_tables' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


# every bit of these blocks reaches the output; TQ1_0 packs base-3 digits with slack and
# MXFP4 has two codes for zero, so a few of their flips change nothing
_EVERY_BIT = {GGMLType[n]: 1.0 for n in "IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M TQ2_0".split()}
_EVERY_BIT.update({GGMLType.TQ1_0: 0.95, GGMLType.MXFP4: 0.95})


@pytest.mark.parametrize("t", list(_EVERY_BIT), ids=lambda t: t.name)
def test_each_block_bit_changes_the_output(t):
    """Flipping a bit of a block changes some element (no field is ignored or read twice
    by mistake); the gguf comparison above checks the values themselves."""
    rng = np.random.default_rng(3)
    block = sane_blocks(t, 1, rng, scale=1.0)
    base = K.dequantize(block, t, (t.block_size,))
    pos = np.arange(8 * t.type_size)
    flips = np.repeat(block, pos.size, axis=0)
    flips[pos, pos // 8] ^= np.uint8(1) << (pos % 8).astype(np.uint8)
    out = K.dequantize(flips, t, (pos.size, t.block_size))
    assert same_bits(K.dequantize_reference(flips, t, out.shape), out)
    changed = (out.view(np.uint32) != base.view(np.uint32)[None, :]).any(axis=1)
    assert changed.mean() >= _EVERY_BIT[t], np.flatnonzero(~changed)


_NEW_TYPES = [GGMLType[n] for n in "IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M TQ1_0 TQ2_0 MXFP4".split()]


@pytest.mark.parametrize("t", _NEW_TYPES, ids=lambda t: t.name)
def test_qmatmul_takes_the_type_through_dequantisation(t):
    """Many x rows (prefill): W is dequantised (the kernel above) and multiplied in float32,
    so it matches float64 W @ x to float32 rounding. (One row: test_kernels_iqdot.py.)"""
    rng = np.random.default_rng(int(t))
    rows, cols = 5, 2 * t.block_size
    raw = sane_blocks(t, rows * cols // t.block_size, rng).reshape(-1)
    w = K.dequantize_reference(raw, t, (rows, cols)).astype(np.float64)
    x = rng.standard_normal((3, cols)).astype(np.float32)
    y = K.qmatmul(raw, t, (rows, cols), x, n_threads=2)
    exact = x.astype(np.float64) @ w.T
    scale = np.abs(x).astype(np.float64) @ np.abs(w).T
    assert y.shape == exact.shape and np.all(np.abs(y - exact) <= 1e-5 * scale + 1e-30)


@pytest.mark.model
def test_every_tensor_of_the_default_model(default_model_path):
    import abi.gguf

    f = abi.gguf.load(default_model_path)
    assert len(f.tensors) > 100
    for name, info in f.tensors.items():
        raw = f.tensor_data(name)
        ours = K.dequantize(raw, info.ggml_type, info.shape)
        t = info.ggml_type
        theirs = _oracle(np.asarray(raw).reshape(-1, t.type_size), t)
        assert ours.shape == tuple(info.shape)
        assert same_bits(ours, theirs), name
