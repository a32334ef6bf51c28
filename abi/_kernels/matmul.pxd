from libc.stdint cimport uint8_t

# C-level matrix-vector and matrix-matrix products over quantised weights, for Cython
# callers that run whole layers without the GIL. W is a stored GGUF matrix of `rows` rows
# of `cols` elements (row-major, each row a whole number of blocks); y = W @ x.
#
# Decode (T = 1) recipe inside one nogil region:
#     quantize_activation(t, x, cols, xq)              # once per x, shared by all W using it
#     gemv_rows(t, w, r0, r1, cols, xq, x, y)          # each thread its own row range
# Extra error of the quantised activations: see abi._kernels.qmatmul.

# Activation format the weights of ggml_type multiply against: T_Q8_0 (Q4_0, Q5_0, Q8_0, IQ4_NL),
# T_Q8_1 (Q4_1, Q5_1), T_Q8_K (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS), -1 for float x (F32, F16,
# BF16), -2 unsupported.
cdef int vec_dot_type(int ggml_type) noexcept nogil

# Bytes of one stored weight row of `cols` elements (0 for an unsupported type).
cdef Py_ssize_t row_bytes(int ggml_type, Py_ssize_t cols) noexcept nogil

# Bytes the quantised activation of `cols` elements occupies (0 for float-x types).
cdef Py_ssize_t activation_bytes(int ggml_type, Py_ssize_t cols) noexcept nogil

# Quantise x[0:cols] into xq (activation_bytes(ggml_type, cols) bytes); no-op for float-x types.
cdef void quantize_activation(int ggml_type, const float* x, Py_ssize_t cols, uint8_t* xq) noexcept nogil

# y[r] = W[r] . x for row_start <= r < row_end (y indexed by absolute row). Single-threaded,
# no OpenMP inside: call it from an existing parallel region. xq: quantised activation
# (ignored for float-x types); x: float activation (used only by float-x types).
cdef void gemv_rows(int ggml_type, const uint8_t* w, Py_ssize_t row_start, Py_ssize_t row_end,
                    Py_ssize_t cols, const void* xq, const float* x, float* y) noexcept nogil

# Whether gemm_rows has a tiled kernel for ggml_type on this build (AVX-512 VNNI; the TQ1_0, IQ1
# and IQ2/IQ3 types also VBMI, BITALG and BMI2; see _qtile.pxd; without AVX-512 VNNI, AVX2 for
# every quantised type, the TQ1_0, IQ1 and IQ2/IQ3 ones where their T = 1 kernels take AVX2
# steps, _qtile_avx2.pxd; float weights AVX-512 F or AVX2 + FMA, _ftile.pxd).
cdef bint has_tile(int ggml_type) noexcept nogil

# Prompt products: y[t * ys + r] = W[r] . x_t for row_start <= r < row_end, t < T, where
# xq + t * xs is token t's quantised activation (float weights: its float32 row). Each token
# gets exactly gemv_rows's bits.
# Only for types where has_tile; single-threaded like gemv_rows.
cdef void gemm_rows(int ggml_type, const uint8_t* w, Py_ssize_t row_start, Py_ssize_t row_end,
                    Py_ssize_t cols, const uint8_t* xq, Py_ssize_t xs, Py_ssize_t T, float* y,
                    Py_ssize_t ys) noexcept nogil

# gemm_rows for prompts: every row of the range for each pass of up to 64 tokens (their
# activations stay in L2 while the rows go by), without the prefetching of small batches.
cdef void gemm_tiles(int ggml_type, const uint8_t* w, Py_ssize_t row_start, Py_ssize_t row_end,
                     Py_ssize_t cols, const uint8_t* xq, Py_ssize_t xs, Py_ssize_t T, float* y,
                     Py_ssize_t ys) noexcept nogil

# Whole-matrix y = W @ x with rows split evenly over n_threads (one OpenMP region; none when
# n_threads <= 1 or rows * cols < 96Ki, where a second thread costs more than it saves).
# xq, x as for gemv_rows.
cdef void gemv(int ggml_type, const uint8_t* w, Py_ssize_t rows, Py_ssize_t cols,
               const void* xq, const float* x, float* y, int n_threads) noexcept nogil

# Dequantise rows [row_start, row_end) of W into out ((row_end - row_start) * cols floats).
cdef void dequant_rows(int ggml_type, const uint8_t* w, Py_ssize_t row_start, Py_ssize_t row_end,
                       Py_ssize_t cols, float* out) noexcept nogil

# Prefill: Y (T, rows) = X (T, cols) @ W.T, W dequantised tile_rows rows at a time into
# `tile` (tile_rows * cols floats; unused for F32) on the calling thread, then BLAS sgemm
# per tile on BLAS's own threads (n_threads is not used yet). Returns 0, -1 if unsupported
# or if BLAS is not bound yet (bind_blas, or the Python wrapper gemm_into, binds it).
cdef int gemm(int ggml_type, const uint8_t* w, Py_ssize_t rows, Py_ssize_t cols,
              const float* x, Py_ssize_t T, float* y, float* tile, Py_ssize_t tile_rows,
              int n_threads) noexcept nogil

# Binds scipy's BLAS sgemm for gemm (once per process; needs the GIL, imports scipy).
cdef int bind_blas() except -1

# Column-major BLAS sgemm (C = alpha op(A) op(B) + beta C), once bind_blas has run.
cdef void blas_sgemm(char transa, char transb, int m, int n, int k, float alpha,
                     const float* a, int lda, const float* b, int ldb, float beta,
                     float* c, int ldc) noexcept nogil
