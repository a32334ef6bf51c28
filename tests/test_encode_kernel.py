"""The compiled BERT pass (abi/llm/_encode.pyx) against a float64 numpy twin, on widths that
are not multiples of the SIMD width, for both of its passes (few tokens, split by output
columns; many tokens, split by rows) and several thread counts."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.special import erf

from abi.llm import _encode

D, H, F, N_LAYERS, EPS = 36, 4, 76, 2, 1e-12  # head 9, rows of 36 and 76 floats: SIMD tails


def layers(seed=0):
    rng = np.random.default_rng(seed)
    r = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)
    return [SimpleNamespace(wqkv=r(3 * D, D), bqkv=r(3 * D), wo=r(D, D), bo=r(D),
                            attn_norm=(1 + r(D), r(D)), w_up=r(F, D), b_up=r(F),
                            w_down=r(D, F), b_down=r(D), out_norm=(1 + r(D), r(D)))
            for _ in range(N_LAYERS)]


def twin(blocks, x, lengths):
    """The same pass in float64, one sequence and one head at a time."""
    def ln(v, norm):
        mu = v.mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(((v - mu) ** 2).mean(-1, keepdims=True) + EPS) * norm[0] + norm[1]

    out, start, hd = [], 0, D // H
    for n in lengths:
        h = x[start:start + n].astype(np.float64)
        for b in blocks:
            qkv = h @ b.wqkv.T.astype(np.float64) + b.bqkv
            heads = []
            for j in range(H):
                q, k, v = (qkv[:, i * D + j * hd:i * D + (j + 1) * hd] for i in range(3))
                s = q @ k.T / math.sqrt(hd)
                p = np.exp(s - s.max(-1, keepdims=True))
                heads.append(p / p.sum(-1, keepdims=True) @ v)
            h = ln(h + np.concatenate(heads, 1) @ b.wo.T + b.bo, b.attn_norm)
            u = h @ b.w_up.T + b.b_up
            u = 0.5 * u * (1 + erf(u / math.sqrt(2)))
            h = ln(h + u @ b.w_down.T + b.b_down, b.out_norm)
        out.append(h)
        start += n
    return np.concatenate(out)


def ranges(lengths):
    ends = np.cumsum(lengths)
    return (np.repeat(ends - lengths, lengths).astype(np.int32),
            np.repeat(ends, lengths).astype(np.int32))


@pytest.mark.parametrize("lengths", [[1], [5, 3, 9], [70], [30, 1, 45, 12]])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("few_tokens", [0, 200])  # 0: always the row-split pass; 200: always few
def test_compiled_pass_matches_the_float64_twin(lengths, threads, few_tokens):
    blocks = layers()
    enc = _encode.Encoder(blocks, D, F, H, EPS)
    x = np.random.default_rng(1).standard_normal((sum(lengths), D)).astype(np.float32)
    expected = twin(blocks, x, lengths)
    got = enc.run(x.copy(), *ranges(lengths), threads, 4, few_tokens)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_bad_arguments_are_value_errors():
    enc = _encode.Encoder(layers(), D, F, H, EPS)
    x = np.zeros((3, D), np.float32)
    lo, hi = ranges([3])
    with pytest.raises(ValueError, match="float32"):
        enc.run(x.astype(np.float64), lo, hi, 1)
    with pytest.raises(ValueError, match="int32"):
        enc.run(x, lo.astype(np.int64), hi, 1)
    with pytest.raises(ValueError, match="inside the batch"):
        enc.run(x, lo, hi + 1, 1)
    with pytest.raises(ValueError, match="float32 array of"):
        _encode.Encoder(layers()[:1], D + 1, F, H, EPS)
    assert enc.run(np.zeros((0, D), np.float32), *ranges([]), 2).shape == (0, D)
