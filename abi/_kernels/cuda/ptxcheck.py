"""Compile the kernels for real GPUs on a machine without one: every (kernel, argument
types) a forward pass launches is compiled by NVVM to PTX for the given compute
capabilities and, where ``ptxas`` is found, assembled (registers and spills reported).

The simulator runs the kernels as Python and cannot notice what numba's CUDA compiler
would reject (a type it cannot unify, a float64 constant); this catches that in CI.
Signatures are recorded from launches (``describe``) in a simulator run and compiled in
a separate process without the simulator (``python -m abi._kernels.cuda.ptxcheck FILE``).
``python -m abi._kernels.cuda.ptxcheck --matmul Q4_K,Q3_K`` compiles the per-type matrix
kernels (``matmul.typed``) with the argument types the forward pass launches them with
(registers and spills per weight type).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

KERNEL_MODULES = ("matmul", "ops", "attention", "sampling")


def describe(args) -> list:
    """JSON-able argument types: ["array", dtype, ndim, layout] or ["scalar", dtype]."""
    out = []
    for a in args:
        arr = getattr(a, "_ary", a)  # the simulator's device arrays wrap a numpy array
        if hasattr(arr, "shape") and hasattr(arr, "dtype") and np.ndim(arr) > 0:
            layout = "C" if arr.flags["C_CONTIGUOUS"] else "A"
            out.append(["array", np.dtype(arr.dtype).name, int(arr.ndim), layout])
        elif isinstance(a, (bool, int, np.integer)) and not isinstance(a, np.floating):
            out.append(["scalar", np.dtype(type(a)).name if isinstance(a, np.integer) else "int64"])
        else:
            out.append(["scalar", np.dtype(type(a)).name if isinstance(a, np.floating) else "float64"])
    return out


_A = ["array", "float32", 2, "C"]
_I, _F = ["scalar", "int64"], ["scalar", "float32"]
_PLANES = [["array", "uint32", 2, "C"], ["array", "uint32", 2, "C"], ["array", "float16", 2, "C"], _A]
# what cuda_forward passes (ints as int64, float32 scalars; bias and token ids are vectors)
MATMUL_SIGNATURES = {
    "gemv": _PLANES + [_I, _I, _A, _I, _A, _I, _I, ["array", "float32", 1, "C"], _I, _I, _I, _I, _F,
                       ["array", "int32", 1, "C"], _I, _I],
    "gemm": _PLANES + [_I, _I, _A, _I, _A, _I, ["array", "float32", 1, "C"], _I, _F,
                       ["array", "int32", 1, "C"], ["array", "int32", 1, "C"], _I, _I],
    "dequant_rows": _PLANES + [_I, ["array", "int32", 1, "C"], _I, _F, _A],
}


def matmul_items(type_names) -> list:
    return [(f"{k}[{t}]", sig) for t in type_names for k, sig in MATMUL_SIGNATURES.items()]


def _numba_type(d):
    from numba import types

    if d[0] == "array":
        return types.Array(getattr(types, d[1]), d[2], d[3])
    return getattr(types, d[1])


def _kernel(name):
    """A kernel by its launch name; ``gemv[Q4_K]``: matmul.typed's kernel for that type."""
    import importlib

    if name.endswith("]"):
        from ...gguf.constants import GGMLType
        from . import matmul

        base, tname = name[:-1].split("[")
        return getattr(matmul.typed(GGMLType[tname]), base)
    for mod in KERNEL_MODULES:
        m = importlib.import_module(f"abi._kernels.cuda.{mod}")
        if hasattr(m, name):
            return getattr(m, name)
    raise KeyError(name)


def compile_signatures(items, ccs=((8, 0), (9, 0)), ptxas: str | None = None) -> list[dict]:
    """items: [(kernel name, describe(args))]. Returns one report per (kernel, signature,
    cc): ptx size and, with ptxas, its resource line. Raises on the first failure."""
    import types as pytypes

    from numba import cuda
    from numba import types as nt

    if cuda.implementation == "Built-in":
        # device functions ask the driver for the current device's capability; there is none
        import numba.cuda.dispatcher as dispatcher

        cc_now = [ccs[0]]
        dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=cc_now[0])
    ptxas = ptxas or shutil.which("ptxas") or (os.path.exists("/usr/local/cuda/bin/ptxas") and "/usr/local/cuda/bin/ptxas")
    reports = []
    seen = set()
    for name, desc in items:
        key = (name, json.dumps(desc))
        if key in seen:
            continue
        seen.add(key)
        sig = nt.void(*(_numba_type(d) for d in desc))
        fn = _kernel(name).py_func
        for cc in ccs:
            if cuda.implementation == "Built-in":
                cc_now[0] = cc
            try:
                ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
            except Exception as exc:
                raise RuntimeError(f"{name}{sig.args} does not compile for sm_{cc[0]}{cc[1]}: "
                                   f"{str(exc)[-3000:]}") from None
            report = {"kernel": name, "cc": f"sm_{cc[0]}{cc[1]}", "ptx_bytes": len(ptx)}
            if ptxas:
                with tempfile.TemporaryDirectory() as tmp:
                    src = os.path.join(tmp, "k.ptx")
                    with open(src, "w") as fh:
                        fh.write(ptx)
                    res = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", src,
                                          "-o", os.path.join(tmp, "k.cubin")],
                                         capture_output=True, text=True)
                    if res.returncode:
                        raise RuntimeError(f"ptxas failed for {name} sm_{cc[0]}{cc[1]}: {res.stderr[-2000:]}")
                    lines = [ln.strip() for ln in res.stderr.splitlines() if "registers" in ln or "spill" in ln]
                    report["ptxas"] = " | ".join(lines)
            reports.append(report)
    return reports


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("ptxcheck: unset NUMBA_ENABLE_CUDASIM (the simulator cannot compile)", file=sys.stderr)
        return 2
    if argv[0] == "--matmul":
        items = matmul_items(argv[1].split(","))
    else:
        with open(argv[0]) as fh:
            items = json.load(fh)
    for r in compile_signatures(items):
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
