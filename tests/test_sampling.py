import numpy as np
import pytest

from abi.errors import ConfigError
from abi.llm.generation import StopStrings
from abi.llm.sampling import (log_softmax, make_logits_processors, make_sampler, min_p_filter,
                              presence_frequency_penalty, repetition_penalty, top_k_filter,
                              top_logprobs, top_p_filter)


def test_greedy_when_temperature_zero():
    s = make_sampler(temperature=0.0)
    assert s(np.array([0.1, 3.0, -1.0, 2.9], np.float32)) == 1


def test_top_k_keeps_k_largest():
    x = np.array([1.0, 5.0, 3.0, 4.0, 2.0], np.float32)
    out = top_k_filter(x, 2)
    assert np.isfinite(out).sum() == 2 and set(np.flatnonzero(np.isfinite(out))) == {1, 3}
    assert np.array_equal(top_k_filter(x, 0), x)


def test_top_p_keeps_smallest_set_reaching_p():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = np.log(probs).astype(np.float32)
    kept = np.isfinite(top_p_filter(logits, 0.75))
    assert kept.tolist() == [True, True, False, False]  # 0.5 < 0.75 <= 0.8
    assert np.isfinite(top_p_filter(logits, 0.8001)).sum() == 3
    assert np.isfinite(top_p_filter(logits, 1.0)).all()


def test_min_p_relative_to_best():
    probs = np.array([0.6, 0.3, 0.06, 0.04])
    kept = np.isfinite(min_p_filter(np.log(probs), 0.1))
    assert kept.tolist() == [True, True, True, False]


def test_repetition_penalty_divides_positive_multiplies_negative():
    logits = np.array([2.0, -2.0, 1.0], np.float32)
    out = repetition_penalty(2.0)([0, 1, 0], logits.copy())
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_presence_and_frequency_penalties():
    out = presence_frequency_penalty(0.5, 0.25)([2, 2, 1], np.zeros(3, np.float32))
    assert out.tolist() == [0.0, -0.75, -1.0]


def test_window_limits_penalties():
    out = repetition_penalty(2.0, window=1)([0, 1], np.array([2.0, 2.0], np.float32))
    assert out.tolist() == [2.0, 1.0]


def test_logit_bias_and_validation():
    procs = make_logits_processors(1.0, logit_bias_map={1: 10.0})
    x = np.zeros(3, np.float32)
    for p in procs:
        x = p([], x)
    assert x.tolist() == [0.0, 10.0, 0.0]
    with pytest.raises(ConfigError):
        make_logits_processors(1.0, logit_bias_map={7: 1.0})[0]([], np.zeros(3, np.float32))
    with pytest.raises(ConfigError) as e:
        make_logits_processors(1.0, presence_penalty=3.0)
    assert e.value.field == "presence_penalty"


def test_seed_reproducible_and_distribution_respected():
    logits = np.log(np.array([0.7, 0.2, 0.1], np.float32))
    a = [make_sampler(1.0, 0, 1.0, 0.0, seed=7)(logits) for _ in range(1)]
    s1, s2 = make_sampler(1.0, 0, 1.0, 0.0, seed=7), make_sampler(1.0, 0, 1.0, 0.0, seed=7)
    draws1 = [s1(logits) for _ in range(200)]
    draws2 = [s2(logits) for _ in range(200)]
    assert draws1 == draws2 and a[0] == draws1[0]
    freq = np.bincount(draws1, minlength=3) / 200
    assert abs(freq[0] - 0.7) < 0.1 and freq[2] < 0.2


def test_top_k_one_is_greedy_even_with_temperature():
    s = make_sampler(1.5, top_k=1, top_p=1.0, seed=0)
    assert all(s(np.array([0.0, 1.0, 0.5], np.float32)) == 1 for _ in range(20))


def test_invalid_sampler_settings():
    for kw in ({"temperature": -1}, {"top_p": 1.5}, {"min_p": -0.1}, {"top_k": -3}):
        with pytest.raises(ConfigError):
            make_sampler(**{"temperature": 0.7, **kw})


def test_top_logprobs():
    logits = np.array([1.0, 3.0, 2.0], np.float32)
    info = top_logprobs(logits, 2, 2)
    lp = log_softmax(logits.astype(np.float64))
    assert info["token"] == 2 and info["logprob"] == pytest.approx(lp[2])
    assert [t for t, _ in info["top"]] == [1, 2]


@pytest.mark.parametrize("pieces, stops, emitted, stopped", [
    (["Hel", "lo wor", "ld"], ["world"], "Hello ", True),
    (["a", "b", "c"], ["bd"], "abc", False),
    (["x###", "#y"], ["####"], "x", True),
    (["Sto", "p", "!"], ["Stop!", "op"], "St", True),
])
def test_stop_strings_cut_exactly_across_pieces(pieces, stops, emitted, stopped):
    s = StopStrings(stops)
    out, hit = "", False
    for p in pieces:
        text, hit = s.feed(p)
        out += text
        if hit:
            break
    if not hit:
        out += s.flush()
    assert out == emitted and hit == stopped


def test_stop_string_prefix_is_held_then_flushed():
    s = StopStrings(["</end>"])
    text, hit = s.feed("answer </e")
    assert text == "answer " and not hit
    assert s.flush() == "</e"


def _top_k_ids_by_partition(x, k):
    return np.flatnonzero(x >= np.partition(x, -k)[-k])


@pytest.mark.parametrize("n", [7, 2048, 2049, 49152, 151936 + 17])
def test_top_k_ids_match_a_whole_partition(n):
    from abi.llm.sampling import top_k_ids

    rng = np.random.default_rng(n)
    for trial in range(6):
        x = (rng.standard_normal(n) * 3).astype(np.float32)
        if trial == 1:   # heavy ties: few distinct values
            x = rng.integers(0, 5, n).astype(np.float32)
        if trial == 2:   # a constraint left a handful of tokens
            x[:] = -np.inf
            x[rng.choice(n, min(n, 5), replace=False)] = rng.standard_normal(min(n, 5))
        if trial == 3:   # the best logits crowded into one column
            x[::512] += 40
        if trial == 4:   # a NaN logit_bias
            x[rng.choice(n, 3)] = np.nan
        for k in (1, 2, 40, 512, 513, n - 1):
            if 0 < k < n:
                assert np.array_equal(top_k_ids(x, k), _top_k_ids_by_partition(x, k)), (trial, k)


def test_sampler_draws_as_with_a_whole_partition():
    """The candidate search changes no draw: a twin sampling from the partition's ids."""
    from abi.llm.sampling import softmax

    rng = np.random.default_rng(3)
    for seed in range(4):
        s = make_sampler(0.7, 40, 0.9, 0.05, seed=seed)
        twin = np.random.default_rng(seed)
        for _ in range(25):
            x = (rng.standard_normal(49152) * 3).astype(np.float32)
            ids = _top_k_ids_by_partition(x, 40)
            y = min_p_filter(top_p_filter(x[ids], 0.9), 0.05).astype(np.float64)
            probs = softmax((y - y.max()) / 0.7)
            assert s(x) == int(ids[twin.choice(probs.shape[-1], p=probs)])


def test_repetition_penalty_applies_once_per_repeated_token():
    out = repetition_penalty(2.0)([1, 1, 1, 0, 1], np.array([8.0, -8.0, 3.0], np.float32))
    assert out.tolist() == [4.0, -16.0, 3.0]
