"""Causal grouped-query attention over the f16 KV cache, with optional sliding window and
logit softcap, as ``abi.llm.layers.attention`` computes it (float32 scores and softmax).

Prompts: ``attn_prefill``, tiled flash-style -- a block takes ATT_BQ queries of one head,
walks the keys in tiles of ATT_BK staged in shared memory and keeps a running max and sum
per query (online softmax), so scores never reach global memory.
Decoding: ``attn_decode`` splits the keys of the one query over ``n_split`` blocks per head
(enough blocks to fill the device even with few heads); ``attn_combine`` merges the
partial (max, sum, output) triples. Attention sinks (gpt-oss: a learned logit per head that
joins each softmax's max and denominator but attends to nothing) enter once per softmax: as
the starting max and sum of the prefill's online softmax, and in the decode's combine step
(not per split, which would count it n_split times). Positions come from state[0] on the device, so a
captured decode step replays unchanged at every position."""
from __future__ import annotations

import math

from .device import (ATT_ACC, ATT_BK, ATT_BQ, ATT_THREADS, DEC_DPT, DEC_THREADS, HD_MAX, HD_PAD,
                     NEG_INF, cuda, float32, jit, vmax, vmin)


@cuda.jit(device=True)
def _score(s, scale, softcap):
    s *= scale
    if softcap > float32(0.0):
        s = math.tanh(s / softcap) * softcap
    return s


@jit
def attn_prefill(qkv, n_tok, n_head, n_kv, hd, kc, vc, layer, state, scale, window, softcap, sinks,
                 has_sinks, out):
    """out[t, h*hd:(h+1)*hd] for the queries of tokens t (positions state[0] + t); with
    has_sinks, head h's softmax also holds the logit sinks[h]."""
    qs = cuda.shared.array((ATT_BQ, HD_MAX), float32)
    ks = cuda.shared.array((ATT_BK, HD_PAD), float32)
    p = cuda.shared.array((ATT_BQ, ATT_BK), float32)
    m_run = cuda.shared.array(ATT_BQ, float32)
    l_run = cuda.shared.array(ATT_BQ, float32)
    alpha = cuda.shared.array(ATT_BQ, float32)
    acc = cuda.local.array(ATT_ACC, float32)
    tid = cuda.threadIdx.x
    h = cuda.blockIdx.y
    g = h // (n_head // n_kv)
    t0 = cuda.blockIdx.x * ATT_BQ
    pos0 = state[0]
    for e in range(tid, ATT_BQ * hd, ATT_THREADS):
        r = e // hd
        d = e % hd
        qs[r, d] = qkv[t0 + r, h * hd + d] if t0 + r < n_tok else float32(0.0)
    for r in range(tid, ATT_BQ, ATT_THREADS):
        if has_sinks:  # the sink as a key seen first: max sinks[h], sum exp(0), no value
            m_run[r] = sinks[h]
            l_run[r] = float32(1.0)
        else:
            m_run[r] = NEG_INF
            l_run[r] = float32(0.0)
    for i in range(ATT_ACC):
        acc[i] = float32(0.0)
    t_last = vmin(t0 + ATT_BQ, n_tok) - 1
    kv_end = pos0 + t_last + 1
    kv_lo = 0
    if window > 0:
        kv_lo = vmax(0, pos0 + t0 - window + 1)
    cuda.syncthreads()
    for j0 in range(kv_lo, kv_end, ATT_BK):
        for e in range(tid, ATT_BK * hd, ATT_THREADS):
            jj = e // hd
            d = e % hd
            ks[jj, d] = float32(kc[layer, g, j0 + jj, d]) if j0 + jj < kv_end else float32(0.0)
        cuda.syncthreads()
        for e in range(tid, ATT_BQ * ATT_BK, ATT_THREADS):
            r = e // ATT_BK
            jj = e % ATT_BK
            qpos = pos0 + t0 + r
            kpos = j0 + jj
            if t0 + r >= n_tok or kpos > qpos or (window > 0 and qpos - kpos >= window):
                p[r, jj] = NEG_INF
            else:
                s = float32(0.0)
                for d in range(hd):
                    s += qs[r, d] * ks[jj, d]
                p[r, jj] = _score(s, scale, softcap)
        cuda.syncthreads()
        for r in range(tid, ATT_BQ, ATT_THREADS):
            mx = m_run[r]
            for jj in range(ATT_BK):
                mx = vmax(mx, p[r, jj])
            if mx == NEG_INF:  # nothing visible yet for this query
                alpha[r] = float32(1.0)
                for jj in range(ATT_BK):
                    p[r, jj] = float32(0.0)
            else:
                a = math.exp(m_run[r] - mx)
                total = float32(0.0)
                for jj in range(ATT_BK):
                    e_ = math.exp(p[r, jj] - mx)
                    p[r, jj] = e_
                    total += e_
                alpha[r] = a
                l_run[r] = l_run[r] * a + total
                m_run[r] = mx
        cuda.syncthreads()
        for i in range(ATT_ACC):
            o = tid + ATT_THREADS * i
            if o < ATT_BQ * hd:
                r = o // hd
                d = o % hd
                a = acc[i] * alpha[r]
                for jj in range(ATT_BK):
                    if j0 + jj < kv_end:
                        a += p[r, jj] * float32(vc[layer, g, j0 + jj, d])
                acc[i] = a
        cuda.syncthreads()
    for i in range(ATT_ACC):
        o = tid + ATT_THREADS * i
        if o < ATT_BQ * hd:
            r = o // hd
            d = o % hd
            if t0 + r < n_tok:
                out[t0 + r, h * hd + d] = acc[i] / l_run[r]


