# cython: language_level=3
"""Element-wise activations as plain C loops that gcc vectorises (-O3 -march=native)."""

from abi._kernels._vec cimport gelu_erf, softmax_exp


def gelu_erf_(float[::1] x):
    """GELU (erf form) in place on a contiguous float32 vector; releases the GIL."""
    if x.shape[0]:
        with nogil:
            gelu_erf(&x[0], x.shape[0])


def softmax_exp_(float[::1] s, float m):
    """Attention's exponentials in place: s[j] = e^(s[j] - m); returns their sum."""
    return softmax_exp(&s[0], s.shape[0], m) if s.shape[0] else 0.0
