"""Row-wise kernels of a transformer block: the residual add fused with RMSNorm, the
per-head preparation of Q and K (QK-norm, RoPE) with the store of K and V into the f16 KV
cache, and the mixture of experts' routing. Each block owns one row (or one head of one
token, or tokens), so nothing crosses blocks."""
from __future__ import annotations

import math

from .device import HD_MAX, NORM_THREADS, cuda, float32, jit, vmax


@cuda.jit(device=True)
def block_sum(val, red):
    """Sum of ``val`` over the block's threads (red: shared float32[blockDim]); every thread
    gets the result. Shared-memory tree: the simulator has no warp shuffles."""
    tid = cuda.threadIdx.x
    n = cuda.blockDim.x
    red[tid] = val
    cuda.syncthreads()
    step = n // 2
    while step > 0:
        if tid < step:
            red[tid] += red[tid + step]
        cuda.syncthreads()
        step //= 2
    total = red[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def _branch(delta, r, i, n_sel, selw, shared, has_shared, shw):
    """Element i of row r's residual branch: delta[r, i], or with n_sel > 0 (a mixture of
    experts) the weighted sum of the token's n_sel expert rows delta[r * n_sel + j, i], plus
    with has_shared the shared expert's shared[r, i] times its gate shw[r]."""
    if n_sel == 0:
        return delta[r, i]
    s = float32(0.0)
    for j in range(n_sel):
        s += selw[r * n_sel + j] * delta[r * n_sel + j, i]
    if has_shared:
        s += shared[r, i] * shw[r]
    return s


@jit
def residual_norm(x, delta, has_delta, n_sel, selw, shared, has_shared, shw, res_scale, post_w, has_post,
                  norm_w, has_norm, hscale, h, eps, dim, row0):
    """For row r = row0 + block: with has_delta, x[r] += res_scale * (rms_norm(d) * post_w if
    has_post else d), d the row's branch (``_branch``); then h[r] = rms_norm(x[r]) * norm_w *
    hscale, or h[r] = x[r] without has_norm (a recipe without pre-norms). One block per row.
    hscale carries the logit scale into the final norm (the output product is linear); x and
    h may be the same array (an in-place norm: the Q/K norms over all heads)."""
    red = cuda.shared.array(NORM_THREADS, float32)
    r = row0 + cuda.blockIdx.x
    tid = cuda.threadIdx.x
    if has_delta:
        s = res_scale
        if has_post:
            ss = float32(0.0)
            for i in range(tid, dim, NORM_THREADS):
                d = _branch(delta, r, i, n_sel, selw, shared, has_shared, shw)
                ss += d * d
            s = res_scale / math.sqrt(block_sum(ss, red) / float32(dim) + eps)
        for i in range(tid, dim, NORM_THREADS):
            d = _branch(delta, r, i, n_sel, selw, shared, has_shared, shw)
            if has_post:
                x[r, i] += d * s * post_w[i]
            else:
                x[r, i] += d * s
    if has_norm:
        ss = float32(0.0)
        for i in range(tid, dim, NORM_THREADS):
            ss += x[r, i] * x[r, i]
        s = hscale / math.sqrt(block_sum(ss, red) / float32(dim) + eps)
        for i in range(tid, dim, NORM_THREADS):
            h[r, i] = x[r, i] * s * norm_w[i]
    else:
        for i in range(tid, dim, NORM_THREADS):
            h[r, i] = x[r, i]


@jit
@cuda.jit(device=True)
def _prob(logits, t, e, sigmoid, m, total):
    if sigmoid:
        return float32(1.0) / (float32(1.0) + math.exp(-logits[t, e]))
    return math.exp(logits[t, e] - m) / total


@jit
def moe_route(logits, n_tok, n_exp, k, renorm, wscale, sigmoid, bias, has_bias, gated, shw, sel, selw):
    """One thread per token t: the probabilities of the router's logits[t, :n_exp] (softmax,
    or sigmoid), the k largest of probability + bias[e] (with has_bias: the selection bias)
    in descending order (ties: the lower expert first) into sel[t*k + j], their unbiased
    probabilities into selw[t*k + j], renormalised to sum 1 (the sum clamped below at f16's
    smallest normal) where renorm, times wscale where it is not 0 or 1 -- as
    ``decoder.route``. shw[t]: the shared expert's gate, sigmoid(logits[t, n_exp]) with
    gated, else 1."""
    t = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if t >= n_tok:
        return
    m = logits[t, 0]
    for e in range(1, n_exp):
        m = vmax(m, logits[t, e])
    total = float32(0.0)
    for e in range(n_exp):
        total += math.exp(logits[t, e] - m)
    shw[t] = float32(1.0) / (float32(1.0) + math.exp(-logits[t, n_exp])) if gated else float32(1.0)
    # selection sort without marks: the next pick is the best strictly after the previous
    # one in (key descending, index ascending) order
    prev_key = float32(math.inf)
    prev_e = -1
    wsum = float32(0.0)
    for j in range(k):
        best_key = float32(-math.inf)
        best_e = -1
        for e in range(n_exp):
            key = _prob(logits, t, e, sigmoid, m, total)
            if has_bias:
                key += bias[e]
            after = key < prev_key or (key == prev_key and e > prev_e)
            if after and (best_e < 0 or key > best_key):
                best_key = key
                best_e = e
        if best_e < 0:   # NaN logits: a valid expert, a NaN weight
            best_e = j
        p = _prob(logits, t, best_e, sigmoid, m, total)
        sel[t * k + j] = best_e
        selw[t * k + j] = p
        wsum += p
        prev_key = best_key
        prev_e = best_e
    denom = vmax(wsum, float32(6.103515625e-5))
    for j in range(k):
        w = selw[t * k + j]
        if renorm:
            w = w / denom
        if wscale != float32(0.0) and wscale != float32(1.0):
            w = w * wscale
        selw[t * k + j] = w


@jit
def qk_prep(qkv, n_head, n_kv, hd, q_norm, k_norm, has_qk_norm, eps, inv_freq, n_rot, neox,
            mscale, kc, vc, layer, state):
    """Block (t, head): head < n_head rotates query head ``head`` of token t in place;
    head >= n_head prepares key/value head g = head - n_head and writes both to the f16
    cache at position state[0] + t. Gemma's per-head RMSNorm comes before RoPE."""
    buf = cuda.shared.array(HD_MAX, float32)
    red = cuda.shared.array(NORM_THREADS, float32)
    t = cuda.blockIdx.x
    head = cuda.blockIdx.y
    tid = cuda.threadIdx.x
    pos = state[0] + t
    is_q = head < n_head
    base = head * hd if is_q else n_head * hd + (head - n_head) * hd
    for i in range(tid, hd, NORM_THREADS):
        buf[i] = qkv[t, base + i]
    cuda.syncthreads()
    if has_qk_norm:
        ss = float32(0.0)
        for i in range(tid, hd, NORM_THREADS):
            ss += buf[i] * buf[i]
        s = float32(1.0) / math.sqrt(block_sum(ss, red) / float32(hd) + eps)
        for i in range(tid, hd, NORM_THREADS):
            buf[i] = buf[i] * s * (q_norm[i] if is_q else k_norm[i])
        cuda.syncthreads()
    half = n_rot // 2
    for p in range(tid, half, NORM_THREADS):
        ia = p if neox else 2 * p
        ib = p + half if neox else 2 * p + 1
        angle = float(pos) * float(inv_freq[p])  # float64, as the CPU tables
        cs = float32(math.cos(angle) * mscale)  # mscale: YaRN's magnitude factor (else 1)
        sn = float32(math.sin(angle) * mscale)
        a = buf[ia]
        b = buf[ib]
        buf[ia] = a * cs - b * sn
        buf[ib] = a * sn + b * cs
    cuda.syncthreads()
    if is_q:
        for i in range(tid, hd, NORM_THREADS):
            qkv[t, base + i] = buf[i]
    else:
        g = head - n_head
        vbase = (n_head + n_kv) * hd + g * hd
        for i in range(tid, hd, NORM_THREADS):
            kc[layer, g, pos, i] = buf[i]
            vc[layer, g, pos, i] = qkv[t, vbase + i]


@jit
def moe_group(sel, n_pairs, n_exp, offsets, perm):
    """One block: the (token, expert) pairs grouped by expert for the grouped expert
    products (``matmul`` gemm with rstride): perm[offsets[e] .. offsets[e + 1]] are the pairs
    p with sel[p] == e, in ascending order. A thread per expert counts, thread 0 sums the
    counts, then each expert's thread lists its pairs."""
    tid = cuda.threadIdx.x
    for e in range(tid, n_exp, cuda.blockDim.x):
        c = 0
        for p in range(n_pairs):
            if sel[p] == e:
                c += 1
        offsets[e + 1] = c
    cuda.syncthreads()
    if tid == 0:
        offsets[0] = 0
        for e in range(n_exp):
            offsets[e + 1] += offsets[e]
    cuda.syncthreads()
    for e in range(tid, n_exp, cuda.blockDim.x):
        o = offsets[e]
        for p in range(n_pairs):
            if sel[p] == e:
                perm[o] = p
                o += 1
