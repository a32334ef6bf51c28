"""``python -m abi lora fuse BASE.gguf ADAPTER.gguf[:SCALE]... OUT.gguf``: merge LoRA
adapters into a model file (mlx-lm's ``fuse``, llama.cpp's ``llama-export-lora``).

Each adapted weight becomes ``W + s * B @ A`` (``s`` as ``abi.llm.lora`` computes it, several
adapters summed), a slab of rows at a time from the memory-mapped base: ``--type same``
requantises it to its own type with the project's quantiser (``abi.quantize``), ``--type f16``
stores it as F16 (no second rounding). Every other tensor and all metadata are copied byte
for byte; the output appears atomically (``GGUFWriter``), with a progress bar.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import _kernels
from .errors import QuantizeError
from .gguf import GGMLType
from .gguf.reader import GGUFFile
from .quantize import _SLAB_ELEMENTS, QuantizeResult, TensorResult, _float_rows, _Progress, _same_file

FUSE_TYPES = ("same", "f16")


@dataclass
class FuseResult(QuantizeResult):
    adapted: list[str] = field(default_factory=list)   # the tensors an adapter changed


def fuse_lora(base_path, adapters, out_path, type: str = "same", progress: bool = True,
              n_threads: int | None = None) -> FuseResult:
    """Write ``out_path``: the base model with ``adapters`` (paths, ``(path, scale)`` pairs or
    ``LoraSpec``s, validated as ``load_model(lora=...)`` validates them) merged in."""
    from .gguf.writer import GGUFWriter
    from .llm.lora import lora_specs, read_adapter

    if type not in FUSE_TYPES:
        raise QuantizeError(f"fuse type must be one of {', '.join(FUSE_TYPES)}, got {type!r}")
    base_path, out_path = os.fspath(base_path), os.fspath(out_path)
    specs = lora_specs(adapters)
    if not specs:
        raise QuantizeError("fuse needs at least one adapter")
    for path in [base_path] + [s.path for s in specs]:
        if _same_file(path, out_path):
            raise QuantizeError(f"the output {out_path!r} is an input file: choose another path")
    if not os.path.isfile(base_path):
        raise QuantizeError(f"no such input file: {base_path!r}")
    n_threads = n_threads or _kernels.default_num_threads()
    start = time.perf_counter()
    reader = GGUFFile(base_path)
    deltas: dict[str, list] = {}
    for spec in specs:
        for name, ab in read_adapter(spec, reader).items():
            deltas.setdefault(name, []).append(ab)
    result = FuseResult(out_path=out_path, file_type=type, adapted=list(deltas))
    writer = GGUFWriter(out_path, alignment=reader.alignment)
    for key, value in reader.metadata.items():
        if key != "general.alignment":
            writer.add_metadata(key, value, reader.metadata_types.get(key))
    jobs = []
    for name, info in reader.tensors.items():
        new = info.ggml_type
        if name in deltas:
            new = GGMLType.F16 if type == "f16" else info.ggml_type
            if info.ggml_type not in _kernels.DEQUANTIZE_TYPES:
                raise QuantizeError(f"tensor {name!r}: cannot read type {info.ggml_type.name} to merge an adapter")
            if new not in _kernels.QUANTIZE_TYPES:
                raise QuantizeError(f"tensor {name!r}: no quantiser for {new.name}; fuse with --type f16")
        jobs.append((name, info, new))
        result.tensors.append(TensorResult(name, info.shape, info.ggml_type, new, info.nbytes,
                                           new.nbytes(info.n_elements)))
    bar = _Progress(progress, len(jobs), sum(i.nbytes for _, i, _ in jobs), desc="fuse")
    by_name = {r.name: r for r in result.tensors}
    for name, info, new in jobs:
        def source(name=name, info=info, new=new):
            if name in deltas:
                yield from _merged(reader, info, new, deltas[name], n_threads, bar)
            else:
                data = reader.tensor_data(name)
                for s in range(0, data.size, _SLAB_ELEMENTS):
                    yield data[s:s + _SLAB_ELEMENTS]
                    bar.bytes(min(_SLAB_ELEMENTS, data.size - s))
            bar.tensor(by_name[name])
        writer.add_tensor_source(name, info.shape, new, source)
    try:
        writer.write()
    finally:
        bar.close()
    result.seconds = time.perf_counter() - start
    return result


def _merged(reader, info, new, parts, n_threads, bar):
    """The rows of ``W + sum s B @ A`` in type ``new``, a slab at a time."""
    rows, cols = info.shape
    slab = max(1, _SLAB_ELEMENTS // cols)
    for r0 in range(0, rows, slab):
        r1 = min(rows, r0 + slab)
        w = np.array(_float_rows(reader, info, r0, r1, cols, n_threads), np.float32)
        for a, b in parts:
            w += b[r0:r1] @ a
        yield w.astype(np.float16) if new == GGMLType.F16 else _kernels.quantize_rows(w, new, n_threads=n_threads)
        bar.bytes(info.ggml_type.nbytes((r1 - r0) * cols))


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .llm.lora import parse_lora

    p = argparse.ArgumentParser(prog="python -m abi lora",
                                description="Work with LoRA adapters (llama.cpp's GGUF format).")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fuse", help="merge adapters into a model file",
                       description="Merge LoRA adapters into a GGUF model: the adapted weights "
                                   "requantised to their own type (--type same) or stored as F16.")
    f.add_argument("base", help="the base model GGUF")
    f.add_argument("adapters", nargs="+", type=parse_lora, metavar="ADAPTER[:SCALE]",
                   help="adapter GGUF files, each with an optional scale (default 1)")
    f.add_argument("output", help="the merged GGUF to write")
    f.add_argument("--type", choices=FUSE_TYPES, default="same",
                   help="the adapted weights' type: the base's (requantised) or F16 (default same)")
    f.add_argument("-t", "--threads", type=int, default=None, help="worker threads (default: all CPUs)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    a = p.parse_args(argv)
    res = fuse_lora(a.base, a.adapters, a.output, a.type, progress=not a.quiet, n_threads=a.threads)
    print(f"{res.out_path}: {len(a.adapters)} adapter(s) merged into {len(res.adapted)} tensors, "
          f"{res.src_bytes / 2**20:.1f} MiB -> {res.new_bytes / 2**20:.1f} MiB in {res.seconds:.1f} s")
    return 0
