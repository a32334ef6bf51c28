"""Where the time of batched decoding goes, without HTTP: N concurrent generations on an
``Engine`` with N slots (N = 1 runs the single-stream path, no batcher), greedy and with
the default sampling, each ``--max-tokens`` long.

Per N it prints the aggregate tokens/s, the batcher's steps and tokens per step, the share
of the wall time the stepping thread spends in the compiled forward (the rest: waiting for
members to sample and queue their next token), and the CPU time per token of the
generations' own threads (sampling, penalties, detokenising, stop strings; with one stream
there is no batcher and that thread runs the forward too). Then, one
thread, the compiled step alone: CPU per token with and without the output layer (the
products and attention of the layers, and the 49152-row output product, apart).

    python tools/profile_batch.py [--streams 1,4,8] [--threads 2] [--max-tokens 128]

Speed claims are ratios in the same run; state the load average (printed) with them.
For the compiled part's own split, run ``perf record`` on this script.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

TOPICS = ["the sea", "cats", "mountains", "the moon", "bread", "rivers", "trains", "music"]


def generations(engine, n: int, max_tokens: int, temperature: float) -> dict:
    model, batcher = engine.model, engine.batcher
    forward_s = [0.0]
    inner = model.forward_many

    def timed_forward_many(parts):
        t = time.perf_counter()
        try:
            return inner(parts)
        finally:
            forward_s[0] += time.perf_counter() - t

    model.forward_many = timed_forward_many
    tokens, cpu = [0] * n, [0.0] * n

    def run(i: int) -> None:
        c = time.thread_time()
        prompt = model.chat_tokens([{"role": "user", "content": f"Write a long story about {TOPICS[i % 8]}."}])
        response = engine.create_streaming_response(prompt, slot=i, max_tokens=max_tokens,
                                                    temperature=temperature, seed=i, stop_tokens=[])
        tokens[i] = sum(1 for _ in response)
        cpu[i] = time.thread_time() - c

    try:
        run(0)   # warm-up: the first forward allocates its scratch
        steps0 = batcher.steps if batcher else 0
        forward_s[0] = 0.0
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        del model.forward_many
    total = sum(tokens)
    out = {"streams": n, "temperature": temperature, "tokens": total, "wall_s": wall,
           "aggregate_tok_s": total / wall, "python_cpu_ms_per_token": 1000 * sum(cpu) / total}
    if batcher is not None:
        steps = batcher.steps - steps0
        out.update(steps=steps, tokens_per_step=total / max(steps, 1),
                   forward_share=forward_s[0] / wall, step_ms=1000 * forward_s[0] / max(steps, 1))
    return out


def compiled_steps(model, n: int, reps: int = 20) -> dict:
    """CPU ms per token of one compiled step of n decode tokens (one thread), with the
    output layer and without."""
    dec = model._decoder()
    rng = np.random.default_rng(0)
    caches = [model.new_cache() for _ in range(n)]
    for c in caches:
        dec.forward(rng.integers(0, model.n_vocab, 100).tolist(), c, "none", 1)
    out = {}
    for output in ("last", "none"):
        times = []
        for _ in range(reps):
            parts = [([int(rng.integers(0, model.n_vocab))], c, output) for c in caches]
            t = time.process_time()
            dec.forward_many(parts, 1)
            times.append(time.process_time() - t)
        out[output] = 1000 * float(np.median(times)) / n
        for c in caches:
            c.truncate(100)
    return {"streams": n, "cpu_ms_per_token": out["last"],
            "output_layer_ms_per_token": out["last"] - out["none"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--streams", default="1,4,8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=1024)
    p.add_argument("--max-tokens", type=int, default=128)
    args = p.parse_args(argv)
    from abi.llm import Engine

    print(f"load average {os.getloadavg()[0]:.1f} at the start")
    for n in [int(x) for x in args.streams.split(",")]:
        engine = Engine(n_slots=n, n_ctx=args.ctx, n_threads=args.threads).load_model(args.model)
        try:
            for temperature in (0.0, 0.7):
                r = generations(engine, n, args.max_tokens, temperature)
                line = (f"{n} streams, temperature {temperature}: {r['aggregate_tok_s']:6.1f} tok/s, "
                        f"generation threads' CPU {r['python_cpu_ms_per_token']:.2f} ms/token"
                        + (" (forward included)" if engine.batcher is None else ""))
                if "steps" in r:
                    line += (f", {r['steps']} steps of {r['tokens_per_step']:.2f} tokens, "
                             f"{r['step_ms']:.1f} ms each, forward {100 * r['forward_share']:.0f}% of the wall")
                print(line, flush=True)
            c = compiled_steps(engine.model, n)
            print(f"{n} streams, compiled step alone (1 thread): {c['cpu_ms_per_token']:.2f} CPU ms/token, "
                  f"of which the output layer {c['output_layer_ms_per_token']:.2f}", flush=True)
        finally:
            engine.close()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
