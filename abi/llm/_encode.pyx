# cython: language_level=3
"""The compiled forward pass of BERT encoders over a packed batch (the real tokens of every
sequence, one after another), every layer in a single nogil OpenMP region.

Each thread owns a contiguous block of token rows through the whole pass: its rows of the
q|k|v product, attention for its queries, the output projection, both LayerNorms and the
feed-forward. Only attention reads other rows (the keys and values of the same sequence),
so threads meet once per layer, after q|k|v. The q|k|v buffer alternates between two
halves from layer to layer, so a thread that runs ahead never overwrites keys another
thread is still reading. A batch of few tokens instead splits every product by output
columns (see _forward_few).

Products with the weights are our float32 AVX-512 (or AVX2) panel kernel (abi_panel_linear:
the weights packed once at load), which beats BLAS sgemm on these shapes (36 tokens: 5.2 vs
11 ms per pass on one Zen 4 core; 128 tokens: 18 vs 31 ms); attention's products are BLAS
sgemm calls on each thread's queries (BLAS itself must be single-threaded meanwhile: the
caller pins it)."""
from libc.stdlib cimport free, malloc
from cython.parallel cimport parallel
cimport openmp

import threading

import numpy as np
cimport numpy as cnp

from abi._kernels._vec cimport barrier, gelu_erf
from abi._kernels.matmul cimport bind_blas, blas_sgemm

cnp.import_array()

