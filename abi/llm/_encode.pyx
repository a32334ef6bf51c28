# cython: language_level=3
"""The compiled forward pass of BERT encoders over a packed batch (the real tokens of every
sequence, one after another), every layer in a single nogil OpenMP region.

Each thread owns a contiguous block of token rows through the whole pass: its rows of the
q|k|v product, attention for its queries, the output projection, both LayerNorms and the
feed-forward. Only attention reads other rows (the keys and values of the same sequence),
so threads meet once per layer, after q|k|v. The q|k|v buffer alternates between two
halves from layer to layer, so a thread that runs ahead never overwrites keys another
thread is still reading. Products are float32 BLAS sgemm calls on each thread's rows
(BLAS itself must be single-threaded meanwhile: the caller pins it)."""
from libc.stdlib cimport free, malloc
from cython.parallel cimport parallel
cimport openmp

import threading

import numpy as np
cimport numpy as cnp

from abi._kernels._types cimport T_F32
from abi._kernels._vec cimport barrier, gelu_erf
from abi._kernels.matmul cimport bind_blas, blas_sgemm, gemm

cnp.import_array()

cdef extern from *:
    """
    #include <math.h>
    #if defined(__AVX2__) && defined(__FMA__)
    #include <immintrin.h>
    #endif

    /* x = LayerNorm(x + y) * w + b over one row of n */
    static void abi_add_layer_norm(float* x, const float* y, const float* w, const float* b,
                                   int n, float eps) {
        float mean = 0.0f, var = 0.0f;
        #pragma omp simd reduction(+:mean)
        for (int i = 0; i < n; ++i) { x[i] += y[i]; mean += x[i]; }
        mean /= (float)n;
        #pragma omp simd reduction(+:var)
        for (int i = 0; i < n; ++i) { float d = x[i] - mean; var += d * d; }
        float inv = 1.0f / sqrtf(var / (float)n + eps);
        #pragma omp simd
        for (int i = 0; i < n; ++i) x[i] = (x[i] - mean) * inv * w[i] + b[i];
    }
    /* s = softmax(s) over a row of n, exp by range reduction to [-ln2/2, ln2/2] and a
       degree-6 Taylor polynomial (relative error < 2e-7), in a loop gcc vectorises */
    static void abi_softmax_row(float* s, int n) {
        float m = -3.4e38f, total = 0.0f;
        #pragma omp simd reduction(max:m)
        for (int i = 0; i < n; ++i) m = s[i] > m ? s[i] : m;
        #pragma omp simd reduction(+:total)
        for (int i = 0; i < n; ++i) {
            float x = s[i] - m;
            x = x < -87.0f ? -87.0f : x;
            float k = __builtin_rintf(x * 1.44269504088896341f);
            float r = x - k * 0.693145751953125f - k * 1.42860682030941723e-6f;
            float e = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24
                      + r * (1.0f / 120 + r * (1.0f / 720))))));
            union { float f; int i; } two = { .i = ((int)k + 127) << 23 };
            s[i] = e * two.f;
            total += s[i];
        }
        float inv = 1.0f / total;
        #pragma omp simd
        for (int i = 0; i < n; ++i) s[i] *= inv;
    }
    /* y[t * ldy + r] = w[r] . x[t] + b[r] for rows r0 <= r < r1 and tokens t < n. For a few
       tokens the product is bound by reading w, and BLAS would first copy all of w into
       its panel layout: here each pair of weight rows is read once and meets every token
       (4 at a time, from cache), 8 independent accumulators in flight. */
    static void abi_few_tokens_linear(const float* w, const float* b, int r0, int r1, int cols,
                                      const float* x, int n, float* y, int ldy) {
        for (int r = r0; r < r1; r += 2) {
            const float* w0 = w + (Py_ssize_t)r * cols;
            const float* w1 = r + 1 < r1 ? w0 + cols : w0;
            for (int t = 0; t < n; t += 4) {
                const float* xs[4];
                for (int j = 0; j < 4; ++j)
                    xs[j] = x + (Py_ssize_t)(t + j < n ? t + j : n - 1) * cols;
                float out0[4], out1[4];
                int c = 0;
    #if defined(__AVX2__) && defined(__FMA__)
                __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
                __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
                for (; c + 8 <= cols; c += 8) {
                    __m256 v0 = _mm256_loadu_ps(w0 + c), v1 = _mm256_loadu_ps(w1 + c);
                    __m256 x0 = _mm256_loadu_ps(xs[0] + c), x1 = _mm256_loadu_ps(xs[1] + c);
                    __m256 x2 = _mm256_loadu_ps(xs[2] + c), x3 = _mm256_loadu_ps(xs[3] + c);
                    a00 = _mm256_fmadd_ps(v0, x0, a00); a10 = _mm256_fmadd_ps(v1, x0, a10);
                    a01 = _mm256_fmadd_ps(v0, x1, a01); a11 = _mm256_fmadd_ps(v1, x1, a11);
                    a02 = _mm256_fmadd_ps(v0, x2, a02); a12 = _mm256_fmadd_ps(v1, x2, a12);
                    a03 = _mm256_fmadd_ps(v0, x3, a03); a13 = _mm256_fmadd_ps(v1, x3, a13);
                }
                __m256 acc[8] = {a00, a01, a02, a03, a10, a11, a12, a13};
                float lanes[8];
                for (int j = 0; j < 8; ++j) {
                    _mm256_storeu_ps(lanes, acc[j]);
                    float v = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
                            + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
                    if (j < 4) out0[j] = v; else out1[j - 4] = v;
                }
    #else
                for (int j = 0; j < 4; ++j) out0[j] = out1[j] = 0.0f;
    #endif
                for (; c < cols; ++c)
                    for (int j = 0; j < 4; ++j) {
                        out0[j] += w0[c] * xs[j][c];
                        out1[j] += w1[c] * xs[j][c];
                    }
                for (int j = 0; j < 4 && t + j < n; ++j) {
                    y[(Py_ssize_t)(t + j) * ldy + r] = out0[j] + b[r];
                    if (r + 1 < r1) y[(Py_ssize_t)(t + j) * ldy + r + 1] = out1[j] + b[r + 1];
                }
            }
        }
    }
    static void abi_add_bias(float* y, const float* b, Py_ssize_t rows, int n) {
        for (Py_ssize_t r = 0; r < rows; ++r) {
            float* row = y + r * n;
            #pragma omp simd
            for (int i = 0; i < n; ++i) row[i] += b[i];
        }
    }
    """
    void add_layer_norm "abi_add_layer_norm" (float* x, const float* y, const float* w,
                                              const float* b, int n, float eps) noexcept nogil
    void add_bias "abi_add_bias" (float* y, const float* b, Py_ssize_t rows, int n) noexcept nogil
    void softmax_row "abi_softmax_row" (float* s, int n) noexcept nogil
    void few_tokens_linear "abi_few_tokens_linear" (const float* w, const float* b, int r0, int r1,
                                                    int cols, const float* x, int n, float* y,
                                                    int ldy) noexcept nogil

