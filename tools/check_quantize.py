"""Compare ``python -m abi quantize`` with llama.cpp's llama-quantize on one model.

    python tools/check_quantize.py [--model M.gguf] [--bin /work/llamacpp/build/bin]
                                   [--types Q4_K_M Q8_0 ...] [--text FILE ...] [--work DIR]

The common source is the model dequantised to F32 by us (a quantised model has no
full-precision original at hand). Each type is then quantised by both tools, and the script
checks that every tensor gets the same type (llama.cpp's mixture rules), counts the tensors
whose bytes are identical, and runs ``llama-perplexity -c 256`` on both files (which also
shows that llama.cpp loads ours). Prints a table; exits 1 if a mixture differs or our
perplexity is more than 1 % above llama-quantize's.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from abi.gguf.reader import GGUFFile  # noqa: E402
from abi.quantize import FILE_TYPES, quantize_model  # noqa: E402

DEFAULT_MODEL = os.path.expanduser("~/.cache/abi/models/smollm2-135m-instruct.gguf")
DEFAULT_TYPES = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "Q8_0", "Q4_0", "Q5_1"]


def _env(bin_dir: str) -> dict:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = bin_dir + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    return env


def llama_quantize(bin_dir: str, src: str, dst: str, qtype: str) -> None:
    subprocess.run([os.path.join(bin_dir, "llama-quantize"), src, dst, qtype, "2"],
                   check=True, env=_env(bin_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def perplexity(bin_dir: str, model: str, text: str, ctx: int, threads: int) -> float:
    p = subprocess.run([os.path.join(bin_dir, "llama-perplexity"), "-m", model, "-f", text,
                        "-c", str(ctx), "-t", str(threads)],
                       env=_env(bin_dir), capture_output=True, text=True)
    hit = re.search(r"Final estimate: PPL = ([0-9.]+)", p.stdout + p.stderr)
    if p.returncode != 0 or not hit:
        raise RuntimeError(f"llama-perplexity failed on {model}:\n{(p.stdout + p.stderr)[-2000:]}")
    return float(hit.group(1))


def compare(ours: str, theirs: str) -> tuple[list[str], int, int]:
    """(tensors whose type differs, tensors with identical bytes, tensor count)."""
    a, b = GGUFFile(ours), GGUFFile(theirs)
    if set(a.tensors) != set(b.tensors):
        return sorted(set(a.tensors) ^ set(b.tensors)), 0, len(a.tensors)
    diff, same = [], 0
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        if ta.ggml_type != tb.ggml_type:
            diff.append(f"{name}: ours {ta.ggml_type.name}, llama.cpp {tb.ggml_type.name}")
        elif (a.tensor_data(name) == b.tensor_data(name)).all():
            same += 1
    return diff, same, len(a.tensors)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--bin", default="/work/llamacpp/build/bin")
    ap.add_argument("--types", nargs="+", default=DEFAULT_TYPES, choices=list(FILE_TYPES))
    ap.add_argument("--text", nargs="+", default=None,
                    help="text files joined for perplexity (default: README.md + tools/*.py docs)")
    ap.add_argument("--work", default="/tmp/abi-check-quantize")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    os.makedirs(a.work, exist_ok=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    texts = a.text or [os.path.join(root, "README.md")]
    text = os.path.join(a.work, "text.txt")
    with open(text, "w") as out:
        for path in texts:
            with open(path, encoding="utf-8", errors="replace") as fh:
                out.write(fh.read() + "\n")

    src = os.path.join(a.work, "src-f32.gguf")
    if not os.path.exists(src):
        quantize_model(a.model, src, "F32", allow_requantize=True, progress=False)
    rows, failed = [], False
    ppl_src = perplexity(a.bin, src, text, a.ctx, a.threads)
    print(f"  source F32: PPL {ppl_src:.4f}", file=sys.stderr, flush=True)
    for qtype in a.types:
        ours, theirs = (os.path.join(a.work, f"{who}-{qtype}.gguf") for who in ("abi", "llama"))
        quantize_model(src, ours, qtype, progress=False)
        llama_quantize(a.bin, src, theirs, qtype)
        diff, same, n = compare(ours, theirs)
        p_ours = perplexity(a.bin, ours, text, a.ctx, a.threads)
        p_theirs = perplexity(a.bin, theirs, text, a.ctx, a.threads)
        rel = (p_ours / p_theirs - 1) * 100
        ok = not diff and rel <= 1.0
        failed |= not ok
        rows.append((qtype, p_ours, p_theirs, rel, "same" if not diff else f"{len(diff)} differ",
                     f"{same}/{n}", os.path.getsize(ours), os.path.getsize(theirs), ok))
        for line in diff[:10]:
            print("  type mismatch:", line, file=sys.stderr)
        print(f"  {qtype}: PPL abi {p_ours:.4f}, llama {p_theirs:.4f}", file=sys.stderr, flush=True)

    print(f"source F32 (dequantised {os.path.basename(a.model)}): PPL {ppl_src:.4f}  "
          f"(llama-perplexity -c {a.ctx}, {', '.join(os.path.basename(t) for t in texts)})")
    print(f"{'type':<8} {'PPL abi':>10} {'PPL llama':>10} {'diff %':>7} {'mixture':>10} "
          f"{'bytes equal':>12} {'size abi':>10} {'size llama':>10}")
    for qtype, po, pt, rel, mix, same, so, st, ok in rows:
        print(f"{qtype:<8} {po:>10.4f} {pt:>10.4f} {rel:>+7.3f} {mix:>10} {same:>12} "
              f"{so / 2**20:>9.2f}M {st / 2**20:>9.2f}M{'' if ok else '  <-- FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
