from libc.stdint cimport uint8_t

# Quantise n_blocks blocks (block_size floats each) of x into dst (type_size bytes each).
# Returns 0, or -1 for a type we do not quantise. Bit-exact with the numpy references.
# Types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q3_K, Q4_K, Q5_K, Q6_K (llama.cpp's
# searches without an imatrix), Q8_K.
cdef int quantize_blocks(int ggml_type, const float* x, uint8_t* dst, Py_ssize_t n_blocks) noexcept nogil

# The activation formats of the integer dot products, for n elements (a multiple of 32,
# or of 256 for Q8_K). Same bytes as quantize_blocks(T_Q8_0 / T_Q8_1 / T_Q8_K, ...).
cdef void quantize_row_q8_0(const float* x, uint8_t* dst, Py_ssize_t n) noexcept nogil
cdef void quantize_row_q8_1(const float* x, uint8_t* dst, Py_ssize_t n) noexcept nogil
cdef void quantize_row_q8_k(const float* x, uint8_t* dst, Py_ssize_t n) noexcept nogil
