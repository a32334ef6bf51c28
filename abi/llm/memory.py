"""Memory planning before a model is loaded: weights (the file's tensor bytes, memory-mapped)
+ KV caches (ctx x slots, by kv_dtype) + the compiled forward's scratch, all from the GGUF
metadata. ``check_plan`` refuses a plan over ``max_memory`` or the machine's available
memory with the numbers, or shrinks the context to fit when asked. ``release_free_memory``
hands freed heap pages back to the OS."""
from __future__ import annotations

import dataclasses
import os
import re

from ..errors import ConfigError, MemoryBudgetExceeded
from .cache import KV_DTYPES, kv_row_bytes

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_size(text: str | int) -> int:
    """'4GiB', '512MiB', '2G', '1000000' -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"memory size {text!r} is not a number with a unit like 4GiB or 512MiB",
                          "max_memory")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def available_memory() -> int | None:
    """Bytes the OS says can be allocated without swapping (MemAvailable), None if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    weights: int             # tensor bytes of the file (mapped, read as used)
    kv_per_token: int        # bytes of K and V of one position, every layer
    n_ctx: int
    n_slots: int
    kv_dtype: str
    scratch: int             # the compiled forward's buffers for a full prompt batch

    @property
    def kv(self) -> int:
        return self.kv_per_token * self.n_ctx * self.n_slots

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.scratch

    def describe(self) -> str:
        return (f"memory plan: weights {format_size(self.weights)} + KV cache {format_size(self.kv)} "
                f"({self.kv_dtype}, {self.n_ctx} ctx x {self.n_slots} slot(s), "
                f"{format_size(self.kv_per_token)}/token) + scratch {format_size(self.scratch)} "
                f"= {format_size(self.total)}")


def _decoder_args(gguf):
    """The decoder recipe's ModelArgs, or None for a file that keeps no KV cache (bert)."""
    from .models import decoder, get_architecture

    arch = get_architecture(gguf.architecture)
    args = arch.ModelArgs.from_gguf(gguf.metadata)
    return args if issubclass(arch.Model, decoder.Model) else None


def kv_bytes_per_token(args, kv_dtype: str) -> int:
    if args is None:
        return 0
    return 2 * args.n_layers * args.n_kv_heads * kv_row_bytes(kv_dtype, args.head_dim)


def scratch_bytes(args, n_batch: int, n_ctx: int, n_threads: int, n_out: int = 1) -> int:
    """The compiled forward's buffers (``_decode.Decoder._reserve``) for batches of
    ``n_batch`` tokens over caches of ``n_ctx``, plus ``n_out`` rows of logits (generation
    asks for one per sequence; ``Model.logits`` of a long text allocates more, by itself)."""
    if args is None:
        return 0
    T, nth = n_batch, max(1, n_threads)
    qd, kd = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim
    k_used = max(args.n_expert_used, 1)
    floats = T * (2 * qd + 2 * kd + 2 * args.n_ff + args.n_embd)   # q, att, k, v, g, u, tmp
    if args.n_expert:
        floats += T * (args.n_expert + 2 * k_used) + T * k_used * (2 * args.n_ff_exp + args.n_embd)
    floats += nth * (2 * T * args.n_embd + args.n_rot + n_ctx)   # x, h, rot, scores
    floats += n_out * args.n_vocab
    # a quantised input row: at most Q8_K's 292 bytes per 256 values, in whole cache lines
    widest = max(args.n_embd, args.n_ff, args.n_ff_exp, args.n_ff_shexp, qd)
    act_stride = (292 * widest // 256 + 63) // 64 * 64
    return 4 * floats + 3 * (nth * T * k_used * act_stride + 64)


def plan_memory(gguf, n_ctx: int | None = None, n_slots: int = 1, kv_dtype: str = "f32",
                n_batch: int = 512, n_threads: int | None = None) -> MemoryPlan:
    """What loading ``gguf`` (a GGUFFile) with these options will hold in memory."""
    if kv_dtype not in KV_DTYPES:
        kv_row_bytes(kv_dtype, 32)   # the typed error
    args = _decoder_args(gguf)
    n_ctx = int(n_ctx or (args.n_ctx_train if args is not None else 0))
    weights = sum(t.nbytes for t in gguf.tensors.values())
    threads = n_threads or os.cpu_count() or 1
    return MemoryPlan(weights, kv_bytes_per_token(args, kv_dtype), n_ctx, n_slots, kv_dtype,
                      # as Engine preallocates: a prompt batch beside every slot's decode token
                      scratch_bytes(args, min(n_batch, max(n_ctx, 1)) + n_slots, n_ctx, threads, n_slots))


def check_plan(plan: MemoryPlan, max_memory: int | None = None, fit: bool = False,
               available: int | None = -1) -> MemoryPlan:
    """The plan, if it fits ``max_memory`` and the available memory (``available=-1``: ask
    the OS); with ``fit``, the plan with the largest context that fits (a multiple of 256,
    or whatever fits under that); otherwise MemoryBudgetExceeded listing the numbers."""
    if available == -1:
        available = available_memory()
    limits = [(n, what) for n, what in ((max_memory, "--max-memory"),
                                         (available, "available memory")) if n is not None]
    if not limits:
        return plan
    budget, what = min(limits)
    if plan.total <= budget:
        return plan
    if fit and plan.kv_per_token:
        fixed = plan.weights + plan.scratch   # scratch only shrinks with the context
        per_ctx = plan.kv_per_token * plan.n_slots
        n = (budget - fixed) // per_ctx if budget > fixed else 0
        if n >= 256:
            n -= n % 256
        if n >= 1:
            return dataclasses.replace(plan, n_ctx=int(min(n, plan.n_ctx)))
    raise MemoryBudgetExceeded(
        f"{plan.describe()}, over the {what} of {format_size(budget)}"
        + ("" if fit else "; lower --ctx, --parallel or use --kv-dtype q8_0 (or pass --fit to "
           "shrink the context to fit)")
        + (" even with the smallest context" if fit else ""))


_libc = None


def release_free_memory() -> None:
    """Return the heap's free pages to the OS (glibc's malloc_trim); elsewhere nothing.
    Freed C and Python memory otherwise stays in the process's resident set."""
    global _libc
    if _libc is None:
        import ctypes

        try:   # the process's own symbols: no library search (ldconfig) on the way
            _libc = ctypes.CDLL(None)
            _libc.malloc_trim  # noqa: B018 (glibc only)
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)
