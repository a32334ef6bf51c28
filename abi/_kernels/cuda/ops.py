"""Row-wise kernels of a transformer block: the residual add fused with RMSNorm, and the
per-head preparation of Q and K (QK-norm, RoPE) with the store of K and V into the f16 KV
cache. Each block owns one row (or one head of one token), so nothing crosses blocks."""
from __future__ import annotations

import math

from .device import HD_MAX, NORM_THREADS, cuda, float32, jit


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


@jit
def residual_norm(x, delta, has_delta, post_w, has_post, norm_w, h, eps, dim, row0):
    """For row r = row0 + block: x[r] += (rms_norm(delta[r]) * post_w if has_post else
    delta[r]) when has_delta; then h[r] = rms_norm(x[r]) * norm_w. One block per row."""
    red = cuda.shared.array(NORM_THREADS, float32)
    r = row0 + cuda.blockIdx.x
    tid = cuda.threadIdx.x
    if has_delta:
        s = float32(1.0)
        if has_post:
            ss = float32(0.0)
            for i in range(tid, dim, NORM_THREADS):
                ss += delta[r, i] * delta[r, i]
            s = float32(1.0) / math.sqrt(block_sum(ss, red) / float32(dim) + eps)
        for i in range(tid, dim, NORM_THREADS):
            if has_post:
                x[r, i] += delta[r, i] * s * post_w[i]
            else:
                x[r, i] += delta[r, i]
    ss = float32(0.0)
    for i in range(tid, dim, NORM_THREADS):
        ss += x[r, i] * x[r, i]
    s = float32(1.0) / math.sqrt(block_sum(ss, red) / float32(dim) + eps)
    for i in range(tid, dim, NORM_THREADS):
        h[r, i] = x[r, i] * s * norm_w[i]


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
