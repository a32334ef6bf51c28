# cython: language_level=3
"""The compiled forward pass of any decoder recipe (``abi/llm/models/decoder.py``): a batch
of T tokens (a prompt batch, or one token when decoding) in a single nogil call.

Why one call: at ~100 tokens/s a decode step has 10 ms, half of it for streaming the
weights; Python-level calls per layer would spend the rest. The whole batch runs inside
one OpenMP parallel region; threads split the rows of every matrix product (a prompt's or
a large one as tasks each thread claims, its own share first) and the tokens of every
per-token stage, and meet at barriers between dependent stages.

Why batch-independent numerics: every token goes through exactly the same arithmetic
whatever the batch around it (activations quantised per token, the same row dot
products, attention per query), so a prompt prefix reused from the cache gives the same
output as a cold run, and decoding matches prefill bit for bit.

One call may hold tokens of several sequences (``forward_many``: a continuous batch), each
attending only to its own cache at its own position; the weights are read once for all.
KV caches in f32, f16 or q8_0 (``abi.llm.cache``): rows are converted as attention reads
them and written as each token's keys and values are computed, never copied whole."""
from libc.math cimport NAN, cos, expf, sin, sqrt, tanhf
from libc.stdint cimport uint8_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from cython.parallel cimport parallel
cimport openmp

import numpy as np
cimport numpy as cnp

from abi._kernels.registry import DEQUANTIZE_TYPES
from abi.errors import KernelInputError, UnsupportedModelError, UnsupportedTensorType
from abi.gguf.constants import GGMLType
from abi.llm.layers import GELU_TABLE

from abi._kernels._half cimport f16_to_f32, f32_to_f16, ld16, st16
from abi._kernels.quant cimport quantize_row_q8_0
from abi._kernels._vec cimport axpy, axpy4, barrier, claim, dot, dot4x4, gelu_mul8, scores4, silu_mul, softmax_exp
from abi._kernels._types cimport block_size_of
from abi._kernels.matmul cimport (activation_bytes, dequant_rows, gemm_rows, gemm_tiles, gemv_rows,
                                  has_tile, quantize_activation, row_bytes, vec_dot_type)

cnp.import_array()


cdef enum:
    ROW_BLOCK = 16        # weight rows kept hot in cache while every token of the batch uses them
    MAX_HD = 1024         # the widest head a cached row is converted into (on the stack)
    ATT_Q = 16            # prompt queries attended together: each key and value row read once for all
    TASK_TOKENS = 64      # a prompt product's task: this many tokens (a pass of the tiles) x a row share
    TASK_ALIGN = 24       # row shares a multiple of every tile's rows (2, 3, 4, 6 or 8)

KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 2}

ctypedef struct QMat:
    const uint8_t* w
    int type
    int fmt               # activation format index: 0 Q8_0, 1 Q8_1, 2 Q8_K; -1 float input
    Py_ssize_t rows
    Py_ssize_t cols
    const float* bias
    const float* la       # LoRA (abi.llm.lora): A (lrank, cols), scaled B (rows, lrank); NULL: none
    const float* lb
    int lrank

ctypedef struct Layer:
    const float* attn_norm
    QMat wq, wk, wv, wo
    const float* q_norm   # NULL where the recipe has no Q/K norm
    const float* k_norm
    const float* post_attn_norm
    const float* ffn_norm
    QMat gate, up, down
    int moe               # the FFN is a mixture of experts: router + Ctx.experts
    QMat router
    const float* probs_bias  # the experts' selection bias (NULL: none)
    int shared            # a shared expert beside the routed ones: sgate, sup, sdown
    QMat sgate, sup, sdown
    int shared_gated      # its output scaled by sigmoid(shg . h)
    QMat shg
    const float* post_ffn_norm
    int swa               # sliding-window layer
    int use_rope          # 0: no position encoding in this layer (NoPE)
    const float* sinks    # a learned logit per head in every softmax (NULL: none)
    const float* inv_freq
    float rope_mscale     # YaRN's magnitude factor on cos and sin (1 otherwise)

ctypedef struct Ctx:
    int n_layers, n_embd, n_head, n_kv, hd, n_ff, n_vocab, n_rot, neox, act, window, qk_full
    float eps, scale, embd_scale, attn_softcap, final_softcap, residual_scale, logit_scale
    int n_exp, n_used, n_ff_exp, exp_norm   # mixture of experts (n_exp 0: dense FFNs)
    int sigmoid_gating      # the router's probabilities: sigmoid (else softmax) of its logits
    int n_ff_shexp          # the shared expert's width (0: none)
    int n_slots             # activation rows per token: n_used, one more for a shared expert
    float exp_scale
    QMat* experts           # (n_layers, n_exp, 3): gate, up, down of every expert
    Layer* layers
    QMat output
    const uint8_t* embd
    int embd_type
    const float* out_norm
    # this call: T tokens of one or more sequences
    int T, n_out
    const int* tokens
    const int* tpos         # (T,) each token's position in its sequence
    const int* tseq         # (T,) each token's sequence
    const int* tout         # (T,) each token's output row (logits or hidden), -1 for none
    uint8_t** kseq          # per sequence: its K and V caches (n_layers, n_kv, cap, kv_row bytes)
    uint8_t** vseq
    const Py_ssize_t* capseq
    Py_ssize_t max_cap
    int kv_type             # KV_TYPES: 0 f32, 1 f16, 2 q8_0
    Py_ssize_t kv_row       # bytes of one cached head row
    # shared scratch, one row per token: matrix-product outputs
    float* q
    float* k
    float* v
    float* att
    float* g
    float* u
    float* tmp
    # per-thread scratch (thread i at offset i * size): every thread keeps its own identical
    # copy of the residual stream and of the quantised inputs, which saves barriers
    float* xp
    float* hp
    uint8_t* actp[3]        # per format: 0 Q8_0, 1 Q8_1, 2 Q8_K
    Py_ssize_t act_stride   # bytes per token row
    float* rot              # per thread, two tables of cos, sin (n_rot) of the decode step's position
    float* rope_tab         # two tables of cos, sin (n_rot) of every prompt token
    float* scores           # max_cap
    float* lorap            # per thread: A x of one token (max_rank)
    int max_rank
    float* logits           # (n_out, n_vocab)
    float* route            # (T, n_exp) router logits
    int* sel                # (T, n_used) the chosen experts
    float* selw             # (T, n_used) their weights
    float* eg               # (T * n_used, n_ff_exp) expert gate / activation
    float* eu               # (T * n_used, n_ff_exp) expert up
    float* eo               # (T * n_used, n_embd) expert outputs
    float* shw              # (T) the shared expert's gate
    float* sho              # (T, n_embd) the shared expert's output
    const float* gelu_table # layers.GELU_TABLE: GELU by f16 bits, as ggml's CPU backend
    int* work               # the forward's work counters (zeroed before it): n_work slots of
    int n_work              # work_slot counters (one per row share), a cache line or more
    int work_slot


ctypedef struct Priv:       # one thread's view of its private scratch
    float* x
    float* h
    float* lu               # A x (the LoRA rank)
    uint8_t* act[3]
    int call                # work counters taken so far: every thread takes them in one order
    const float* rope_key[2]   # the frequencies each of the two angle tables holds (NULL: none)
    int rope_old            # the table to overwrite next


cdef inline int _fmt(int ggml_type) noexcept nogil:
    cdef int t = vec_dot_type(ggml_type)
    if t == 8:
        return 0
    if t == 9:
        return 1
    if t == 15:
        return 2
    return -1


cdef void _rms(const float* x, const float* w, float* out, int n, float eps) noexcept nogil:
    cdef double ss = 0.0
    cdef int i
    for i in range(n):
        ss += <double>x[i] * x[i]
    cdef float s = <float>(1.0 / sqrt(ss / n + eps))
    for i in range(n):
        out[i] = x[i] * s * w[i]


cdef inline void _prep(Ctx* c, Priv* p, const float* x, QMat* m, int t) noexcept nogil:
    """Quantise token t's input row for m's activation format (into this thread's copy)."""
    if m.fmt >= 0:
        quantize_activation(m.type, x, m.cols, p.act[m.fmt] + t * c.act_stride)


