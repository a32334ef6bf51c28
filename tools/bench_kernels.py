"""Kernel throughput next to this machine's memory read bandwidth, measured in the same run.

    python tools/bench_kernels.py [--threads N] [--quick] [--types T,...] [--repeat R] [--json]
    python tools/bench_kernels.py --prompt T [--types T,...] [--repeat R] [--json]

For each weight type and matrix size, the T = 1 product y = W @ x (activation quantisation
included) as GB/s of quantised weight read, in two settings:
  stream: each call reads a different copy of W, copies totalling >= 512 MB (twice the
          ~260 MB L3 of the server CPUs this runs on), so the weight comes from DRAM as in
          decode of a model bigger than the caches;
  hot:    the same W every call (small matrices then sit in L2/L3, so this can pass 100%).
The yardstick is a numba ``prange`` sum over 512 MB of float32 with the same thread count
(numpy's single-threaded sum understates the machine). On a shared machine other processes
come and go, so each case is measured ``--repeat`` times, each time right after its own
bandwidth measurement, and the best ratio is kept; the load average is printed alongside.
Also: dequantisation GB/s of float32 output for every type.

With --prompt T: for each type with prompt tiles, the product of T tokens on one thread through
the register tiles against the T = 1 products (a block of 16 rows at a time for every token,
as the forward runs a type without tiles), the two interleaved, best of --repeat each. Both run
on the calling thread, and are timed in that thread's CPU time: on an oversubscribed machine a
wall clock mostly measures the wait for a core, and longer calls wait more.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from abi import _kernels  # noqa: E402
from abi._kernels import dequant, matmul  # noqa: E402
from abi.gguf.constants import GGMLType  # noqa: E402

SIZES = [(1536, 576), (576, 1536), (49152, 576), (16384, 4096)]   # (rows, cols)
_IQ = [GGMLType.IQ4_NL, GGMLType.IQ4_XS, GGMLType.IQ3_XXS, GGMLType.IQ3_S, GGMLType.IQ2_XXS,
       GGMLType.IQ2_XS, GGMLType.IQ2_S, GGMLType.IQ1_S, GGMLType.IQ1_M, GGMLType.TQ1_0,
       GGMLType.TQ2_0, GGMLType.MXFP4]
TYPES = [GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0,
         GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K,
         *_IQ, GGMLType.F16, GGMLType.BF16, GGMLType.F32]
# fraction of the read bandwidth a T = 1 product must reach (the quant-types issue)
TARGETS = {GGMLType.Q4_1: 0.45, **{t: 0.60 for t in (GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.Q2_K,
                                                     GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K,
                                                     GGMLType.Q6_K)},
           **{t: 0.40 for t in _IQ}}
# Bytes of weight copies a streamed product cycles through, and of the bandwidth yardstick:
# both well past the last-level cache (~260 MB on the EPYC servers), so both read DRAM.
STREAM_BYTES = 512 << 20
# byte offsets of the f16 scales of the types random_weight fills with random blocks (the
# others' scales stay random bytes: the integer kernels' time does not depend on values)
_F16_FIELDS = {GGMLType.Q2_K: (80, 82), GGMLType.Q5_K: (0, 2), GGMLType.IQ4_NL: (0,),
               GGMLType.IQ4_XS: (0,), GGMLType.IQ3_XXS: (0,), GGMLType.IQ3_S: (0,),
               GGMLType.IQ2_XXS: (0,), GGMLType.IQ2_XS: (0,), GGMLType.IQ2_S: (0,),
               GGMLType.IQ1_S: (0,), GGMLType.TQ1_0: (52,), GGMLType.TQ2_0: (64,)}


_PSUM = None
_ARRAY = None


def memory_bandwidth(n_threads: int, nbytes: int = STREAM_BYTES, repeats: int = 10) -> float:
    """GB/s of a numba prange float32 sum over ``nbytes``: the machine's read bandwidth."""
    global _PSUM, _ARRAY
    import numba

    if _PSUM is None:
        @numba.njit(parallel=True, fastmath=True)
        def psum(a):
            s = 0.0
            for i in numba.prange(a.size):
                s += a[i]
            return s
        _PSUM = psum
    if _ARRAY is None or _ARRAY.nbytes != nbytes:
        _ARRAY = np.ones(nbytes // 4, dtype=np.float32)
    numba.set_num_threads(n_threads)
    _PSUM(_ARRAY)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        _PSUM(_ARRAY)
        best = min(best, time.perf_counter() - t)
    return nbytes / best / 1e9


def random_weight(t: GGMLType, rows: int, cols: int, rng) -> np.ndarray:
    """Stored bytes of a realistic (rows, cols) weight of type t."""
    w = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.05)
    if t in _kernels.QUANTIZE_TYPES:
        return _kernels.quantize(w, t).reshape(-1)
    # no quantiser (Q2_K, the IQ, TQ and MXFP4 types): random blocks with sane f16 scales
    nb = rows * cols // t.block_size
    raw = rng.integers(0, 256, (nb, t.type_size), dtype=np.uint8)
    for off in _F16_FIELDS.get(t, ()):
        raw[:, off:off + 2] = np.full((nb, 1), 0.001, np.float16).view(np.uint8)
    return raw.reshape(-1)


