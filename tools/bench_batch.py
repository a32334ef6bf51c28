"""Items/s of ``python -m abi batch embed`` on N short sentences: the local path (one process,
every core) against a local Ray cluster with two workers of one CPU each, in one run on one
machine, and Ray's overhead against the local path. Both jobs run end to end through
``run_job`` (input read, model loads, shards written); the Ray cluster itself is started
before the clock (its start-up is printed apart). The outputs are checked equal.

    python tools/bench_batch.py [-n 10000] [--model all-minilm-l6-v2] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SUBJECTS = ["the cat", "a dog", "my neighbour", "the old sailor", "a small robot", "the teacher",
            "our team", "the river", "a tired student", "the market"]
VERBS = ["watches", "finds", "carries", "paints", "forgets", "follows", "repairs", "sells"]
OBJECTS = ["a red ball", "the morning news", "an empty box", "the last train", "a quiet song",
           "three green apples", "the broken gate", "a paper map", "the winter coat"]


def sentences(n: int) -> list[str]:
    """``n`` distinct short sentences (6 to 12 tokens), the same for every run."""
    rng = np.random.default_rng(0)
    return [f"{SUBJECTS[rng.integers(len(SUBJECTS))]} {VERBS[rng.integers(len(VERBS))]} "
            f"{OBJECTS[rng.integers(len(OBJECTS))]} on day {i}." for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=10_000, help="sentences")
    p.add_argument("--model", default=None, help="embedding model (default: all-MiniLM-L6-v2)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import ray

    from abi.batch import JobSpec, RayOptions, read_results, run_job

    spec = JobSpec("embed", "text", model=args.model)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "sentences.txt"
        src.write_text("\n".join(sentences(args.n)) + "\n", encoding="utf-8")
        local = run_job(spec, src, Path(tmp) / "local.parquet", progress=False)
        t = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t
        try:
            on_ray = run_job(spec, src, Path(tmp) / "ray.parquet", progress=False,
                             ray=RayOptions(workers=args.workers, cpus_per_worker=1))
        finally:
            ray.shutdown()
        a, b = read_results(local.out), read_results(on_ray.out)
        assert [r["row"] for r in a] == [r["row"] for r in b] == list(range(args.n))
        diff = float(np.abs(np.array([r["embedding"] for r in a], np.float32)
                            - np.array([r["embedding"] for r in b], np.float32)).max())
    result = {"n": args.n, "model": a[0]["model"], "local_s": local.seconds,
              "local_items_per_s": local.items_per_second, "ray_workers": args.workers,
              "ray_cluster_start_s": ray_start, "ray_s": on_ray.seconds,
              "ray_items_per_s": on_ray.items_per_second,
              "ray_overhead": on_ray.seconds / local.seconds - 1, "max_abs_diff": diff}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.n} sentences, {result['model']}\n"
              f"local            {local.seconds:7.1f} s  {local.items_per_second:8.1f} items/s\n"
              f"ray ({args.workers} workers)  {on_ray.seconds:7.1f} s  "
              f"{on_ray.items_per_second:8.1f} items/s  (+ {ray_start:.1f} s cluster start)\n"
              f"ray overhead     {100 * result['ray_overhead']:+.0f} %   max |diff| {diff:.2e}",
              file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
