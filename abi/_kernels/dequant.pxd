from libc.stdint cimport uint8_t

# Dequantise n_blocks consecutive blocks of ggml_type from src into dst (block_size floats
# each). Returns 0, or -1 when the type is not supported (nothing written). Bit-exact with
# the numpy references in ref_*.py. Callable from any thread; no parallelism inside.
cdef int dequantize_blocks(int ggml_type, const uint8_t* src, float* dst, Py_ssize_t n_blocks) noexcept nogil
