"""Products with quantised weights: y = W @ x for one x row (integer dot products against a
Q8 activation) and for many (dequantised tiles + sgemm), against float64 references."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import abi._kernels as K
from abi._kernels import matmul
from abi.errors import ConfigError, KernelInputError, UnsupportedTensorType
from abi.gguf.constants import GGMLType
from kernel_blocks import sane_blocks

REQUIRED = [GGMLType[n] for n in
            ("Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS IQ2_XXS IQ2_XS IQ2_S "
             "IQ3_XXS IQ3_S IQ1_S IQ1_M TQ1_0 TQ2_0 MXFP4 F16 BF16 F32").split()]
# dequantisable but without an integer dot: the activation-only formats, given as weights
FALLBACK = [GGMLType.Q8_1, GGMLType.Q8_K]
# (rows, cols) with odd block counts (1, 3) and rows that do not split evenly over threads
SIZES_32 = [(37, 32), (64, 96), (301, 576)]
SIZES_256 = [(37, 256), (64, 768), (130, 1536)]
KERNEL_RTOL = 1e-5       # float32 rounding of scales and sums, relative to sum |W| |x|
SGEMM_RTOL = 1e-4


def weight(t: GGMLType, rows: int, cols: int, rng) -> np.ndarray:
    if t in K.QUANTIZE_TYPES:
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        return K.quantize(w, t).reshape(-1)
    return sane_blocks(t, rows * cols // t.block_size, rng).reshape(-1)   # Q5_K, fallback types


def sizes(t):
    return SIZES_256 if t.block_size == 256 else SIZES_32


def cases(types):
    return [(t, r, c) for t in types for r, c in sizes(t)]


def case_id(c):
    return f"{c[0].name}-{c[1]}x{c[2]}"


def quantised_activation(t: GGMLType, x: np.ndarray):
    """(x as the kernel sees it in float64, and the Q8_1 sum-term correction per block)."""
    at = matmul.activation_type(int(t))
    if at < 0:
        return x.astype(np.float64), None
    a = GGMLType(at)
    xq = np.empty(x.size // a.block_size * a.type_size, np.uint8)
    matmul.quantize_activation_into(int(t), x, xq)
    xd = K.dequantize_reference(xq, a, x.shape).astype(np.float64)
    if a != GGMLType.Q8_1:
        return xd, None
    blocks = xq.reshape(-1, a.type_size)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float64)[:, 0]
    s = blocks[:, 2:4].copy().view(np.float16).astype(np.float64)[:, 0]
    sum_q = blocks[:, 4:].view(np.int8).astype(np.int64).sum(axis=1)
    return xd, s - d * sum_q       # the kernel uses s where the dequantised x has d * sum(q)


def exact_kernel_result(raw, t, rows, cols, x):
    """What the T = 1 kernel computes, in float64, and the scale of its float32 rounding."""
    w = K.dequantize_reference(raw, t, (rows, cols)).astype(np.float64)
    xd, s_err = quantised_activation(t, x)
    y = w @ xd
    scale = np.abs(w) @ np.abs(xd)
    if s_err is not None:   # + m_w * (s - d sum q) per block; m is the f16 at byte 2
        m = raw.reshape(rows, -1, t.type_size)[:, :, 2:4].copy().view(np.float16).astype(np.float64)[:, :, 0]
        y += m @ s_err
        scale += np.abs(m) @ np.abs(s_err)
    return y, scale


def test_every_required_type_has_a_product():
    assert set(REQUIRED) <= set(K.MATMUL_TYPES)
    for t in REQUIRED:    # an integer (or float-x) kernel, not the dequantise-then-sgemm route
        assert matmul.activation_type(int(t)) != -2, t.name
        assert t in K.ACTIVATION_ERROR_BOUND, t.name
    for t in FALLBACK:
        assert t not in K.MATMUL_TYPES and matmul.activation_type(int(t)) == -2, t.name


def test_c_level_geometry_matches_ggml_types():
    for t in GGMLType:
        expected = (t.block_size, t.type_size) if t in K.DEQUANTIZE_TYPES else (0, 0)
        assert matmul._type_geometry(int(t)) == expected, t.name


@pytest.mark.parametrize("case", cases(REQUIRED), ids=case_id)
def test_single_row_matches_exact_integer_arithmetic(case):
    t, rows, cols = case
    rng = np.random.default_rng(rows * cols + int(t))
    raw = weight(t, rows, cols, rng)
    x = rng.standard_normal(cols).astype(np.float32)
    y = K.qmatmul(raw, t, (rows, cols), x, n_threads=2)
    expected, scale = exact_kernel_result(raw, t, rows, cols, x)
    assert y.shape == (rows,) and y.dtype == np.float32
    assert np.all(np.abs(y - expected) <= KERNEL_RTOL * scale + 1e-30)


@pytest.mark.parametrize("case", cases(REQUIRED), ids=case_id)
def test_single_row_within_stated_bound_of_exact_product(case):
    """Against dequantise-then-float64 with the float x: the activation's quantisation error
    stays within ACTIVATION_ERROR_BOUND (per output), and about 0.5-0.7% overall."""
    t, rows, cols = case
    rng = np.random.default_rng(7 + rows + int(t))
    raw = weight(t, rows, cols, rng)
    x = rng.standard_normal(cols).astype(np.float32)
    y = K.qmatmul(raw, t, (rows, cols), x).astype(np.float64)
    w = K.dequantize(raw, t, (rows, cols)).astype(np.float64)
    exact = w @ x.astype(np.float64)
    at = matmul.activation_type(int(t))
    qb = GGMLType(at).block_size if at >= 0 else 32     # the block x is quantised in
    absmax = np.repeat(np.abs(x).reshape(-1, qb).max(axis=1), qb).astype(np.float64)
    bound = K.activation_error_bound(t) * (np.abs(w) @ absmax) + KERNEL_RTOL * (np.abs(w) @ np.abs(x))
    assert np.all(np.abs(y - exact) <= bound)
    rel = np.linalg.norm(y - exact) / np.linalg.norm(exact)
    assert rel < (1e-6 if t in (GGMLType.F32, GGMLType.F16, GGMLType.BF16) else 0.012)


@pytest.mark.parametrize("t", [GGMLType.Q4_0, GGMLType.Q5_0], ids=lambda t: t.name)
def test_extreme_blocks_keep_exact_integer_sums(t):
    """Every weight at the top (or bottom) of its range against activations all at +-127:
    the largest sums the int16 steps of the AVX2 kernels must hold, over a quad of blocks
    and a partial one (7 blocks)."""
    cols = 7 * 32
    d = np.array([0.01], np.float16).view(np.uint8)
    rows = []
    for fill in (0xFF, 0x00):   # every nibble (and fifth bit) set, or clear
        block = np.full(t.type_size, fill, np.uint8)
        block[:2] = d
        rows.append(np.tile(block, 7))
    raw = np.concatenate(rows)
    for sign in (1.0, -1.0):
        x = np.full(cols, sign, np.float32)
        y = K.qmatmul(raw, t, (2, cols), x)
        expected, scale = exact_kernel_result(raw, t, 2, cols, x)
        assert np.all(np.abs(y - expected) <= KERNEL_RTOL * scale), (y, expected)


@pytest.mark.parametrize("case", cases(REQUIRED + FALLBACK), ids=case_id)
def test_many_rows_by_tiles_and_sgemm(case):
    t, rows, cols = case
    rng = np.random.default_rng(3 + cols + int(t))
    raw = weight(t, rows, cols, rng)
    x = rng.standard_normal((5, cols)).astype(np.float32)
    y = K.qmatmul(raw, t, (rows, cols), x)
    w = K.dequantize(raw, t, (rows, cols)).astype(np.float64)
    assert y.shape == (5, rows)
    assert np.all(np.abs(y - x.astype(np.float64) @ w.T) <= SGEMM_RTOL * (np.abs(x) @ np.abs(w).T) + 1e-30)


def test_tiles_smaller_than_the_matrix():
    rng = np.random.default_rng(1)
    raw = weight(GGMLType.Q4_1, 100, 64, rng)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    y = np.empty((3, 100), np.float32)
    matmul.gemm_into(raw, int(GGMLType.Q4_1), 100, 64, x, y, 2, 7)        # 15 tiles, last partial
    w = K.dequantize(raw, GGMLType.Q4_1, (100, 64)).astype(np.float64)
    assert np.allclose(y, x @ w.T, rtol=0, atol=SGEMM_RTOL * np.abs(x).max() * np.abs(w).sum(axis=1).max())


@pytest.mark.parametrize("t", FALLBACK, ids=lambda t: t.name)
def test_types_without_integer_dot_fall_back_to_float(t):
    rng = np.random.default_rng(int(t))
    raw = weight(t, 40, 512, rng)
    x = rng.standard_normal(512).astype(np.float32)
    w = K.dequantize(raw, t, (40, 512)).astype(np.float64)
    y = K.qmatmul(raw, t, (40, 512), x)
    assert np.all(np.abs(y - w @ x) <= SGEMM_RTOL * (np.abs(w) @ np.abs(x)))


@pytest.mark.parametrize("t", REQUIRED, ids=lambda t: t.name)
def test_threads_do_not_change_bits(t):
    rng = np.random.default_rng(2)
    rows, cols = 1001, (512 if t.block_size == 256 else 576)     # big enough to use 2 threads
    raw = weight(t, rows, cols, rng)
    x = rng.standard_normal(cols).astype(np.float32)
    assert np.array_equal(K.qmatmul(raw, t, (rows, cols), x, n_threads=1),
                          K.qmatmul(raw, t, (rows, cols), x, n_threads=2))


@pytest.mark.parametrize("t", REQUIRED, ids=lambda t: t.name)
def test_row_range_kernel_and_portable_fallback(t):
    """gemv_rows writes exactly its rows; the portable C kernels (no AVX2) agree with SIMD."""
    rng = np.random.default_rng(4)
    rows, cols = 50, (768 if t.block_size == 256 else 96)
    raw = weight(t, rows, cols, rng)
    x = rng.standard_normal(cols).astype(np.float32)
    fast = np.full(rows, np.nan, np.float32)
    portable = fast.copy()
    matmul._gemv_rows_into(raw, int(t), 9, 41, cols, x, fast, False)
    matmul._gemv_rows_into(raw, int(t), 9, 41, cols, x, portable, True)
    assert np.isnan(fast[:9]).all() and np.isnan(fast[41:]).all()
    expected, scale = exact_kernel_result(raw, t, rows, cols, x)
    for y in (fast, portable):
        assert np.all(np.abs(y[9:41] - expected[9:41]) <= KERNEL_RTOL * scale[9:41])


def test_x_shapes():
    rng = np.random.default_rng(0)
    raw = weight(GGMLType.Q8_0, 8, 64, rng)
    x = rng.standard_normal(64).astype(np.float32)
    y1 = K.qmatmul(raw, GGMLType.Q8_0, (8, 64), x)
    assert K.qmatmul(raw, GGMLType.Q8_0, (8, 64), x[None, :]).shape == (1, 8)
    assert np.array_equal(K.qmatmul(raw, GGMLType.Q8_0, (8, 64), x[None, :])[0], y1)
    assert K.qmatmul(raw, GGMLType.Q8_0, (8, 64), x.astype(np.float64)).dtype == np.float32
    assert K.qmatmul(raw, GGMLType.Q8_0, (8, 64), np.zeros((0, 64), np.float32)).shape == (0, 8)


def test_bad_input_is_a_typed_error():
    raw = np.zeros(8 * 2 * 34, np.uint8)
    with pytest.raises(KernelInputError, match=r"\(64,\)"):
        K.qmatmul(raw, GGMLType.Q8_0, (8, 64), np.zeros(32, np.float32))
    with pytest.raises(KernelInputError, match="matrix"):
        K.qmatmul(raw, GGMLType.Q8_0, (2, 4, 64), np.zeros(64, np.float32))
    with pytest.raises(KernelInputError, match="bytes"):
        K.qmatmul(raw[:-1], GGMLType.Q8_0, (8, 64), np.zeros(64, np.float32))
    with pytest.raises(KernelInputError):
        K.qmatmul(raw, GGMLType.Q8_0, (8, 64), np.zeros((2, 2, 64), np.float32))
    with pytest.raises(UnsupportedTensorType, match="NVFP4"):
        K.qmatmul(np.zeros(36, np.uint8), GGMLType.NVFP4, (1, 64), np.zeros(64, np.float32))
    with pytest.raises(KernelInputError):
        K.qmatmul(raw, GGMLType.Q8_0, (8, 64), np.zeros(64, np.float32), n_threads=0)


def test_thread_count_setting(monkeypatch):
    import os

    monkeypatch.delenv("ABI_NUM_THREADS", raising=False)
    assert K.default_num_threads(refresh=True) == len(os.sched_getaffinity(0))
    monkeypatch.setenv("ABI_NUM_THREADS", "3")
    assert K.default_num_threads() == len(os.sched_getaffinity(0))     # cached until refreshed
    assert K.default_num_threads(refresh=True) == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("ABI_NUM_THREADS", bad)
        with pytest.raises(ConfigError):
            K.default_num_threads(refresh=True)
    monkeypatch.delenv("ABI_NUM_THREADS")
    K.default_num_threads(refresh=True)


@pytest.mark.model
def test_default_model_weights(default_model_path):
    """One weight of each (type, shape) of the default model, decode and prefill."""
    import abi.gguf

    f = abi.gguf.load(default_model_path)
    seen = set()
    rng = np.random.default_rng(0)
    for name, info in f.tensors.items():
        key = (info.ggml_type, info.shape)
        if len(info.shape) != 2 or key in seen:
            continue
        seen.add(key)
        rows, cols = info.shape
        raw = f.tensor_data(name)
        x = rng.standard_normal((3, cols)).astype(np.float32)
        w = K.dequantize(raw, info.ggml_type, info.shape).astype(np.float64)
        y1 = K.qmatmul(raw, info.ggml_type, info.shape, x[0]).astype(np.float64)
        absmax = np.repeat(np.abs(x[0]).reshape(-1, 32).max(axis=1), 32).astype(np.float64)
        bound = (K.activation_error_bound(info.ggml_type) * (np.abs(w) @ absmax)
                 + KERNEL_RTOL * (np.abs(w) @ np.abs(x[0])))
        assert np.all(np.abs(y1 - w @ x[0]) <= bound), name
        y3 = K.qmatmul(raw, info.ggml_type, info.shape, x)
        assert np.all(np.abs(y3 - x @ w.T) <= SGEMM_RTOL * (np.abs(x) @ np.abs(w).T)), name
    assert {t for t, _ in seen} == {GGMLType.Q4_1, GGMLType.Q8_0}


TILED = [GGMLType(t) for t in matmul.tiled_types()]
FLOATS = {GGMLType.F32, GGMLType.F16, GGMLType.BF16}
# float rows: element counts past the last whole chunk of the T = 1 kernels (32, BF16 16),
# fewer than one chunk, and more than two of the AVX2 tiles' column blocks (704 elements F32,
# 1024 F16 / BF16) with a part block last
FLOAT_TILE_SIZES = [(37, 45), (64, 104), (37, 7), (9, 2600)]


def tile_sizes(t):
    return FLOAT_TILE_SIZES if t in FLOATS else sizes(t)[:2] + [(19, 2 * t.block_size), (19, 7 * t.block_size)]


@pytest.mark.parametrize("t", TILED, ids=lambda t: t.name)
def test_tiled_prompt_products_give_each_token_its_single_token_bits(t):
    """gemm_rows (register tiles of rows x tokens) against gemv_rows token by token, bit for
    bit, and against the exact product; row ranges and token counts leave every remainder
    of the tiles (1 to 4 rows x 3 to 16 tokens), and more tokens than one pass over the rows
    takes; block counts 1 and 3 (an odd last block), 2 and 7 (Q5_0's groups of four blocks
    and a remainder)."""
    rng = np.random.default_rng(11)
    for rows, cols in tile_sizes(t):
        raw = weight(t, rows, cols, rng)
        for T in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 17, 70):
            x = (rng.standard_normal((T, cols)) * rng.uniform(0.05, 20, (T, 1))).astype(np.float32)
            r0, r1 = 2, rows - 1      # 34 rows (8 tiles + 2) and 61 (15 + 1)
            tiled = np.full((T, rows), np.nan, np.float32)
            matmul._gemm_rows_into(raw, int(t), r0, r1, cols, x, tiled)
            assert np.isnan(tiled[:, :r0]).all() and np.isnan(tiled[:, r1:]).all()
            for i in range(T):
                single = np.full(rows, np.nan, np.float32)
                matmul._gemv_rows_into(raw, int(t), r0, r1, cols, x[i], single)
                assert np.array_equal(tiled[i], single, equal_nan=True), (rows, cols, T, i)
                expected, scale = exact_kernel_result(raw, t, rows, cols, x[i])
                assert np.all(np.abs(tiled[i, r0:r1] - expected[r0:r1]) <= KERNEL_RTOL * scale[r0:r1])


def test_which_types_have_tiles_on_this_machine():
    """The tiles exist exactly where the build targets AVX-512 VNNI, or the AVX2 set where it
    targets AVX2 only, float weights wherever it targets AVX2 + FMA (else prompts take the
    single-token products), neither the tile pass length nor the way a small batch runs its
    rows (prefetched chunks; 19 tokens with passes of 5 take the prompt's way) changes a bit,
    and the benchmark's single-token route (tiles=False) gives the same bits."""
    flags = open("/proc/cpuinfo").read() if sys.platform.startswith("linux") else ""
    tiled = {GGMLType(t).name for t in matmul.tiled_types()}
    if matmul.SIMD and all(f in flags for f in (" avx512f", " avx512bw", " avx512vl", " avx512_vnni")):
        # the TQ1_0, IQ1 and IQ2/IQ3 tiles unpack with VBMI, BITALG and BMI2, as their T = 1 kernels do
        lattice = {"TQ1_0", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"} if all(
            f in flags.split() for f in ("avx512vbmi", "avx512_bitalg", "bmi2")) else set()
        assert tiled - {t.name for t in FLOATS} == {"Q4_1", "Q8_0", "Q5_0", "Q4_K", "Q6_K", "IQ4_NL",
                                                    "IQ4_XS", "Q5_K", "Q3_K", "Q4_0", "Q5_1", "Q2_K",
                                                    "MXFP4", "TQ2_0"} | lattice
    elif matmul.SIMD and " avx2" in flags:   # the AVX2 tiles (_qtile_avx2.pxd)
        # the lattice and ternary ones mirror the T = 1 kernels' AVX2 lanes: not where those take 512-bit steps
        lattice = set() if all(f in flags.split() for f in ("avx512bw", "avx512vl", "avx512vbmi", "avx512_bitalg", "bmi2")) else {
            "TQ1_0", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"}
        assert tiled - {t.name for t in FLOATS} == {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "MXFP4",
                                                    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "TQ2_0"} | lattice
    if matmul.SIMD:   # float weights: AVX-512 F tiles where built, else the AVX2 ones (_ftile.pxd)
        assert {t.name for t in FLOATS} <= tiled
    for t in TILED:
        rng = np.random.default_rng(12)
        rows, cols = tile_sizes(t)[0]
        raw = weight(t, rows, cols, rng)
        x = rng.standard_normal((19, cols)).astype(np.float32)
        a, b = (np.empty((19, rows), np.float32) for _ in range(2))
        matmul._gemm_rows_into(raw, int(t), 0, rows, cols, x, a)
        old = matmul._set_tile_tokens(5)
        try:
            matmul._gemm_rows_into(raw, int(t), 0, rows, cols, x, b)
        finally:
            matmul._set_tile_tokens(old)
        assert np.array_equal(a, b)
        matmul._gemm_rows_into(raw, int(t), 0, rows, cols, x, b, tiles=False)
        assert np.array_equal(a, b)
