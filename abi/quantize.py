"""``python -m abi quantize IN.gguf OUT.gguf TYPE``: our own GGUF quantiser.

Each tensor's target type follows llama.cpp's mixture rules (``llama_tensor_get_type`` in
llama-quant.cpp, re-expressed here as tables): which tensors are quantised at all (2-D
``*weight`` tensors, not norms and a few special ones), which get more bits in the ``_M``
mixtures (attn_v / ffn_down by ``use_more_bits``, output.weight and a tied token_embd as
Q6_K), and the fallback when a row is not a whole number of blocks (Q4_K -> Q5_0, ...).
The kernels are llama.cpp's quantisation searches (``abi._kernels.quantize_rows``), so our
files match llama-quantize's bit for bit on the same source.

Memory stays bounded: tensors are read from the memory-mapped input and converted a slab of
rows at a time straight into the output file, which appears atomically
(``abi.fileio.atomic_write``: a temporary file beside it, fsynced and renamed; removed on
failure or Ctrl-C). The input is opened read-only.

Requantising: sources in F32 / F16 / BF16 are converted freely. A tensor already in a
quantised type is only re-quantised with ``allow_requantize`` (llama.cpp's
``--allow-requantize``), from any type we can dequantise, with a warning: the second
rounding adds to the first. A tensor whose target equals its type is copied as is.
"""
from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import _kernels
from .errors import AbiError, QuantizeError, RequantizeError
from .gguf import GGMLType
from .gguf.reader import GGUFFile

T = GGMLType
QUANTIZATION_VERSION = 2          # general.quantization_version that ggml's block layouts carry
_SLAB_ELEMENTS = 1 << 22          # rows converted per step: at most ~16 MiB of float32


@dataclass(frozen=True)
class FileType:
    """A target: llama.cpp's file-type id (general.file_type) and its default tensor type."""
    name: str
    ftype: int
    default: GGMLType


FILE_TYPES = {ft.name: ft for ft in (
    FileType("F32", 0, T.F32), FileType("F16", 1, T.F16), FileType("BF16", 32, T.BF16),
    FileType("Q8_0", 7, T.Q8_0), FileType("Q4_0", 2, T.Q4_0), FileType("Q4_1", 3, T.Q4_1),
    FileType("Q5_0", 8, T.Q5_0), FileType("Q5_1", 9, T.Q5_1),
    FileType("Q3_K_M", 12, T.Q3_K), FileType("Q4_K_M", 15, T.Q4_K),
    FileType("Q5_K_M", 17, T.Q5_K), FileType("Q6_K", 18, T.Q6_K),
)}
_FLOAT_TARGETS = {T.F32, T.F16, T.BF16}


def file_type(name: str) -> FileType:
    ft = FILE_TYPES.get(str(name).upper())
    if ft is None:
        raise QuantizeError(f"unknown quantisation type {name!r}; choose one of: {', '.join(FILE_TYPES)}")
    return ft


# --- which tensors are quantised (llama.cpp's tensor_allows_quantization) -----------------

# Name fragments of 2-D weights that stay in their type: routers, convolutions, position
# tables, RWKV's small mixing weights, multimodal projector parts.
_KEEP_FRAGMENTS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
    "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
) + tuple(f"time_mix_{n}.weight" for n in (
    "first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1", "g2", "decay_w1",
    "decay_w2", "lerp_fused"))
_KEEP_NAMES = {"position_embd.weight", "token_types.weight"}


