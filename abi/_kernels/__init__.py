"""Quantised kernels: dequantise, quantise and ``W @ x`` over GGML tensor types.

    dequantize(raw, ggml_type, shape) -> float32 array of ``shape``
    quantize(x, ggml_type)            -> uint8 array ``(*x.shape[:-1], row_bytes)``
    qmatmul(raw, ggml_type, shape, x) -> float32 ``(rows,)`` or ``(T, rows)``

Every type has a numpy reference (``ref_*.py``, the oracle; ``dequantize_reference`` and
``quantize_reference`` here) and a Cython twin that matches it bit for bit. Cython callers
use the C-level kernels in ``matmul.pxd`` / ``quant.pxd`` / ``dequant.pxd`` directly.

Threads: ``n_threads`` arguments, else ``ABI_NUM_THREADS``, else the CPUs this process may
run on (``os.sched_getaffinity``).
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import KernelInputError, UnsupportedTensorType
from ..gguf.constants import GGMLType
from . import dequant, matmul, quant
from .registry import DEQUANTIZE_TYPES, KERNELS, MATMUL_TYPES, QUANTIZE_TYPES, TypeKernels

__all__ = [
    "dequantize", "quantize", "qmatmul", "dequantize_reference", "quantize_reference",
    "quantize_rows", "quantize_rows_reference",
    "default_num_threads", "activation_error_bound", "DEQUANTIZE_TYPES", "QUANTIZE_TYPES",
    "MATMUL_TYPES", "KERNELS", "TypeKernels",
]

# Relative bound of the extra error of the T = 1 product from quantising x (see qmatmul):
# |y - W @ x| <= bound * sum_c |W[r, c]| * absmax(block of x holding c), per output.
_Q8_ROUND = 1 / 254            # x rounded to a step of absmax / 127
_F16_SCALE = 2.0 ** -11        # the block scale d stored as f16
ACTIVATION_ERROR_BOUND = {
    GGMLType.Q4_0: _Q8_ROUND + _F16_SCALE, GGMLType.Q5_0: _Q8_ROUND + _F16_SCALE,
    GGMLType.Q8_0: _Q8_ROUND + _F16_SCALE, GGMLType.IQ4_NL: _Q8_ROUND + _F16_SCALE,
    # Q8_1 also stores s = d * sum(q) as f16: up to 32 * 127 * d * 2^-11 = absmax / 64 per block
    GGMLType.Q4_1: _Q8_ROUND + _F16_SCALE + 1 / 64, GGMLType.Q5_1: _Q8_ROUND + _F16_SCALE + 1 / 64,
    # Q8_K keeps d in f32
    GGMLType.Q2_K: _Q8_ROUND, GGMLType.Q3_K: _Q8_ROUND, GGMLType.Q4_K: _Q8_ROUND,
    GGMLType.Q5_K: _Q8_ROUND, GGMLType.Q6_K: _Q8_ROUND, GGMLType.IQ4_XS: _Q8_ROUND,
    **{t: _Q8_ROUND for t in (GGMLType.IQ2_XXS, GGMLType.IQ2_XS, GGMLType.IQ2_S, GGMLType.IQ3_XXS,
                              GGMLType.IQ3_S, GGMLType.IQ1_S, GGMLType.IQ1_M, GGMLType.TQ1_0,
                              GGMLType.TQ2_0)},
    GGMLType.MXFP4: _Q8_ROUND + _F16_SCALE,   # against Q8_0; the E8M0 scale is exact
    GGMLType.F32: 0.0, GGMLType.F16: 0.0, GGMLType.BF16: 0.0,
}


_DEFAULT_THREADS: int | None = None


def default_num_threads(refresh: bool = False) -> int:
    """``ABI_NUM_THREADS`` if set, else the CPUs this process may run on. Read on the first
    call (or with ``refresh=True``) and then cached: it sits on the path of every product."""
    global _DEFAULT_THREADS
    if _DEFAULT_THREADS is None or refresh:
        from ..config import env

        n = env("ABI_NUM_THREADS", None, cast=int)
        if n is not None and n < 1:
            from ..errors import ConfigError
            raise ConfigError(f"ABI_NUM_THREADS={n} must be at least 1", field="ABI_NUM_THREADS")
        if n is None:
            try:
                n = max(1, len(os.sched_getaffinity(0)))
            except (AttributeError, OSError):
                n = os.cpu_count() or 1
        _DEFAULT_THREADS = n
    return _DEFAULT_THREADS


def _threads(n_threads: int | None) -> int:
    if n_threads is None:
        return _DEFAULT_THREADS or default_num_threads()
    if int(n_threads) < 1:
        raise KernelInputError(f"n_threads must be at least 1, got {n_threads}")
    return int(n_threads)


_DEQUANTIZE_SET = frozenset(DEQUANTIZE_TYPES)
_QUANTIZE_SET = frozenset(QUANTIZE_TYPES)
_MATMUL_SET = frozenset(MATMUL_TYPES)


def _type(ggml_type, supported: frozenset, what: str) -> GGMLType:
    if ggml_type.__class__ is GGMLType and ggml_type in supported:
        return ggml_type
    names = ", ".join(s.name for s in GGMLType if s in supported)
    try:
        t = GGMLType(int(ggml_type))
    except (ValueError, TypeError):
        raise UnsupportedTensorType(
            f"{what}: unknown tensor type {ggml_type!r}; supported: {names}") from None
    if t not in supported:
        raise UnsupportedTensorType(f"{what}: tensor type {t.name} is not supported; supported: {names}")
    return t


def _shape(shape) -> tuple[int, ...]:
    try:
        dims = tuple(int(s) for s in (shape if np.iterable(shape) else (shape,)))
    except (TypeError, ValueError):
        raise KernelInputError(f"shape must be a tuple of ints, got {shape!r}") from None
    if not dims or any(s < 0 for s in dims):
        raise KernelInputError(f"shape must be non-empty with non-negative sizes, got {shape!r}")
    return dims


def _raw_bytes(raw, t: GGMLType, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``raw`` as a flat uint8 array holding exactly the blocks of ``shape``."""
    if shape[-1] % t.block_size:
        raise KernelInputError(
            f"{what}: a {t.name} row must be a multiple of {t.block_size} elements; shape {shape}")
    n = 1
    for s in shape:
        n *= s
    expected = n // t.block_size * t.type_size
    arr = raw
    if not (arr.__class__ is np.ndarray and arr.dtype == np.uint8 and arr.ndim == 1
            and arr.flags.c_contiguous):
        arr = np.ascontiguousarray(raw)
        if arr.dtype != np.uint8:
            arr = arr.reshape(-1).view(np.uint8)
        arr = arr.reshape(-1)
    if arr.size != expected:
        raise KernelInputError(
            f"{what}: {t.name} tensor of shape {shape} needs {expected} bytes, got {arr.size}")
    return arr


