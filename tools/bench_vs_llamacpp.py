"""abi against llama.cpp on the same GGUF, measured in one run on this machine.

Each measurement runs in a fresh process (so load time and peak RSS are whole-process
figures), alternating abi and llama.cpp, and the median of the repetitions is reported:

- decode tok/s: 128 greedy tokens after a short prompt
- prefill tok/s: a prompt of --n-prompt tokens (512 by default)
- load-to-first-token: from process start (before importing the runtime) to the first
  generated token of a short prompt
- peak RSS: the whole process after loading, generating the 128 tokens and the prefill
  (its KV cache: llama.cpp's default f16 over the whole context; abi's --kv-dtype, f32 by
  default as in the library, over the positions used). Each side prefills in the cache it
  generated in, emptied first: llama.cpp's context, the abi engine's slot (a cache of its
  own would hold the engine's beside it until the engine, a reference cycle with its
  scheduler, is collected)

abi's modules are byte-compiled first, as pip does at install (with PYTHONDONTWRITEBYTECODE
set, as in some shells, every process would otherwise compile them from source: ~50 ms).

llama.cpp runs through llama-cpp-python in the Python named by ABI_LLAMACPP_PYTHON (a
development tool built from its PyPI source; see README). Both use the same thread count.

    python tools/bench_vs_llamacpp.py [--model M] [--threads 2] [--reps 3] [--n-prompt 512]
                                      [--kv-dtype f32|f16|q8_0] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Once upon a time, in a small village by the sea, there lived"

ABI_SCRIPT = r"""
import json, resource, sys, time
t0 = time.perf_counter()
cfg = json.loads(sys.argv[1])
sys.path[:0] = [cfg["root"], cfg["root"] + "/tools"]
import abi.llm
import bench_vs_llamacpp as tool
model = abi.llm.load_model(cfg["model"], n_ctx=cfg["n_ctx"], n_threads=cfg["threads"],
                           kv_dtype=cfg["kv_dtype"])