# weight x token products of a task of rows (~50-100 us of decode): large products only are
# shared out row chunk by row chunk (Gemma 3's 262144-row output, not its layers)
cdef Py_ssize_t CHUNK_WORK = 1 << 21


def _set_chunk_work(Py_ssize_t n):
    """Tuning and test hook: products per task of rows (small: every product shared out)."""
    global CHUNK_WORK
    old = CHUNK_WORK
    CHUNK_WORK = max(n, 1)
    return old


cdef inline int* _counter(Ctx* c, Priv* p) noexcept nogil:
    """The forward's next slot of work counters (NULL once they run out: the static split
    then; every thread runs out at the same call)."""
    cdef int i = p.call
    p.call += 1
    return c.work + <Py_ssize_t>i * c.work_slot if i < c.n_work else NULL


cdef inline Py_ssize_t _share(Py_ssize_t rows, int k, int n) noexcept nogil:
    """Where share k of n of the rows starts (a multiple of TASK_ALIGN but for the end)."""
    return rows if k >= n else rows * k // n // TASK_ALIGN * TASK_ALIGN


cdef void _rows_out(Ctx* c, Priv* p, QMat* m, const float* x, Py_ssize_t x_stride, float* y,
                   Py_ssize_t y_stride, Py_ssize_t r0, Py_ssize_t r1, int t0, int t1, bint prompt) noexcept nogil:
    """y[t][r0:r1] = W[r0:r1] x[t] (+ bias) for tokens t0..t1-1: register tiles of rows x
    tokens where the type has them (prompt: the tiles' passes over all the rows), otherwise
    a block of rows at a time for every token, so each block is read from memory once per
    batch. Every pair gets the single-token kernel's bits."""
    cdef Py_ssize_t rb, re, r
    cdef int t
    cdef const uint8_t* xq
    cdef const uint8_t* xt
    cdef Py_ssize_t xs
    if t1 - t0 > 1 and has_tile(m.type):
        if m.fmt >= 0:
            xt, xs = p.act[m.fmt] + t0 * c.act_stride, c.act_stride
        else:   # float weights: the tiles read the float rows
            xt, xs = <const uint8_t*>(x + t0 * x_stride), x_stride * sizeof(float)
        if prompt:
            gemm_tiles(m.type, m.w, r0, r1, m.cols, xt, xs, t1 - t0, y + t0 * y_stride, y_stride)
        else:
            gemm_rows(m.type, m.w, r0, r1, m.cols, xt, xs, t1 - t0, y + t0 * y_stride, y_stride)
    else:
        rb = r0
        while rb < r1:
            re = rb + ROW_BLOCK if rb + ROW_BLOCK < r1 else r1
            for t in range(t0, t1):
                xq = p.act[m.fmt] + t * c.act_stride if m.fmt >= 0 else NULL
                gemv_rows(m.type, m.w, rb, re, m.cols, xq, x + t * x_stride, y + t * y_stride)
            rb = re
    if m.bias != NULL:
        for t in range(t0, t1):
            for r in range(r0, r1):
                y[t * y_stride + r] += m.bias[r]


