"""Which compute backend runs the model: "cpu", "cuda", or "auto" (CUDA when usable)."""
from __future__ import annotations

import ctypes.util
import logging

from ..errors import BackendUnavailable, ConfigError

log = logging.getLogger("abi.llm")
BACKENDS = ("auto", "cpu", "cuda")


def cuda_problem() -> str | None:
    """None when a CUDA device can be used, else why not. Cheap when there is no driver:
    numba is only imported once the driver library is found."""
    if ctypes.util.find_library("cuda") is None:
        return "no CUDA driver library (libcuda) on this machine"
    try:
        from numba import cuda

        if "simulator" in getattr(cuda.is_available, "__module__", ""):  # kernels run as Python
            return "numba.cuda is its simulator (NUMBA_ENABLE_CUDASIM=1), not a device"
        if not cuda.is_available():
            return "numba finds no usable CUDA device"
    except Exception as exc:  # numba missing or a broken driver
        return f"CUDA could not be initialised: {exc}"
    return None


def select_backend(name: str = "auto") -> str:
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}", "backend")
    if name == "cpu":
        return "cpu"
    problem = cuda_problem()
    if name == "cuda":
        if problem:
            raise BackendUnavailable(f"backend 'cuda' requested but {problem}; use --backend cpu")
        return "cuda"
    if problem is None:
        log.info("backend auto: using CUDA")
        return "cuda"
    log.info("backend auto: using CPU (%s)", problem)
    return "cpu"
