"""The mixture-of-experts routing of the decoder recipe (``decoder.route``) against a plain
loop written from llama.cpp's build_moe_ffn: probabilities (softmax or sigmoid), top-k of
probabilities plus the selection bias, the unbiased probabilities as weights, renormalised
(sum clamped at f16's smallest normal) or not, then scaled. Experts exactly, weights within
float32 rounding (2e-6 relative)."""
import math

import numpy as np
import pytest

from abi.errors import UnsupportedModelError
from abi.llm.models.decoder import ModelArgs, route


def _loop_route(logits, gating, bias, k, norm, scale):
    weights, experts = [], []
    for row in logits.astype(np.float64):
        if gating == "sigmoid":
            probs = [1 / (1 + math.exp(-z)) for z in row]
        else:
            e = [math.exp(z - max(row)) for z in row]
            probs = [v / sum(e) for v in e]
        keys = [p + (bias[i] if bias is not None else 0.0) for i, p in enumerate(probs)]
        chosen = sorted(range(len(keys)), key=lambda i: (-keys[i], i))[:k]
        w = [probs[i] for i in chosen]
        if norm:
            total = max(sum(w), 6.103515625e-5)
            w = [v / total for v in w]
        if scale not in (0.0, 1.0):
            w = [v * scale for v in w]
        weights.append(w)
        experts.append(chosen)
    return np.array(weights), np.array(experts)


@pytest.mark.parametrize("gating,biased,norm,scale", [
    ("softmax", False, True, 0.0), ("softmax", False, False, 0.0),
    ("sigmoid", True, True, 2.5), ("sigmoid", False, False, 1.0), ("sigmoid", True, False, 16.0)])
def test_route_matches_a_plain_loop(gating, biased, norm, scale):
    rng = np.random.default_rng(3)
    n_exp, k = 16, 4
    logits = (2 * rng.standard_normal((12, n_exp))).astype(np.float32)
    # the bias moves the choice away from the largest probabilities (what the test must catch)
    bias = (0.5 * rng.standard_normal(n_exp)).astype(np.float32) if biased else None
    a = ModelArgs("t", 1, 1, 1, 1, 1, 1, 1, 1, 1e-6, 1e4, 1, n_expert=n_exp, n_expert_used=k,
                  expert_gating=gating, expert_norm=norm, expert_weights_scale=scale)
    got_w, got_e = route(logits, a, bias)
    want_w, want_e = _loop_route(logits, gating, bias, k, norm, scale)
    np.testing.assert_array_equal(got_e, want_e)
    np.testing.assert_allclose(got_w, want_w, rtol=2e-6)
    if biased:   # the bias changed some choice, so the test above can tell it apart
        unbiased = _loop_route(logits, gating, None, k, norm, scale)[1]
        assert not np.array_equal(np.sort(unbiased, 1), np.sort(want_e, 1))


@pytest.mark.parametrize("func", [0, 3, 4, None])
def test_other_or_missing_gating_functions_are_refused(func):
    """dots1 routes by the file's expert_gating_func (llama.cpp aborts without one)."""
    from abi.llm.models import get_architecture

    meta = {"general.architecture": "dots1", "dots1.embedding_length": 64, "dots1.attention.head_count": 4,
            "dots1.block_count": 1, "dots1.context_length": 64, "dots1.feed_forward_length": 64,
            "dots1.expert_count": 4, "dots1.expert_used_count": 2, "dots1.expert_feed_forward_length": 32,
            "dots1.expert_shared_count": 1, "dots1.expert_gating_func": func, "tokenizer.ggml.tokens": ["a"] * 8}
    with pytest.raises(UnsupportedModelError, match=f"expert_gating_func {func}" if func is not None
                       else "'dots1.expert_gating_func' is missing"):
        get_architecture("dots1").ModelArgs.from_gguf(meta)
    meta["dots1.expert_gating_func"] = 2
    assert get_architecture("dots1").ModelArgs.from_gguf(meta).expert_gating == "sigmoid"