def _n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: dimensions up to the last one longer than 1 (numpy shape is reversed)."""
    ne = list(reversed(shape))
    for i in range(len(ne) - 1, 0, -1):
        if ne[i] > 1:
            return i + 1
    return 1


def allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    return (_n_dims(shape) >= 2 and name.endswith("weight") and name not in _KEEP_NAMES
            and not any(f in name for f in _KEEP_FRAGMENTS))


# --- tensor categories and the mixture rules (llama.cpp's llama_tensor_get_type_impl) ------

# (category, test) in llama.cpp's order: the first match wins
_CATEGORIES = (
    ("output", lambda n: n == "output.weight"),
    ("token_embd", lambda n: n in ("token_embd.weight", "per_layer_token_embd.weight")),
    ("attn_v", lambda n: "attn_qkv.weight" in n),       # fused QKV and MLA kv_b count as attn_v
    ("attn_v", lambda n: "attn_kv_b.weight" in n),
    ("attn_v", lambda n: "attn_v.weight" in n),
    ("attn_k", lambda n: "attn_k.weight" in n),
    ("attn_q", lambda n: "attn_q.weight" in n),
    ("attn_output", lambda n: "attn_output.weight" in n),
    ("ffn_up", lambda n: "ffn_up" in n),
    ("ffn_gate", lambda n: "ffn_gate" in n),
    ("ffn_down", lambda n: "ffn_down" in n),
)


def category(name: str) -> str:
    return next((c for c, test in _CATEGORIES if test(name)), "other")


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of layers that get more bits: the first and last eighth, and every
    third layer in between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass
class _Model:
    """What the rules look at: architecture facts and llama.cpp's running counters."""
    arch: str
    n_layer: int
    n_expert: int
    is_70b: bool
    has_imatrix: bool
    tied_embeddings: bool
    n_attn_v: int
    i_attn_v: int = 0
    i_ffn_down: int = 0


def _attn_v(ft: str, m: _Model, t: GGMLType) -> GGMLType:
    i, n = m.i_attn_v, m.n_attn_v
    rule = {
        "Q3_K_M": lambda: T.Q5_K if i < 2 else T.Q4_K,
        "Q4_K_M": lambda: T.Q6_K if use_more_bits(i, n) else t,
        "Q5_K_M": lambda: T.Q6_K if use_more_bits(i, n) else t,
    }.get(ft)
    t = rule() if rule else t
    if m.is_70b and t in (T.Q3_K, T.Q4_K):
        t = T.Q5_K          # 8 heads share attn_v in the 70B models: cheap to give it more bits
    if m.n_expert == 8:
        t = T.Q8_0
    m.i_attn_v += 1
    return t


def _layer(m: _Model, name: str, counter: int) -> tuple[int, int]:
    if m.n_expert > 1:      # experts are not stored in layer order: read the layer from the name
        hit = re.match(r"blk\.(\d+)\.", name)
        if not hit or not 0 <= int(hit.group(1)) < m.n_layer:
            raise QuantizeError(f"cannot tell the layer of tensor {name!r}")
        return int(hit.group(1)), m.n_layer
    return counter, m.n_layer


def _ffn_down(ft: str, m: _Model, t: GGMLType, name: str) -> GGMLType:
    i, n = _layer(m, name, m.i_ffn_down)
    falcon = m.arch == "falcon"
    if ft == "Q3_K_M":
        t = T.Q5_K if i < n // 16 else (T.Q4_K if not falcon or use_more_bits(i, n) else T.Q3_K)
    elif ft == "Q4_K_M":
        if falcon:
            t = T.Q6_K if i < n // 16 else (T.Q5_K if use_more_bits(i, n) else T.Q4_K)
        elif use_more_bits(i, n):
            t = T.Q6_K
    elif ft == "Q5_K_M" and use_more_bits(i, n):
        t = T.Q6_K
    elif ft in ("Q4_0", "Q5_0") and m.has_imatrix and i < n // 8:
        # llama.cpp guards the first ffn_down layers of imatrix Q4_0/Q5_0 files with a min
        t = T.Q4_1 if ft == "Q4_0" else T.Q5_1
    m.i_ffn_down += 1
    return t


