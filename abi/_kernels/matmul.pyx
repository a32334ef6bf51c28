"""Products with quantised weights, y = W @ x, without dequantising the whole weight.

Decode (one x row): the activation is quantised once to the weight type's Q8 partner
format and each row is an integer dot product (``_qdot.pxd``), rows split over threads.
Prompts through the compiled forward (many x rows, each quantised): ``gemm_rows`` runs
register tiles of rows x tokens (``_qtile.pxd``; float weights ``_ftile.pxd``) that give each
token the T = 1 bits.
Prefill (many x rows): tiles of W are dequantised to float32 and multiplied by BLAS sgemm.
"""
from libc.stdint cimport uint8_t, uintptr_t
from libc.stdlib cimport malloc, free
from cython.parallel cimport prange
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer

from abi._kernels._qdot cimport *
from abi._kernels._qdot_iq cimport *
from abi._kernels._qtile cimport *
from abi._kernels._qtile_avx2 cimport QTILE2, QTILE2_LAT
from abi._kernels._ftile cimport *
from abi._kernels._types cimport *
from abi._kernels.quant cimport quantize_row_q8_0, quantize_row_q8_1, quantize_row_q8_k
from abi._kernels.dequant cimport dequantize_blocks
from abi.errors import UnsupportedTensorType

# BLAS sgemm, taken from scipy's exported function table on first use (not at import, and
# not at build time: importing scipy.linalg costs ~0.15 s, and the build needs no scipy)
ctypedef void (*sgemm_t)(char* transa, char* transb, int* m, int* n, int* k, float* alpha,
                         float* a, int* lda, float* b, int* ldb, float* beta, float* c,
                         int* ldc) noexcept nogil
cdef sgemm_t sgemm = NULL


cdef int bind_blas() except -1:
    global sgemm
    if sgemm == NULL:
        from scipy.linalg import cython_blas
        capsule = cython_blas.__pyx_capi__["sgemm"]
        sgemm = <sgemm_t>PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))
    return 0


cdef void blas_sgemm(char transa, char transb, int m, int n, int k, float alpha,
                     const float* a, int lda, const float* b, int ldb, float beta,
                     float* c, int ldc) noexcept nogil:
    sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>a, &lda, <float*>b, &ldb, &beta, c, &ldc)


# Products of fewer weight elements than this run on the calling thread: waking a second
# thread costs ~1-2 us, which pays off only above ~5 us of work (measured on the 2-core
# machine: Q4_1 crosses over between 74K and 110K elements, Q8_0 between 110K and 220K).
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 96 * 1024

# Rows are prefetched this many bytes ahead of the one being read: the dot products do
# enough arithmetic per byte that the hardware prefetcher alone keeps too few cache misses
# in flight to stream from DRAM at full speed (see tools/bench_kernels.py, stream column).
cdef Py_ssize_t PREFETCH_BYTES = 2048

cdef extern from *:
    """
    #define abi_prefetch(p) __builtin_prefetch((const void*)(p), 0, 3)
    """
    void prefetch "abi_prefetch"(const void* p) noexcept nogil


cdef inline void _prefetch_row(const uint8_t* row, Py_ssize_t rb) noexcept nogil:
    """Prefetch [row + PREFETCH_BYTES, row + rb + PREFETCH_BYTES): over a sweep of rows
    every cache line is requested once, a fixed distance ahead."""
    cdef Py_ssize_t off
    for off in range(0, rb, 64):
        prefetch(row + PREFETCH_BYTES + off)


cdef int vec_dot_type(int t) noexcept nogil:
    if t == T_Q4_0 or t == T_Q5_0 or t == T_Q8_0 or t == T_IQ4_NL:
        return T_Q8_0
    if t == T_Q4_1 or t == T_Q5_1:
        return T_Q8_1
    if t == T_Q4_K or t == T_Q5_K or t == T_Q6_K or t == T_Q2_K or t == T_Q3_K or t == T_IQ4_XS:
        return T_Q8_K
    if (t == T_IQ2_XXS or t == T_IQ2_XS or t == T_IQ2_S or t == T_IQ3_XXS or t == T_IQ3_S
            or t == T_IQ1_S or t == T_IQ1_M or t == T_TQ1_0 or t == T_TQ2_0):
        return T_Q8_K
    if t == T_MXFP4:
        return T_Q8_0
    if t == T_F32 or t == T_F16 or t == T_BF16:
        return -1
    return -2