def streamed(one: np.ndarray) -> tuple[np.ndarray, int]:
    """Copies of the weight ``one`` totalling >= STREAM_BYTES, and their count: a product
    that reads a different copy each call reads its weight from DRAM."""
    n_copies = max(1, math.ceil(STREAM_BYTES / one.nbytes))
    return np.tile(one, n_copies), n_copies


def time_gemv(raw: np.ndarray, t: GGMLType, rows: int, cols: int, n_copies: int, n_threads: int,
              min_time: float) -> float:
    """Seconds per product: best of 3 runs, each of >= 2 passes over the copies and >= min_time."""
    x = np.random.default_rng(1).standard_normal(cols, dtype=np.float32)
    y = np.empty(rows, np.float32)
    matmul._bench_gemv(raw, int(t), rows, cols, n_copies, x, y, n_threads, n_copies)   # warm up
    per = matmul._bench_gemv(raw, int(t), rows, cols, n_copies, x, y, n_threads, n_copies) / n_copies
    calls = max(2 * n_copies, int(min_time / max(per, 1e-7)))
    return min(matmul._bench_gemv(raw, int(t), rows, cols, n_copies, x, y, n_threads, calls) / calls
               for _ in range(3))


def wait_until_quiet(max_wait: float) -> bool:
    """Wait (up to max_wait seconds) until no other process is runnable for half a second,
    judged by the running-task count of /proc/loadavg; True when it got quiet."""
    deadline = time.monotonic() + max_wait
    while True:
        try:
            samples = []
            for _ in range(10):
                with open("/proc/loadavg") as fh:
                    samples.append(int(fh.read().split()[3].split("/")[0]))
                time.sleep(0.05)
        except (OSError, ValueError, IndexError):
            return False
        if max(samples) <= 1:           # only this process
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def bench_products(n_threads: int, sizes, types, min_time: float, repeat: int, yardstick,
                   wait_idle: float = 0.0) -> list[dict]:
    rng = np.random.default_rng(0)
    rows_out = []
    for t in types:
        for rows, cols in sizes:
            if cols % t.block_size:
                continue    # e.g. 576 columns cannot be k-quants (llama.cpp stores them in 32-blocks)
            one = random_weight(t, rows, cols, rng)
            stream, n_copies = streamed(one)
            best = None
            for _ in range(repeat):
                quiet = wait_until_quiet(wait_idle) if wait_idle > 0 else None
                bw = yardstick()
                t_stream = time_gemv(stream, t, rows, cols, n_copies, n_threads, min_time)
                t_hot = time_gemv(one, t, rows, cols, 1, n_threads, min_time)
                gbs, gbs_hot = one.nbytes / t_stream / 1e9, one.nbytes / t_hot / 1e9
                if best is None or gbs / bw > best["ratio_stream"]:
                    best = {"type": t.name, "rows": rows, "cols": cols, "weight_mb": one.nbytes / 1e6,
                            "bandwidth_gbs": bw, "us_stream": t_stream * 1e6, "gbs_stream": gbs,
                            "ratio_stream": gbs / bw, "us_hot": t_hot * 1e6, "gbs_hot": gbs_hot,
                            "ratio_hot": gbs_hot / bw, "target": TARGETS.get(t), "quiet": quiet}
            del stream
            rows_out.append(best)
    return rows_out


