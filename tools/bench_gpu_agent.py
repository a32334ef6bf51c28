"""Does the GPU-aware agent learn the faster configuration on this machine?

For each workload type asked for, a fresh agent (its own temporary state file) serves
``--episodes`` requests of varied size; then every configuration is timed directly on a
fixed request, the configurations taking turns ``--repeats`` times (so a change in the
machine's load falls on all of them). The report shows, per workload: the measured median
time of each configuration, the agent's choices over the run and over its last half, the
configuration its policy now prefers for the fixed request, and the share of its choices
that went to the fastest configuration in the first and the last half of the run.

    python tools/bench_gpu_agent.py [--workloads inference,embedding,training]
                                    [--episodes 40] [--repeats 3] [--json out.json]

On a shared machine the fastest configuration depends on what else runs: that is the point.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from abi.agents import GpuAgent, GpuRequest  # noqa: E402
from abi.agents.backends_discovery import CpuLoadMeter  # noqa: E402

WORDS = ("the river flows past old stone bridges while traders count their coins and children "
         "chase gulls along the harbour wall where fishing boats wait for the evening tide "
         "and the lighthouse keeper writes his log by a small lamp").split()
TIE = 1.2  # timings this close are within the noise of a shared machine
QUESTIONS = ["Name three primary colours.", "What does a compiler do?",
             "Give one tip for sleeping well.", "Why is the sea salty?",
             "Summarise this in one sentence: ", "Translate to French: good morning, friends."]


def make_request(workload: str, rng: random.Random, fixed: bool = False) -> GpuRequest:
    n_words = 40 if fixed else rng.choice((5, 20, 60, 150))
    text = " ".join(rng.choice(WORDS) for _ in range(n_words))
    if workload == "inference":
        prompt = QUESTIONS[0] if fixed else (
            rng.choice(QUESTIONS) + (text if rng.random() < 0.5 else ""))
        return GpuRequest(prompt, "inference", max_tokens=16 if fixed else rng.choice((8, 16, 24)))
    if workload == "batch_inference":
        lines = "\n".join(rng.choice(QUESTIONS) for _ in range(2 if fixed else rng.choice((2, 3))))
        return GpuRequest(lines, "batch_inference", max_tokens=8)
    if workload == "embedding":
        lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(8)]
        return GpuRequest("\n".join(lines[:8 if fixed else rng.choice((1, 4, 8))]), "embedding")
    if workload == "training":
        samples = 2048 if fixed else rng.choice((512, 2048, 8192))
        return GpuRequest("train", "training", max_tokens=samples)
    if workload == "fine_tuning":
        return GpuRequest(text + " " + text, "fine_tuning", max_tokens=32)
    raise SystemExit(f"unknown workload {workload!r}")


def bench_workload(workload: str, episodes: int, repeats: int, model, seed: int) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        agent = GpuAgent(model=model, state_path=Path(tmp) / "state.json", temperature=0.0)
        arms = [b for b in agent.backends if b.serves(workload)]
        # warm every configuration once (model loading is not what is compared)
        for b in arms:
            agent.executor.run(make_request(workload, rng, fixed=True), b)
        run = []
        for i in range(episodes):
            r = agent.process(make_request(workload, rng))
            # normal priority: the reward is minus the work time in seconds
            run.append({"backend": r.gpu_backend_used, "work_ms": -r.reward * 1000,
                        "latency_ms": r.latency_ms, "explored": r.explored})
            print(f"  {workload} {i + 1:>3}/{episodes}: {r.gpu_backend_used:<12} "
                  f"{r.latency_ms:9.1f} ms{'  (exploring)' if r.explored else ''}",
                  file=sys.stderr, flush=True)
        fixed = make_request(workload, random.Random(seed + 1), fixed=True)
        preferred = agent.greedy_choice(fixed)
        times = {b.name: [] for b in arms}
        meter = CpuLoadMeter()
        loads = []
        for _ in range(repeats):
            for b in arms:
                loads.append(meter.load())
                times[b.name].append(agent.executor.run(fixed, b).work_s * 1000)
                meter.snapshot()
        stats = agent.get_gpu_stats()
    median = {n: statistics.median(v) for n, v in times.items()}
    fastest = min(median, key=median.get)
    # configurations within TIE of the fastest are not told apart by this timing (noise)
    fast_set = {n for n, ms in median.items() if ms <= TIE * median[fastest]}
    half = len(run) // 2
    on_fast = lambda part: sum(e["backend"] in fast_set for e in part) / max(1, len(part))
    return {
        "workload": workload, "episodes": episodes, "median_ms": median, "fastest": fastest,
        "preferred_after_learning": preferred,
        "fast_set": sorted(fast_set),
        "preferred_is_fast": preferred in fast_set,
        "preferred_ms_vs_fastest": median[preferred] / median[fastest],
        "choices": {n: sum(e["backend"] == n for e in run) for n in median},
        "last_half_choices": {n: sum(e["backend"] == n for e in run[half:]) for n in median},
        "first_half_on_fast": on_fast(run[:half]),
        "last_half_on_fast": on_fast(run[half:]),
        "mean_work_ms": {n: statistics.mean([e["work_ms"] for e in run if e["backend"] == n] or [0])
                         for n in median},
        "exploration_rate": stats.exploration_rate,
        "mean_cpu_load_by_others": statistics.mean(loads) if loads else None,
    }


def report(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r['workload']} ({r['episodes']} episodes; others' CPU load during "
                     f"timing {r['mean_cpu_load_by_others']:.2f})")
        lines.append(f"  {'configuration':<14}{'median ms':>11}{'choices':>9}{'last half':>11}")
        for n, ms in sorted(r["median_ms"].items(), key=lambda kv: kv[1]):
            mark = " <- fastest" if n == r["fastest"] else (" (tie)" if n in r["fast_set"] else "")
            mark += " <- agent prefers" if n == r["preferred_after_learning"] else ""
            lines.append(f"  {n:<14}{ms:>11.1f}{r['choices'][n]:>9}"
                         f"{r['last_half_choices'][n]:>11}{mark}")
        lines.append(f"  choices on the fastest (or a tie): first half "
                     f"{r['first_half_on_fast']:.0%}, last half {r['last_half_on_fast']:.0%}; "
                     f"learned the fastest: {'yes' if r['preferred_is_fast'] else 'no'} (its "
                     f"preference is {r['preferred_ms_vs_fastest']:.2f}x the fastest; within "
                     f"{TIE:.2f}x counts as a tie)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="inference,embedding,training")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", help="LLM path or cache name (default: the default model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    results = [bench_workload(w.strip(), args.episodes, args.repeats, args.model, args.seed)
               for w in args.workloads.split(",") if w.strip()]
    print(report(results))
    print(f"(total {time.perf_counter() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