cdef Py_ssize_t row_bytes(int t, Py_ssize_t cols) noexcept nogil:
    return cols // block_size_of(t) * type_size_of(t)


cdef Py_ssize_t activation_bytes(int t, Py_ssize_t cols) noexcept nogil:
    cdef int v = vec_dot_type(t)
    return row_bytes(v, cols) if v >= 0 else 0


cdef void quantize_activation(int t, const float* x, Py_ssize_t cols, uint8_t* xq) noexcept nogil:
    cdef int v = vec_dot_type(t)
    if v == T_Q8_0:
        quantize_row_q8_0(x, xq, cols)
    elif v == T_Q8_1:
        quantize_row_q8_1(x, xq, cols)
    elif v == T_Q8_K:
        quantize_row_q8_k(x, xq, cols)


cdef void gemv_rows(int t, const uint8_t* w, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t cols,
                    const void* xq, const float* x, float* y) noexcept nogil:
    cdef Py_ssize_t rb = row_bytes(t, cols), r
    cdef Py_ssize_t nb = cols // block_size_of(t)
    cdef const uint8_t* q = <const uint8_t*>xq
    cdef const float* xd = NULL
    cdef float quad[4]
    cdef Py_ssize_t k
    if t == T_Q4_0 or t == T_Q5_0:
        xd = quad_x(q, 34, nb)
    # one loop per type so each inlined dot product sits in its own tight loop
    if t == T_Q4_1:   # rows in fours (_qdot.pxd); the last one repeated for the rest
        r = r0
        while r + 3 < r1:
            _prefetch_row(w + r * rb, 4 * rb)
            dot4_q4_1_q8_1(w + r * rb, w + (r + 1) * rb, w + (r + 2) * rb, w + (r + 3) * rb, q, nb, y + r)
            r += 4
        if r < r1:
            dot4_q4_1_q8_1(w + r * rb, w + min(r + 1, r1 - 1) * rb, w + min(r + 2, r1 - 1) * rb,
                           w + (r1 - 1) * rb, q, nb, quad)
            for k in range(r1 - r):
                y[r + k] = quad[k]
    elif t == T_Q8_0:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_q8_0_q8_0(w + r * rb, q, nb)
    elif t == T_Q4_0:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_q4_0_q8_0(w + r * rb, q, xd, nb)
    elif t == T_Q5_0:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_q5_0_q8_0(w + r * rb, q, xd, nb)
    elif t == T_Q5_1:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_q5_1_q8_1(w + r * rb, q, nb)
    elif t == T_Q4_K:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_q4_k_q8_k(w + r * rb, q, nb)
    elif t == T_Q5_K:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_q5_k_q8_k(w + r * rb, q, nb)
    elif t == T_Q6_K:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_q6_k_q8_k(w + r * rb, q, nb)
    elif t == T_Q2_K:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_q2_k_q8_k(w + r * rb, q, nb)
    elif t == T_Q3_K:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_q3_k_q8_k(w + r * rb, q, nb)
    elif t == T_IQ4_NL:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_iq4_nl_q8_0(w + r * rb, q, nb)
    elif t == T_IQ4_XS:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_iq4_xs_q8_k(w + r * rb, q, nb)
    elif t == T_IQ2_XXS:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_iq2_xxs_q8_k(w + r * rb, q, nb)
    elif t == T_IQ2_XS:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_iq2_xs_q8_k(w + r * rb, q, nb)
    elif t == T_IQ2_S:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_iq2_s_q8_k(w + r * rb, q, nb)
    elif t == T_IQ3_XXS:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_iq3_xxs_q8_k(w + r * rb, q, nb)
    elif t == T_IQ3_S:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_iq3_s_q8_k(w + r * rb, q, nb)
    elif t == T_IQ1_S:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_iq1_s_q8_k(w + r * rb, q, nb)
    elif t == T_IQ1_M:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_iq1_m_q8_k(w + r * rb, q, nb)
    elif t == T_TQ1_0:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_tq1_0_q8_k(w + r * rb, q, nb)
    elif t == T_TQ2_0:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_tq2_0_q8_k(w + r * rb, q, nb)
    elif t == T_MXFP4:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_mxfp4_q8_0(w + r * rb, q, nb)
    elif t == T_F16:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_f16(w + r * rb, x, cols)
    elif t == T_BF16:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_bf16(w + r * rb, x, cols)
    elif t == T_F32:
        for r in range(r0, r1):
            _prefetch_row(w + r * rb, rb)
            y[r] = dot_f32(w + r * rb, x, cols)