cdef enum:
    Q_BLOCK = 64          # queries per score block: bounds the scores to Q_BLOCK * max_len floats
    FEW_TOKENS_MAX = 40   # batches up to this many tokens take the few-token pass (measured crossover)
    KEEP_SCRATCH = 4 << 20  # floats (16 MiB): batches of short texts reuse one buffer

FEW_TOKENS = FEW_TOKENS_MAX  # for Python callers

ctypedef struct Layer:
    const float* wqkv     # (3D, D) and (3D,)
    const float* bqkv
    const float* wo       # (D, D)
    const float* bo
    const float* ln1_w    # after attention
    const float* ln1_b
    const float* wup      # (F, D)
    const float* bup
    const float* wdown    # (D, F)
    const float* bdown
    const float* ln2_w    # after the feed-forward
    const float* ln2_b

ctypedef struct Pass:
    int N, D, F, H, hd, n_layers, max_len
    float scale, eps
    const Layer* layers
    const int* seq_lo     # per row: the packed rows [seq_lo, seq_hi) of its sequence
    const int* seq_hi
    float* x              # (N, D) residual stream, in and out
    float* qkv            # 2 x (N, 3D)
    float* attn           # (N, D)
    float* y              # (N, D)
    float* h              # (N, F)
    float* scores         # Q_BLOCK * max_len per thread


