"""Which kernels exist for which GGML type: the numpy reference and the Cython twin side by side."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..gguf.constants import GGMLType
from . import ref_float, ref_iquants, ref_kquants, ref_legacy, ref_search

BlockFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TypeKernels:
    """``dequantize_ref``: (n, type_size) uint8 -> (n, block_size) float32; ``quantize_ref`` the
    reverse (None: we do not quantise to this type); ``matmul``: qmatmul takes this weight type.
    The k-quants' ``quantize_ref`` are llama.cpp's searches (``ref_search``, imatrix-free);
    ``quantize_rows`` (abi.quantize's kernels) uses ``ref_search.quantize_rows`` as its reference,
    which is ``quantize_ref`` row by row without an imatrix."""

    ggml_type: GGMLType
    dequantize_ref: BlockFn
    quantize_ref: BlockFn | None = None
    matmul: bool = False


_T = GGMLType
KERNELS: dict[GGMLType, TypeKernels] = {k.ggml_type: k for k in (
    TypeKernels(_T.F32, ref_float.dequantize_f32, ref_float.quantize_f32, matmul=True),
    TypeKernels(_T.F16, ref_float.dequantize_f16, ref_float.quantize_f16, matmul=True),
    TypeKernels(_T.BF16, ref_float.dequantize_bf16, ref_float.quantize_bf16, matmul=True),
    TypeKernels(_T.Q4_0, ref_legacy.dequantize_q4_0, ref_legacy.quantize_q4_0, matmul=True),
    TypeKernels(_T.Q4_1, ref_legacy.dequantize_q4_1, ref_legacy.quantize_q4_1, matmul=True),
    TypeKernels(_T.Q5_0, ref_legacy.dequantize_q5_0, ref_legacy.quantize_q5_0, matmul=True),
    TypeKernels(_T.Q5_1, ref_legacy.dequantize_q5_1, ref_legacy.quantize_q5_1, matmul=True),
    TypeKernels(_T.Q8_0, ref_legacy.dequantize_q8_0, ref_legacy.quantize_q8_0, matmul=True),
    TypeKernels(_T.Q8_1, ref_legacy.dequantize_q8_1, ref_legacy.quantize_q8_1),
    TypeKernels(_T.IQ4_NL, ref_legacy.dequantize_iq4_nl, matmul=True),
    TypeKernels(_T.Q2_K, ref_kquants.dequantize_q2_k, matmul=True),
    TypeKernels(_T.Q3_K, ref_kquants.dequantize_q3_k, ref_search.quantize_q3_k, matmul=True),
    TypeKernels(_T.Q4_K, ref_kquants.dequantize_q4_k, ref_search.quantize_q4_k, matmul=True),
    TypeKernels(_T.Q5_K, ref_kquants.dequantize_q5_k, ref_search.quantize_q5_k, matmul=True),
    TypeKernels(_T.Q6_K, ref_kquants.dequantize_q6_k, ref_search.quantize_q6_k, matmul=True),
    TypeKernels(_T.Q8_K, ref_kquants.dequantize_q8_k, ref_kquants.quantize_q8_k),
    TypeKernels(_T.IQ4_XS, ref_kquants.dequantize_iq4_xs, matmul=True),
    TypeKernels(_T.IQ2_XXS, ref_iquants.dequantize_iq2_xxs, matmul=True),
    TypeKernels(_T.IQ2_XS, ref_iquants.dequantize_iq2_xs, matmul=True),
    TypeKernels(_T.IQ2_S, ref_iquants.dequantize_iq2_s, matmul=True),
    TypeKernels(_T.IQ3_XXS, ref_iquants.dequantize_iq3_xxs, matmul=True),
    TypeKernels(_T.IQ3_S, ref_iquants.dequantize_iq3_s, matmul=True),
    TypeKernels(_T.IQ1_S, ref_iquants.dequantize_iq1_s, matmul=True),
    TypeKernels(_T.IQ1_M, ref_iquants.dequantize_iq1_m, matmul=True),
    TypeKernels(_T.TQ1_0, ref_iquants.dequantize_tq1_0, matmul=True),
    TypeKernels(_T.TQ2_0, ref_iquants.dequantize_tq2_0, matmul=True),
    TypeKernels(_T.MXFP4, ref_iquants.dequantize_mxfp4, matmul=True),
)}

DEQUANTIZE_TYPES = tuple(KERNELS)
QUANTIZE_TYPES = tuple(t for t, k in KERNELS.items() if k.quantize_ref is not None)
MATMUL_TYPES = tuple(t for t, k in KERNELS.items() if k.matmul)