cdef extern from *:
    """
    #include <math.h>
    #if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
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
    /* The few-token products, as BLAS kernels do them, without BLAS's copy of the whole
       weight per call: the weight is packed once at load into panels of ABI_NR output rows,
       (cols, ABI_NR) each, and a thread packs the tokens into blocks of ABI_MR, (cols,
       ABI_MR) each (the tail block padded with zeros). A panel times a token block keeps
       ABI_MR x ABI_NR sums in 24 AVX-512 registers: per column, two loads of the panel and
       twelve broadcasts of a token value feed 24 FMAs, and nothing is summed across lanes. */
    #define ABI_MR 12
    #define ABI_NR 32
    static void abi_pack_tokens(const float* x, int n, int cols, float* xp) {
        for (int t0 = 0; t0 < n; t0 += ABI_MR) {
            float* blk = xp + (Py_ssize_t)t0 * cols;
            for (int j = 0; j < ABI_MR; ++j) {
                const float* row = x + (Py_ssize_t)(t0 + j) * cols;
                if (t0 + j < n)
                    for (int c = 0; c < cols; ++c) blk[(Py_ssize_t)c * ABI_MR + j] = row[c];
                else
                    for (int c = 0; c < cols; ++c) blk[(Py_ssize_t)c * ABI_MR + j] = 0.0f;
            }
        }
    }
    /* y[t * ldy + r] = w[r] . x[t] + b[r] for the rows of panels p0 <= p < p1 (the last
       panel cut at `rows`) and tokens t < n; wp: packed weight, xp: packed tokens */
    static void abi_panel_linear(const float* wp, const float* b, int rows, int p0, int p1,
                                 int cols, const float* xp, int n, float* y, int ldy) {
        for (int p = p0; p < p1; ++p) {
            const float* w = wp + (Py_ssize_t)p * cols * ABI_NR;
            int r = p * ABI_NR, valid = rows - r < ABI_NR ? rows - r : ABI_NR;
            for (int t0 = 0; t0 < n; t0 += ABI_MR) {
                const float* xb = xp + (Py_ssize_t)t0 * cols;
                int m = n - t0 < ABI_MR ? n - t0 : ABI_MR;
    #if defined(__AVX512F__)
                __m512 a0[ABI_MR], a1[ABI_MR];
                #pragma GCC unroll 12
                for (int j = 0; j < ABI_MR; ++j) a0[j] = a1[j] = _mm512_setzero_ps();
                for (int c = 0; c < cols; ++c) {
                    __m512 w0 = _mm512_loadu_ps(w + c * ABI_NR), w1 = _mm512_loadu_ps(w + c * ABI_NR + 16);
                    const float* xc = xb + c * ABI_MR;
                    #pragma GCC unroll 12
                    for (int j = 0; j < ABI_MR; ++j) {
                        __m512 xv = _mm512_set1_ps(xc[j]);
                        a0[j] = _mm512_fmadd_ps(w0, xv, a0[j]);
                        a1[j] = _mm512_fmadd_ps(w1, xv, a1[j]);
                    }
                }
                __mmask16 k0 = valid >= 16 ? 0xFFFF : (__mmask16)((1u << valid) - 1);
                __mmask16 k1 = valid <= 16 ? 0 : valid >= 32 ? 0xFFFF : (__mmask16)((1u << (valid - 16)) - 1);
                __m512 b0 = _mm512_maskz_loadu_ps(k0, b + r), b1 = _mm512_maskz_loadu_ps(k1, b + r + 16);
                #pragma GCC unroll 12
                for (int j = 0; j < ABI_MR; ++j) {
                    if (j < m) {
                        float* out = y + (Py_ssize_t)(t0 + j) * ldy + r;
                        _mm512_mask_storeu_ps(out, k0, _mm512_add_ps(a0[j], b0));
                        _mm512_mask_storeu_ps(out + 16, k1, _mm512_add_ps(a1[j], b1));
                    }
                }
    #elif defined(__AVX2__) && defined(__FMA__)
                /* 16 AVX2 registers: the panel's rows 16 at a time against 6 tokens at a time,
                   12 accumulators; the same fused multiply-adds in the same order per output
                   as above, so the same bits */
                for (int h = 0; h < ABI_NR / 16 && 16 * h < valid; ++h) {
                    const int nrow = valid - 16 * h < 16 ? valid - 16 * h : 16;
                    for (int j0 = 0; j0 < m; j0 += 6) {
                        __m256 a0[6], a1[6];
                        #pragma GCC unroll 6
                        for (int j = 0; j < 6; ++j) a0[j] = a1[j] = _mm256_setzero_ps();
                        for (int c = 0; c < cols; ++c) {
                            const float* wc = w + c * ABI_NR + 16 * h;
                            const __m256 w0 = _mm256_loadu_ps(wc), w1 = _mm256_loadu_ps(wc + 8);
                            const float* xc = xb + c * ABI_MR + j0;
                            #pragma GCC unroll 6
                            for (int j = 0; j < 6; ++j) {
                                const __m256 xv = _mm256_broadcast_ss(xc + j);
                                a0[j] = _mm256_fmadd_ps(w0, xv, a0[j]);
                                a1[j] = _mm256_fmadd_ps(w1, xv, a1[j]);
                            }
                        }
                        /* unrolled with constant j (a runtime index would keep the
                           accumulators in memory, stored on every column) */
                        #pragma GCC unroll 6
                        for (int j = 0; j < 6; ++j) {
                            if (j0 + j < m) {
                                float sums[16];
                                _mm256_storeu_ps(sums, a0[j]);
                                _mm256_storeu_ps(sums + 8, a1[j]);
                                float* out = y + (Py_ssize_t)(t0 + j0 + j) * ldy + r + 16 * h;
                                for (int i = 0; i < nrow; ++i) out[i] = sums[i] + b[r + 16 * h + i];
                            }
                        }
                    }
                }
    #else
                float acc[ABI_MR][ABI_NR] = {{0.0f}};
                for (int c = 0; c < cols; ++c)
                    for (int j = 0; j < ABI_MR; ++j)
                        #pragma omp simd
                        for (int i = 0; i < ABI_NR; ++i) acc[j][i] += xb[c * ABI_MR + j] * w[c * ABI_NR + i];
                for (int j = 0; j < m; ++j)
                    for (int i = 0; i < valid; ++i)
                        y[(Py_ssize_t)(t0 + j) * ldy + r + i] = acc[j][i] + b[r + i];
    #endif
            }
        }
    }
    """
    void add_layer_norm "abi_add_layer_norm" (float* x, const float* y, const float* w,
                                              const float* b, int n, float eps) noexcept nogil
    void softmax_row "abi_softmax_row" (float* s, int n) noexcept nogil
    void pack_tokens "abi_pack_tokens" (const float* x, int n, int cols, float* xp) noexcept nogil
    void panel_linear "abi_panel_linear" (const float* wp, const float* b, int rows, int p0, int p1,
                                          int cols, const float* xp, int n, float* y,
                                          int ldy) noexcept nogil
    enum:
        ABI_MR
        ABI_NR