cdef void _linear(const float* w, const float* b, int rows, int cols, const float* x,
                  Py_ssize_t n, float* y) noexcept nogil:
    """y (n, rows) = x (n, cols) @ w.T + b."""
    gemm(T_F32, <const unsigned char*>w, rows, cols, x, n, y, NULL, rows, 1)
    add_bias(y, b, n, rows)


cdef void _linear_share(const float* w, const float* b, int rows, int cols, const float* x,
                        int n, float* y, int tid, int nth, bint gelu) noexcept nogil:
    """This thread's share of the output columns of y (n, rows) = x (n, cols) @ w.T + b
    (then GELU on them), for a batch of few tokens."""
    cdef int r0 = rows * tid // nth // 2 * 2, r1 = rows if tid == nth - 1 else rows * (tid + 1) // nth // 2 * 2
    cdef Py_ssize_t t
    few_tokens_linear(w, b, r0, r1, cols, x, n, y, rows)
    if gelu:
        for t in range(n):
            gelu_erf(y + t * rows + r0, r1 - r0)


cdef void _norm_rows(const Pass* p, Py_ssize_t lo, Py_ssize_t hi, const float* w,
                     const float* b) noexcept nogil:
    """x = LayerNorm(x + y) for rows lo..hi."""
    cdef Py_ssize_t i
    for i in range(lo, hi):
        add_layer_norm(p.x + i * p.D, p.y + i * p.D, w, b, p.D, p.eps)


cdef void _attend(const Pass* p, Py_ssize_t lo, Py_ssize_t hi, const float* qkv, float* s) noexcept nogil:
    """attn[lo:hi] = softmax(Q K^T / sqrt(hd)) V per head, each query over the keys of its own
    sequence: two sgemm calls per (sequence, head, block of <= Q_BLOCK queries), the
    matrices read in place from the q|k|v rows (leading dimension 3D)."""
    cdef int D = p.D, D3 = 3 * p.D, hd = p.hd, h, r, T, n
    cdef Py_ssize_t i = lo, first, end, q0
    while i < hi:
        first, end = p.seq_lo[i], min(<Py_ssize_t>p.seq_hi[i], hi)
        T = p.seq_hi[i] - first
        q0 = i
        while q0 < end:
            n = <int>min(<Py_ssize_t>Q_BLOCK, end - q0)
            for h in range(p.H):
                # column-major view: S^T (T x n) = K_h (T x hd) . Q_h^T (hd x n)
                blas_sgemm(b"T", b"N", T, n, hd, p.scale, qkv + first * D3 + D + h * hd, D3,
                           qkv + q0 * D3 + h * hd, D3, 0, s, T)
                for r in range(n):
                    softmax_row(s + <Py_ssize_t>r * T, T)
                # O_h^T (hd x n) = V_h^T (hd x T) . P^T (T x n), into attn rows q0.. (ld D)
                blas_sgemm(b"N", b"N", hd, n, T, 1, qkv + first * D3 + 2 * D + h * hd, D3,
                           s, T, 0, p.attn + q0 * D + h * hd, D)
            q0 += n
        i = end