def _attn_output(ft: str, m: _Model, t: GGMLType) -> GGMLType:
    if m.arch == "falcon":
        return t
    if m.n_expert == 8:
        return T.Q5_K if ft in ("Q3_K_M", "Q4_K_M") else t
    return T.Q4_K if ft == "Q3_K_M" else t


def _mixture(ft: FileType, m: _Model, name: str, cat: str, ncols: int) -> GGMLType:
    t = ft.default
    if cat == "output" or (cat == "token_embd" and m.tied_embeddings):
        # the output projection (or the embedding that doubles as it) keeps 6+ bits
        if m.arch == "falcon" or ncols % t.block_size:
            return T.Q8_0
        return t if t == T.Q8_0 else T.Q6_K
    if cat == "attn_v":
        return _attn_v(ft.name, m, t)
    if cat == "attn_k":
        return T.Q8_0 if m.n_expert == 8 else t
    if cat == "ffn_down":
        return _ffn_down(ft.name, m, t, name)
    if cat == "attn_output":
        return _attn_output(ft.name, m, t)
    return t


# a k-quant whose row is not a whole number of 256-blocks falls back to a 32-block type
_FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}


def _fallback(t: GGMLType, ncols: int) -> GGMLType:
    if ncols % t.block_size:
        t = _FALLBACK.get(t, t)
        if ncols % t.block_size:
            t = T.F16       # not even a multiple of 32
    return t


def _layer_key(name: str) -> tuple[int, str]:
    """llama.cpp visits tensors by layer number, then name (non-layer tensors first): its
    counters, and so the mixture, follow this order."""
    hit = re.match(r"blk\.(\d+)\.", name)
    return (int(hit.group(1)) if hit else -1, name)


def plan_types(reader: GGUFFile, target, has_imatrix: bool = False) -> dict[str, GGMLType]:
    """name -> the type each tensor gets for ``target`` (a name from FILE_TYPES)."""
    ft = target if isinstance(target, FileType) else file_type(target)
    arch = reader.architecture or ""
    get = lambda key, default=0: reader.get(f"{arch}.{key}", default)  # noqa: E731
    n_layer = int(get("block_count", 0) or 0)
    n_head, n_head_kv = get("attention.head_count", 0), get("attention.head_count_kv", 0)
    is_70b = (arch == "llama" and n_layer == 80 and isinstance(n_head, int)
              and isinstance(n_head_kv, int) and n_head != n_head_kv)
    names = sorted(reader.tensors, key=_layer_key)
    m = _Model(arch=arch, n_layer=n_layer, n_expert=int(get("expert_count", 0) or 0), is_70b=is_70b,
               has_imatrix=has_imatrix, tied_embeddings="output.weight" not in reader.tensors,
               n_attn_v=sum(category(n) == "attn_v" for n in names))
    plan = {}
    for name in names:
        info = reader.tensors[name]
        if not allows_quantization(name, info.shape):
            plan[name] = info.ggml_type
            continue
        t = ft.default
        if t not in _FLOAT_TARGETS:
            ncols = info.shape[-1]
            t = _fallback(_mixture(ft, m, name, category(name), ncols), ncols)
        plan[name] = t
    return plan


# --- importance matrix ------------------------------------------------------------------

