"""Quantisation: bit-exact with gguf.quants where it implements the type, bit-exact with our
numpy references everywhere, and round-trip errors within each type's stated bound. The
k-quants are llama.cpp's searches (bit-identical to ggml: tests/test_quantize.py)."""
from __future__ import annotations

import numpy as np
import pytest

import gguf  # the oracle: a test dependency, never skipped

import abi._kernels as K
from abi._kernels import quant
from abi._kernels.ref_kquants import _q3_k_scales, unpack_scale_min_k4
from abi.errors import KernelInputError, UnsupportedTensorType
from abi.gguf.constants import GGMLType

REQUIRED = [GGMLType[n] for n in "Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q4_K Q6_K Q8_K".split()]
GGUF_QUANTISES = [GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0,
                  GGMLType.BF16]


def _test_data(block: int, n_rows: int, rng) -> np.ndarray:
    """Rows of Gaussian values at scales from 1e-6 to 1e6, plus edge rows."""
    cols = 4 * max(block, 32)
    x = rng.standard_normal((n_rows, cols)).astype(np.float32)
    x *= np.float32(10.0) ** rng.uniform(-6, 6, (n_rows, 1)).astype(np.float32)
    x[0] = 0                                       # all-zero blocks
    x[1] = 1.5                                     # constant blocks
    x[2] = np.abs(x[2])                            # all positive / all negative
    x[3] = -np.abs(x[3])
    x[4, :] = 0
    x[4, 7] = -2.0                                 # one non-zero value
    x[5] = np.tile(np.arange(-16, 16, dtype=np.float32) + np.float32(0.5), cols // 32)   # ties
    x[6, :] = 127.0
    x[6, 1::2] = (np.arange(cols // 2) % 126 - 63).astype(np.float32) + np.float32(0.5)  # d = 1: ties
    x[7] = rng.integers(-40, 40, cols).astype(np.float32)   # integer values: exact quotients
    return x


def test_every_required_type_is_supported():
    assert set(REQUIRED) <= set(K.QUANTIZE_TYPES)


@pytest.mark.parametrize("t", GGUF_QUANTISES, ids=lambda t: t.name)
def test_bit_exact_against_gguf(t):
    x = _test_data(t.block_size, 400, np.random.default_rng(int(t)))
    with np.errstate(over="ignore"):  # scales past f16's range become inf: part of the check
        expected = gguf.quants.quantize(x, gguf.GGMLQuantizationType(int(t)))
    assert np.array_equal(K.quantize(x, t, n_threads=2), expected)
    assert np.array_equal(K.quantize_reference(x, t), expected)


def _double_rounding_edges(n_blocks: int = 64) -> np.ndarray:
    """Q4_0 blocks holding values where trunc(round(x * inv) + 8.5) differs from truncating
    the exact x * inv + 8.5: a fused multiply-add in the kernel would change their codes."""
    rng = np.random.default_rng(9)
    rows = []
    while len(rows) < n_blocks:
        mx = np.float32(rng.uniform(1, 2))
        inv = np.float32(1) / (mx / np.float32(-8))
        center = np.float32((rng.integers(1, 15) - 8.5) * (mx / np.float32(-8)))
        xs = center + np.arange(-50, 50, dtype=np.float32) * np.spacing(center)
        two_roundings = np.trunc(xs * inv + np.float32(8.5))
        exact = np.floor(xs.astype(np.float64) * np.float64(inv) + 8.5)
        for x in xs[two_roundings != exact][:1]:
            block = np.zeros(32, np.float32)
            block[0], block[1] = mx, x
            rows.append(block)
    return np.stack(rows)


def test_no_fused_multiply_add_at_rounding_edges():
    x = _double_rounding_edges()
    expected = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q4_0)
    assert np.array_equal(K.quantize(x, GGMLType.Q4_0), expected)


@pytest.mark.parametrize("t", K.QUANTIZE_TYPES, ids=lambda t: t.name)
def test_cython_matches_numpy_reference(t):
    rng = np.random.default_rng(100 + int(t))
    x = _test_data(t.block_size, 300, rng)
    fast = K.quantize(x, t, n_threads=2)
    assert fast.shape == (300, x.shape[1] // t.block_size * t.type_size)
    assert np.array_equal(fast, K.quantize_reference(x, t))
    assert np.array_equal(K.quantize(x, t, n_threads=1), fast)


def _blocks(x, t):
    return K.quantize(x, t).reshape(-1, t.type_size), K.dequantize(K.quantize(x, t), t, x.shape)


def _gaussian(t, n=200):
    return np.random.default_rng(7).standard_normal((n, 4 * max(t.block_size, 64))).astype(np.float32)


def test_q8_0_and_q8_1_round_trip_bounds():
    for t, qoff in ((GGMLType.Q8_0, 2), (GGMLType.Q8_1, 4)):
        x = _gaussian(t)
        blocks, xr = _blocks(x, t)
        xb, xrb = x.reshape(-1, 32), xr.reshape(-1, 32)
        amax = np.abs(xb).max(axis=1, keepdims=True)
        d16 = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        # half a step of absmax/127, plus the f16 rounding of d (2^-11 relative) times |q| <= 127
        assert np.all(np.abs(xb - xrb) <= amax / 254 * (1 + 1e-6) + 127 * np.abs(d16 - amax / 127))
        assert np.linalg.norm(x - xr) / np.linalg.norm(x) < 0.01
        if t == GGMLType.Q8_1:   # s = d * sum(q), rounded once to f16
            s = blocks[:, 2:4].copy().view(np.float16).astype(np.float64)
            sum_q = blocks[:, qoff:].view(np.int8).astype(np.int64).sum(axis=1, keepdims=True)
            exact = (amax.astype(np.float64) / 127) * sum_q
            assert np.all(np.abs(s - exact) <= np.abs(exact) * 2.0 ** -11 + 1e-7 * amax)


def test_q8_k_round_trip_bound_and_bsums():
    t = GGMLType.Q8_K
    x = _gaussian(t)
    blocks, xr = _blocks(x, t)
    d = np.abs(blocks[:, 0:4].copy().view(np.float32))    # llama.cpp's d takes the sign of m
    assert np.all(np.abs(x.reshape(-1, 256) - xr.reshape(-1, 256)) <= d / 2 * (1 + 1e-6))
    q = blocks[:, 4:260].view(np.int8).astype(np.int32)
    bsums = blocks[:, 260:292].copy().view(np.int16)
    assert np.array_equal(bsums, q.reshape(-1, 16, 16).sum(axis=2))
    assert np.linalg.norm(x - xr) / np.linalg.norm(x) < 0.01


def test_q8_k_follows_llama_cpp_rounding():
    """llama.cpp's quantize_row_q8_K: iscale = -127 / m for m the first element of largest
    |x|, round half to even, d = 1 / iscale; our activations match it integer for integer."""
    x = np.zeros((2, 256), np.float32)
    x[0, :5] = [-127.0, 2.5, 3.5, -0.5, 126.5]        # iscale = 1: the ties go to even
    x[1, :2] = [5.0, -5.0]                            # equal |x|: the first one sets the sign
    for blocks in (K.quantize(x, GGMLType.Q8_K), K.quantize_reference(x, GGMLType.Q8_K)):
        q = blocks[:, 4:260].view(np.int8)
        d = blocks[:, 0:4].copy().view(np.float32)[:, 0]
        assert q[0, :5].tolist() == [-127, 2, 4, 0, 126] and d[0] == np.float32(1.0)
        assert q[1, :2].tolist() == [-127, 127] and d[1] == np.float32(1) / (np.float32(-127) / np.float32(5))


def _k_grid(t, blocks):
    """Per element (step, offset, lowest code, highest code) of a k-quant block: it decodes
    as step * q - offset, q in lo..hi."""
    n = blocks.shape[0]
    f16 = lambda b: b.copy().view(np.float16).astype(np.float32)   # noqa: E731
    if t in (GGMLType.Q4_K, GGMLType.Q5_K):
        sc, mn = unpack_scale_min_k4(blocks[:, 4:16])
        step, off = f16(blocks[:, 0:2]) * sc, f16(blocks[:, 2:4]) * mn     # (n, 8) float32
        return np.repeat(step, 32, 1), np.repeat(off, 32, 1), 0, 15 if t == GGMLType.Q4_K else 31
    if t == GGMLType.Q6_K:
        step = f16(blocks[:, 208:210]) * blocks[:, 192:208].view(np.int8).astype(np.float32)
        return np.repeat(step, 16, 1), np.zeros((n, 256), np.float32), -32, 31
    step = f16(blocks[:, 108:110]) * _q3_k_scales(blocks[:, 96:108]).astype(np.float32)
    return np.repeat(step, 16, 1), np.zeros((n, 256), np.float32), -4, 3


K_QUANTS = [GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K]


@pytest.mark.parametrize("t", K_QUANTS, ids=lambda t: t.name)
def test_k_quants_decode_to_the_nearest_level(t):
    """The searches pick the scales; against the stored scales each value then takes the
    nearest level of its sub-block (clipped at the ends of the code range)."""
    rng = np.random.default_rng(3)
    x = _gaussian(t)
    x[:20] += rng.uniform(-5, 5, (20, 1)).astype(np.float32)     # offset blocks (all one sign)
    x[20:40] *= np.float32(10.0) ** rng.uniform(-4, 4, (20, 1)).astype(np.float32)
    blocks, xr = _blocks(x, t)
    step, off, lo, hi = (np.asarray(v, np.float64) if np.ndim(v) else v for v in _k_grid(t, blocks))
    xb = x.reshape(-1, 256).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint((xb + off) / step), lo, hi)
    nearest = np.where(step != 0, step * np.nan_to_num(q) - off, -off)
    err = np.abs(xb - xr.reshape(-1, 256))
    tol = 1e-5 * (np.abs(xb).max(axis=1, keepdims=True) + np.abs(off))
    assert np.all(err <= np.abs(xb - nearest) + tol)
    assert np.mean(err <= np.abs(step) / 2 + tol) > 0.99     # clipping is rare


@pytest.mark.parametrize("t, bound", [(GGMLType.Q3_K, 0.155), (GGMLType.Q4_K, 0.074),
                                      (GGMLType.Q5_K, 0.0375), (GGMLType.Q6_K, 0.0185)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_k_quant_gaussian_error(t, bound):
    """Relative RMS error on Gaussian rows; llama.cpp's searches measure 0.151 / 0.0714 /
    0.0361 / 0.0177 (a single covering scale per sub-block gave 0.079 for Q4_K and 0.0195
    for Q6_K, above these bounds)."""
    g = _gaussian(t)
    assert np.linalg.norm(g - K.dequantize(K.quantize(g, t), t, g.shape)) / np.linalg.norm(g) < bound


@pytest.mark.parametrize("t", [GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1],
                         ids=lambda t: t.name)
def test_legacy_round_trip_bound(t):
    """Half a step for the min/max types; the symmetric _0 types map the largest magnitude to
    code 0 and clip the opposite end at the top code, so there it is up to one step."""
    x = _gaussian(t)
    blocks, xr = _blocks(x, t)
    d = np.abs(blocks[:, 0:2].copy().view(np.float16).astype(np.float32))
    xb = x.reshape(-1, 32)
    # half a step, plus f16 rounding of d (and of the min for the _1 types) over the code range
    levels = 16 if t in (GGMLType.Q4_0, GGMLType.Q4_1) else 32
    slack = levels * d * 2.0 ** -11 + np.abs(xb).max(axis=1, keepdims=True) * 2.0 ** -10
    steps = 0.5 if t in (GGMLType.Q4_1, GGMLType.Q5_1) else 1.0
    err = np.abs(xb - xr.reshape(-1, 32))
    assert np.all(err <= steps * d + slack)
    assert np.mean(err <= d / 2 + slack) > 0.99


def test_zeros_round_trip_exactly():
    for t in K.QUANTIZE_TYPES:
        z = np.zeros((2, 512), np.float32)
        assert np.array_equal(K.dequantize(K.quantize(z, t), t, z.shape), z), t.name


def test_portable_f16_conversion_matches_numpy():
    """The bit-twiddling f16 code used where the CPU lacks F16C, checked on this machine."""
    every_half = np.arange(1 << 16, dtype=np.uint16)
    finite = every_half[(every_half & 0x7C00) != 0x7C00]
    out = np.empty(finite.size, np.float32)
    quant._f16_soft_decode(finite, out)
    assert np.array_equal(out, finite.view(np.float16).astype(np.float32))
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 1 << 32, 2_000_000, dtype=np.uint32)
    x = bits.view(np.float32)
    x = np.concatenate([x[~np.isnan(x)], np.float32([0.0, -0.0, 65504, 65519.996, 65520, 1e-8,
                                                     2.0 ** -25, 2.0 ** -24 * 1.5, 2.0 ** -14, np.inf])])
    enc = np.empty(x.size, np.uint16)
    quant._f16_soft_encode(x, enc)
    with pytest.warns(RuntimeWarning, match="overflow"):  # the inputs past 65504 are the point
        expected = x.astype(np.float16).view(np.uint16)
    assert np.array_equal(enc, expected)


def test_portable_q8_block_matches_simd():
    """The scalar Q8_0 quantiser (machines without AVX2) gives the same bytes as the SIMD one."""
    block = 32
    x = _test_data(block, 64, np.random.default_rng(block)).reshape(-1, block)
    q = np.empty(x.size, np.int8)
    d = np.empty(x.shape[0], np.float32)
    sums = quant._q8_portable(x.reshape(-1), block, q, d)
    ref = K.quantize_reference(x, GGMLType.Q8_0)
    assert np.array_equal(d.astype(np.float16).view(np.uint8), ref[:, 0:2].reshape(-1))
    assert np.array_equal(q.view(np.uint8), ref[:, 2:].reshape(-1))
    assert sums == q.reshape(-1, block).astype(np.int64).sum(axis=1).tolist()


def test_bad_input_is_a_typed_error():
    with pytest.raises(KernelInputError, match="multiple of 32"):
        K.quantize(np.zeros(40, np.float32), GGMLType.Q4_0)
    with pytest.raises(KernelInputError):
        K.quantize(np.float32(1.0), GGMLType.Q8_0)
    with pytest.raises(UnsupportedTensorType, match="Q2_K"):
        K.quantize(np.zeros(256, np.float32), GGMLType.Q2_K)