cdef void _forward(const Pass* p, int tid, int nth) noexcept nogil:
    cdef Py_ssize_t lo = <Py_ssize_t>p.N * tid // nth, hi = <Py_ssize_t>p.N * (tid + 1) // nth
    cdef Py_ssize_t n = hi - lo
    cdef int D = p.D, F = p.F, l
    cdef const Layer* L
    cdef float* qkv
    cdef float* s = p.scores + <Py_ssize_t>tid * Q_BLOCK * p.max_len
    for l in range(p.n_layers):
        L = p.layers + l
        qkv = p.qkv + (l % 2) * <Py_ssize_t>p.N * 3 * D
        if n > 0:
            _linear(L.wqkv, L.bqkv, 3 * D, D, p.x + lo * D, n, qkv + lo * 3 * D)
        barrier()  # every key and value of the layer is written
        if n == 0:
            continue
        _attend(p, lo, hi, qkv, s)
        _linear(L.wo, L.bo, D, D, p.attn + lo * D, n, p.y + lo * D)
        _norm_rows(p, lo, hi, L.ln1_w, L.ln1_b)
        _linear(L.wup, L.bup, F, D, p.x + lo * D, n, p.h + lo * F)
        gelu_erf(p.h + lo * F, n * F)
        _linear(L.wdown, L.bdown, D, F, p.h + lo * F, n, p.y + lo * D)
        _norm_rows(p, lo, hi, L.ln2_w, L.ln2_b)


cdef void _forward_few(const Pass* p, int tid, int nth) noexcept nogil:
    """The pass for a batch of few tokens: every product split by output columns over the
    threads (so each reads its share of the weights once), barriers between the stages."""
    cdef Py_ssize_t lo = <Py_ssize_t>p.N * tid // nth, hi = <Py_ssize_t>p.N * (tid + 1) // nth
    cdef int D = p.D, F = p.F, N = p.N, l
    cdef const Layer* L
    cdef float* s = p.scores + <Py_ssize_t>tid * Q_BLOCK * p.max_len
    for l in range(p.n_layers):
        L = p.layers + l
        _linear_share(L.wqkv, L.bqkv, 3 * D, D, p.x, N, p.qkv, tid, nth, False)
        barrier()
        _attend(p, lo, hi, p.qkv, s)
        barrier()
        _linear_share(L.wo, L.bo, D, D, p.attn, N, p.y, tid, nth, False)
        barrier()
        _norm_rows(p, lo, hi, L.ln1_w, L.ln1_b)
        barrier()
        _linear_share(L.wup, L.bup, F, D, p.x, N, p.h, tid, nth, True)
        barrier()
        _linear_share(L.wdown, L.bdown, D, F, p.h, N, p.y, tid, nth, False)
        barrier()
        _norm_rows(p, lo, hi, L.ln2_w, L.ln2_b)
        barrier()


cdef const float* _ptr(arr, Py_ssize_t size) except NULL:
    cdef cnp.ndarray a = arr
    if a.dtype != np.float32 or not a.flags.c_contiguous or a.size != size:
        raise ValueError(f"expected a C-contiguous float32 array of {size} values")
    return <const float*>cnp.PyArray_DATA(a)