cdef enum:
    Q_BLOCK = 64          # queries per score block: bounds the scores to Q_BLOCK * max_len floats
    FEW_TOKENS_MAX = 40   # batches up to this many tokens take the few-token pass (crossover
                          # measured with BLAS products; one thread runs the same kernel either way)
    KEEP_SCRATCH = 4 << 20  # floats (16 MiB): batches of short texts reuse one buffer
    CHUNK_ROWS = 4 * ABI_MR   # tokens packed at a time: their panel products share each weight read

FEW_TOKENS = FEW_TOKENS_MAX  # for Python callers

ctypedef struct Layer:     # the weights w* packed by panels (_pack_panels)
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
    float* xpack          # the few-token pass's packed tokens, xpack_len per thread
    Py_ssize_t xpack_len


cdef void _panels(const Pass* p, const float* wp, const float* b, int rows, int cols,
                   const float* x, Py_ssize_t n, float* y, int p0, int p1, int tid) noexcept nogil:
    """Columns [p0 * ABI_NR, p1 * ABI_NR) of y (n, rows) = x (n, cols) @ w.T + b (wp: w packed
    by panels), CHUNK_ROWS tokens at a time through this thread's packing buffer."""
    cdef float* xp = p.xpack + tid * p.xpack_len
    cdef Py_ssize_t t = 0
    cdef int m
    while t < n:
        m = <int>min(<Py_ssize_t>CHUNK_ROWS, n - t)
        pack_tokens(x + t * cols, m, cols, xp)
        panel_linear(wp, b, rows, p0, p1, cols, xp, m, y + t * rows, rows)
        t += m


cdef inline int _n_panels(int rows) noexcept nogil:
    return (rows + ABI_NR - 1) // ABI_NR


cdef void _linear(const Pass* p, const float* wp, const float* b, int rows, int cols,
                  const float* x, Py_ssize_t n, float* y, int tid) noexcept nogil:
    """y (n, rows) = x (n, cols) @ w.T + b, every column."""
    _panels(p, wp, b, rows, cols, x, n, y, 0, _n_panels(rows), tid)


cdef void _linear_share(const Pass* p, const float* wp, const float* b, int rows, int cols,
                        const float* x, float* y, int tid, int nth, bint gelu) noexcept nogil:
    """This thread's share of the output columns of y (N, rows) = x (N, cols) @ w.T + b
    (then GELU on them), for a batch of few tokens."""
    cdef int n_panels = _n_panels(rows), n = p.N
    cdef int p0 = n_panels * tid // nth, p1 = n_panels * (tid + 1) // nth
    cdef int r0 = p0 * ABI_NR, r1 = min(rows, p1 * ABI_NR)
    cdef Py_ssize_t t
    if p0 == p1:
        return
    _panels(p, wp, b, rows, cols, x, n, y, p0, p1, tid)
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
            _linear(p, L.wqkv, L.bqkv, 3 * D, D, p.x + lo * D, n, qkv + lo * 3 * D, tid)
        barrier()  # every key and value of the layer is written
        if n == 0:
            continue
        _attend(p, lo, hi, qkv, s)
        _linear(p, L.wo, L.bo, D, D, p.attn + lo * D, n, p.y + lo * D, tid)
        _norm_rows(p, lo, hi, L.ln1_w, L.ln1_b)
        _linear(p, L.wup, L.bup, F, D, p.x + lo * D, n, p.h + lo * F, tid)
        gelu_erf(p.h + lo * F, n * F)
        _linear(p, L.wdown, L.bdown, D, F, p.h + lo * F, n, p.y + lo * D, tid)
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
        _linear_share(p, L.wqkv, L.bqkv, 3 * D, D, p.x, p.qkv, tid, nth, False)
        barrier()
        _attend(p, lo, hi, p.qkv, s)
        barrier()
        _linear_share(p, L.wo, L.bo, D, D, p.attn, p.y, tid, nth, False)
        barrier()
        _norm_rows(p, lo, hi, L.ln1_w, L.ln1_b)
        barrier()
        _linear_share(p, L.wup, L.bup, F, D, p.x, p.h, tid, nth, True)
        barrier()
        _linear_share(p, L.wdown, L.bdown, D, F, p.h, p.y, tid, nth, False)
        barrier()
        _norm_rows(p, lo, hi, L.ln2_w, L.ln2_b)
        barrier()


