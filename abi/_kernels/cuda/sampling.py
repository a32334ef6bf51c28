"""Sampling on the device, so a decode step returns one token id to the host, not logits.
The rules and the random numbers are those of ``sampling_ref`` (its numpy twin).

``penalize`` applies logit bias and the repetition / presence / frequency penalties over
the token history kept on the device; ``sample`` picks the token, writes it as the next
step's input, appends it to the history and advances the position and draw counter.
Both are single-block kernels (the vocabulary is scanned by SAMPLE_THREADS threads).

How ``sample`` finds the kept set without sorting the vocabulary:
- top-k with k <= SAMPLE_THREADS: each thread's largest logit is a candidate bound; the
  k-th largest of those bounds L is <= the k-th largest logit, so every token of the
  top-k has a logit >= L. Those candidates (usually a few times k) are gathered into
  shared memory, sorted (bitonic, value descending / id ascending, the host's order),
  and top-k, top-p (a prefix sum) and min-p cut that sorted prefix exactly.
- otherwise (no top-k, or too many candidates): thresholds are found by bisection on the
  float bit patterns (32 steps, each a block-wide count or sum over the vocabulary);
  ties at the top-p boundary are then kept together rather than split by id.
The draw is Gumbel-max over the kept tokens."""
from __future__ import annotations

import math

from .device import (NEG_INF, SAMPLE_CAND, SAMPLE_CPT, SAMPLE_THREADS, cuda, float32, float_as_int, int32,
                     int64, jit, vmax, vmin)
from .ops import block_sum
from .sampling_ref import (FP_FREQ, FP_MIN_P, FP_PRES, FP_REP, FP_TEMP, FP_TOP_P, GOLDEN, IP_COUNTER,
                           IP_GREEDY, IP_HEAD, IP_N_BIAS, IP_N_HIST, IP_SEED, IP_TOP_K, IP_WINDOW, M32)

INT_MIN = -(1 << 31)


@cuda.jit(device=True)
def _mul32(x, c):
    x = int64(x)  # int64 throughout: no product below overflows, in numba or the simulator
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & M32


@cuda.jit(device=True)
def _mix32(x):
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


@cuda.jit(device=True)
def _gumbel(base, i):
    h = _mix32((base + _mul32(i, GOLDEN)) & M32)
    u = (float32(h >> 8) + float32(0.5)) * float32(1.0 / (1 << 24))
    return -math.log(-math.log(u))


@cuda.jit(device=True)
def _scaled(v, mx, inv_t):
    """(v - max) / T, 0 at the max itself: finite for any temperature (1/T may be inf)."""
    d = v - mx
    return d * inv_t if d < float32(0.0) else float32(0.0)


@cuda.jit(device=True)
def _key(v):
    """An int ordered like the float v (negative floats have their magnitude bits flipped)."""
    b = float_as_int(v)
    if b < 0:
        b = b ^ 0x7FFFFFFF
    return b


@cuda.jit(device=True)
def _before(va, ia, vb, ib):
    """The host's order: larger value first, then smaller id."""
    return va > vb or (va == vb and ia < ib)


@cuda.jit(device=True)
def _block_argmax(v, i, rv, ri):
    """(value, id) of the block's best pair by _before (rv, ri: shared scratch)."""
    tid = cuda.threadIdx.x
    rv[tid] = v
    ri[tid] = i
    cuda.syncthreads()
    step = SAMPLE_THREADS // 2
    while step > 0:
        if tid < step and _before(rv[tid + step], ri[tid + step], rv[tid], ri[tid]):
            rv[tid] = rv[tid + step]
            ri[tid] = ri[tid + step]
        cuda.syncthreads()
        step //= 2
    bv = rv[0]
    bi = ri[0]
    cuda.syncthreads()
    return bv, bi