def load_imatrix(path) -> dict[str, np.ndarray]:
    """llama.cpp's importance matrix -> tensor name -> mean squared activation per column
    (float32; one row of columns per expert, flattened). Reads the GGUF format (tensors
    ``<name>.in_sum2`` and ``<name>.counts``: sums divided by the count, 1 where the count is
    0) and the legacy binary ``.dat`` (values divided by the call count)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise QuantizeError(f"cannot read imatrix {path!r}: {exc}") from exc
    data = _imatrix_gguf(path) if magic == b"GGUF" else _imatrix_legacy(path)
    for name, v in data.items():
        if not np.isfinite(v).all():
            raise QuantizeError(f"imatrix {path!r}: entry {name!r} has non-finite values")
    return data


def _imatrix_gguf(path: str) -> dict[str, np.ndarray]:
    r = GGUFFile(path)
    out = {}
    for tname in r.tensors:
        if not tname.endswith(".in_sum2"):
            continue
        name = tname[:-len(".in_sum2")]
        if name + ".counts" not in r.tensors:
            raise QuantizeError(f"imatrix {path!r}: {name!r} has sums but no counts")
        sums, counts = r.tensor_array(tname), r.tensor_array(name + ".counts")
        if sums.dtype != np.float32 or counts.dtype != np.float32:
            raise QuantizeError(f"imatrix {path!r}: sums and counts of {name!r} must be F32")
        counts = counts.reshape(-1)
        sums = sums.reshape(counts.size, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.where(counts[:, None] > 0, sums / np.where(counts > 0, counts, 1)[:, None], 1)
        out[name] = e.astype(np.float32).reshape(-1)
    return out


def _imatrix_legacy(path: str) -> dict[str, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    pos = 0

    def take(n: int, what: str) -> np.ndarray:
        nonlocal pos
        if pos + n > raw.size:
            raise QuantizeError(f"imatrix {path!r}: truncated while reading {what}")
        out = raw[pos:pos + n]
        pos += n
        return out

    def i32(what: str) -> int:
        return int(take(4, what).view(np.int32)[0])

    n = i32("the entry count")
    if n < 0:
        raise QuantizeError(f"imatrix {path!r}: not an imatrix (entry count {n})")
    out = {}
    for k in range(n):
        length = i32(f"entry {k}'s name length")
        if not 0 < length < 4096:
            raise QuantizeError(f"imatrix {path!r}: bad name length {length} in entry {k}")
        name = take(length, "a name").tobytes().decode("utf-8", "replace")
        ncall, nval = i32("a call count"), i32("a value count")
        if nval < 1:
            raise QuantizeError(f"imatrix {path!r}: entry {name!r} has {nval} values")
        v = take(4 * nval, f"the values of {name!r}").view(np.float32).copy()
        out[name] = (v / np.float32(ncall)).astype(np.float32) if ncall > 0 else v
    return out


# --- the conversion ---------------------------------------------------------------------

@dataclass
class TensorResult:
    name: str
    shape: tuple[int, ...]
    src_type: GGMLType
    new_type: GGMLType
    src_bytes: int
    new_bytes: int
    imatrix: bool = False


@dataclass
class QuantizeResult:
    out_path: str
    file_type: str
    tensors: list[TensorResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def src_bytes(self) -> int:
        return sum(t.src_bytes for t in self.tensors)

    @property
    def new_bytes(self) -> int:
        return sum(t.new_bytes for t in self.tensors)


class _Progress:
    """tqdm on a terminal; otherwise one plain line per tensor (to stderr)."""

    def __init__(self, enabled: bool, n_tensors: int, total_bytes: int, desc: str = "quantize"):
        self.enabled, self.n, self.done = enabled, n_tensors, 0
        self.bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=desc)
            except ImportError:
                pass

    def bytes(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def tensor(self, r: TensorResult) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.done}/{self.n} tensors")
        elif self.enabled:
            print(f"[{self.done:4d}/{self.n}] {r.name:<36} {str(list(r.shape)):<14} "
                  f"{r.src_type.name:>5} -> {r.new_type.name:<5} {r.src_bytes / 2**20:8.2f} MiB -> "
                  f"{r.new_bytes / 2**20:8.2f} MiB", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(b):
        try:
            return os.path.samefile(a, b)
        except OSError:
            pass
    return os.path.realpath(a) == os.path.realpath(b)


def _copy_metadata(reader: GGUFFile, writer, ft: FileType) -> None:
    skip = {"general.alignment", "split.no", "split.count", "split.tensors.count"}
    for key, value in reader.metadata.items():
        if key in skip:
            continue
        if key == "general.file_type":
            value = ft.ftype
        elif key == "general.quantization_version":
            value = QUANTIZATION_VERSION
        if key in ("general.file_type", "general.quantization_version"):
            writer.add_metadata(key, value, _UINT32)
        else:
            writer.add_metadata(key, value, reader.metadata_types.get(key))
    for key, value in (("general.quantization_version", QUANTIZATION_VERSION),
                       ("general.file_type", ft.ftype)):
        if key not in reader.metadata:
            writer.add_metadata(key, value, _UINT32)


def _float_rows(reader: GGUFFile, info, r0: int, r1: int, ncols: int, n_threads: int) -> np.ndarray:
    """Rows r0..r1 of a (rows, ncols) view of the tensor as float32."""
    t = info.ggml_type
    row_bytes = t.nbytes(ncols)
    raw = reader.tensor_data(info.name)[r0 * row_bytes:r1 * row_bytes]
    if t == T.F32:
        return raw.view(np.float32).reshape(r1 - r0, ncols)
    return _kernels.dequantize(raw, t, (r1 - r0, ncols), n_threads=n_threads)


def _producer(reader, info, new_type, qw, n_threads, progress):
    ncols = info.shape[-1] if info.shape else 1
    nrows = info.n_elements // ncols if ncols else 0
    n_mat = info.n_elements // (ncols * info.shape[-2]) if len(info.shape) >= 2 and info.shape[-2] else 1
    rows_per_mat = nrows // max(1, n_mat)

    def produce():
        if new_type == info.ggml_type:                  # nothing to convert: copy the bytes
            data = reader.tensor_data(info.name)
            step = max(1, _SLAB_ELEMENTS)
            for s in range(0, data.size, step):
                yield data[s:s + step]
                progress.bytes(min(step, data.size - s))
            return
        slab = max(1, _SLAB_ELEMENTS // max(1, ncols))
        for r0 in range(0, nrows, slab):
            # never let a slab cross an expert: each has its own imatrix row
            r1 = min(nrows, r0 + slab, (r0 // rows_per_mat + 1) * rows_per_mat)
            x = _float_rows(reader, info, r0, r1, ncols, n_threads)
            w = None if qw is None else qw[(r0 // rows_per_mat) * ncols:(r0 // rows_per_mat + 1) * ncols]
            out = _kernels.quantize_rows(x, new_type, w, n_threads=n_threads)
            progress.bytes(info.ggml_type.nbytes((r1 - r0) * ncols))
            yield out
    return produce


def quantize_model(in_path, out_path, type, imatrix=None, n_threads: int | None = None,
                   progress: bool = True, allow_requantize: bool = False) -> QuantizeResult:
    """Write ``out_path``: ``in_path`` with its tensors converted for ``type`` (see FILE_TYPES).
    ``imatrix``: a path to llama.cpp's importance matrix, or an already loaded dict."""
    from .gguf.writer import GGUFWriter

    ft = file_type(type)
    in_path, out_path = os.fspath(in_path), os.fspath(out_path)
    if _same_file(in_path, out_path):
        raise QuantizeError(f"the output {out_path!r} is the input file: choose another path")
    if not os.path.isfile(in_path):
        raise QuantizeError(f"no such input file: {in_path!r}")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise QuantizeError(f"the output directory {out_dir!r} does not exist")
    imx = load_imatrix(imatrix) if isinstance(imatrix, (str, os.PathLike)) else imatrix
    n_threads = n_threads or _kernels.default_num_threads()
    start = time.perf_counter()

    reader = GGUFFile(in_path)
    plan = plan_types(reader, ft, has_imatrix=bool(imx))
    result = QuantizeResult(out_path=out_path, file_type=ft.name)
    requantised = []
    jobs = []
    for name, info in reader.tensors.items():            # written in the input's order
        new = plan[name]
        if new != info.ggml_type:
            if info.ggml_type not in _FLOAT_TARGETS:
                if not allow_requantize:
                    raise RequantizeError(
                        f"tensor {name!r} is already {info.ggml_type.name}: quantising it again to "
                        f"{new.name} loses quality; pass --allow-requantize to do it anyway",
                        tensor=name, ggml_type=info.ggml_type.name)
                if info.ggml_type not in _kernels.DEQUANTIZE_TYPES:
                    raise QuantizeError(f"tensor {name!r}: cannot read type {info.ggml_type.name} "
                                        f"to requantise it to {new.name}")
                requantised.append(name)
            if new not in _kernels.QUANTIZE_TYPES:
                raise QuantizeError(f"tensor {name!r}: no quantiser for {new.name}")
        qw = None
        if imx and new != info.ggml_type and new not in _FLOAT_TARGETS:
            qw = imx.get(name)
            ncols = info.shape[-1]
            n_mat = info.n_elements // (ncols * info.shape[-2]) if len(info.shape) >= 2 else 1
            if qw is not None and qw.size != ncols * n_mat:
                if category(name) != "token_embd":     # llama.cpp also tolerates it there only
                    raise QuantizeError(f"imatrix entry for {name!r} has {qw.size} values, the "
                                        f"tensor needs {ncols * n_mat}")
                qw = None
        new_bytes = new.nbytes(info.n_elements)
        jobs.append((name, info, new, qw))
        result.tensors.append(TensorResult(name, info.shape, info.ggml_type, new, info.nbytes,
                                           new_bytes, qw is not None))
    if requantised:
        print(f"abi quantize: warning: requantising {len(requantised)} tensor(s) that were already "
              f"quantised (e.g. {requantised[0]!r}); quality is lost to the first rounding",
              file=sys.stderr)

    writer = GGUFWriter(out_path, alignment=reader.alignment)
    _copy_metadata(reader, writer, ft)
    bar = _Progress(progress, len(jobs), sum(i.nbytes for _, i, _, _ in jobs))
    by_name = {r.name: r for r in result.tensors}
    for name, info, new, qw in jobs:
        inner = _producer(reader, info, new, qw, n_threads, bar)

        def source(inner=inner, r=by_name[name]):
            yield from inner()
            bar.tensor(r)
        writer.add_tensor_source(name, info.shape, new, source)
    try:
        writer.write()
    finally:
        bar.close()
    result.seconds = time.perf_counter() - start
    return result


