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
