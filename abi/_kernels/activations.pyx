# cython: language_level=3
"""Element-wise activations as plain C loops that gcc vectorises (-O3 -march=native)."""

from abi._kernels._vec cimport gelu_erf, gelu_mul8, silu_mul, softmax_exp


def gelu_erf_(float[::1] x):
    """GELU (erf form) in place on a contiguous float32 vector; releases the GIL."""
    if x.shape[0]:
        with nogil:
            gelu_erf(&x[0], x.shape[0])


def softmax_exp_(float[::1] s, float m):
    """Attention's exponentials in place: s[j] = e^(s[j] - m); returns their sum."""
    return softmax_exp(&s[0], s.shape[0], m) if s.shape[0] else 0.0


def gelu_mul8_(const float[::1] table, float[::1] g, const float[::1] u):
    """The compiled forward's GeGLU step on the vector path: g[i] = GELU(g[i]) * u[i] (GELU
    from ``table`` by f16 bits) for as many elements as it takes; returns that count."""
    if g.shape[0] != u.shape[0] or table.shape[0] != 65536:
        raise ValueError("g and u of one length, and a table of 65536 values")
    cdef Py_ssize_t n = 0
    if g.shape[0]:
        with nogil:
            n = gelu_mul8(&table[0], &g[0], &u[0], g.shape[0])
    return n


def silu_mul_(float[::1] g, const float[::1] u):
    """The compiled forward's SwiGLU step: g[i] = SiLU(g[i]) * u[i] in place."""
    if g.shape[0] != u.shape[0]:
        raise ValueError("g and u of one length")
    if g.shape[0]:
        with nogil:
            silu_mul(&g[0], &u[0], g.shape[0])
