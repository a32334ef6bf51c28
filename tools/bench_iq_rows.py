"""One-thread row kernels of the lattice and ternary types, rows in cache, next to llama.cpp's.

    python tools/bench_iq_rows.py [--types IQ1_S,...] [--baseline REV] [--ggml-lib DIR --ggml-include DIR]

Compiles the C of abi/_kernels/_qdot_iq.pxd (with _half.pxd and _qdot.pxd, as the Cython
build emits it, -O3 -march=native) into a small C program that first checks every SIMD block
sum against the scalar kernel's integer on 65536 random blocks, then times rows of 16 blocks
(256 rows, in L2) as the best of 4000 passes: ns per block of 256 weights. Best-of-many short
passes reads the same on a loaded machine as on a quiet one, unlike the streamed ratios of
tools/bench_kernels.py. --baseline REV times the kernels of a git revision alongside (A/B in
one run). With --ggml-lib (the folder of libggml-cpu.so, e.g. llama.cpp's
build/bin) and --ggml-include (ggml/include of the same sources) it times ggml-cpu's vec_dot
on the same blocks in the same run. Needs gcc.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name, block bytes, offset of the f16 scale (-1: IQ1_M's scale spread over nibbles), ggml type id
TYPES = {"IQ2_XXS": (66, 0, 16), "IQ2_XS": (74, 0, 17), "IQ2_S": (82, 0, 22), "IQ3_XXS": (98, 0, 18),
         "IQ3_S": (110, 0, 21), "IQ1_S": (50, 0, 19), "IQ1_M": (56, -1, 29), "TQ1_0": (54, 52, 34),
         "TQ2_0": (66, 64, 35)}

COMMON = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static uint64_t rs = 88172645463325252ULL;
static uint64_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return rs; }
/* random blocks with a small f16 scale, and Q8_K activations with q in -127..127 and bsums */
static uint8_t* weights(size_t nblk, int ws, int f16) {
    uint8_t* w = malloc(nblk * ws);
    for (size_t i = 0; i < nblk * ws; ++i) w[i] = (uint8_t)rnd();
    for (size_t b = 0; b < nblk; ++b) { uint8_t* p = w + b * ws;
        if (f16 >= 0) { p[f16] = 0x19; p[f16 + 1] = 0x14; }
        else { p[49] = (p[49] & 0x0f) | 0x90; p[51] = (p[51] & 0x0f) | 0x10; p[53] = (p[53] & 0x0f) | 0x40; p[55] = (p[55] & 0x0f) | 0x10; } }
    return w;
}
static uint8_t* activations(int nb) {
    uint8_t* x = malloc((size_t)nb * 292);
    for (int b = 0; b < nb; ++b) { uint8_t* p = x + 292 * b; float d = 0.01f; memcpy(p, &d, 4); int8_t* q = (int8_t*)(p + 4);
        for (int i = 0; i < 256; ++i) q[i] = (int8_t)((int)(rnd() % 255) - 127);
        for (int j = 0; j < 16; ++j) { int16_t s = 0; for (int i = 0; i < 16; ++i) s += q[16 * j + i]; memcpy(p + 260 + 2 * j, &s, 2); } }
    return x;
}
#define NB 16
#define ROWS 256
"""

ABI_MAIN = r"""
#define CHECK(name, ws, f16) do { \
    uint8_t* w = weights(65536, ws, f16); uint8_t* x = activations(NB); long bad = 0; \
    for (size_t b = 0; b < 65536; ++b) { int l[8]; __m256i v = abi_iqv_##name(w + b * ws, x + 292 * (b % NB)); memcpy(l, &v, 32); \
        int s = 0; for (int k = 0; k < 8; ++k) s += l[k]; if (s != abi_iqb_##name##_scalar(w + b * ws, x + 292 * (b % NB))) ++bad; } \
    float y[ROWS]; double best = 1e9; \
    for (int r = 0; r < 4000; ++r) { double t = now(); \
        for (int i = 0; i < ROWS; ++i) y[i] = abi_dot_##name##_simd(w + (size_t)i * NB * ws, x, NB); \
        double d = now() - t; if (d < best) best = d; } \
    printf("abi %s %.2f %ld %g\n", #name, best / (ROWS * NB) * 1e9, bad, (double)y[0]); free(w); free(x); } while (0)
int main(int argc, char** argv) {
    for (int a = 1; a < argc; ++a) {
        const char* n = argv[a];
%CASES%
    }
    return 0;
}
"""