@jit
def penalize(logits, row, iparams, fparams, hist, bias_ids, bias_vals):
    """Logit bias, then repetition, then presence/frequency penalties, in place on
    logits[row] (one block). hist holds the last n_hist token ids (any order)."""
    tid = cuda.threadIdx.x
    for i in range(tid, iparams[IP_N_BIAS], SAMPLE_THREADS):
        logits[row, bias_ids[i]] += bias_vals[i]
    cuda.syncthreads()
    n = iparams[IP_N_HIST]
    rep = fparams[FP_REP]
    if rep != float32(1.0):
        for i in range(tid, n, SAMPLE_THREADS):
            tok = hist[i]
            first = True
            for j in range(i):
                if hist[j] == tok:
                    first = False
            if first:
                v = logits[row, tok]
                logits[row, tok] = v / rep if v > float32(0.0) else v * rep
    cuda.syncthreads()
    pres = fparams[FP_PRES]
    freq = fparams[FP_FREQ]
    if pres != float32(0.0) or freq != float32(0.0):
        for i in range(tid, n, SAMPLE_THREADS):
            tok = hist[i]
            first = True
            count = 0
            for j in range(n):
                if hist[j] == tok:
                    count += 1
                    if j < i:
                        first = False
            if first:
                logits[row, tok] -= float32(count) * freq + pres


