"""The device sampler's parameter layout and its numpy twin (no numba here).

Sampling on the device follows ``abi.llm.sampling.make_sampler``: logit bias, then
repetition penalty, then presence/frequency penalties (over the last ``window`` tokens);
greedy argmax at temperature 0; otherwise top-k, then top-p over the survivors (in the
host's stable order: value descending, index ascending), then min-p, then a draw from
softmax(x / temperature) over what is left.

The draw is the Gumbel-max trick: argmax_i (x_i / T + g_i) with g_i = -log(-log(u_i)) is
distributed as softmax(x / T), so one pass over the kept tokens replaces a sort and a
cumulative sum. u_i is a hash of (seed, step counter, token id): reproducible for a
seed, and independent of how the vocabulary is split across threads. The stream of
numbers differs from the CPU sampler's numpy generator, so a seed gives the same
tokens on every GPU run, not the CPU's tokens."""
from __future__ import annotations

import numpy as np

# int32 parameters
IP_TOP_K, IP_SEED, IP_N_HIST, IP_WINDOW, IP_N_BIAS, IP_COUNTER, IP_HEAD, IP_GREEDY = range(8)
N_IPARAMS = 8
# float32 parameters
FP_TEMP, FP_TOP_P, FP_MIN_P, FP_REP, FP_PRES, FP_FREQ = range(6)
N_FPARAMS = 6
HIST_MAX = 1024   # longest penalty window kept on the device
BIAS_MAX = 1024   # most logit_bias entries

M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9


def mul32(x, c: int):
    """(x * c) mod 2**32 for 0 <= x < 2**32, in pieces no int64 product overflows."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & M32


def mix32(x):
    """A 32-bit finaliser (xor-shift-multiply), good avalanche for consecutive inputs."""
    x = x ^ (x >> 16)
    x = mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def step_key(seed: int, counter: int) -> int:
    return mix32((seed & M32) ^ mix32((counter + GOLDEN) & M32))


def uniforms(seed: int, counter: int, ids: np.ndarray) -> np.ndarray:
    """u_i in (0, 1) for token ids ``ids`` at draw number ``counter``."""
    base = step_key(seed, counter)
    h = mix32((np.uint64(base) + np.asarray(ids, np.uint64) * np.uint64(GOLDEN)) & np.uint64(M32))
    return ((h >> np.uint64(8)).astype(np.float64) + 0.5) / float(1 << 24)


def gumbel(seed: int, counter: int, ids: np.ndarray) -> np.ndarray:
    return -np.log(-np.log(uniforms(seed, counter, ids)))


def kept_set(logits: np.ndarray, top_k: int, top_p: float, min_p: float) -> np.ndarray:
    """Token ids the device may draw from, by the host's rules on the host's order."""
    v = np.asarray(logits, np.float32)
    order = np.lexsort((np.arange(v.size), -v))       # value descending, id ascending
    n = v.size
    if 0 < top_k < v.size:
        n = int((v >= v[order[top_k - 1]]).sum())     # ties with the k-th are kept
    if top_p < 1.0:
        w = np.exp((v[order[:n]] - v[order[0]]).astype(np.float64))
        cum = np.cumsum(w)
        n = min(n, int(np.searchsorted(cum, top_p * cum[-1])) + 1)
    if min_p > 0.0:
        n = min(n, int((v[order[:n]] >= v[order[0]] + np.float32(np.log(min_p))).sum()))
    return order[:max(n, 1)]


def draw(logits: np.ndarray, temperature: float, top_k: int, top_p: float, min_p: float,
         seed: int, counter: int) -> int:
    """The token the device draws (up to float rounding of near-equal Gumbel scores)."""
    if temperature == 0:
        return int(np.argmax(logits))
    ids = kept_set(logits, top_k, top_p, min_p)
    v = np.asarray(logits, np.float64)[ids]
    with np.errstate(over="ignore"):  # shifted by the max, as the host: tiny temperatures stay finite
        d = np.where(v < v.max(), (v - v.max()) / temperature, 0.0)
    score = d + gumbel(seed, counter, ids)
    return int(ids[np.argmax(score)])