cdef bint _matmul(Ctx* c, Priv* p, QMat* m, const float* x, Py_ssize_t x_stride, float* y,
                  Py_ssize_t y_stride, int t0, int t1, int tid, int nth) noexcept nogil:
    """y[t] = W x[t] for tokens t0..t1-1, shared out in tasks (_matmul_tasks) where the
    product is a prompt's or large, else this thread's share of W's rows. Returns whether
    tasks were shared out: then this thread's rows are not all its own work, and a barrier
    must come before it reads them."""
    cdef Py_ssize_t r0 = m.rows * tid // nth
    cdef Py_ssize_t r1 = m.rows * (tid + 1) // nth
    cdef Py_ssize_t r, chunk = 0
    cdef int t
    cdef bint prompt = t1 - t0 > TASK_TOKENS and has_tile(m.type)
    cdef int* cnt
    if nth > 1 and m.lrank == 0:
        if not prompt:   # rows in chunks of about CHUNK_WORK products, if a share has several
            chunk = max(<Py_ssize_t>TASK_ALIGN, CHUNK_WORK // (m.cols * (t1 - t0)) // TASK_ALIGN * TASK_ALIGN)
        if prompt or m.rows >= 4 * nth * chunk:
            cnt = _counter(c, p)
            if cnt != NULL:
                _matmul_tasks(c, p, m, x, x_stride, y, y_stride, t0, t1, tid, nth, chunk, cnt)
                return True
    _rows_out(c, p, m, x, x_stride, y, y_stride, r0, r1, t0, t1, False)
    if m.lrank > 0:   # + B (A x): every thread forms A x itself, then adds it to its own rows
        for t in range(t0, t1):
            for r in range(m.lrank):
                p.lu[r] = dot(m.la + r * m.cols, x + t * x_stride, <int>m.cols)
            for r in range(r0, r1):
                y[t * y_stride + r] += dot(m.lb + r * m.lrank, p.lu, m.lrank)
    return False


cdef void _matmul_tasks(Ctx* c, Priv* p, QMat* m, const float* x, Py_ssize_t x_stride, float* y,
                        Py_ssize_t y_stride, int t0, int t1, int tid, int nth, Py_ssize_t chunk,
                        int* cnt) noexcept nogil:
    """A product in tasks: each a share of the rows by a pass of TASK_TOKENS tokens (a
    prompt: chunk 0), or a chunk of the share's rows by every token. Thread i owns share i
    (a prompt's rows stay in its L2 from one pass to the next) and claims its tasks in
    order; done with them, it claims what is left of the other shares. So a thread slowed
    down (by another process on its core, or a slower core) does less, where a fixed share
    each kept the other waiting at the next barrier. Every pair as by the static split."""
    cdef int k, s, j, n
    cdef Py_ssize_t ra, re, a
    for k in range(nth):
        s = (tid + k) % nth
        ra, re = _share(m.rows, s, nth), _share(m.rows, s + 1, nth)
        if ra >= re:
            continue
        n = (t1 - t0 + TASK_TOKENS - 1) // TASK_TOKENS if chunk == 0 else (re - ra + chunk - 1) // chunk
        j = claim(cnt + s)
        while j < n:
            if chunk == 0:
                a = t0 + j * TASK_TOKENS
                _rows_out(c, p, m, x, x_stride, y, y_stride, ra, re, a, min(a + TASK_TOKENS, t1), True)
            else:
                a = ra + j * chunk
                _rows_out(c, p, m, x, x_stride, y, y_stride, a, min(a + chunk, re), t0, t1, False)
            j = claim(cnt + s)


cdef void _rope_angles(Ctx* c, int pos, const float* inv_freq, float mscale, float* rot) noexcept nogil:
    """rot[0:half] = cos, rot[half:n_rot] = sin of pos * inv_freq (computed in double)."""
    cdef int half = c.n_rot // 2, i
    for i in range(half):
        rot[i] = <float>(cos(<double>pos * inv_freq[i]) * mscale)
        rot[half + i] = <float>(sin(<double>pos * inv_freq[i]) * mscale)


cdef inline int _rope_slot(Priv* p, const float* inv_freq, bint* fresh) noexcept nogil:
    """Which of the two angle tables to use for a layer's frequencies: the one that holds
    them (an earlier layer of this forward had the same), or the older, to be filled
    (fresh). Models alternate at most two frequency sets (Gemma 3: local and global layers),
    so the angles are computed once or twice per forward, not once per layer."""
    cdef int s
    for s in range(2):
        if p.rope_key[s] == inv_freq:
            p.rope_old = 1 - s
            fresh[0] = False
            return s
    s = p.rope_old
    p.rope_key[s] = inv_freq
    p.rope_old = 1 - s
    fresh[0] = True
    return s


cdef void _rope(Ctx* c, float* p, const float* rot) noexcept nogil:
    """Rotate one head: pairs (i, i + half) for NeoX, consecutive pairs otherwise."""
    cdef int half = c.n_rot // 2, i
    cdef float a, b, cs, sn
    for i in range(half):
        cs = rot[i]
        sn = rot[half + i]
        if c.neox:
            a = p[i]
            b = p[i + half]
            p[i] = a * cs - b * sn
            p[i + half] = a * sn + b * cs
        else:
            a = p[2 * i]
            b = p[2 * i + 1]
            p[2 * i] = a * cs - b * sn
            p[2 * i + 1] = a * sn + b * cs


cdef inline uint8_t* _kv_at(Ctx* c, uint8_t** caches, int t, int layer, int g, Py_ssize_t j) noexcept nogil:
    """Token t's sequence: the cached row of layer, KV head g, position j."""
    cdef int s = c.tseq[t]
    return caches[s] + ((<Py_ssize_t>layer * c.n_kv + g) * c.capseq[s] + j) * c.kv_row


cdef void _kv_put(Ctx* c, uint8_t* dst, const float* x) noexcept nogil:
    """Store one head row in the cache's format (f16: round to nearest even, as numpy)."""
    cdef int i
    if c.kv_type == 0:
        memcpy(dst, x, c.hd * sizeof(float))
    elif c.kv_type == 1:
        for i in range(c.hd):
            st16(dst + 2 * i, f32_to_f16(x[i]))
    else:
        quantize_row_q8_0(x, dst, c.hd)


cdef inline const float* _kv_get(Ctx* c, const uint8_t* row, float* buf) noexcept nogil:
    """One cached head row as float32: the row itself (f32), or converted into buf."""
    cdef int i, b
    cdef float d
    cdef const signed char* qs
    if c.kv_type == 0:
        return <const float*>row
    if c.kv_type == 1:
        for i in range(c.hd):
            buf[i] = f16_to_f32(ld16(row + 2 * i))
    else:   # q8_0 blocks: f16 scale, 32 int8
        for b in range(c.hd // 32):
            d = f16_to_f32(ld16(row + 34 * b))
            qs = <const signed char*>(row + 34 * b + 2)
            for i in range(32):
                buf[32 * b + i] = d * <float>qs[i]
    return buf


cdef void _attend(Ctx* c, Layer* L, int layer, int head, int swa, int t, const float* q,
                  float* out, float* s) noexcept nogil:
    """out = softmax(q . K[0..pos]^T * scale) V for one query head of token t, at its position
    in its own sequence; a sink logit, where the layer has one, takes its share of the
    softmax and attends to nothing."""
    cdef int hd = c.hd
    cdef int kvh = head // (c.n_head // c.n_kv)
    cdef int pos = c.tpos[t]
    cdef const uint8_t* K = _kv_at(c, c.kseq, t, layer, kvh, 0)
    cdef const uint8_t* V = _kv_at(c, c.vseq, t, layer, kvh, 0)
    cdef float buf[MAX_HD]
    cdef int j0 = 0
    cdef int j, i
    cdef float acc, m = -1e30, total = 0.0, w
    if swa and c.window > 0 and pos - c.window + 1 > 0:
        j0 = pos - c.window + 1
    for j in range(j0, pos + 1):
        acc = dot(q, _kv_get(c, K + j * c.kv_row, buf), hd) * c.scale
        if c.attn_softcap > 0:
            acc = tanhf(acc / c.attn_softcap) * c.attn_softcap
        s[j] = acc
        if acc > m:
            m = acc
    if L.sinks != NULL and L.sinks[head] > m:
        m = L.sinks[head]
    total = softmax_exp(s + j0, pos + 1 - j0, m)
    if L.sinks != NULL:
        total += expf(L.sinks[head] - m)
    for i in range(hd):
        out[i] = 0.0
    for j in range(j0, pos + 1):
        axpy(out, s[j] / total, _kv_get(c, V + j * c.kv_row, buf), hd)


cdef inline bint _one_run(Ctx* c, int t0, int t1) noexcept nogil:
    """Tokens t0..t1-1 are consecutive positions of one sequence over an f32 cache: what
    _attend_block needs (it reads cached rows in place)."""
    cdef int t
    if c.kv_type != 0:
        return False
    for t in range(t0 + 1, t1):
        if c.tseq[t] != c.tseq[t0] or c.tpos[t] != c.tpos[t0] + (t - t0):
            return False
    return True


cdef void _attend_block(Ctx* c, Layer* L, int layer, int g, int h0, int h1, int t0, int t1,
                        float* s) noexcept nogil:
    """The queries of heads h0..h1-1 (all of KV group g) for tokens t0..t1-1 (one run, see
    _one_run), at most ATT_Q, each computed exactly as _attend computes it (the same dot
    products, softmax and sums, in the same order of keys), with the keys and values
    streamed once for all of them rather than once per query. s: ATT_Q rows of max_cap
    scores. Queries go four at a time (consecutive ones: mostly one token's heads), over
    the keys all four see ([glo, ghi] of their group); the other keys one query at a time.
    A last group of fewer than four is filled up with copies of its last query (the same
    pointers: a copy's lanes compute and store the very same values; its scores are not
    kept), so a decode token's three heads of a group take the four-query path too."""
    cdef int hd = c.hd, QD = c.n_head * hd, nh = h1 - h0
    cdef int nq = (t1 - t0) * nh, i, j, t, hh, jlo, jhi, q, k, jb, je, n4
    cdef const float* K = <const float*>_kv_at(c, c.kseq, t0, layer, g, 0)
    cdef const float* V = <const float*>_kv_at(c, c.vseq, t0, layer, g, 0)
    cdef int j0[ATT_Q + 3]
    cdef int pos[ATT_Q + 3]
    cdef int head[ATT_Q]
    cdef int glo[ATT_Q]
    cdef int ghi[ATT_Q]
    cdef float m[ATT_Q]
    cdef float m4[ATT_Q * 4]    # running maxima of the four-key steps, four lanes a query
    cdef float total[ATT_Q]
    cdef float* qp[ATT_Q + 3]
    cdef float* op[ATT_Q + 3]
    cdef float* si
    cdef float* wp[ATT_Q + 3]
    cdef float sixteen[16]
    cdef bint tiled = hd % 8 == 0
    jlo = c.tpos[t0]
    jhi = c.tpos[t1 - 1]
    for i in range(nq):
        t = t0 + i // nh
        hh = h0 + i % nh
        head[i] = hh
        pos[i] = c.tpos[t]
        j0[i] = 0
        if L.swa and c.window > 0 and pos[i] - c.window + 1 > 0:
            j0[i] = pos[i] - c.window + 1
        jlo = min(jlo, j0[i])
        qp[i] = c.q + t * QD + hh * hd
        op[i] = c.att + t * QD + hh * hd
        m[i] = -1e30
        for k in range(4):
            m4[4 * i + k] = -1e30
    # copies complete the last group only where every lane's sums are whole 8-lane chains
    # (axpy4's scalar tail adds into its outputs in place, which a copy would repeat)
    n4 = (nq + 3) // 4 * 4 if tiled else nq
    for i in range(nq, n4):
        qp[i] = qp[nq - 1]
        op[i] = op[nq - 1]
        j0[i] = j0[nq - 1]
        pos[i] = pos[nq - 1]
    # each full group of four queries: the keys all four see (empty for a partial group)
    q = 0
    while q < nq:
        glo[q] = jlo
        ghi[q] = jhi
        if q + 4 <= n4:
            for i in range(q, q + 4):
                glo[q] = max(glo[q], j0[i])
                ghi[q] = min(ghi[q], pos[i])
        else:
            ghi[q] = glo[q] - 1
        q += 4
    # scores: four keys at a time; a group takes them together where it sees all four
    jb = jlo
    while jb <= jhi:
        je = min(jb + 4, jhi + 1)
        q = 0
        while q < nq:
            if tiled and je - jb == 4 and glo[q] <= jb and je - 1 <= ghi[q]:
                dot4x4(<const float**>&qp[q], K + <Py_ssize_t>jb * hd, hd, hd, sixteen)
                if c.attn_softcap > 0:
                    for i in range(min(4, nq - q)):
                        for k in range(4):
                            _score(c, m, s, q + i, jb + k, sixteen[4 * i + k])
                else:   # _score's steps, a query's four keys at once
                    scores4(sixteen, min(4, nq - q), c.scale, s + <Py_ssize_t>q * c.max_cap + jb, c.max_cap,
                            m4 + 4 * q)
            else:
                for i in range(q, min(q + 4, nq)):
                    for j in range(max(jb, j0[i]), min(je, pos[i] + 1)):
                        _score(c, m, s, i, j, dot(qp[i], K + <Py_ssize_t>j * hd, hd))
            q += 4
        jb = je
    for i in range(nq):
        for k in range(4):
            if m4[4 * i + k] > m[i]:
                m[i] = m4[4 * i + k]
        si = s + i * c.max_cap
        wp[i] = si
        if L.sinks != NULL and L.sinks[head[i]] > m[i]:
            m[i] = L.sinks[head[i]]
        total[i] = softmax_exp(si + j0[i], pos[i] + 1 - j0[i], m[i])
        if L.sinks != NULL:
            total[i] += expf(L.sinks[head[i]] - m[i])
        for j in range(j0[i], pos[i] + 1):
            si[j] = si[j] / total[i]
        for j in range(hd):
            op[i][j] = 0.0
    for i in range(nq, n4):
        wp[i] = wp[nq - 1]
    # every query's sum in the order of its keys: those before its group's [glo, ghi] one
    # by one, then [glo, ghi] four queries at a time, then those after
    q = 0
    while q < nq:
        for i in range(q, min(q + 4, nq)):
            for j in range(j0[i], min(glo[q], pos[i] + 1)):
                axpy(op[i], wp[i][j], V + <Py_ssize_t>j * hd, hd)
        if glo[q] <= ghi[q]:
            axpy4(&op[q], <const float**>&wp[q], V, hd, glo[q], ghi[q] + 1, hd)
        for i in range(q, min(q + 4, nq)):
            for j in range(max(j0[i], ghi[q] + 1, glo[q]), pos[i] + 1):
                axpy(op[i], wp[i][j], V + <Py_ssize_t>j * hd, hd)
        q += 4


cdef inline void _score(Ctx* c, float* m, float* s, int i, int j, float d) noexcept nogil:
    """Query i's score for key j from its dot product, as _attend computes it."""
    cdef float acc = d * c.scale
    if c.attn_softcap > 0:
        acc = tanhf(acc / c.attn_softcap) * c.attn_softcap
    s[i * c.max_cap + j] = acc
    if acc > m[i]:
        m[i] = acc


cdef inline float _gelu(Ctx* c, float x) noexcept nogil:
    """layers.gelu_tanh: ggml's table at x rounded to f16, exact outside (-10, 10)."""
    if x <= -10.0:
        return 0.0
    if x >= 10.0:
        return x
    return c.gelu_table[f32_to_f16(x)]


cdef void _qk(Ctx* c, Layer* L, int l, int t, int g, const float* rot) noexcept nogil:
    """Token t, KV group g: Q/K norms and RoPE (rot: token t's angles in this layer) of the
    group's heads, K and V into the cache."""
    cdef int hd = c.hd, group = c.n_head // c.n_kv, hh
    cdef int QD = c.n_head * hd, KD = c.n_kv * hd
    cdef float* krow = c.k + t * KD + g * hd
    cdef float* qrow
    cdef int pos = c.tpos[t]
    if L.k_norm != NULL and not c.qk_full:
        _rms(krow, L.k_norm, krow, hd, c.eps)
    if L.use_rope:
        _rope(c, krow, rot)
    _kv_put(c, _kv_at(c, c.kseq, t, l, g, pos), krow)
    _kv_put(c, _kv_at(c, c.vseq, t, l, g, pos), c.v + t * KD + g * hd)
    for hh in range(g * group, (g + 1) * group):
        qrow = c.q + t * QD + hh * hd
        if L.q_norm != NULL and not c.qk_full:
            _rms(qrow, L.q_norm, qrow, hd, c.eps)
        if L.use_rope:
            _rope(c, qrow, rot)


cdef inline void _residual(Ctx* c, Priv* p, int t, const float* post_norm) noexcept nogil:
    """x[t] += residual_scale * tmp[t], normalised first where the recipe has post-norms."""
    cdef int D = c.n_embd, i
    cdef const float* row = c.tmp + t * D
    if post_norm != NULL:
        _rms(row, post_norm, p.h + t * D, D, c.eps)
        row = p.h + t * D
    if c.residual_scale != 1.0:
        for i in range(D):
            p.x[t * D + i] += row[i] * c.residual_scale
    else:
        for i in range(D):
            p.x[t * D + i] += row[i]


cdef inline void _norm_in(Ctx* c, Priv* p, int t, const float* norm) noexcept nogil:
    """h[t] = the layer input: RMSNorm of x[t], or x[t] itself where the recipe has no pre-norm."""
    cdef int D = c.n_embd
    if norm != NULL:
        _rms(p.x + t * D, norm, p.h + t * D, D, c.eps)
    else:
        memcpy(p.h + t * D, p.x + t * D, D * sizeof(float))


cdef void _glu_rows(Ctx* c, float* g, const float* u, Py_ssize_t n) noexcept nogil:
    """g[i] = act(g[i]) * u[i] for i < n: SiLU and GELU's table 8 at a time where the CPU
    allows, each element the same steps wherever it sits (a thread's share, a batch)."""
    cdef Py_ssize_t i = 0
    cdef float x, y
    if c.act == 0:
        silu_mul(g, u, n)
        return
    if c.act == 1:
        i = gelu_mul8(c.gelu_table, g, u, n)
    while i < n:
        if c.act == 1:
            g[i] = _gelu(c, g[i]) * u[i]
        else:   # layers.swiglu_oai
            x = g[i] if g[i] < 7.0 else <float>7.0
            y = u[i] if u[i] < 7.0 else <float>7.0
            y = y if y > -7.0 else <float>-7.0
            g[i] = x / (1.0 + expf(<float>-1.702 * x)) * (y + 1.0)
        i += 1


cdef void _route(Ctx* c, const float* bias, int t) noexcept nogil:
    """Token t's top-k experts (descending) and their weights, as ``decoder.route``: the
    router's softmax or sigmoid, the top-k of those plus the selection bias (where the layer
    has one), their unbiased probabilities renormalised (sum clamped at f16's smallest
    normal, as llama.cpp) and scaled."""
    cdef int E = c.n_exp, K = c.n_used, e, j, best, i
    cdef float* z = c.route + t * E
    cdef float m = z[0], total = 0.0, picked = 0.0, key, best_key = 0.0
    cdef int* sel = c.sel + t * K
    cdef float* w = c.selw + t * K
    if c.sigmoid_gating:
        for e in range(E):
            z[e] = 1.0 / (1.0 + expf(-z[e]))
    else:
        for e in range(E):
            if z[e] > m:
                m = z[e]
        for e in range(E):
            z[e] = expf(z[e] - m)
            total += z[e]
        for e in range(E):
            z[e] = z[e] / total
    for j in range(K):
        best = -1
        for e in range(E):   # the largest key not yet taken, the lowest index on ties (NaN: never)
            for i in range(j):
                if sel[i] == e:
                    break
            else:
                key = z[e] + bias[e] if bias != NULL else z[e]
                if key == key and (best < 0 or key > best_key):
                    best = e
                    best_key = key
        if best < 0:   # NaN logits (NaN states): a valid expert, a NaN weight, NaN logits out
            best = j
        sel[j] = best
        w[j] = z[best]
    for j in range(K):
        picked += w[j]
    for j in range(K):
        if c.exp_norm:
            w[j] = w[j] / (picked if picked > 6.103515625e-5 else <float>6.103515625e-5)
        if c.exp_scale != 0.0 and c.exp_scale != 1.0:
            w[j] *= c.exp_scale


cdef void _moe_ffn(Ctx* c, Priv* p, Layer* L, int l, int tid, int nth) noexcept nogil:
    """The FFN of a mixture of experts for the batch, into tmp (this thread's rows of it):
    the router, each token's top-k, then expert by expert over the tokens that chose it
    (an expert's rows are read once per batch; experts nobody chose are not read); a shared
    expert, where the layer has one, is a dense FFN over the batch, added with its gate."""
    cdef int D = c.n_embd, T = c.T, E = c.n_exp, K = c.n_used, FE = c.n_ff_exp, FS = c.n_ff_shexp, t, j, e, q, i
    cdef QMat* X = c.experts + <Py_ssize_t>l * E * 3
    cdef QMat* G
    cdef QMat* U
    cdef QMat* W
    cdef Py_ssize_t r, r0 = <Py_ssize_t>FE * tid // nth, r1 = <Py_ssize_t>FE * (tid + 1) // nth
    cdef Py_ssize_t d0 = <Py_ssize_t>D * tid // nth, d1 = <Py_ssize_t>D * (tid + 1) // nth
    cdef float acc
    cdef Priv ps   # the shared expert's activation rows: after the routed experts' T * K
    _matmul(c, p, &L.router, p.h, D, c.route, E, 0, T, tid, nth)
    if L.shared:   # its gate and up products, while the inputs quantised for them are intact
        _glu_products(c, p, &L.sgate, &L.sup, FS, tid, nth)
    barrier()
    t = tid
    while t < T:
        _route(c, L.probs_bias, t)
        c.shw[t] = 1.0
        if L.shared_gated:
            _matmul(c, p, &L.shg, p.h, D, c.shw, 1, t, t + 1, 0, 1)
            c.shw[t] = 1.0 / (1.0 + expf(-c.shw[t]))
        t += nth
    barrier()
    for e in range(E):
        G, U = &X[e * 3], &X[e * 3 + 1]
        for q in range(T * K):
            if c.sel[q] != e:
                continue
            t = q // K
            gemv_rows(G.type, G.w, r0, r1, D, p.act[G.fmt] + t * c.act_stride if G.fmt >= 0 else NULL,
                      p.h + t * D, c.eg + <Py_ssize_t>q * FE)
            gemv_rows(U.type, U.w, r0, r1, D, p.act[U.fmt] + t * c.act_stride if U.fmt >= 0 else NULL,
                      p.h + t * D, c.eu + <Py_ssize_t>q * FE)
            if G.bias != NULL:
                for r in range(r0, r1):
                    c.eg[q * FE + r] += G.bias[r]
            if U.bias != NULL:
                for r in range(r0, r1):
                    c.eu[q * FE + r] += U.bias[r]
            _glu_rows(c, c.eg + <Py_ssize_t>q * FE + r0, c.eu + <Py_ssize_t>q * FE + r0, r1 - r0)
    barrier()
    for q in range(T * K):   # every thread quantises every expert input into its own copy
        _prep(c, p, c.eg + <Py_ssize_t>q * FE, &X[c.sel[q] * 3 + 2], q)
    if L.shared:
        ps = p[0]
        for i in range(3):
            ps.act[i] = p.act[i] + <Py_ssize_t>T * K * c.act_stride
        for t in range(T):
            _prep(c, &ps, c.g + <Py_ssize_t>t * FS, &L.sdown, t)
        if _matmul(c, &ps, &L.sdown, c.g, FS, c.sho, D, 0, T, tid, nth):
            barrier()
        p.call = ps.call
    for e in range(E):
        W = &X[e * 3 + 2]
        for q in range(T * K):
            if c.sel[q] == e:
                gemv_rows(W.type, W.w, d0, d1, FE, p.act[W.fmt] + q * c.act_stride if W.fmt >= 0 else NULL,
                          c.eg + <Py_ssize_t>q * FE, c.eo + <Py_ssize_t>q * D)
                if W.bias != NULL:
                    for r in range(d0, d1):
                        c.eo[q * D + r] += W.bias[r]
    for t in range(T):   # this thread's rows of the weighted sum, in the order of the choice
        for r in range(d0, d1):
            acc = 0.0
            for j in range(K):
                acc = acc + c.selw[t * K + j] * c.eo[(t * K + j) * D + r]
            if L.shared:   # this thread's rows of the shared output: its own share of the product
                acc = acc + c.sho[t * D + r] * c.shw[t]
            c.tmp[t * D + r] = acc


cdef void _glu_products(Ctx* c, Priv* p, QMat* gate, QMat* up, int F, int tid, int nth) noexcept nogil:
    """g[t] = act(gate h[t]) * (up h[t]) for the batch, this thread's rows (F wide)."""
    cdef int D = c.n_embd, T = c.T, t
    cdef Py_ssize_t r0, r1
    cdef bint shared = _matmul(c, p, gate, p.h, D, c.g, F, 0, T, tid, nth)
    if _matmul(c, p, up, p.h, D, c.u, F, 0, T, tid, nth) or shared:
        barrier()
    # the gated activation is per element: each thread finishes its own rows
    r0 = gate.rows * tid // nth
    r1 = gate.rows * (tid + 1) // nth
    for t in range(T):
        _glu_rows(c, c.g + <Py_ssize_t>t * F + r0, c.u + <Py_ssize_t>t * F + r0, r1 - r0)


cdef void _dense_ffn(Ctx* c, Priv* p, Layer* L, int tid, int nth) noexcept nogil:
    """SwiGLU / GeGLU FFN for the batch into tmp."""
    cdef int D = c.n_embd, T = c.T, F = c.n_ff, t
    _glu_products(c, p, &L.gate, &L.up, F, tid, nth)
    barrier()
    for t in range(T):
        _prep(c, p, c.g + t * F, &L.down, t)
    _matmul(c, p, &L.down, c.g, F, c.tmp, D, 0, T, tid, nth)


cdef void _forward(Ctx* c, int tid, int nth) noexcept nogil:
    cdef int D = c.n_embd, hd = c.hd, T = c.T, l, i, hh, t, g, task, o
    cdef int QD = c.n_head * hd, KD = c.n_kv * hd, group = c.n_head // c.n_kv
    cdef Layer* L
    cdef Py_ssize_t r, r0, r1
    cdef float* row
    cdef float* rot = NULL
    cdef int slot = 0
    cdef bint fresh = False
    cdef float* scores = c.scores + <Py_ssize_t>tid * ATT_Q * c.max_cap
    # prompt attention tasks: hb heads (within one KV group) x tb tokens, at most ATT_Q queries
    cdef int hb = min(group, <int>ATT_Q), tb = max(1, <int>ATT_Q // group)
    cdef int cpg = (group + hb - 1) // hb, n_hc = c.n_kv * cpg, n_tasks
    cdef int te, he, t2, h2, k
    cdef int* cnt
    cdef Priv p
    # a multiple of four queries per block where the shape allows (SmolLM2's three heads a
    # group: 4 tokens, not 5): _attend_block takes a partial four one query at a time
    t2 = tb
    while t2 > 0 and (t2 * hb) % 4:
        t2 -= 1
    if t2 > 0:
        tb = t2
    n_tasks = n_hc * ((T + tb - 1) // tb)
    p.x = c.xp + <Py_ssize_t>tid * T * D
    p.h = c.hp + <Py_ssize_t>tid * T * D
    p.lu = c.lorap + <Py_ssize_t>tid * c.max_rank
    p.call = 0
    p.rope_key[0] = p.rope_key[1] = NULL
    p.rope_old = 0
    for i in range(3):
        p.act[i] = c.actp[i] + <Py_ssize_t>tid * T * c.n_slots * c.act_stride
    for t in range(T):
        dequant_rows(c.embd_type, c.embd, c.tokens[t], c.tokens[t] + 1, D, p.x + t * D)
        if c.embd_scale != 1.0:
            for i in range(D):
                p.x[t * D + i] *= c.embd_scale
    for l in range(c.n_layers):
        L = &c.layers[l]
        for t in range(T):
            _norm_in(c, &p, t, L.attn_norm)
            _prep(c, &p, p.h + t * D, &L.wq, t)
            if L.wk.fmt != L.wq.fmt:
                _prep(c, &p, p.h + t * D, &L.wk, t)
            if L.wv.fmt != L.wq.fmt and L.wv.fmt != L.wk.fmt:
                _prep(c, &p, p.h + t * D, &L.wv, t)
        _matmul(c, &p, &L.wq, p.h, D, c.q, QD, 0, T, tid, nth)
        _matmul(c, &p, &L.wk, p.h, D, c.k, KD, 0, T, tid, nth)
        _matmul(c, &p, &L.wv, p.h, D, c.v, KD, 0, T, tid, nth)
        barrier()
        if c.qk_full:   # Q and K normalised over all heads at once: whole rows, a token per thread
            t = tid
            while t < T:
                _rms(c.q + t * QD, L.q_norm, c.q + t * QD, QD, c.eps)
                _rms(c.k + t * KD, L.k_norm, c.k + t * KD, KD, c.eps)
                t += nth
            barrier()
        if T == 1:
            # each KV group belongs to one thread: it stores the group's keys and values,
            # so that thread can attend at once, with no barrier in between
            if L.use_rope:
                slot = _rope_slot(&p, L.inv_freq, &fresh)
                rot = c.rot + (2 * tid + slot) * c.n_rot
                if fresh:
                    _rope_angles(c, c.tpos[0], L.inv_freq, L.rope_mscale, rot)
            g = tid
            while g < c.n_kv:
                _qk(c, L, l, 0, g, rot)
                if c.kv_type == 0:   # the group's heads together: each key and value row read once
                    hh = g * group
                    while hh < (g + 1) * group:
                        _attend_block(c, L, l, g, hh, min(hh + <int>ATT_Q, (g + 1) * group), 0, 1, scores)
                        hh += ATT_Q
                else:
                    for hh in range(g * group, (g + 1) * group):
                        _attend(c, L, l, hh, L.swa, 0, c.q + hh * hd, c.att + hh * hd, scores)
                g += nth
        else:
            # tokens split between the threads, every group of a token by one thread (with
            # fewer KV groups than threads, as Gemma's one, a split by group leaves some idle)
            # (a token's angles: by the thread that takes the token in every layer)
            if L.use_rope:
                slot = _rope_slot(&p, L.inv_freq, &fresh)
            t = tid
            while t < T:
                if L.use_rope:   # once per token, for all its groups
                    rot = c.rope_tab + (<Py_ssize_t>slot * T + t) * c.n_rot
                    if fresh:
                        _rope_angles(c, c.tpos[t], L.inv_freq, L.rope_mscale, rot)
                for g in range(c.n_kv):
                    _qk(c, L, l, t, g, rot)
                t += nth
            # tasks of up to ATT_Q queries: a block of tokens x heads of one KV group, the
            # latest (longest) first, claimed one at a time (statically: every nth)
            cnt = _counter(c, &p) if nth > 1 else NULL
            barrier()
            k = tid if cnt == NULL else claim(cnt)
            while k < n_tasks:
                task = n_tasks - 1 - k
                t = (task // n_hc) * tb
                g = (task % n_hc) // cpg
                hh = g * group + (task % cpg) * hb
                te = min(t + tb, T)
                he = min(hh + hb, (g + 1) * group)
                if _one_run(c, t, te):
                    _attend_block(c, L, l, g, hh, he, t, te, scores)
                elif c.kv_type == 0:   # tokens of several sequences: each token's heads together
                    for t2 in range(t, te):
                        _attend_block(c, L, l, g, hh, he, t2, t2 + 1, scores)
                else:   # tokens of several sequences, or a converted cache: query by query
                    for t2 in range(t, te):
                        for h2 in range(hh, he):
                            _attend(c, L, l, h2, L.swa, t2, c.q + t2 * QD + h2 * hd,
                                    c.att + t2 * QD + h2 * hd, scores)
                k = k + nth if cnt == NULL else claim(cnt)
        barrier()
        for t in range(T):
            _prep(c, &p, c.att + t * QD, &L.wo, t)
        _matmul(c, &p, &L.wo, c.att, QD, c.tmp, D, 0, T, tid, nth)
        barrier()
        for t in range(T):
            _residual(c, &p, t, L.post_attn_norm)
            _norm_in(c, &p, t, L.ffn_norm)
            if L.moe:   # the router's input, and the experts' (one type per stacked tensor)
                _prep(c, &p, p.h + t * D, &L.router, t)
                _prep(c, &p, p.h + t * D, &c.experts[<Py_ssize_t>l * c.n_exp * 3], t)
                _prep(c, &p, p.h + t * D, &c.experts[<Py_ssize_t>l * c.n_exp * 3 + 1], t)
                if L.shared:
                    _prep(c, &p, p.h + t * D, &L.sgate, t)
                    _prep(c, &p, p.h + t * D, &L.sup, t)
                if L.shared_gated:
                    _prep(c, &p, p.h + t * D, &L.shg, t)
            else:
                _prep(c, &p, p.h + t * D, &L.gate, t)
                if L.up.fmt != L.gate.fmt:
                    _prep(c, &p, p.h + t * D, &L.up, t)
        if L.moe:
            _moe_ffn(c, &p, L, l, tid, nth)
        else:
            _dense_ffn(c, &p, L, tid, nth)
        barrier()
        for t in range(T):
            _residual(c, &p, t, L.post_ffn_norm)
    # the wanted tokens' final states, packed into rows 0..n_out-1 (row o <= token t, so
    # nothing still needed is overwritten): the output matrix is read once for all of them
    for t in range(T):
        o = c.tout[t]
        if o < 0:
            continue
        _rms(p.x + t * D, c.out_norm, p.h + o * D, D, c.eps)
        if c.logits != NULL:
            _prep(c, &p, p.h + o * D, &c.output, o)
    if c.logits == NULL:
        return
    if _matmul(c, &p, &c.output, p.h, D, c.logits, c.n_vocab, 0, c.n_out, tid, nth):
        barrier()
    if c.final_softcap > 0 or c.logit_scale != 1.0:
        r0 = c.output.rows * tid // nth
        r1 = c.output.rows * (tid + 1) // nth
        for t in range(c.n_out):
            row = c.logits + t * c.n_vocab
            for r in range(r0, r1):
                row[r] *= c.logit_scale
                if c.final_softcap > 0:
                    row[r] = tanhf(row[r] / c.final_softcap) * c.final_softcap


def _need(ok, what):
    if not ok:
        raise KernelInputError(f"compiled forward: inconsistent model ({what})")


cdef const float* _fptr(object a):
    return NULL if a is None else <const float*>cnp.PyArray_DATA(a)


cdef class Decoder:
    """Compiled forward over an ``abi.llm.models.decoder.Model`` (any recipe)."""

    cdef Ctx c
    cdef list keep            # arrays the context points into
    cdef dict scratch
    cdef int n_threads, t_max
    cdef Py_ssize_t act_max   # the largest quantised input row of any product, in bytes

    def __cinit__(self):
        self.c.max_rank = 0
        self.c.layers = NULL
        self.c.experts = NULL

    def __dealloc__(self):
        free(self.c.layers)
        free(self.c.experts)

    def __init__(self, model, int n_threads, int max_batch=512):
        cdef Ctx* c = &self.c
        cdef Layer* L
        a = model.args
        self.keep = []
        self.scratch = {}
        self.n_threads = max(1, n_threads)
        self.t_max = 0
        self.act_max = 0
        c.n_layers, c.n_embd, c.n_head, c.n_kv = a.n_layers, a.n_embd, a.n_heads, a.n_kv_heads
        c.hd, c.n_ff, c.n_vocab, c.n_rot = a.head_dim, a.n_ff, model.output.shape[0], a.n_rot
        c.neox, c.qk_full = int(a.rope_neox), int(a.qk_norm == "full")
        c.act = {"silu": 0, "gelu": 1, "swiglu_oai": 2}.get(a.activation, -1)
        c.gelu_table = self._f(GELU_TABLE, 1 << 16)
        c.window = a.sliding_window
        c.eps, c.scale, c.embd_scale = a.norm_eps, a.kq_scale, a.embd_scale
        c.attn_softcap, c.final_softcap = a.attn_softcap, a.final_softcap
        c.residual_scale, c.logit_scale = a.residual_scale, a.logit_scale
        c.n_exp, c.n_used, c.n_ff_exp = a.n_expert, a.n_expert_used, a.n_ff_exp
        c.exp_norm, c.exp_scale = int(a.expert_norm), a.expert_weights_scale
        c.sigmoid_gating, c.n_ff_shexp = int(a.expert_gating == "sigmoid"), a.n_ff_shexp
        c.n_slots = max(c.n_used, 1) + (1 if c.n_ff_shexp else 0)
        _need(c.n_exp == 0 or (0 < c.n_used <= c.n_exp and c.n_ff_exp > 0), "expert counts")
        if a.expert_gating not in ("softmax", "sigmoid"):
            raise UnsupportedModelError(f"compiled forward: no {a.expert_gating!r} expert gating")
        if c.act < 0:
            raise UnsupportedModelError(f"compiled forward: no {a.activation!r} activation")
        # every size the C code indexes with is checked here, once: a model object that
        # disagrees with its own hyperparameters is an error, never an out-of-bounds access
        _need(c.n_layers > 0 and len(model.layers) == c.n_layers == len(model.layer_ropes), "layer count")
        _need(c.n_head > 0 and c.n_kv > 0 and c.n_head % c.n_kv == 0, "head counts")
        _need(c.hd > 0 and c.n_rot > 0 and c.n_rot % 2 == 0 and c.n_rot <= c.hd, "head / RoPE size")
        _need(c.hd <= MAX_HD, f"head size {c.hd} above {MAX_HD}")
        _need(c.n_embd > 0 and c.n_ff > 0 and c.n_vocab > 0, "widths")
        c.layers = <Layer*>calloc(a.n_layers, sizeof(Layer))
        if c.n_exp:
            c.experts = <QMat*>calloc(<size_t>a.n_layers * c.n_exp * 3, sizeof(QMat))
        if c.layers == NULL or (c.n_exp and c.experts == NULL):
            raise MemoryError()
        cdef int D = c.n_embd, QD = c.n_head * c.hd, KD = c.n_kv * c.hd, F = c.n_ff
        cdef Py_ssize_t qn = QD if c.qk_full else c.hd, kn = KD if c.qk_full else c.hd
        tables = {}   # one cos/sin frequency table per distinct RoPE
        for l, blk in enumerate(model.layers):
            L = &c.layers[l]
            L.attn_norm, L.ffn_norm = self._f(blk.attn_norm, D), self._f(blk.ffn_norm, D)
            L.wq, L.wk = self._q(blk.wq, QD, D), self._q(blk.wk, KD, D)
            L.wv, L.wo = self._q(blk.wv, KD, D), self._q(blk.wo, D, QD)
            L.moe = int(blk.router is not None)
            _need(L.moe == a.is_moe(l), "expert layers")
            L.shared = int(blk.gate_shexp is not None)
            L.shared_gated = int(blk.shexp_gate is not None)
            _need(L.shared == (L.moe and c.n_ff_shexp > 0) and L.shared_gated == (L.shared and a.shexp_gate),
                  "shared expert")
            L.probs_bias = self._f(blk.probs_bias, c.n_exp) if L.moe else NULL
            if L.shared:
                L.sgate, L.sup = self._q(blk.gate_shexp, c.n_ff_shexp, D), self._q(blk.up_shexp, c.n_ff_shexp, D)
                L.sdown = self._q(blk.down_shexp, D, c.n_ff_shexp)
            if L.shared_gated:
                L.shg = self._q(blk.shexp_gate, 1, D)
            if L.moe:
                L.router = self._q(blk.router, c.n_exp, D)
                stacks = (blk.gate_exps, blk.up_exps, blk.down_exps)
                _need(all(len(st) == c.n_exp for st in stacks), "expert count")
                for e in range(c.n_exp):
                    for k, (st, rows, cols) in enumerate(((blk.gate_exps, c.n_ff_exp, D),
                                                          (blk.up_exps, c.n_ff_exp, D),
                                                          (blk.down_exps, D, c.n_ff_exp))):
                        c.experts[(<Py_ssize_t>l * c.n_exp + e) * 3 + k] = self._q(st[e], rows, cols)
            else:
                L.gate, L.up, L.down = self._q(blk.w_gate, F, D), self._q(blk.w_up, F, D), self._q(blk.w_down, D, F)
            L.q_norm, L.k_norm = self._f(blk.q_norm, qn), self._f(blk.k_norm, kn)
            L.post_attn_norm = self._f(blk.post_attn_norm, D)
            L.post_ffn_norm = self._f(blk.post_ffn_norm, D)
            # the recipe decides which steps exist: each must have its weights, and only those
            _need((L.attn_norm != NULL) == a.attn_norm and (L.ffn_norm != NULL) == a.attn_norm, "pre-norms")
            _need((L.post_attn_norm != NULL) == a.post_norms and (L.post_ffn_norm != NULL) == a.post_norms,
                  "post-norms")
            _need((L.q_norm != NULL) == (a.qk_norm != "none") and (L.k_norm != NULL) == (a.qk_norm != "none"),
                  "Q/K norms")
            L.swa = int(a.is_swa(l))
            L.sinks = self._f(blk.sinks, c.n_head)
            _need((L.sinks != NULL) == a.attn_sinks, "attention sinks")
            rope = model.layer_ropes[l]
            L.use_rope = int(rope is not None)
            L.inv_freq, L.rope_mscale = NULL, 1.0
            if rope is not None:
                _need(rope.inv_freq.shape[0] >= c.n_rot // 2, "RoPE frequencies")
                if id(rope) not in tables:
                    tables[id(rope)] = np.ascontiguousarray(rope.inv_freq, np.float32)
                    self.keep.append(tables[id(rope)])
                L.inv_freq = _fptr(tables[id(rope)])
                L.rope_mscale = rope.mscale
        c.output = self._q(model.output, c.n_vocab, D)
        embd = model.tok_embd
        if GGMLType(int(embd.ggml_type)) not in DEQUANTIZE_TYPES:
            raise UnsupportedTensorType(f"compiled forward: no {GGMLType(int(embd.ggml_type)).name} "
                                        f"row decoder for tensor {embd.name!r}")
        c.embd_type = int(embd.ggml_type)
        # token ids are checked against the output's rows: the table must have as many
        _need(tuple(embd.shape) == (c.n_vocab, D) and D % block_size_of(c.embd_type) == 0, "embedding shape")
        raw = np.ascontiguousarray(embd.raw).reshape(-1)
        _need(raw.dtype == np.uint8 and raw.shape[0] == c.n_vocab * row_bytes(c.embd_type, D), "embedding size")
        self.keep.append(raw)
        c.embd = <const uint8_t*>cnp.PyArray_DATA(raw)
        c.out_norm = self._f(model.output_norm, D)
        _need(c.out_norm != NULL, "output norm")
        self._reserve(1, 0)

    cdef QMat _q(self, lin, Py_ssize_t rows, Py_ssize_t cols):
        """A (rows, cols) matrix, its size checked against its bytes."""
        cdef QMat m
        if vec_dot_type(int(lin.ggml_type)) == -2:   # gemv_rows would leave its rows unwritten
            raise UnsupportedTensorType(f"compiled forward: no {GGMLType(int(lin.ggml_type)).name} "
                                        f"product for tensor {lin.name!r}")
        m.type = int(lin.ggml_type)
        _need(tuple(lin.shape) == (rows, cols) and cols % block_size_of(m.type) == 0,
              f"shape of {lin.name!r}: {tuple(lin.shape)}, expected {(rows, cols)}")
        cdef cnp.ndarray raw = np.ascontiguousarray(lin.raw).reshape(-1)
        _need(raw.dtype == np.uint8 and raw.shape[0] == rows * row_bytes(m.type, cols), f"bytes of {lin.name!r}")
        self.keep.append(raw)
        m.w = <const uint8_t*>cnp.PyArray_DATA(raw)
        m.fmt = _fmt(m.type)
        m.rows, m.cols = rows, cols
        self.act_max = max(self.act_max, activation_bytes(m.type, cols))
        m.bias = NULL if lin.bias is None else self._f(lin.bias, rows)
        m.la, m.lb, m.lrank = NULL, NULL, 0
        lora = getattr(lin, "lora", None)
        if lora is not None:
            a, b = lora
            _need(a.ndim == 2 and b.ndim == 2 and a.shape[1] == cols and b.shape[0] == rows
                  and a.shape[0] == b.shape[1] > 0, f"LoRA factors of {lin.name!r}")
            m.lrank = a.shape[0]
            m.la, m.lb = self._f(a, m.lrank * cols), self._f(b, rows * m.lrank)
            self.c.max_rank = max(self.c.max_rank, m.lrank)
        return m

    cdef const float* _f(self, a, Py_ssize_t n):
        """A float vector of n values (NULL for None)."""
        if a is None:
            return NULL
        a = np.ascontiguousarray(a, np.float32).reshape(-1)
        _need(a.shape[0] == n, f"vector of {a.shape[0]} values where {n} are read")
        self.keep.append(a)
        return _fptr(a)

    cdef float* _buf(self, str name, Py_ssize_t n):
        arr = self.scratch.get(name)
        if arr is None or arr.shape[0] < n:
            arr = self.scratch[name] = np.zeros(n, np.float32)
        return <float*>cnp.PyArray_DATA(arr)

    cdef int _reserve(self, int T, Py_ssize_t cap) except -1:
        """Scratch for batches of T tokens over a cache of ``cap`` positions."""
        cdef Ctx* c = &self.c
        cdef int nth = self.n_threads
        cdef int i
        T = max(T, self.t_max)
        self.t_max = T
        c.q, c.att = self._buf("q", T * c.n_head * c.hd), self._buf("att", T * c.n_head * c.hd)
        c.k, c.v = self._buf("k", T * c.n_kv * c.hd), self._buf("v", T * c.n_kv * c.hd)
        c.g = self._buf("g", T * max(c.n_ff, c.n_ff_shexp))
        c.u = self._buf("u", T * max(c.n_ff, c.n_ff_shexp))
        c.tmp = self._buf("tmp", T * c.n_embd)
        cdef int K = max(c.n_used, 1)
        if c.n_exp:
            c.route, c.selw = self._buf("route", T * c.n_exp), self._buf("selw", T * K)
            c.sel = <int*>self._buf("sel", T * K)   # int32 and float32 are the same size
            c.eg, c.eu = self._buf("eg", T * K * c.n_ff_exp), self._buf("eu", T * K * c.n_ff_exp)
            c.eo = self._buf("eo", T * K * c.n_embd)
            c.shw, c.sho = self._buf("shw", T), self._buf("sho", T * c.n_embd)
        c.xp, c.hp = self._buf("x", nth * T * c.n_embd), self._buf("h", nth * T * c.n_embd)
        c.rot = self._buf("rot", nth * 2 * c.n_rot)
        c.rope_tab = self._buf("rope", 2 * T * c.n_rot)
        c.lorap = self._buf("lora", nth * max(c.max_rank, 1))
        c.scores = self._buf("scores", nth * ATT_Q * max(cap, 1))
        c.n_work = 12 * c.n_layers + 4   # at most ~10 shared-out products and attentions a layer
        c.work_slot = (nth + 15) // 16 * 16
        c.work = <int*>self._buf("work", c.n_work * c.work_slot)
        # bytes per token: the widest quantised input any product reads, in whole cache lines
        # (no more: at 512 tokens these rows are a sixth of the scratch), and a line of slack
        # after the last row for vector loads that run past a row's end
        c.act_stride = max(64, (self.act_max + 63) // 64 * 64)
        for i, name in enumerate(("act0", "act1", "act2")):   # a row per token (per expert slot)
            c.actp[i] = <uint8_t*>self._buf(name, (nth * T * c.n_slots * c.act_stride + 64) // 4)
        return 0

    def reserve(self, int T, Py_ssize_t cap):
        """Allocate the scratch for batches of T tokens over caches of ``cap`` positions now
        (a server does this at start-up, so no request has to)."""
        self._reserve(T, cap)

    def forward(self, tokens, cache, str output="last", int n_threads=0):
        """Run ``tokens`` after the cache's contents. ``output``: "last" -> logits (1, V) of
        the last token; "all" -> (T, V); "hidden" -> final-norm states (T, D); "none".
        ``n_threads`` (1..the constructor's count; 0 = all) only changes the speed."""
        if output not in ("last", "all", "hidden", "none"):
            raise KernelInputError(f"unknown output {output!r}")
        return self._run([(tokens, cache, output)], n_threads)[0]

    def forward_many(self, parts, int n_threads=0):
        """One forward over the tokens of several sequences: ``parts`` is a list of
        ``(tokens, cache, output)`` (output "last", "all" or "none"; one distinct cache each,
        all of one kv_dtype). Each token's arithmetic is the same as in ``forward`` alone:
        the weights are shared, attention is per sequence. Returns one result per part."""
        for _, _, output in parts:
            if output not in ("last", "all", "none"):
                raise KernelInputError(f"unknown output {output!r} in a batch of sequences")
        return self._run(parts, n_threads)

    def _run(self, parts, int n_threads):
        cdef Ctx* c = &self.c
        cdef int nth = self.n_threads if n_threads <= 0 else min(n_threads, self.n_threads)
        if not parts:
            raise KernelInputError("no sequences to run")
        caches = [cache for _, cache, _ in parts]
        if len({id(x) for x in caches}) != len(caches):
            raise KernelInputError("a sequence's cache appears twice in one batch")
        kv = caches[0].kv_dtype
        if kv not in KV_TYPES or any(x.kv_dtype != kv for x in caches):
            raise KernelInputError(f"the caches of one batch must share a kv_dtype of "
                                   f"{', '.join(KV_TYPES)}; got {sorted({x.kv_dtype for x in caches})}")
        if kv == "q8_0" and c.hd % 32:
            raise KernelInputError(f"a q8_0 KV cache needs head sizes divisible by 32, not {c.hd}")
        kv_row = {"f32": 4 * c.hd, "f16": 2 * c.hd, "q8_0": c.hd // 32 * 34}[kv]
        ids_list, pos, seq, out, spans = [], [], [], [], []
        n_out = 0
        for s_i, (tokens, cache, output) in enumerate(parts):
            ids = np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1)
            n = ids.shape[0]
            if n == 0:
                raise KernelInputError("no tokens to run")
            if ids.min() < 0 or ids.max() >= c.n_vocab:
                raise KernelInputError(f"token ids must lie in [0, {c.n_vocab})")
            cache.reserve(cache.length + n)
            for arr in (cache.k, cache.v):
                _need(arr.shape[:3] == (c.n_layers, c.n_kv, cache.capacity) and arr.flags.c_contiguous
                      and arr.shape[3] * arr.itemsize == kv_row,
                      f"KV cache of shape {arr.shape} ({arr.dtype}), expected rows of {kv_row} bytes")
            _need(0 <= cache.length and cache.length + n <= cache.capacity, "KV cache length")
            first = n - 1 if output == "last" else (n if output == "none" else 0)
            ids_list.append(ids)
            pos.append(np.arange(cache.length, cache.length + n, dtype=np.int32))
            seq.append(np.full(n, s_i, np.int32))
            o = np.full(n, -1, np.int32)
            o[first:] = np.arange(n_out, n_out + n - first, dtype=np.int32)
            out.append(o)
            spans.append((n_out, n_out + n - first))
            n_out += n - first
        cdef cnp.ndarray all_ids = np.concatenate(ids_list)
        cdef cnp.ndarray tpos = np.concatenate(pos)
        cdef cnp.ndarray tseq = np.concatenate(seq)
        cdef cnp.ndarray tout = np.concatenate(out)
        cdef cnp.ndarray kptr = np.array([x.k.ctypes.data for x in caches], np.uintp)
        cdef cnp.ndarray vptr = np.array([x.v.ctypes.data for x in caches], np.uintp)
        cdef cnp.ndarray caps = np.array([x.capacity for x in caches], np.intp)
        cdef int T = all_ids.shape[0]
        self._reserve(T, max(x.capacity for x in caches))
        c.T, c.n_out, c.tokens = T, n_out, <const int*>cnp.PyArray_DATA(all_ids)
        c.tpos, c.tseq = <const int*>cnp.PyArray_DATA(tpos), <const int*>cnp.PyArray_DATA(tseq)
        c.tout = <const int*>cnp.PyArray_DATA(tout)
        c.kseq, c.vseq = <uint8_t**>cnp.PyArray_DATA(kptr), <uint8_t**>cnp.PyArray_DATA(vptr)
        c.capseq = <const Py_ssize_t*>cnp.PyArray_DATA(caps)
        c.max_cap = max(x.capacity for x in caches)
        c.kv_type, c.kv_row = KV_TYPES[kv], kv_row
        hidden = parts[0][2] == "hidden"
        logits = None
        c.logits = NULL
        if n_out and not hidden:
            logits = np.empty((n_out, c.n_vocab), np.float32)
            c.logits = <float*>cnp.PyArray_DATA(logits)
        memset(c.work, 0, <size_t>c.n_work * c.work_slot * sizeof(int))
        with nogil, parallel(num_threads=nth):
            _forward(c, openmp.omp_get_thread_num(), openmp.omp_get_num_threads())
        for ids, (_, cache, _) in zip(ids_list, parts):
            cache.length += ids.shape[0]
            cache.tokens.extend(ids.tolist())
        if hidden:   # thread 0's copy
            return [self.scratch["h"][:n_out * c.n_embd].reshape(n_out, c.n_embd).copy()]
        return [None if a == b else logits[a:b] for a, b in spans]