@jit
def sample(logits, row, iparams, fparams, hist, state, tokens, out_token):
    rv = cuda.shared.array(SAMPLE_THREADS, float32)
    ri = cuda.shared.array(SAMPLE_THREADS, int32)
    cv = cuda.shared.array(SAMPLE_CAND, float32)
    ci = cuda.shared.array(SAMPLE_CAND, int32)
    n_cand = cuda.shared.array(1, int32)
    carry = cuda.local.array(SAMPLE_CPT, float32)
    tid = cuda.threadIdx.x
    n_vocab = logits.shape[1]
    temp = fparams[FP_TEMP]
    greedy = iparams[IP_GREEDY] != 0 or temp <= float32(0.0)
    # the block's best (value, id): the greedy answer, and the max for everything else
    bv = NEG_INF
    bi = n_vocab
    for i in range(tid, n_vocab, SAMPLE_THREADS):
        v = logits[row, i]
        if v > bv:
            bv = v
            bi = i
    local_max = bv
    mx, best = _block_argmax(bv, bi, rv, ri)
    if not greedy:
        top_k = iparams[IP_TOP_K]
        top_p = fparams[FP_TOP_P]
        min_p = fparams[FP_MIN_P]
        thr_min = NEG_INF
        if min_p > float32(0.0):
            thr_min = mx + math.log(min_p)
        base = _mix32((int64(iparams[IP_SEED]) & M32) ^ _mix32((int64(iparams[IP_COUNTER]) + GOLDEN) & M32))
        use_sorted = False
        n_keep = 0
        if 0 < top_k <= SAMPLE_THREADS and top_k < n_vocab:
            # bound L: the k-th largest per-thread maximum, by bisection on the bit keys
            lo = INT_MIN
            hi = _key(mx) + 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if cuda.syncthreads_count(int32(1 if _key(local_max) >= mid else 0)) >= top_k:
                    lo = mid
                else:
                    hi = mid
            if tid == 0:
                n_cand[0] = 0
            cuda.syncthreads()
            for i in range(tid, n_vocab, SAMPLE_THREADS):
                v = logits[row, i]
                if _key(v) >= lo:
                    slot = cuda.atomic.add(n_cand, 0, 1)
                    if slot < SAMPLE_CAND:
                        cv[slot] = v
                        ci[slot] = i
            cuda.syncthreads()
            nc = n_cand[0]
            if nc <= SAMPLE_CAND:
                use_sorted = True
                n2 = 2
                while n2 < nc:
                    n2 *= 2
                for i in range(nc + tid, n2, SAMPLE_THREADS):
                    cv[i] = NEG_INF
                    ci[i] = n_vocab + i
                cuda.syncthreads()
                size = 2
                while size <= n2:  # bitonic sort into the host's order
                    stride = size // 2
                    while stride > 0:
                        for i in range(tid, n2, SAMPLE_THREADS):
                            j = i ^ stride
                            if j > i:
                                if (i & size) == 0:
                                    swap = _before(cv[j], ci[j], cv[i], ci[i])
                                else:
                                    swap = _before(cv[i], ci[i], cv[j], ci[j])
                                if swap:
                                    tv = cv[i]
                                    cv[i] = cv[j]
                                    cv[j] = tv
                                    ti = ci[i]
                                    ci[i] = ci[j]
                                    ci[j] = ti
                        cuda.syncthreads()
                        stride //= 2
                    size *= 2
                # prefixes of the sorted candidates: top-k (every tie of the k-th value kept)
                # and min-p; top-p is a prefix of the top-k set, normalised over that set
                kth = cv[top_k - 1]
                cnt_k = 0
                cnt_m = 0
                for i in range(tid, nc, SAMPLE_THREADS):
                    if cv[i] >= kth:
                        cnt_k += 1
                    if cv[i] >= thr_min:
                        cnt_m += 1
                n_k = int32(block_sum(float32(cnt_k), rv))
                n_keep = vmin(n_k, int32(block_sum(float32(cnt_m), rv)))
                if top_p < float32(1.0):
                    # prefix sums of exp(v - max) over the top-k set (Hillis-Steele)
                    for i in range(tid, n2, SAMPLE_THREADS):
                        cv[i] = math.exp(cv[i] - mx) if i < n_k else float32(0.0)
                    cuda.syncthreads()
                    off = 1
                    while off < n2:
                        for c in range(SAMPLE_CPT):  # read every old value before any write
                            i = tid + c * SAMPLE_THREADS
                            carry[c] = cv[i - off] if off <= i < n2 else float32(0.0)
                        cuda.syncthreads()
                        for c in range(SAMPLE_CPT):
                            i = tid + c * SAMPLE_THREADS
                            if off <= i < n2:
                                cv[i] += carry[c]
                        cuda.syncthreads()
                        off *= 2
                    target = top_p * cv[n_k - 1]
                    if tid == 0:
                        n_cand[0] = n_k
                    cuda.syncthreads()
                    for i in range(tid, n_k, SAMPLE_THREADS):
                        if cv[i] >= target:
                            cuda.atomic.min(n_cand, 0, int32(i + 1))
                    cuda.syncthreads()
                    n_keep = vmin(n_keep, n_cand[0])
        if not use_sorted:
            # thresholds by bisection over the whole vocabulary
            thr = INT_MIN
            if 0 < top_k < n_vocab:
                lo = INT_MIN
                hi = _key(mx) + 1
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    cnt = 0
                    for i in range(tid, n_vocab, SAMPLE_THREADS):
                        if _key(logits[row, i]) >= mid:
                            cnt += 1
                    if block_sum(float32(cnt), rv) >= float32(top_k):
                        lo = mid
                    else:
                        hi = mid
                thr = lo
            if top_p < float32(1.0):
                z = float32(0.0)
                for i in range(tid, n_vocab, SAMPLE_THREADS):
                    v = logits[row, i]
                    if _key(v) >= thr:
                        z += math.exp(v - mx)
                target = top_p * block_sum(z, rv)
                lo = thr
                hi = _key(mx) + 1
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    mass = float32(0.0)
                    for i in range(tid, n_vocab, SAMPLE_THREADS):
                        v = logits[row, i]
                        if _key(v) >= mid:
                            mass += math.exp(v - mx)
                    if block_sum(mass, rv) >= target:
                        lo = mid
                    else:
                        hi = mid
                thr = lo
            if thr_min > NEG_INF:
                thr = vmax(thr, _key(thr_min))
        # Gumbel-max over the kept tokens
        bv = NEG_INF
        bi = n_vocab
        inv_t = float32(1.0) / temp
        if use_sorted:
            for s in range(tid, n_keep, SAMPLE_THREADS):
                i = ci[s]
                score = _scaled(logits[row, i], mx, inv_t) + _gumbel(base, i)
                if _before(score, i, bv, bi):
                    bv = score
                    bi = i
        else:
            for i in range(tid, n_vocab, SAMPLE_THREADS):
                v = logits[row, i]
                if _key(v) >= thr:
                    score = _scaled(v, mx, inv_t) + _gumbel(base, i)
                    if _before(score, i, bv, bi):
                        bv = score
                        bi = i
        score, best = _block_argmax(bv, bi, rv, ri)
    if tid == 0:
        out_token[0] = best
        tokens[0] = best
        state[0] += state[1]  # past the batch just run: the drawn token is the next one
        state[1] = 1
        iparams[IP_COUNTER] += 1
        window = iparams[IP_WINDOW]
        if window > 0:
            hist[iparams[IP_HEAD]] = best
            iparams[IP_HEAD] = (iparams[IP_HEAD] + 1) % window
            if iparams[IP_N_HIST] < window:
                iparams[IP_N_HIST] += 1
