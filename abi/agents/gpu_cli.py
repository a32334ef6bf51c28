"""``python -m abi agent --gpu-aware`` and ``--gpu-stats``: the GPU-aware agent from the
command line (the options are parsed by abi.agents.cli)."""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

from abi.errors import AbiError


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("GPU-aware agent")
    g.add_argument("--gpu-aware", action="store_true",
                   help="run the message on the backend the learned scheduler picks; print "
                        "the answer, the backend used and the latency")
    g.add_argument("--gpu-stats", action="store_true",
                   help="print the GPU-aware agent's learning statistics and exit")
    g.add_argument("--workload", default="inference",
                   choices=("inference", "training", "embedding", "fine_tuning",
                            "batch_inference"), help="workload type (default inference)")
    g.add_argument("--priority", default="normal", choices=("low", "normal", "high", "critical"))
    g.add_argument("--memory-hint-mb", type=float, default=0.0,
                   help="memory the work needs; backends with less are not used")
    g.add_argument("--gpu-state", help="the scheduler's state file (default: "
                                       "$ABI_GPU_AGENT_STATE or ~/.cache/abi/gpu_agent.json)")


def _agent(args):
    from abi.agents.gpu_agent import GpuAgent

    return GpuAgent(state_path=args.gpu_state, model=args.model, temperature=args.temperature)


def print_stats(agent, out: TextIO) -> None:
    s = agent.get_gpu_stats()
    out.write(f"state file: {s.state_path or '(not saved)'}\n")
    out.write(f"episodes: {s.episodes}\n")
    out.write(f"avg episode reward: {s.avg_episode_reward:.4f} "
              f"(last {min(s.episodes, 100)}: {s.recent_avg_reward:.4f})\n")
    out.write(f"exploration rate: {s.exploration_rate:.1%} of the last {min(s.episodes, 100)} "
              "choices\n")
    if s.exploration_alpha:
        out.write("exploration coefficient: " + ", ".join(
            f"{w} {a:.3f}" for w, a in s.exploration_alpha.items()) + "\n")
    out.write(f"failures: {s.failures} (out of memory: {s.oom_events})\n")
    if s.episodes_per_workload:
        out.write("episodes per workload: " + ", ".join(
            f"{w} {n}" for w, n in s.episodes_per_workload.items()) + "\n")
    out.write("backend choices:\n")
    for name in sorted(set(s.backend_choices) | {b.name for b in agent.backends}):
        lat = s.avg_latency_ms.get(name)
        here = any(b.name == name for b in agent.backends)
        out.write(f"  {name:<14} {s.backend_choices.get(name, 0):>6} choices"
                  + (f", avg work {lat:.1f} ms (model loading excluded)" if lat is not None else "")
                  + ("" if here else "  (not on this machine)") + "\n")


def _run_one(agent, args, text: str, out: TextIO) -> None:
    from abi.agents.gpu_agent import GpuRequest

    r = agent.process(GpuRequest(text, workload_type=args.workload, priority=args.priority,
                                 max_tokens=args.max_tokens, memory_hint_mb=args.memory_hint_mb))
    out.write(r.content + "\n")
    # latency counts one-off model loading; work is what --gpu-stats averages
    out.write(f"[backend: {r.gpu_backend_used}  latency: {r.latency_ms:.1f} ms (work "
              f"{r.work_ms:.1f} ms)  tokens: "
              f"{r.tokens}  reward: {r.reward:.4f}" + ("  (exploring)" if r.explored else "")
              + "]\n")
    out.flush()


def main(args, stdin: TextIO | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    agent = _agent(args)
    if args.gpu_stats and not args.gpu_aware:
        print_stats(agent, out)
        return 0
    if args.message is not None:
        _run_one(agent, args, stdin.read() if args.message == "-" else args.message, out)
    else:  # one request a line
        for line in stdin:
            if line.strip():
                try:
                    _run_one(agent, args, line.strip(), out)
                except AbiError as exc:  # say what failed and take the next line
                    err.write(f"abi: error: {exc}\n")
    if args.gpu_stats:
        print_stats(agent, out)
    return 0
