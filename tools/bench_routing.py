"""Cost of one routing decision (embedding + policy and query classifiers + sentiment +
rules) for a 30-word request: p50 and p99 over many runs, each on a new text so that the
embedding cache does not answer.

    python tools/bench_routing.py [--n 300] [--threads 2] [--lexical]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

TEXT = ("Could you explain how the Raft consensus algorithm elects a new leader when the "
        "network partitions and two nodes both believe they are the leader, in request number "
        "{i}, please?")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--threads", type=int, default=2, help="ABI_NUM_THREADS for the encoder")
    p.add_argument("--lexical", action="store_true", help="the fallback without embeddings")
    args = p.parse_args(argv)
    os.environ["ABI_NUM_THREADS"] = str(args.threads)

    import numpy as np

    from abi.personas import MultiPersonaConfig, MultiPersonaSystem

    system = MultiPersonaSystem(MultiPersonaConfig(
        backend="echo", embedding_model="lexical" if args.lexical else None))
    for i in range(20):   # warm-up
        system.route(TEXT.format(i=-i - 1))
    times = []
    cpu = time.process_time()
    for i in range(args.n):
        t = time.perf_counter()
        system.route(TEXT.format(i=i))
        times.append((time.perf_counter() - t) * 1000.0)
    cpu = (time.process_time() - cpu) * 1000.0 / args.n
    words = len(TEXT.format(i=0).split())
    p50, p99 = np.percentile(times, [50, 99])
    # CPU time (all threads) tells a change's effect on a machine too busy for wall times
    print(f"{system.router.policy.model.kind} routing, {words}-word request, "
          f"{args.threads} threads, n={args.n}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
          f"CPU {cpu:.2f} ms per decision, load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
