"""Sampling as composition (mlx-lm style): logits processors adjust the logits given the
tokens so far; a sampler turns logits into a token id. Each part is a small function."""
from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError

LogitsProcessor = Callable[[Sequence[int], np.ndarray], np.ndarray]
Sampler = Callable[[np.ndarray], int]


def _check(name, value, lo, hi=None):
    if value is None or not (lo <= value) or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} must be in {rng}, got {value!r}", field=name)


# -- logits processors ------------------------------------------------------------------------

def repetition_penalty(penalty: float, window: int = 64) -> LogitsProcessor:
    """llama.cpp/CTRL style: logits of recent tokens are divided by ``penalty`` when
    positive and multiplied when negative."""
    def apply(tokens, logits):
        # a repeated id is penalised once: every copy writes the same value, computed from
        # the logit before any write (no need to sort the window for np.unique)
        recent = np.asarray(tokens[-window:] if window > 0 else tokens, np.int64)
        if recent.size:
            sel = logits[recent]
            logits[recent] = np.where(sel > 0, sel / penalty, sel * penalty)
        return logits
    apply.spec = ("repetition_penalty", penalty, window)  # lets a device sampler rebuild it
    return apply


def presence_frequency_penalty(presence: float, frequency: float, window: int = 64) -> LogitsProcessor:
    """OpenAI style: subtract ``presence`` once per seen token and ``frequency`` per occurrence."""
    def apply(tokens, logits):
        counts = Counter(tokens[-window:] if window > 0 else tokens)
        if counts:
            ids = np.fromiter(counts.keys(), np.int64)
            n = np.fromiter(counts.values(), np.float32)
            logits[ids] -= n * np.float32(frequency) + np.float32(presence)
        return logits
    apply.spec = ("presence_frequency", presence, frequency, window)
    return apply


def logit_bias(bias: dict) -> LogitsProcessor:
    ids = np.array([int(k) for k in bias], np.int64)
    vals = np.array([float(v) for v in bias.values()], np.float32)

    def apply(tokens, logits):
        if ids.size and (ids.min() < 0 or ids.max() >= logits.shape[-1]):
            raise ConfigError(f"logit_bias names token ids outside [0, {logits.shape[-1]})",
                              field="logit_bias")
        logits[ids] += vals
        return logits
    apply.spec = ("logit_bias", dict(zip(ids.tolist(), vals.tolist())))
    return apply


def make_logits_processors(repetition_penalty_value: float = 1.0, repetition_window: int = 64,
                           presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                           logit_bias_map: dict | None = None) -> list[LogitsProcessor]:
    # beyond this range the division overflows float32 logits and nothing sensible remains
    _check("repetition_penalty", repetition_penalty_value, 1e-3, 1e3)
    _check("presence_penalty", presence_penalty, -2.0, 2.0)
    _check("frequency_penalty", frequency_penalty, -2.0, 2.0)
    procs: list[LogitsProcessor] = []
    if logit_bias_map:
        procs.append(logit_bias(logit_bias_map))
    if repetition_penalty_value != 1.0:
        procs.append(repetition_penalty(repetition_penalty_value, repetition_window))
    if presence_penalty or frequency_penalty:
        procs.append(presence_frequency_penalty(presence_penalty, frequency_penalty, repetition_window))
    return procs


# -- samplers ---------------------------------------------------------------------------------

def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


_TOP_K_COLUMNS = 512


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """Ascending indices of the logits at or above the k-th largest (ties kept), 0 < k < n:
    what ``np.flatnonzero(logits >= np.partition(logits, -k)[-k])`` gives, without
    partitioning the whole vocabulary (a millisecond per token on 49,152 logits)."""
    n = logits.shape[-1]
    rows = n // _TOP_K_COLUMNS
    if rows >= 4 and k <= _TOP_K_COLUMNS:
        # the columns' maxima are distinct logits, so at least k logits reach the k-th largest
        # of them: the k-th largest logit is among those few
        m = rows * _TOP_K_COLUMNS
        maxima = logits[:m].reshape(rows, _TOP_K_COLUMNS).max(axis=0)
        if m < n:
            maxima = np.concatenate((maxima, logits[m:]))
        maxima.sort()   # NaN last: a NaN logit (a NaN logit_bias) leaves it to the partition
        if not np.isnan(maxima[-1]):
            ids = np.flatnonzero(logits >= maxima[-k])
            vals = logits[ids]
            return ids[vals >= np.partition(vals, -k)[-k]]
    return np.flatnonzero(logits >= np.partition(logits, -k)[-k])


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest logits (others -inf); k <= 0 keeps all."""
    if 0 < k < logits.shape[-1]:
        ids = top_k_ids(logits, k)
        out = np.full_like(logits, -np.inf)
        out[ids] = logits[ids]
        logits = out
    return logits


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability reaches p."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")
    probs = softmax(logits[order])
    keep = int(np.searchsorted(np.cumsum(probs), p) + 1)
    out = np.full_like(logits, -np.inf)
    out[order[:keep]] = logits[order[:keep]]
    return out


def min_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Drop tokens whose probability is below p times the most likely one's."""
    if p <= 0.0:
        return logits
    threshold = logits.max() + np.log(p)
    return np.where(logits >= threshold, logits, -np.inf)


def make_sampler(temperature: float = 0.7, top_k: int = 40, top_p: float = 0.9,
                 min_p: float = 0.0, seed: int | None = None) -> Sampler:
    """Greedy when temperature is 0; otherwise top-k, top-p, min-p, then temperature
    (llama.cpp's default order) and a draw from a generator seeded with ``seed``."""
    _check("temperature", temperature, 0.0, 100.0)
    _check("top_p", top_p, 0.0, 1.0)
    _check("min_p", min_p, 0.0, 1.0)
    if top_k is None or top_k < 0:
        raise ConfigError(f"top_k must be >= 0, got {top_k!r}", field="top_k")
    spec = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed)
    if temperature == 0:
        greedy = lambda logits: int(np.argmax(logits))  # noqa: E731
        greedy.spec = spec  # the settings, for a device sampler (abi.llm.cuda_forward)
        return greedy
    rng = np.random.default_rng(seed)

    def sample(logits: np.ndarray) -> int:
        # top-k first on the whole vocabulary, then the rest on the (few) candidates left
        if 0 < top_k < logits.shape[-1]:
            ids = top_k_ids(logits, top_k)
        else:
            ids = np.arange(logits.shape[-1])
        x = min_p_filter(top_p_filter(logits[ids], top_p), min_p).astype(np.float64)
        with np.errstate(over="ignore"):  # shift first: tiny temperatures give -inf, not nan
            probs = softmax((x - x.max()) / temperature)
        return int(ids[rng.choice(probs.shape[-1], p=probs)])
    sample.spec = spec
    return sample


def top_logprobs(logits: np.ndarray, token: int, n: int) -> dict:
    """Log-probability of ``token`` and of the ``n`` most likely tokens under the model."""
    lp = log_softmax(logits.astype(np.float64))
    top = np.argpartition(-lp, n)[:n] if 0 < n < lp.shape[-1] else np.arange(lp.shape[-1])
    top = top[np.argsort(-lp[top], kind="stable")][:max(n, 0)]
    return {"token": token, "logprob": float(lp[token]),
            "top": [(int(t), float(lp[t])) for t in top]}
