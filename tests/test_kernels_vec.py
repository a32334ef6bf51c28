"""Attention's exponentials (abi._kernels._vec softmax_exp, shared by prompt and decode
attention) against float64 e^x: within 2 ulp on the range softmax gives them."""
import numpy as np

from abi._kernels.activations import softmax_exp_


def test_softmax_exp_is_within_two_ulp_and_sums_its_values():
    rng = np.random.default_rng(3)
    for n in (1, 5, 16, 17, 100, 1000):   # whole 16-lane vectors and every tail
        x = np.concatenate([rng.uniform(-87, 0, n - n // 2), rng.uniform(-3, 0, n // 2)]).astype(np.float32)
        m = np.float32(rng.uniform(-5, 5))
        s = x + m
        want = np.exp((s - m).astype(np.float64))   # s - m rounds as the kernel rounds it
        total = softmax_exp_(s, m)
        assert np.all(np.abs(s - want) <= 2 * np.spacing(want.astype(np.float32))), n
        assert abs(total - want.sum()) <= 1e-6 * want.sum()


def test_softmax_exp_edges():
    s = np.array([0.0, -86.9, -87.5, -200.0, -np.inf, np.nan, -1.0], np.float32)
    softmax_exp_(s, np.float32(0.0))
    assert s[0] == 1.0 and 0 < s[1] < 2e-37 and s[2] == 0 and s[3] == 0 and s[4] == 0
    assert np.isnan(s[5]) and abs(s[6] - np.exp(-1.0)) <= 2 * np.spacing(np.float32(np.exp(-1.0)))


def test_gelu_mul8_gives_the_table_gelu_times_up_bit_for_bit():
    """The compiled forward's vector GeGLU step against layers.gelu_tanh (the f16 table, 0
    at or below -10, x at or above 10) times the up product, on every edge and random values."""
    from abi._kernels.activations import gelu_mul8_
    from abi.llm.layers import GELU_TABLE, gelu_tanh

    rng = np.random.default_rng(8)
    edges = np.array([10.0, -10.0, 9.9999, -9.9999, np.nan, np.inf, -np.inf, 0.0, -0.0, 65520.0,
                      1e-8, -1e-8, 5.96e-8, 2.98e-8, 65504.0, -70000.0], np.float32)
    g = np.concatenate([edges, rng.uniform(-15, 15, 4000).astype(np.float32),
                        rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    u = rng.uniform(-3, 3, g.shape[0]).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        want = gelu_tanh(g) * u
    out = g.copy()
    n = gelu_mul8_(np.asarray(GELU_TABLE, np.float32), out, u)
    assert n % 8 == 0 and n in (0, g.shape[0] // 8 * 8)   # 0 where the CPU lacks AVX2 or F16C
    np.testing.assert_array_equal(out[:n], want[:n])
    np.testing.assert_array_equal(out[n:], g[n:])


def test_silu_mul_within_a_few_ulp_and_the_same_bits_wherever_an_element_sits():
    """SwiGLU's step against float64 g / (1 + e^-g) * u (within 4 ulp of the float32 result:
    the exponential's 2, the sum, the division and the product; below g = -88, where e^-g
    leaves float32's range, -0, within 1e-35 |u| of it), on edges and random values; an
    element's bits do not depend on its position (a vector lane or the padded tail)."""
    from abi._kernels.activations import silu_mul_

    rng = np.random.default_rng(9)
    edges = np.array([0.0, -0.0, 1e-8, -1e-8, 20.0, -20.0, 86.0, -86.0, 87.5, -87.5, 100.0, -100.0,
                      1e30, -1e30, np.inf, -np.inf], np.float32)
    g = np.concatenate([edges, rng.uniform(-12, 12, 3000), rng.standard_normal(3000) * 3]).astype(np.float32)
    u = rng.uniform(-3, 3, g.shape[0]).astype(np.float32)
    g64 = g.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        want = (g64 / (1.0 + np.exp(-g64)) * u.astype(np.float64)).astype(np.float32)
    out = g.copy()
    silu_mul_(out, u)
    finite = np.isfinite(want)
    assert np.all(np.abs(out[finite] - want[finite]) <= 4 * np.spacing(np.abs(want[finite])) + 1e-35 * np.abs(u[finite]))
    assert np.array_equal(np.isnan(out), np.isnan(want))
    for n in (1, 3, 7, 8, 9, 23):   # the same elements at other offsets and in tails
        for start in (0, 5, 100):
            part = g[start:start + n].copy()
            silu_mul_(part, u[start:start + n])
            assert np.array_equal(part, out[start:start + n], equal_nan=True), (n, start)
    nan = np.array([np.nan] * 3, np.float32)
    silu_mul_(nan, np.ones(3, np.float32))
    assert np.isnan(nan).all()