cdef void _gemv_rows_scalar(int t, const uint8_t* w, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t cols,
                           const uint8_t* q, const float* x, float* y) noexcept nogil:
    """gemv_rows through the portable C kernels (what machines without AVX2 run)."""
    cdef Py_ssize_t rb = row_bytes(t, cols), r
    cdef Py_ssize_t nb = cols // block_size_of(t)
    for r in range(r0, r1):
        if t == T_Q4_1:
            y[r] = dot_q4_1_q8_1_scalar(w + r * rb, q, nb)
        elif t == T_Q8_0:
            y[r] = dot_q8_0_q8_0_scalar(w + r * rb, q, nb)
        elif t == T_Q4_0:
            y[r] = dot_q4_0_q8_0_scalar(w + r * rb, q, nb)
        elif t == T_Q5_0:
            y[r] = dot_q5_0_q8_0_scalar(w + r * rb, q, nb)
        elif t == T_Q5_1:
            y[r] = dot_q5_1_q8_1_scalar(w + r * rb, q, nb)
        elif t == T_Q4_K:
            y[r] = dot_q4_k_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_Q5_K:
            y[r] = dot_q5_k_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_Q6_K:
            y[r] = dot_q6_k_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_Q2_K:
            y[r] = dot_q2_k_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_Q3_K:
            y[r] = dot_q3_k_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_IQ4_NL:
            y[r] = dot_iq4_nl_q8_0_scalar(w + r * rb, q, nb)
        elif t == T_IQ4_XS:
            y[r] = dot_iq4_xs_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_IQ2_XXS:
            y[r] = dot_iq2_xxs_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_IQ2_XS:
            y[r] = dot_iq2_xs_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_IQ2_S:
            y[r] = dot_iq2_s_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_IQ3_XXS:
            y[r] = dot_iq3_xxs_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_IQ3_S:
            y[r] = dot_iq3_s_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_IQ1_S:
            y[r] = dot_iq1_s_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_IQ1_M:
            y[r] = dot_iq1_m_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_TQ1_0:
            y[r] = dot_tq1_0_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_TQ2_0:
            y[r] = dot_tq2_0_q8_k_scalar(w + r * rb, q, nb)
        elif t == T_MXFP4:
            y[r] = dot_mxfp4_q8_0_scalar(w + r * rb, q, nb)
        elif t == T_F16:
            y[r] = dot_f16_scalar(w + r * rb, x, cols)
        elif t == T_BF16:
            y[r] = dot_bf16_scalar(w + r * rb, x, cols)
        elif t == T_F32:
            y[r] = dot_f32_scalar(w + r * rb, x, cols)


cdef bint has_tile(int t) noexcept nogil:
    if t == T_F32 or t == T_F16 or t == T_BF16:   # float weights: _ftile.pxd, AVX-512 F or AVX2
        return FTILE or FTILE2
    # fourteen types have AVX-512 VNNI tiles (_qtile.pxd) and AVX2 ones (_qtile_avx2.pxd; Q4_K's
    # serves both), the lattice and ternary ones AVX-512 tiles with VBMI, else AVX2 ones
    return (((QTILE or QTILE2) and (t == T_Q4_1 or t == T_Q8_0 or t == T_Q5_0 or t == T_Q4_K or t == T_Q6_K
                                    or t == T_IQ4_NL or t == T_IQ4_XS or t == T_Q5_K or t == T_Q3_K or t == T_Q4_0
                                    or t == T_Q5_1 or t == T_Q2_K or t == T_MXFP4 or t == T_TQ2_0))
            or ((QTILE_IQ or QTILE2_LAT) and (t == T_TQ1_0 or t == T_IQ1_S or t == T_IQ1_M or t == T_IQ2_XXS
                                              or t == T_IQ2_XS or t == T_IQ2_S or t == T_IQ3_XXS or t == T_IQ3_S)))