@jit
def attn_decode(qkv, n_head, n_kv, hd, kc, vc, layer, state, scale, window, softcap,
                part_m, part_l, part_o):
    """Block (head h, split s): the one query (position state[0]) against its share of the
    keys; writes the partial max, sum of exponentials and unnormalised output."""
    qs = cuda.shared.array(HD_MAX, float32)
    sc = cuda.shared.array(DEC_THREADS, float32)
    red = cuda.shared.array((DEC_THREADS, DEC_DPT), float32)
    acc = cuda.local.array(DEC_DPT, float32)
    tid = cuda.threadIdx.x
    h = cuda.blockIdx.x
    s = cuda.blockIdx.y
    n_split = cuda.gridDim.y
    g = h // (n_head // n_kv)
    pos = state[0]
    lo = 0
    if window > 0:
        lo = vmax(0, pos - window + 1)
    n_keys = pos + 1 - lo
    chunk = (n_keys + n_split - 1) // n_split
    j_begin = lo + s * chunk
    j_end = vmin(pos + 1, j_begin + chunk)
    for d in range(tid, hd, DEC_THREADS):
        qs[d] = qkv[0, h * hd + d]
    # threads split the head dims in `lanes` lanes; `groups` groups of them split the keys
    lanes = hd if hd < DEC_THREADS else DEC_THREADS
    groups = DEC_THREADS // lanes
    grp = tid // lanes
    d0 = tid % lanes
    for i in range(DEC_DPT):
        acc[i] = float32(0.0)
    m = NEG_INF
    total = float32(0.0)
    cuda.syncthreads()
    for j0 in range(j_begin, j_end, DEC_THREADS):
        j = j0 + tid
        val = NEG_INF
        if j < j_end:
            dot = float32(0.0)
            for d in range(hd):
                dot += qs[d] * float32(kc[layer, g, j, d])
            val = _score(dot, scale, softcap)
        sc[tid] = val
        cuda.syncthreads()
        mx = m
        for jj in range(DEC_THREADS):  # every thread scans the tile: no extra barrier rounds
            mx = vmax(mx, sc[jj])
        a = math.exp(m - mx) if m != NEG_INF else float32(0.0)
        cuda.syncthreads()
        sc[tid] = math.exp(val - mx) if j < j_end else float32(0.0)
        cuda.syncthreads()
        tile = float32(0.0)
        for jj in range(DEC_THREADS):
            tile += sc[jj]
        total = total * a + tile
        m = mx
        for i in range(DEC_DPT):
            d = d0 + lanes * i
            if d < hd:
                v = acc[i] * a
                for jj in range(grp, vmin(DEC_THREADS, j_end - j0), groups):
                    v += sc[jj] * float32(vc[layer, g, j0 + jj, d])
                acc[i] = v
        cuda.syncthreads()
    for i in range(DEC_DPT):
        red[tid, i] = acc[i]
    cuda.syncthreads()
    if grp == 0:
        for i in range(DEC_DPT):
            d = d0 + lanes * i
            if d < hd:
                v = float32(0.0)
                for gg in range(groups):
                    v += red[gg * lanes + d0, i]
                part_o[h, s, d] = v
    if tid == 0:
        part_m[h, s] = m
        part_l[h, s] = total


@jit
def attn_combine(part_m, part_l, part_o, hd, sinks, has_sinks, out):
    """out[0, h*hd + d] from the splits' partials of head h (grid n_head); with has_sinks,
    the softmax also holds the logit sinks[h] (here only: once, not once per split)."""
    h = cuda.blockIdx.x
    n_split = part_m.shape[1]
    mx = NEG_INF
    for s in range(n_split):
        mx = vmax(mx, part_m[h, s])
    total = float32(0.0)
    if has_sinks:
        mx = vmax(mx, sinks[h])
        total = math.exp(sinks[h] - mx)
    for s in range(n_split):
        if part_m[h, s] != NEG_INF:
            total += part_l[h, s] * math.exp(part_m[h, s] - mx)
    for d in range(cuda.threadIdx.x, hd, cuda.blockDim.x):
        v = float32(0.0)
        for s in range(n_split):
            if part_m[h, s] != NEG_INF:
                v += part_o[h, s, d] * math.exp(part_m[h, s] - mx)
        out[0, h * hd + d] = v / total