from .gguf.constants import GGUFValueType as _VT  # noqa: E402

_UINT32 = _VT.UINT32


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m abi quantize",
        description="Quantise a GGUF model with llama.cpp's mixture rules and quantisers.")
    p.add_argument("input", help="the source GGUF (F32/F16/BF16, or quantised with --allow-requantize)")
    p.add_argument("output", help="the GGUF to write (must differ from the input)")
    p.add_argument("type", help="target: " + ", ".join(FILE_TYPES))
    p.add_argument("--imatrix", metavar="FILE", help="llama.cpp importance matrix (GGUF or legacy .dat)")
    p.add_argument("--allow-requantize", action="store_true",
                   help="also convert tensors that are already quantised (loses quality)")
    p.add_argument("-t", "--threads", type=int, default=None, help="worker threads (default: all CPUs)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    a = p.parse_args(argv)
    try:
        res = quantize_model(a.input, a.output, a.type, imatrix=a.imatrix, n_threads=a.threads,
                             progress=not a.quiet, allow_requantize=a.allow_requantize)
    except AbiError:
        raise
    counts: dict[str, int] = {}
    for t in res.tensors:
        counts[t.new_type.name] = counts.get(t.new_type.name, 0) + 1
    mix = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    print(f"{res.out_path}: {res.file_type}, {res.src_bytes / 2**20:.1f} MiB -> "
          f"{res.new_bytes / 2**20:.1f} MiB in {res.seconds:.1f} s ({mix})")
    return 0