# Tokens per pass over a range of rows: their activations stay in L2 while the rows stream by.
cdef Py_ssize_t TILE_TOKENS = 64
# A batch of at most TILE_TOKENS tokens (a continuous batch's decode step) reads each row once
# for a few products only, so its time goes to waiting for rows from DRAM unless they are
# prefetched, as gemv_rows does: it runs the tiles TILE_ROWS rows (a multiple of every
# tile's rows) at a time and prefetches the rows ahead between the calls. Small chunks keep
# each burst of prefetches short (16 rows measured slower than 4).
cdef Py_ssize_t TILE_ROWS = 4


cdef void gemm_rows(int t, const uint8_t* w, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t cols,
                    const uint8_t* xq, Py_ssize_t xs, Py_ssize_t T, float* y, Py_ssize_t ys) noexcept nogil:
    """y[t * ys + r] = row r . token t for r0 <= r < r1, t < T (each token's activation
    row xs bytes after the last), every pair with the T = 1 kernel's bits."""
    cdef Py_ssize_t rb = row_bytes(t, cols), rc = r0, re
    # a prompt (enough tokens per row to hide its reading), or the AVX2 quantised tiles and
    # Q4_K's on every SIMD host (which prepare the tokens once per call and prefetch the rows
    # themselves)
    if T > TILE_TOKENS or (QTILE2 and t != T_F32 and t != T_F16 and t != T_BF16) or (QDOT_SIMD and t == T_Q4_K):
        gemm_tiles(t, w, r0, r1, cols, xq, xs, T, y, ys)
        return
    while rc < r1:
        re = min(rc + TILE_ROWS, r1)
        _prefetch_row(w + re * rb, (re - rc) * rb)
        gemm_tiles(t, w, rc, re, cols, xq, xs, T, y, ys)
        rc = re


