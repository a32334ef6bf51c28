"""Which forward pass can run a model, decided before any forward runs (fail closed).

Every tensor the architecture reads is checked against the kernels of each path:

    numpy     every weight is dequantised (embedding rows, tiles for sgemm): DEQUANTIZE_TYPES
    compiled  matrices are integer/float row dot products (``gemv_rows``): MATMUL_TYPES;
              embedding rows are dequantised
    cuda      native types are decoded on the device; any other dequantisable type is
              widened to F16/F32 at upload (``_kernels/cuda/layout.pack`` logs it)

A tensor no path can compute is an ``UnsupportedTensorType`` at load, naming it; a model the
compiled forward cannot compute runs on the numpy forward, and the log says why.
"""
from __future__ import annotations

import logging

from .. import _kernels
from .._kernels.finite import nonfinite_blocks
from ..errors import InvalidModelError, UnsupportedTensorType
from ..gguf import GGMLType
from . import threads

log = logging.getLogger("abi.llm")

MATRIX, ROWS = "matrix", "rows"


def weights_used(model) -> dict[str, tuple[GGMLType, str]]:
    """Every quantised tensor an architecture's model object reads, found by walking its
    attributes: ``Linear`` (a product) and ``Embedding`` (row look-ups) objects."""
    from .weights import Embedding, Linear

    found: dict[str, tuple[GGMLType, str]] = {}
    seen: set[int] = set()

    def walk(obj, where: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Linear):
            found.setdefault(obj.name or where, (GGMLType(obj.ggml_type), MATRIX))
        elif isinstance(obj, Embedding):
            found.setdefault(obj.name or where, (GGMLType(obj.ggml_type), ROWS))
        elif isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                walk(item, f"{where}[{i}]")
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            for key, value in vars(obj).items():
                walk(value, f"{where}.{key}" if where else key)

    walk(model, "")
    return found


def _names(types) -> str:
    return ", ".join(t.name for t in GGMLType if t in types)


def check_loadable(used: dict[str, tuple[GGMLType, str]], path: str) -> None:
    """Raise for the first tensor whose type no kernel of abi reads."""
    supported = frozenset(_kernels.DEQUANTIZE_TYPES)
    for name, (t, _kind) in used.items():
        if t not in supported:
            raise UnsupportedTensorType(
                f"{path}: tensor {name!r} is stored as {t.name}, which abi has no kernel for; "
                f"supported types: {_names(supported)}")


def compiled_blocker(used: dict[str, tuple[GGMLType, str]]) -> tuple[str, GGMLType] | None:
    """The first (tensor, type) the compiled CPU forward cannot compute, or None."""
    products = frozenset(_kernels.MATMUL_TYPES)
    rows = frozenset(_kernels.DEQUANTIZE_TYPES)
    for name, (t, kind) in used.items():
        if (kind == MATRIX and t not in products) or (kind == ROWS and t not in rows):
            return name, t
    return None


def choose_cpu_forward(used: dict[str, tuple[GGMLType, str]], arch: str, is_decoder: bool) -> str:
    """"compiled" or "numpy" for the CPU backend (the compiled forward runs any decoder
    recipe); the reason for numpy goes to the log."""
    if not is_decoder:
        log.info("%s: no compiled forward for architecture %r; using the numpy forward", arch, arch)
        return "numpy"
    blocker = compiled_blocker(used)
    if blocker is not None:
        name, t = blocker
        log.warning("the compiled forward has no %s product (tensor %r); using the numpy forward "
                    "(dequantised tiles + sgemm), which is slower", t.name, name)
        return "numpy"
    return "compiled"


def check_finite(gguf, release=()) -> None:
    """Refuse a file with a NaN/Inf scale or float value in any tensor: such a tensor turns
    a whole generation into NaN (or into finite nonsense after an integer product), and it
    is cheap to find at load (a pass over the scale fields, split over the threads).
    The tensors named in ``release`` leave the resident memory once scanned."""
    n_threads = _kernels.default_num_threads()
    try:
        for name, info in gguf.tensors.items():
            _check_tensor(gguf, name, info, n_threads, name in release)
    finally:   # the loading thread is seldom the one that generates
        threads.release_openmp_pool()


def _check_tensor(gguf, name, info, n_threads, release) -> None:
    bad = nonfinite_blocks(gguf.tensor_data(name), info.ggml_type, n_threads)
    if release:
        gguf.release(name)
    if len(bad):
        unit = "values" if info.ggml_type in (GGMLType.F32, GGMLType.F16, GGMLType.BF16,
                                              GGMLType.F64) else "blocks whose scale is"
        raise InvalidModelError(
            f"{gguf.path}: tensor {name!r} ({info.ggml_type.name}) has {len(bad)} {unit} NaN "
            f"or Inf (the first at index {int(bad[0])}); the file is corrupt (load with "
            f"check_finite=False / --no-check to skip this scan)")
