"""Where the time of batched decoding goes, without HTTP: N concurrent generations on an
``Engine`` with N slots (N = 1 runs the single-stream path, no batcher), greedy and with
the default sampling, each ``--max-tokens`` long.

Per N it prints the aggregate tokens/s, the batcher's steps and tokens per step (and the
wall ms per token of the steps without prompt chunks: against the compiled step's 1-thread
CPU ms per token below, the second thread's speed-up), the share
of the wall time spent in the compiled forward (the rest: waiting for members to sample and
queue their next token), and the process's CPU time per token outside the forward
(sampling, penalties, detokenising, stop strings, the hand-offs between the scheduler's
threads and the batcher's). Then, one thread, the compiled step alone: CPU per token with and
without the output layer (the products and attention of the layers, and the 49152-row output
product, apart).

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
    # the generations' threads sample and queue while the forward's threads wait, so the
    # process's CPU time outside the forward is theirs (the scheduler's job threads do it,
    # not the threads reading the streams)
    forward_s, forward_cpu = [0.0], [0.0]
    decode_steps = []   # (seconds, tokens) of the batched steps that held no prompt chunk
    name = "forward_many" if batcher is not None else "forward"
    inner = getattr(model, name)

    def timed(*args, **kwargs):
        t, c = time.perf_counter(), time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            forward_s[0] += time.perf_counter() - t
            forward_cpu[0] += time.process_time() - c
            if name == "forward_many" and all(len(ids) == 1 for ids, _, _ in args[0]):
                decode_steps.append((time.perf_counter() - t, len(args[0])))

    setattr(model, name, timed)
    tokens = [0] * n

    def run(i: int) -> None:
        prompt = model.chat_tokens([{"role": "user", "content": f"Write a long story about {TOPICS[i % 8]}."}])
        response = engine.create_streaming_response(prompt, slot=i, max_tokens=max_tokens,
                                                    temperature=temperature, seed=i, stop_tokens=[])
        tokens[i] = sum(1 for _ in response)

    try:
        run(0)   # warm-up: the first forward allocates its scratch
        steps0 = batcher.steps if batcher else 0
        forward_s[0] = forward_cpu[0] = 0.0
        decode_steps.clear()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        t0, c0 = time.perf_counter(), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        delattr(model, name)
    total = sum(tokens)
    out = {"streams": n, "temperature": temperature, "tokens": total, "wall_s": wall,
           "aggregate_tok_s": total / wall, "forward_share": forward_s[0] / wall,
           "other_cpu_ms_per_token": 1000 * (cpu - forward_cpu[0]) / total}
    if batcher is not None:
        steps = batcher.steps - steps0
        out.update(steps=steps, tokens_per_step=total / max(steps, 1),
                   step_ms=1000 * forward_s[0] / max(steps, 1),
                   decode_ms_per_token=1000 * sum(s for s, _ in decode_steps) / max(sum(n for _, n in decode_steps), 1))
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
                        f"CPU outside the forward {r['other_cpu_ms_per_token']:.2f} ms/token, "
                        f"forward {100 * r['forward_share']:.0f}% of the wall")
                if "steps" in r:
                    line += (f", {r['steps']} steps of {r['tokens_per_step']:.2f} tokens, {r['step_ms']:.1f} ms each"
                             f" (decode-only steps: {r['decode_ms_per_token']:.2f} ms/token)")
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