def dequantize(raw, ggml_type, shape, n_threads: int | None = None) -> np.ndarray:
    """float32 array of ``shape`` from the tensor's stored bytes (blocks as in the file)."""
    t = _type(ggml_type, _DEQUANTIZE_SET, "dequantize")
    shape = _shape(shape)
    data = _raw_bytes(raw, t, shape, "dequantize")
    out = np.empty(data.size // t.type_size * t.block_size, dtype=np.float32)
    dequant.dequantize_into(data, int(t), t.block_size, t.type_size, out, _threads(n_threads))
    return out.reshape(shape)


def quantize(x, ggml_type, n_threads: int | None = None) -> np.ndarray:
    """uint8 blocks of ``x`` (float32-convertible, last axis a multiple of the block size),
    shaped ``(*x.shape[:-1], row_bytes)``. Bit-exact with gguf.quants where it has the type;
    the k-quants (Q3_K .. Q6_K) use llama.cpp's searches, the same bytes as ``quantize_rows``
    without an imatrix (and as llama-quantize)."""
    t = _type(ggml_type, _QUANTIZE_SET, "quantize")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % t.block_size:
        raise KernelInputError(
            f"quantize: the last axis must be a multiple of {t.block_size} for {t.name}; shape {x.shape}")
    flat = x.reshape(-1)
    out = np.empty(flat.size // t.block_size * t.type_size, dtype=np.uint8)
    quant.quantize_into(flat, int(t), t.block_size, t.type_size, out, _threads(n_threads))
    return out.reshape(*x.shape[:-1], x.shape[-1] // t.block_size * t.type_size)


def _rows_args(x, ggml_type, imatrix, what: str):
    t = _type(ggml_type, _QUANTIZE_SET, what)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % t.block_size:
        raise KernelInputError(
            f"{what}: x must be (rows, cols) with cols a multiple of {t.block_size} for {t.name}; "
            f"shape {x.shape}")
    qw = None
    if imatrix is not None:
        qw = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
        if qw.size != x.shape[1]:
            raise KernelInputError(f"{what}: imatrix needs {x.shape[1]} weights, got {qw.size}")
    return t, x, qw


def quantize_rows(x, ggml_type, imatrix=None, n_threads: int | None = None) -> np.ndarray:
    """Rows of a weight matrix ``x`` (rows, cols) -> uint8 (rows, row_bytes) with llama.cpp's
    quantisation searches (what ``python -m abi quantize`` writes). Without ``imatrix`` this
    is ``quantize`` row by row (make_qkx2 / make_qx / make_q3 for the k-quants, plain rounding
    for Q4_0 .. Q8_0 and the float types); with ``imatrix`` (one importance weight per
    column) the squared error of column c is weighted by imatrix[c] * sqrt(sigma2 + x^2) as
    llama.cpp does (not for Q8_0 and the float types, which llama.cpp also quantises plainly)."""
    t, x, qw = _rows_args(x, ggml_type, imatrix, "quantize_rows")
    out = np.empty((x.shape[0], x.shape[1] // t.block_size * t.type_size), dtype=np.uint8)
    quant.quantize_rows_into(x, int(t), out.shape[1], qw, out, _threads(n_threads))
    return out


def quantize_rows_reference(x, ggml_type, imatrix=None) -> np.ndarray:
    """The numpy reference of ``quantize_rows`` (slow; the oracle for the Cython twin)."""
    from .ref_search import quantize_rows as ref

    t, x, qw = _rows_args(x, ggml_type, imatrix, "quantize_rows_reference")
    return ref(x, t, qw)


def qmatmul(raw, ggml_type, shape, x, n_threads: int | None = None) -> np.ndarray:
    """``W @ x`` for a stored weight W of ``shape`` (rows, cols) and x of shape (cols,) or
    (T, cols); returns (rows,) or (T, rows) float32.

    One x row (decode): for quantised W, x is quantised per block to 8 bits (Q8_0 for Q4_0,
    Q5_0, Q8_0, IQ4_NL, MXFP4; Q8_1 for Q4_1, Q5_1; Q8_K for the 256-element types) and rows
    are integer dot products, as ggml does (``matmul.activation_type`` names the format).
    Extra error against dequantise-then-exact: per output at most
    ``ACTIVATION_ERROR_BOUND[type] * sum_c |W[r, c]| * absmax(x block of c)`` (plus float32
    rounding); measured on Gaussian data, ||y - W @ x|| / ||W @ x|| is about 0.5% for
    32-blocks and 0.65% for k-quants. Float weights (F32, F16, BF16) use x as is.
    Many x rows (prefill), and the types without an integer dot (``MATMUL_TYPES`` lists those
    with one): W is dequantised tile by tile and multiplied with BLAS sgemm in float32.
    """
    t = _type(ggml_type, _DEQUANTIZE_SET, "qmatmul")
    shape = _shape(shape)
    if len(shape) != 2:
        raise KernelInputError(f"qmatmul: the weight must be a matrix (rows, cols), got shape {shape}")
    rows, cols = shape
    data = _raw_bytes(raw, t, shape, "qmatmul")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim not in (1, 2) or x.shape[-1] != cols:
        raise KernelInputError(f"qmatmul: x must be ({cols},) or (T, {cols}), got {x.shape}")
    if max(rows, cols, x.shape[0]) >= 2 ** 31:
        raise KernelInputError(f"qmatmul: sizes beyond 2**31 are not supported: {shape}, {x.shape}")
    nt = _threads(n_threads)
    xs = x.reshape(-1, cols)
    if xs.shape[0] == 1 and t in _MATMUL_SET:
        y = np.empty(rows, dtype=np.float32)
        matmul.gemv_into(data, int(t), rows, cols, xs[0], y, nt)
        return y if x.ndim == 1 else y[None, :]
    y = np.empty((xs.shape[0], rows), dtype=np.float32)
    matmul.gemm_into(data, int(t), rows, cols, xs, y, nt)
    return y[0] if x.ndim == 1 else y


def activation_error_bound(ggml_type) -> float:
    """The relative bound of qmatmul's T = 1 activation quantisation for this weight type."""
    return ACTIVATION_ERROR_BOUND.get(GGMLType(int(ggml_type)), 0.0)


def dequantize_reference(raw, ggml_type, shape) -> np.ndarray:
    """The numpy reference of ``dequantize`` (slow; the oracle for the Cython twin)."""
    t = _type(ggml_type, _DEQUANTIZE_SET, "dequantize_reference")
    shape = _shape(shape)
    data = _raw_bytes(raw, t, shape, "dequantize_reference")
    return KERNELS[t].dequantize_ref(data.reshape(-1, t.type_size)).reshape(shape)


def quantize_reference(x, ggml_type) -> np.ndarray:
    """The numpy reference of ``quantize``."""
    t = _type(ggml_type, _QUANTIZE_SET, "quantize_reference")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % t.block_size:
        raise KernelInputError(
            f"quantize_reference: the last axis must be a multiple of {t.block_size}; shape {x.shape}")
    out = KERNELS[t].quantize_ref(x.reshape(-1, t.block_size))
    return out.reshape(*x.shape[:-1], x.shape[-1] // t.block_size * t.type_size)