cdef class Encoder:
    """The layers of a bert.Model bound as C pointers (the arrays are kept alive here)."""
    cdef Layer* layers
    cdef int n_layers, D, F, H
    cdef float eps
    cdef list keep
    cdef object scratch   # kept between calls up to KEEP_SCRATCH floats (fresh pages cost ~5 %)
    cdef object lock      # one run at a time on the kept scratch

    def __cinit__(self):
        self.layers = NULL

    def __init__(self, blocks, int n_embd, int n_ff, int n_heads, float eps):
        bind_blas()
        self.D, self.F, self.H, self.eps = n_embd, n_ff, n_heads, eps
        self.n_layers = len(blocks)
        self.layers = <Layer*>malloc(max(1, self.n_layers) * sizeof(Layer))
        if self.layers == NULL:
            raise MemoryError()
        self.keep = list(blocks)
        self.scratch = np.empty(0, np.float32)
        self.lock = threading.Lock()
        cdef Py_ssize_t D = n_embd, F = n_ff
        for l, b in enumerate(blocks):
            self.layers[l].wqkv, self.layers[l].bqkv = _ptr(b.wqkv, 3 * D * D), _ptr(b.bqkv, 3 * D)
            self.layers[l].wo, self.layers[l].bo = _ptr(b.wo, D * D), _ptr(b.bo, D)
            self.layers[l].ln1_w, self.layers[l].ln1_b = _ptr(b.attn_norm[0], D), _ptr(b.attn_norm[1], D)
            self.layers[l].wup, self.layers[l].bup = _ptr(b.w_up, F * D), _ptr(b.b_up, F)
            self.layers[l].wdown, self.layers[l].bdown = _ptr(b.w_down, D * F), _ptr(b.b_down, D)
            self.layers[l].ln2_w, self.layers[l].ln2_b = _ptr(b.out_norm[0], D), _ptr(b.out_norm[1], D)

    def __dealloc__(self):
        free(self.layers)

    def run(self, cnp.ndarray x, cnp.ndarray seq_lo, cnp.ndarray seq_hi, int n_threads,
            int min_rows_per_thread=16, int few_tokens=FEW_TOKENS_MAX):
        """Every layer over the packed rows x (N, D) float32, in place. seq_lo / seq_hi
        (int32, N): the packed row range of each row's sequence. Up to ``few_tokens`` rows
        take the few-token pass (all n_threads), more the row-split one (at least
        ``min_rows_per_thread`` rows per thread)."""
        cdef Pass p
        cdef Py_ssize_t N = x.shape[0]
        if x.ndim != 2 or x.shape[1] != self.D or x.dtype != np.float32 or not x.flags.c_contiguous:
            raise ValueError(f"x must be a C-contiguous float32 (N, {self.D}) array")
        for a in (seq_lo, seq_hi):
            if a.dtype != np.int32 or a.ndim != 1 or a.shape[0] != N or not a.flags.c_contiguous:
                raise ValueError("seq_lo and seq_hi must be contiguous int32 arrays of N rows")
        if N == 0:
            return x
        lengths = seq_hi - seq_lo
        if seq_lo.min() < 0 or seq_hi.max() > N or lengths.min() < 1:
            raise ValueError("sequence ranges must lie inside the batch")
        cdef bint few = N <= few_tokens
        cdef int nth = max(1, n_threads if few else min(n_threads, N // max(1, min_rows_per_thread)))
        p.N, p.D, p.F, p.H = <int>N, self.D, self.F, self.H
        p.hd, p.n_layers, p.max_len = self.D // self.H, self.n_layers, int(lengths.max())
        p.scale, p.eps = 1.0 / np.sqrt(p.hd), self.eps
        p.layers = self.layers
        p.x = <float*>cnp.PyArray_DATA(x)
        p.seq_lo, p.seq_hi = <const int*>cnp.PyArray_DATA(seq_lo), <const int*>cnp.PyArray_DATA(seq_hi)
        cdef Py_ssize_t need = 2 * N * 3 * self.D + 2 * N * self.D + N * self.F + nth * Q_BLOCK * p.max_len
        with self.lock:
            scratch = self.scratch if self.scratch.size >= need else np.empty(need, np.float32)
            if need <= KEEP_SCRATCH:
                self.scratch = scratch
            self._run(&p, scratch, nth, few)
        return x

    cdef void _run(self, Pass* p, cnp.ndarray scratch, int nth, bint few):
        cdef float* base = <float*>cnp.PyArray_DATA(scratch)
        cdef Py_ssize_t N = p.N
        p.qkv = base
        p.attn = p.qkv + 2 * N * 3 * p.D
        p.y = p.attn + N * p.D
        p.h = p.y + N * p.D
        p.scores = p.h + N * p.F
        cdef void (*forward)(const Pass*, int, int) noexcept nogil
        forward = _forward_few if few else _forward
        if nth == 1:
            with nogil:
                forward(p, 0, 1)
        else:
            with nogil, parallel(num_threads=nth):
                forward(p, openmp.omp_get_thread_num(), openmp.omp_get_num_threads())
