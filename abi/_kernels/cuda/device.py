"""numba.cuda, the tile sizes, and the few helpers that differ under the simulator.

Tile sizes are compile-time constants of the kernels. Under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) every GPU thread is a Python thread, so blocks are shrunk
there to keep CI fast; each kernel is written for any power-of-two block size >= 16, and
``tools/bench_gpu.py``/the PTX check compile the full-size ones."""
from __future__ import annotations

import numpy as np
from numba import cuda, float32, int32, int64  # noqa: F401  (re-exported for the kernel modules)
from numba.core import config

SIM = bool(config.ENABLE_CUDASIM)
jit = cuda.jit if SIM else (lambda *a, **k: cuda.jit(*a, cache=True, **k))

if SIM:  # small blocks: 16-64 simulated threads instead of 128-1024
    GEMV_THREADS = 32
    NORM_THREADS = 16
    GEMM_TY, GEMM_TX = 4, 4
    ATT_THREADS, ATT_BQ, ATT_BK = 32, 4, 8
    DEC_THREADS = 32
    SAMPLE_THREADS, SAMPLE_CAND = 32, 64
else:
    GEMV_THREADS = 128
    NORM_THREADS = 256
    GEMM_TY, GEMM_TX = 16, 16
    ATT_THREADS, ATT_BQ, ATT_BK = 128, 16, 16
    DEC_THREADS = 128
    SAMPLE_THREADS, SAMPLE_CAND = 1024, 4096

RMAX = 4                 # rows per thread group in the matrix-vector product
GEMM_RPT, GEMM_TPT = 4, 2  # outputs per thread in the tiled product: rows x tokens
GEMM_TM, GEMM_TN, GEMM_KT = GEMM_TY * GEMM_RPT, GEMM_TX * GEMM_TPT, 32
# shapes of shared and local arrays must be plain constants for numba (no expressions)
RMAX2 = 2 * RMAX
GEMM_KTP = GEMM_KT + 1          # padded row: no bank conflicts
GEMM_OUT = GEMM_RPT * GEMM_TPT
HD_MAX = 256             # largest head size the attention kernels hold in shared memory
ATT_ACC = ATT_BQ * HD_MAX // ATT_THREADS
DEC_DPT = max(1, HD_MAX // DEC_THREADS)
NEG_INF = np.float32(-np.inf)   # float32: a float64 constant would pull the math into fp64
SAMPLE_CPT = SAMPLE_CAND // SAMPLE_THREADS   # candidates per thread
HD_PAD = HD_MAX + 1      # padded shared rows: key d of 16 keys in 16 different banks

if SIM:
    class _KernelCuda:
        """``cuda`` for device functions whose kernels live in another module (qdecode): the
        running kernel's fake module, else numba.cuda. The simulator swaps a device function's
        module-level ``cuda`` on each call; simulated threads interleave those swaps, and one
        thread's restore can leave another mid-call with the real module (no ``const``)."""

        def __getattr__(self, name):
            from numba.cuda.simulator.kernel import _get_kernel_context

            ctx = _get_kernel_context()
            return getattr(ctx if ctx is not None and hasattr(ctx, name) else cuda, name)

    kcuda = _KernelCuda()

    def float_as_int(x):
        return int(np.float32(x).view(np.int32))

    def int_as_float(x):
        return np.int32(x).view(np.float32)
else:
    from numba.cuda import libdevice

    kcuda = cuda
    float_as_int = libdevice.float_as_int
    int_as_float = libdevice.int_as_float


# numba 0.68's CUDA target fails on builtin min/max of two mixed-width ints; these compile
@cuda.jit(device=True)
def vmin(a, b):
    return a if a < b else b


@cuda.jit(device=True)
def vmax(a, b):
    return a if a > b else b