cdef void gemm_tiles(int t, const uint8_t* w, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t cols,
                     const uint8_t* xq, Py_ssize_t xs, Py_ssize_t T, float* y, Py_ssize_t ys) noexcept nogil:
    cdef Py_ssize_t rb = row_bytes(t, cols), nb = cols // block_size_of(t), t0, n
    cdef const uint8_t* wr = w + r0 * rb
    cdef float* yr = y + r0
    t0 = 0
    while t0 < T:
        n = min(TILE_TOKENS, T - t0)
        # float weights: xq is the tokens' float32 rows, nb the elements per row
        if t == T_F32:
            ftile_f32(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_F16:
            ftile_f16(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_BF16:
            ftile_bf16(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_Q4_1:
            tile_q4_1(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_Q8_0:
            tile_q8_0(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_Q5_0:
            tile_q5_0(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_Q4_K:
            tile_q4_k(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_Q6_K:
            tile_q6_k(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_IQ4_NL:
            tile_iq4_nl(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_IQ4_XS:
            tile_iq4_xs(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_Q5_K:
            tile_q5_k(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_Q3_K:
            tile_q3_k(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_Q4_0:
            tile_q4_0(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_Q5_1:
            tile_q5_1(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_Q2_K:
            tile_q2_k(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_MXFP4:
            tile_mxfp4(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_TQ1_0:
            tile_tq1_0(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_TQ2_0:
            tile_tq2_0(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_IQ2_XS:
            tile_iq2_xs(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_IQ2_S:
            tile_iq2_s(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_IQ3_XXS:
            tile_iq3_xxs(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_IQ1_S:
            tile_iq1_s(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_IQ1_M:
            tile_iq1_m(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_IQ2_XXS:
            tile_iq2_xxs(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        elif t == T_IQ3_S:
            tile_iq3_s(wr, rb, r1 - r0, xq + t0 * xs, xs, n, nb, yr + t0 * ys, ys)
        t0 += n


cdef inline int _threads_for(Py_ssize_t n_elements, Py_ssize_t rows, int n_threads) noexcept nogil:
    if n_threads <= 1 or n_elements < PARALLEL_MIN_ELEMENTS:
        return 1
    return <int>min(<Py_ssize_t>n_threads, max(<Py_ssize_t>1, rows // 16))


cdef void gemv(int t, const uint8_t* w, Py_ssize_t rows, Py_ssize_t cols,
               const void* xq, const float* x, float* y, int n_threads) noexcept nogil:
    cdef int nt = _threads_for(rows * cols, rows, n_threads)
    cdef Py_ssize_t c
    if nt == 1:
        gemv_rows(t, w, 0, rows, cols, xq, x, y)
        return
    for c in prange(nt, num_threads=nt, schedule="static"):
        gemv_rows(t, w, rows * c // nt, rows * (c + 1) // nt, cols, xq, x, y)


cdef void dequant_rows(int t, const uint8_t* w, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t cols,
                       float* out) noexcept nogil:
    cdef Py_ssize_t rb = row_bytes(t, cols)
    dequantize_blocks(t, w + r0 * rb, out, (r1 - r0) * (cols // block_size_of(t)))


cdef int gemm(int t, const uint8_t* w, Py_ssize_t rows, Py_ssize_t cols, const float* x,
              Py_ssize_t T, float* y, float* tile, Py_ssize_t tile_rows, int n_threads) noexcept nogil:
    cdef Py_ssize_t r0, r1, n
    cdef int m, nn, k, lda, ldb, ldc
    cdef float one = 1, zero = 0
    cdef const float* a
    cdef bint direct = t == T_F32 and (<uintptr_t>w) % sizeof(float) == 0
    if type_size_of(t) == 0 or (sgemm == NULL and rows > 0):
        return -1
    r0 = 0
    while r0 < rows:
        r1 = min(rows, r0 + tile_rows)
        n = r1 - r0
        if direct:
            a = <const float*>(w + r0 * row_bytes(t, cols))
        else:
            # on this thread: dequantising is a few % of the sgemm, and an OpenMP team
            # spinning after its region would compete with the BLAS threads for the cores
            dequant_rows(t, w, r0, r1, cols, tile)
            a = tile
        # column-major view: Y^T[r0:r1, :] (n x T, ld rows) = A^T (n x cols) @ X^T (cols x T)
        m = <int>n
        nn = <int>T
        k = <int>cols
        lda = <int>cols
        ldb = <int>cols
        ldc = <int>rows
        sgemm(b"T", b"N", &m, &nn, &k, &one, <float*>a, &lda, <float*>x, &ldb, &zero, y + r0, &ldc)
        r0 = r1
    return 0


# --- Python-level wrappers (sizes are checked by abi._kernels) ---------------------------

def gemv_into(const uint8_t[::1] w, int ggml_type, Py_ssize_t rows, Py_ssize_t cols,
              const float[::1] x, float[::1] y, int n_threads=1):
    """y = W @ x for one activation row (quantised internally for quantised weights)."""
    cdef Py_ssize_t nq = activation_bytes(ggml_type, cols)
    cdef uint8_t* xq = NULL
    if vec_dot_type(ggml_type) == -2:
        raise UnsupportedTensorType(f"no kernel for GGML type id {ggml_type}")
    if w.shape[0] != rows * row_bytes(ggml_type, cols) or x.shape[0] != cols or y.shape[0] != rows:
        raise ValueError("gemv_into: sizes do not match")
    if rows == 0:
        return
    if nq:
        xq = <uint8_t*>malloc(nq)
        if xq == NULL:
            raise MemoryError()
    try:
        with nogil:
            quantize_activation(ggml_type, &x[0], cols, xq)
            gemv(ggml_type, &w[0], rows, cols, xq, &x[0], &y[0], n_threads)
    finally:
        free(xq)


def gemm_into(const uint8_t[::1] w, int ggml_type, Py_ssize_t rows, Py_ssize_t cols,
              const float[:, ::1] x, float[:, ::1] y, int n_threads=1, Py_ssize_t tile_rows=0):
    """Y = X @ W.T for X of shape (T, cols), Y (T, rows), by dequantised tiles and sgemm."""
    cdef Py_ssize_t T = x.shape[0]
    cdef float* tile = NULL
    cdef int rc
    if gemm(ggml_type, NULL, 0, 0, NULL, 0, NULL, NULL, 1, 1) != 0:   # no rows: type check only
        raise UnsupportedTensorType(f"no kernel for GGML type id {ggml_type}")
    bind_blas()
    if (w.shape[0] != rows * row_bytes(ggml_type, cols) or x.shape[1] != cols
            or y.shape[0] != T or y.shape[1] != rows):
        raise ValueError("gemm_into: sizes do not match")
    if rows == 0 or T == 0:
        return
    if tile_rows <= 0:
        tile_rows = max(16, (1 << 20) // cols)    # ~4 MiB of float32 per tile
    tile_rows = min(tile_rows, rows)
    if ggml_type != T_F32:
        tile = <float*>malloc(tile_rows * cols * sizeof(float))
        if tile == NULL:
            raise MemoryError()
    try:
        with nogil:
            rc = gemm(ggml_type, &w[0], rows, cols, &x[0, 0], T, &y[0, 0], tile, tile_rows, n_threads)
    finally:
        free(tile)


def quantize_activation_into(int ggml_type, const float[::1] x, uint8_t[::1] out):
    """The activation bytes the T = 1 product of a ggml_type weight multiplies against."""
    if vec_dot_type(ggml_type) < 0 or out.shape[0] != activation_bytes(ggml_type, x.shape[0]):
        raise ValueError("quantize_activation_into: no activation format or wrong size")
    with nogil:
        quantize_activation(ggml_type, &x[0], x.shape[0], &out[0])


def _gemv_rows_into(const uint8_t[::1] w, int ggml_type, Py_ssize_t row_start, Py_ssize_t row_end,
                    Py_ssize_t cols, const float[::1] x, float[::1] y, bint portable=False):
    """Test hook: gemv_rows over [row_start, row_end) (y indexed by absolute row), through
    the SIMD kernels or, with portable=True, the scalar C ones."""
    cdef Py_ssize_t nq = activation_bytes(ggml_type, cols)
    cdef uint8_t* xq = <uint8_t*>malloc(max(nq, 1))
    if (vec_dot_type(ggml_type) == -2 or x.shape[0] != cols or not 0 <= row_start <= row_end <= y.shape[0]
            or w.shape[0] < row_end * row_bytes(ggml_type, cols)):
        free(xq)
        raise ValueError("_gemv_rows_into: bad arguments")
    with nogil:
        quantize_activation(ggml_type, &x[0], cols, xq)
        if portable:
            _gemv_rows_scalar(ggml_type, &w[0], row_start, row_end, cols, xq, &x[0], &y[0])
        else:
            gemv_rows(ggml_type, &w[0], row_start, row_end, cols, xq, &x[0], &y[0])
    free(xq)


def _gemm_rows_into(const uint8_t[::1] w, int ggml_type, Py_ssize_t row_start, Py_ssize_t row_end,
                    Py_ssize_t cols, const float[:, ::1] x, float[:, ::1] y, bint tiles=True):
    """Test and benchmark hook: gemm_rows over rows [row_start, row_end) for every row of x
    (y[t, r], r absolute); each x row is quantised as the T = 1 product quantises it. With
    tiles=False, the T = 1 products instead, a block of 16 rows at a time for every token (as
    the forward runs a type without tiles)."""
    cdef Py_ssize_t nq = activation_bytes(ggml_type, cols), T = x.shape[0], i, rb, re
    if (not has_tile(ggml_type) or x.shape[1] != cols or y.shape[0] != T
            or not 0 <= row_start <= row_end <= y.shape[1] or w.shape[0] < row_end * row_bytes(ggml_type, cols)):
        raise ValueError("_gemm_rows_into: bad arguments or no tiled product for this type")
    cdef uint8_t* xq = <uint8_t*>malloc(max(nq * T, 1))
    if xq == NULL:
        raise MemoryError()
    with nogil:
        for i in range(T):
            quantize_activation(ggml_type, &x[i, 0], cols, xq + i * nq)
        if tiles and nq == 0:   # float weights: the tiles read the float rows
            gemm_rows(ggml_type, &w[0], row_start, row_end, cols, <const uint8_t*>&x[0, 0],
                      cols * sizeof(float), T, &y[0, 0], y.shape[1])
        elif tiles:
            gemm_rows(ggml_type, &w[0], row_start, row_end, cols, xq, nq, T, &y[0, 0], y.shape[1])
        else:
            rb = row_start
            while rb < row_end:
                re = min(rb + 16, row_end)
                for i in range(T):
                    gemv_rows(ggml_type, &w[0], rb, re, cols, xq + i * nq, &x[i, 0], &y[i, 0])
                rb = re
    free(xq)


def tiled_types():
    """GGML type ids whose prompt products run as register tiles on this build: with AVX-512
    VNNI the _qtile.pxd set (TQ1_0, IQ1 and IQ2/IQ3 only with VBMI, BITALG and BMI2 too), with
    AVX2 only the _qtile_avx2.pxd set, float weights with AVX-512 F or else AVX2 + FMA. The
    other types' prompts take the T = 1 products token by token."""
    return [t for t in (T_F32, T_F16, T_BF16, T_Q4_1, T_Q8_0, T_Q5_0, T_Q4_K, T_Q6_K, T_IQ4_NL, T_IQ4_XS, T_Q5_K, T_Q3_K,
                        T_Q4_0, T_Q5_1, T_Q2_K, T_MXFP4, T_TQ2_0, T_TQ1_0, T_IQ1_S, T_IQ1_M,
                        T_IQ2_XXS, T_IQ2_XS, T_IQ2_S, T_IQ3_XXS, T_IQ3_S) if has_tile(t)]


def _set_tile_tokens(Py_ssize_t n):
    """Tuning hook: tokens per pass of gemm_rows over its rows."""
    global TILE_TOKENS
    old = TILE_TOKENS
    TILE_TOKENS = max(n, 1)
    return old


def _set_parallel_min_elements(Py_ssize_t n):
    """Tuning hook: products of fewer weight elements than this run on the calling thread."""
    global PARALLEL_MIN_ELEMENTS
    old = PARALLEL_MIN_ELEMENTS
    PARALLEL_MIN_ELEMENTS = n
    return old


def _set_prefetch_bytes(Py_ssize_t n):
    """Tuning hook: the prefetch distance of gemv_rows (0 turns it into a no-op distance)."""
    global PREFETCH_BYTES
    PREFETCH_BYTES = n


def _type_geometry(int ggml_type):
    """Test hook: (block_size, type_size) as the C kernels know them (0, 0 if unknown)."""
    return block_size_of(ggml_type) if type_size_of(ggml_type) else 0, type_size_of(ggml_type)


def activation_type(int ggml_type):
    """GGMLType id of the activation format (-1: float x, -2: unsupported)."""
    return vec_dot_type(ggml_type)


SIMD = bool(QDOT_SIMD)


def _bench_gemv(const uint8_t[::1] w, int ggml_type, Py_ssize_t rows, Py_ssize_t cols,
                Py_ssize_t n_copies, const float[::1] x, float[::1] y, int n_threads,
                Py_ssize_t n_calls):
    """Benchmark hook: n_calls T = 1 products (activation quantisation included) cycling over
    ``n_copies`` back-to-back copies of W in ``w``, all without the GIL; returns seconds."""
    import time
    cdef Py_ssize_t wb = rows * row_bytes(ggml_type, cols), i
    cdef Py_ssize_t nq = activation_bytes(ggml_type, cols)
    cdef uint8_t* xq = <uint8_t*>malloc(max(nq, 1))
    if vec_dot_type(ggml_type) == -2 or w.shape[0] < wb * n_copies or x.shape[0] != cols or y.shape[0] != rows:
        free(xq)
        raise ValueError("_bench_gemv: bad arguments")
    t0 = time.perf_counter()
    with nogil:
        for i in range(n_calls):
            quantize_activation(ggml_type, &x[0], cols, xq)
            gemv(ggml_type, &w[0] + (i % n_copies) * wb, rows, cols, xq, &x[0], &y[0], n_threads)
    t1 = time.perf_counter()
    free(xq)
    return t1 - t0