cdef const float* _ptr(arr, Py_ssize_t size) except NULL:
    cdef cnp.ndarray a = arr
    if a.dtype != np.float32 or not a.flags.c_contiguous or a.size != size:
        raise ValueError(f"expected a C-contiguous float32 array of {size} values")
    return <const float*>cnp.PyArray_DATA(a)


def _pack_panels(w):
    """(rows, cols) float32 -> (panels, cols, ABI_NR): rows in panels of ABI_NR (the last
    padded with zeros), each panel column-major, as panel_linear reads it."""
    rows, cols = w.shape
    n_panels = -(-rows // ABI_NR)
    padded = np.zeros((n_panels * ABI_NR, cols), np.float32)
    padded[:rows] = w
    return np.ascontiguousarray(padded.reshape(n_panels, ABI_NR, cols).transpose(0, 2, 1))


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
        self.keep = []
        self.scratch = np.empty(0, np.float32)
        self.lock = threading.Lock()
        cdef Py_ssize_t D = n_embd, F = n_ff
        cdef Layer* L
        cdef Py_ssize_t l
        for l, b in enumerate(blocks):
            L = self.layers + l
            L.wqkv, L.bqkv = self._packed(b.wqkv, 3 * D, D), self._vec(b.bqkv, 3 * D)
            L.wo, L.bo = self._packed(b.wo, D, D), self._vec(b.bo, D)
            L.ln1_w, L.ln1_b = self._vec(b.attn_norm[0], D), self._vec(b.attn_norm[1], D)
            L.wup, L.bup = self._packed(b.w_up, F, D), self._vec(b.b_up, F)
            L.wdown, L.bdown = self._packed(b.w_down, D, F), self._vec(b.b_down, D)
            L.ln2_w, L.ln2_b = self._vec(b.out_norm[0], D), self._vec(b.out_norm[1], D)

    cdef const float* _vec(self, arr, Py_ssize_t size) except NULL:
        cdef const float* ptr = _ptr(arr, size)
        self.keep.append(arr)
        return ptr

    cdef const float* _packed(self, w, Py_ssize_t rows, Py_ssize_t cols) except NULL:
        _ptr(w, rows * cols)   # checks the type and size
        packed = _pack_panels(w.reshape(rows, cols))
        self.keep.append(packed)
        return _ptr(packed, packed.size)

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
        p.xpack_len = CHUNK_ROWS * max(self.D, self.F)
        cdef Py_ssize_t need = (2 * N * 3 * self.D + 2 * N * self.D + N * self.F
                                + nth * Q_BLOCK * p.max_len + nth * p.xpack_len)
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
        p.xpack = p.scores + <Py_ssize_t>nth * Q_BLOCK * p.max_len
        cdef void (*forward)(const Pass*, int, int) noexcept nogil
        forward = _forward_few if few else _forward
        if nth == 1:
            with nogil:
                forward(p, 0, 1)
        else:
            with nogil, parallel(num_threads=nth):
                forward(p, openmp.omp_get_thread_num(), openmp.omp_get_num_threads())