GGML_MAIN = r"""
#include "ggml.h"
#include "ggml-cpu.h"
int main(int argc, char** argv) {
    ggml_cpu_init();
    for (int a = 1; a < argc; a += 4) {
        const char* n = argv[a]; int ws = atoi(argv[a + 1]), f16 = atoi(argv[a + 2]), t = atoi(argv[a + 3]);
        uint8_t* w = weights((size_t)ROWS * NB, ws, f16); uint8_t* x = activations(NB);
        ggml_vec_dot_t dot = ggml_get_type_traits_cpu((enum ggml_type)t)->vec_dot;
        float y[ROWS]; double best = 1e9;
        for (int r = 0; r < 4000; ++r) { double t0 = now();
            for (int i = 0; i < ROWS; ++i) dot(256 * NB, y + i, 0, w + (size_t)i * NB * ws, 0, x, 0, 1);
            double d = now() - t0; if (d < best) best = d; }
        printf("ggml %s %.2f 0 %g\n", n, best / (ROWS * NB) * 1e9, (double)y[0]); free(w); free(x);
    }
    return 0;
}
"""


def source(rel: str, rev: str | None) -> str:
    """A file of this checkout, or of git revision ``rev``."""
    if rev is None:
        return (ROOT / rel).read_text()
    return run(["git", "-C", str(ROOT), "show", f"{rev}:{rel}"])


def kernel_c(rev: str | None = None) -> str:
    """The inline C of the three .pxd files, in cimport order."""
    parts = ["#include <stddef.h>\ntypedef ptrdiff_t Py_ssize_t;\n"]
    for f in ("_half.pxd", "_qdot.pxd", "_qdot_iq.pxd"):
        text = source(f"abi/_kernels/{f}", rev)
        for m in re.finditer(r'cdef extern from \*:\n    """\n(.*?)\n    """', text, re.S):
            c = m.group(1).replace("\\\\", "\\")
            parts.append("\n".join(line[4:] if line.startswith("    ") else line for line in c.split("\n")))
    return "\n".join(parts)


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(TYPES), metavar="T,...")
    ap.add_argument("--baseline", default=None, metavar="REV", help="also time the kernels of this git revision")
    ap.add_argument("--ggml-lib", default=None, metavar="DIR", help="folder of libggml-cpu.so / libggml-base.so")
    ap.add_argument("--ggml-include", default=None, metavar="DIR", help="ggml/include of the same sources")
    args = ap.parse_args(argv)
    types = [n.strip().upper() for n in args.types.split(",") if n.strip()]
    unknown = [n for n in types if n not in TYPES]
    if unknown:
        ap.error(f"no row kernel here for {', '.join(unknown)} (choose from {', '.join(TYPES)})")
    results: dict[str, dict[str, tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases = "\n".join(f'        if (!strcmp(n, "{n}")) CHECK({n.lower()}, {TYPES[n][0]}, {TYPES[n][1]});' for n in TYPES)
        lines = []
        for who, rev in [("abi", None)] + ([("base", args.baseline)] if args.baseline else []):
            inc = Path(tmp) / who
            inc.mkdir()
            (inc / "iq_tables.h").write_text(source("abi/_kernels/iq_tables.h", rev))
            (inc / "rows.c").write_text(kernel_c(rev) + COMMON + ABI_MAIN.replace("%CASES%", cases))
            exe = str(inc / "rows")
            run(["gcc", "-O3", "-march=native", "-fno-math-errno", f"-I{inc}", str(inc / "rows.c"), "-o", exe, "-lm"])
            lines += [line.replace("abi ", who + " ", 1) for line in run([exe, *types]).splitlines()]
        if args.ggml_lib and args.ggml_include:
            gsrc = Path(tmp) / "ggml_rows.c"
            gsrc.write_text(COMMON + GGML_MAIN)
            gexe = str(Path(tmp) / "ggml_rows")
            run(["gcc", "-O2", f"-I{args.ggml_include}", str(gsrc), "-o", gexe, f"-L{args.ggml_lib}",
                 "-lggml-cpu", "-lggml-base", f"-Wl,-rpath,{os.path.abspath(args.ggml_lib)}"])
            gargs = [str(v) for n in types for v in (n, *TYPES[n])]
            lines += run([gexe, *gargs]).splitlines()
    for line in lines:
        who, name, ns, bad, _ = line.split()
        results.setdefault(name.upper(), {})[who] = (float(ns), int(bad))
    load = os.getloadavg()
    print(f"ns per block of 256 weights, one thread, rows in cache (best of 4000 passes); load average {load[0]:.1f}")
    print(f"{'type':8} {'abi':>7} {'base':>7} {'ggml':>7}  block sums vs scalar")
    failed = False
    for n in types:
        r = results.get(n, {})
        abi_ns, bad = r.get("abi", (float("nan"), -1))
        base, g = (f"{r[k][0]:7.2f}" if k in r else f"{'-':>7}" for k in ("base", "ggml"))
        failed |= bad != 0 or r.get("base", (0, 0))[1] != 0
        print(f"{n:8} {abi_ns:7.2f} {base} {g}  {'exact' if bad == 0 else f'{bad} MISMATCHES'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
