"""Test hook for ``_qdot_iq.pxd``: the row dot products of the IQ, ternary and MXFP4 weight
types against a quantised activation, through the dispatched path (AVX2 where compiled)
and the portable scalar one. Not used by the runtime."""
import numpy as np

from libc.stdint cimport uint8_t

from abi._kernels._qdot_iq cimport *
from abi._kernels._types cimport *
from abi._kernels.quant cimport quantize_row_q8_0, quantize_row_q8_k

cdef extern from *:
    """
    /* both paths fold their integer sums with the same float expression: no contraction,
       so they agree bit for bit */
    #if defined(__clang__)
    #pragma clang fp contract(off)
    #elif defined(__GNUC__)
    #pragma GCC optimize ("fp-contract=off")
    #endif
    """

SIMD = bool(QDOT_IQ_SIMD)

ctypedef float (*dot_fn)(const uint8_t*, const uint8_t*, Py_ssize_t) noexcept nogil


cdef int _activation(int t) noexcept nogil:
    return T_Q8_0 if t == T_MXFP4 else T_Q8_K


cdef int _dots(int t, dot_fn* fast, dot_fn* scalar) noexcept nogil:
    if t == T_IQ2_XXS:
        fast[0], scalar[0] = dot_iq2_xxs_q8_k, dot_iq2_xxs_q8_k_scalar
    elif t == T_IQ2_XS:
        fast[0], scalar[0] = dot_iq2_xs_q8_k, dot_iq2_xs_q8_k_scalar
    elif t == T_IQ2_S:
        fast[0], scalar[0] = dot_iq2_s_q8_k, dot_iq2_s_q8_k_scalar
    elif t == T_IQ3_XXS:
        fast[0], scalar[0] = dot_iq3_xxs_q8_k, dot_iq3_xxs_q8_k_scalar
    elif t == T_IQ3_S:
        fast[0], scalar[0] = dot_iq3_s_q8_k, dot_iq3_s_q8_k_scalar
    elif t == T_IQ1_S:
        fast[0], scalar[0] = dot_iq1_s_q8_k, dot_iq1_s_q8_k_scalar
    elif t == T_IQ1_M:
        fast[0], scalar[0] = dot_iq1_m_q8_k, dot_iq1_m_q8_k_scalar
    elif t == T_TQ1_0:
        fast[0], scalar[0] = dot_tq1_0_q8_k, dot_tq1_0_q8_k_scalar
    elif t == T_TQ2_0:
        fast[0], scalar[0] = dot_tq2_0_q8_k, dot_tq2_0_q8_k_scalar
    elif t == T_MXFP4:
        fast[0], scalar[0] = dot_mxfp4_q8_0, dot_mxfp4_q8_0_scalar
    else:
        return -1
    return 0


def activation_type(int ggml_type) -> int:
    """The activation format the weight type's dot product takes (8 = Q8_0, 15 = Q8_K)."""
    cdef dot_fn f, s
    if _dots(ggml_type, &f, &s) != 0:
        raise ValueError(f"no IQ dot product for GGML type id {ggml_type}")
    return _activation(ggml_type)


def quantize_activation(int ggml_type, const float[::1] x):
    """x (a multiple of the block size) in the activation format of ``ggml_type``."""
    cdef int a = activation_type(ggml_type)
    cdef Py_ssize_t n = x.shape[0], bs = block_size_of(a)
    if n % bs:
        raise ValueError(f"x must be a multiple of {bs} elements")
    out = np.empty(n // bs * type_size_of(a), dtype=np.uint8)
    cdef uint8_t[::1] o = out
    if n == 0:
        return out
    if a == T_Q8_0:
        quantize_row_q8_0(&x[0], &o[0], n)
    else:
        quantize_row_q8_k(&x[0], &o[0], n)
    return out


def row_dots(const uint8_t[::1] w, int ggml_type, const uint8_t[::1] xq):
    """(dispatched, scalar): float32 arrays of the dot of each weight row in ``w`` (rows of
    as many blocks as ``xq`` holds activation blocks) with ``xq``."""
    cdef dot_fn fast, scalar
    if _dots(ggml_type, &fast, &scalar) != 0:
        raise ValueError(f"no IQ dot product for GGML type id {ggml_type}")
    cdef Py_ssize_t xs = type_size_of(_activation(ggml_type)), ws = type_size_of(ggml_type)
    if xq.shape[0] == 0 or xq.shape[0] % xs:
        raise ValueError("xq must be whole activation blocks")
    cdef Py_ssize_t nb = xq.shape[0] // xs, rb = nb * ws
    if w.shape[0] % rb:
        raise ValueError("w must be whole rows of the activation's length")
    cdef Py_ssize_t rows = w.shape[0] // rb, r
    y_fast = np.empty(rows, dtype=np.float32)
    y_scalar = np.empty(rows, dtype=np.float32)
    cdef float[::1] yf = y_fast, ys = y_scalar
    with nogil:
        for r in range(rows):
            yf[r] = fast(&w[0] + r * rb, &xq[0], nb)
            ys[r] = scalar(&w[0] + r * rb, &xq[0], nb)
    return y_fast, y_scalar