def dequant_case(t: GGMLType, n_out: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Random stored blocks of type t for ``n_out`` values, and the float32 output buffer."""
    nb = n_out // t.block_size
    return (rng.integers(0, 256, nb * t.type_size, dtype=np.uint8),
            np.empty(nb * t.block_size, np.float32))


def bench_dequant(n_threads: int, n_out: int = 1 << 22) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for t in _kernels.DEQUANTIZE_TYPES:
        raw, y = dequant_case(t, n_out, rng)
        dequant.dequantize_into(raw, int(t), t.block_size, t.type_size, y, n_threads)
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            dequant.dequantize_into(raw, int(t), t.block_size, t.type_size, y, n_threads)
            best = min(best, time.perf_counter() - t0)
        out.append({"type": t.name, "gbs_out": y.nbytes / best / 1e9})
    return out


PROMPT_SIZES = [(1536, 1536), (1536, 8960)]   # a 1.5B model's attention and FFN-down shapes


def bench_prompt(n_tokens: int, types, repeat: int) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for t in types:
        if int(t) not in matmul.tiled_types():
            continue
        for rows, cols in PROMPT_SIZES:
            raw = random_weight(t, rows, cols, rng)
            x = rng.standard_normal((n_tokens, cols), dtype=np.float32)
            y = np.empty((n_tokens, rows), np.float32)
            best = {True: math.inf, False: math.inf}
            for _ in range(repeat):
                for tiles in (False, True):
                    t0 = time.thread_time()
                    matmul._gemm_rows_into(raw, int(t), 0, rows, cols, x, y, tiles)
                    best[tiles] = min(best[tiles], time.thread_time() - t0)
            out.append({"type": t.name, "rows": rows, "cols": cols, "tokens": n_tokens,
                        "ms_single": best[False] * 1e3, "ms_tiles": best[True] * 1e3,
                        "speedup": best[False] / best[True]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=_kernels.default_num_threads())
    ap.add_argument("--quick", action="store_true", help="default-model sizes only, the types with targets")
    ap.add_argument("--types", default=None, metavar="T,...", help="only these weight types, e.g. Q3_K,IQ4_XS")
    ap.add_argument("--repeat", type=int, default=3, help="measurements per case; the best ratio is kept")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="before each measurement wait up to S seconds for other processes to go idle")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    ap.add_argument("--prompt", type=int, default=0, metavar="T",
                    help="only the T-token products: register tiles against the T = 1 products")
    args = ap.parse_args(argv)
    if args.prompt > 0:
        types = [GGMLType[n.strip().upper()] for n in args.types.split(",")] if args.types else TYPES
        load_before = os.getloadavg()
        rows = bench_prompt(args.prompt, types, args.repeat)
        load_after = os.getloadavg()
        if args.json:
            print(json.dumps({"loadavg_before": load_before, "loadavg_after": load_after, "prompt": rows},
                             indent=1))
            return 0
        print(f"{args.prompt}-token products, 1 thread, its CPU time; "
              f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
        print(f"{'type':7} {'rows x cols':>11} | {'T = 1 ms':>9} {'tiles ms':>9} {'speedup':>8}")
        for r in rows:
            print(f"{r['type']:7} {r['rows']:>5}x{r['cols']:<5} | {r['ms_single']:9.2f} {r['ms_tiles']:9.2f} "
                  f"{r['speedup']:7.2f}x")
        return 0
    sizes = SIZES[:3] if args.quick else SIZES
    types = list(TARGETS) if args.quick else TYPES
    if args.types:
        types = [GGMLType[n.strip().upper()] for n in args.types.split(",") if n.strip()]
    load_before = os.getloadavg()
    bw = memory_bandwidth(args.threads)
    products = bench_products(args.threads, sizes, types, 0.05 if args.quick else 0.1, args.repeat,
                              lambda: memory_bandwidth(args.threads, repeats=4), args.wait_idle)
    deq = bench_dequant(args.threads)
    result = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
              "simd": matmul.SIMD, "bandwidth_gbs": bw, "loadavg_before": load_before,
              "loadavg_after": os.getloadavg(), "products": products, "dequantize": deq}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"memory read bandwidth (numba prange sum, {STREAM_BYTES >> 20} MB, {args.threads} threads): {bw:.1f} GB/s; "
          f"load average {load_before[0]:.1f} before, {result['loadavg_after'][0]:.1f} after")
    print(f"{'type':6} {'rows x cols':>12} {'MB':>6} | {'bw GB/s':>7} | {'stream GB/s':>11} {'ratio':>6} | "
          f"{'hot GB/s':>8} {'ratio':>6} | target")
    for r in products:
        tgt = f">= {r['target']:.0%}" if r["target"] else ""
        ok = "" if not r["target"] else (" ok" if r["ratio_stream"] >= r["target"] else " MISS")
        ok += " (busy machine)" if r["quiet"] is False else ""
        print(f"{r['type']:6} {r['rows']:>5}x{r['cols']:<6} {r['weight_mb']:6.2f} | {r['bandwidth_gbs']:7.1f} | "
              f"{r['gbs_stream']:11.2f} {r['ratio_stream']:6.0%} | "
              f"{r['gbs_hot']:8.2f} {r['ratio_hot']:6.0%} | {tgt}{ok}")
    print("dequantise (GB/s of float32 output): "
          + ", ".join(f"{d['type']} {d['gbs_out']:.1f}" for d in deq))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
