"""Dequantisation: the Cython kernels and their numpy references against the gguf package,
bit for bit, on random blocks with edge-value scales and on every tensor of the default model."""
from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import abi._kernels as K  # noqa: E402
from abi.errors import KernelInputError, UnsupportedTensorType  # noqa: E402
from abi.gguf.constants import GGMLType  # noqa: E402
from kernel_blocks import random_blocks, same_bits  # noqa: E402

REQUIRED = [GGMLType[n] for n in ("F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K "
                                   "Q6_K Q8_K IQ4_NL IQ4_XS").split()]
# the gguf package has no Q8_K / Q8_1 dequantiser: the numpy reference is the oracle there
NO_ORACLE = {GGMLType.Q8_K, GGMLType.Q8_1}


def _oracle(blocks: np.ndarray, t: GGMLType) -> np.ndarray:
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
    for t in (GGMLType.Q4_K, GGMLType.Q4_1, GGMLType.F16):
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
    with pytest.raises(UnsupportedTensorType, match="IQ2_XXS"):
        K.dequantize(np.zeros(66, np.uint8), GGMLType.IQ2_XXS, (256,))
    with pytest.raises(UnsupportedTensorType, match="99"):
        K.dequantize(raw, 99, (4, 32))


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