engine = abi.llm.Engine.from_model(model)
stats, first = tool.abi_decode(model, cfg["prompt"], cfg["n_gen"], t0, engine)
prefill = tool.abi_prefill_tps(model, cfg["prefill_ids"], engine.slots[0].cache)
print(json.dumps({"first_token_s": first, "decode_tps": stats.tokens_per_second(),
                  "prefill_tps": prefill, "n_decoded": stats.tokens_generated,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

LLAMACPP_SCRIPT = r"""
import json, resource, sys, time
t0 = time.perf_counter()
cfg = json.loads(sys.argv[1])
from llama_cpp import Llama
llm = Llama(model_path=cfg["model"], n_ctx=cfg["n_ctx"], n_batch=512, n_threads=cfg["threads"],
            n_threads_batch=cfg["threads"], verbose=False)
ids = llm.tokenize(cfg["prompt"].encode(), add_bos=True)
gen = llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True)
next(gen)
first = time.perf_counter() - t0
t = time.perf_counter()
n = 0
for _ in range(cfg["n_gen"] - 1):
    next(gen)
    n += 1
decode = n / (time.perf_counter() - t)
llm.reset()
t = time.perf_counter()
llm.eval(cfg["prefill_ids"])
prefill = len(cfg["prefill_ids"]) / (time.perf_counter() - t)
print(json.dumps({"first_token_s": first, "decode_tps": decode, "prefill_tps": prefill,
                  "n_decoded": n + 1,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def prompt_ids(token_types, n: int) -> list[int]:
    """``n`` ids of normal tokens (type 1), the same on every run: the prefill prompt."""
    import numpy as np

    normal = [i for i, t in enumerate(token_types) if t == 1]
    return [int(i) for i in np.random.default_rng(0).choice(normal, size=n)]


def abi_decode(model, prompt: str, n_gen: int, t0: float | None = None, engine=None):
    """Greedy generation of ``n_gen`` tokens through ``engine``'s stream (default: a new
    engine of ``model``): its StreamingStats, and the seconds from ``t0`` (a perf_counter
    reading; default: now) to the first token."""
    import time

    import abi.llm

    t0 = time.perf_counter() if t0 is None else t0
    engine = abi.llm.Engine.from_model(model) if engine is None else engine
    resp = engine.create_streaming_response(prompt, max_tokens=n_gen, temperature=0.0,
                                            repetition_penalty=1.0)
    first = None
    for event in resp:
        if first is None:
            first = time.perf_counter() - t0
    return resp.get_stats(), first


def abi_prefill_tps(model, ids: list[int], cache=None) -> float:
    """Tokens per second of one forward over ``ids`` from an empty cache: ``cache`` emptied
    (as llama.cpp's context is reset), or a new one."""
    import time

    if cache is None:
        cache = model.new_cache()
    cache.clear()
    t = time.perf_counter()
    model.forward(ids, cache)
    return len(ids) / (time.perf_counter() - t)


def _run(python: str, script: str, cfg: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]), ABI_NUM_THREADS=str(cfg["threads"]),
               OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([python, "-c", script, json.dumps(cfg)], capture_output=True, text=True,
                          env=env, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="GGUF path or name (default model)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--n-gen", type=int, default=128)
    p.add_argument("--n-prompt", type=int, default=512)
    p.add_argument("--kv-dtype", default="f32", choices=("f32", "f16", "q8_0"),
                   help="abi's KV cache type (llama.cpp keeps its default, f16)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import compileall

    compileall.compile_dir(str(ROOT / "abi"), quiet=1)
    from abi.gguf import load
    from abi.models_hub import resolve_model

    llama_python = os.environ.get("ABI_LLAMACPP_PYTHON")
    if not llama_python:
        raise SystemExit("set ABI_LLAMACPP_PYTHON to a Python with llama-cpp-python installed")
    model = str(resolve_model(args.model))
    ids = prompt_ids(load(model).metadata.get("tokenizer.ggml.token_type") or [], args.n_prompt)
    cfg = {"model": model, "threads": args.threads, "prompt": PROMPT, "n_gen": args.n_gen,
           "prefill_ids": ids, "root": str(ROOT), "kv_dtype": args.kv_dtype,
           "n_ctx": max(1024, args.n_prompt + 64)}   # room for the longest prompt
    runs = {"abi": [], "llama.cpp": []}
    for _ in range(args.reps):
        runs["llama.cpp"].append(_run(llama_python, LLAMACPP_SCRIPT, cfg))
        runs["abi"].append(_run(sys.executable, ABI_SCRIPT, cfg))
    keys = ("decode_tps", "prefill_tps", "first_token_s", "rss_mib")
    med = {who: {k: statistics.median(r[k] for r in rs) for k in keys} for who, rs in runs.items()}
    ratios = {
        "decode": med["abi"]["decode_tps"] / med["llama.cpp"]["decode_tps"],
        "prefill": med["abi"]["prefill_tps"] / med["llama.cpp"]["prefill_tps"],
        "load_to_first_token": med["abi"]["first_token_s"] / med["llama.cpp"]["first_token_s"],
        "peak_rss": med["abi"]["rss_mib"] / med["llama.cpp"]["rss_mib"],
    }
    result = {"model": model, "threads": args.threads, "reps": args.reps, "kv_dtype": args.kv_dtype,
              "median": med,
              "ratios": ratios, "runs": runs}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"model {model}, {args.threads} threads, median of {args.reps} runs each; KV cache: "
          f"abi {args.kv_dtype}, llama.cpp f16\n")
    print(f"{'':24}{'abi':>12}{'llama.cpp':>12}{'ratio':>9}  target")
    rows = [("decode tok/s", "decode_tps", "decode", ">= 0.5 (aim > 1)"),
            (f"prefill tok/s ({args.n_prompt})", "prefill_tps", "prefill", ">= 0.8"),
            ("load-to-first-token s", "first_token_s", "load_to_first_token", "<= 2"),
            ("peak RSS MiB", "rss_mib", "peak_rss", "<= 1.1")]
    for label, key, ratio, target in rows:
        print(f"{label:24}{med['abi'][key]:12.2f}{med['llama.cpp'][key]:12.2f}{ratios[ratio]:9.2f}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
