"""Simulated backends with known latency models, for testing the scheduler: the true
expected latency of every choice is known, so regret (what a choice lost against the best
one) can be measured exactly.

An arm's latency for prompt length c (thousands of characters), work budget k (thousands of
tokens) and machine load L in [0, 1] is

    (base_s + prefill_s * c + per_ktoken_s * k) * (1 + load_sensitivity * L)

times lognormal noise of relative size ``noise``: a model the agent's features express
exactly, so LinUCB's regret bound applies. Arms can also fail at random, or run out of
memory above a memory hint.

Stated bound (checked in tests/test_gpu_agent.py, seeds 0-2): with ``demo_arms``, contexts
drawn log-uniformly (20-4000 characters, 4-512 tokens), load uniform in [0, 1] and random
priorities, GpuAgent's cumulative regret after N = 1500 episodes is <= 1.0 * sqrt(N ln N).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..backends_discovery import BackendSpec
from ..gpu_workloads import BackendReading, RunResult


class SimulatedFailure(RuntimeError):
    """A simulated backend crash."""


@dataclass(frozen=True)
class SimArm:
    spec: BackendSpec
    base_s: float
    prefill_s: float        # seconds per thousand prompt characters
    per_ktoken_s: float     # seconds per thousand tokens of work
    load_sensitivity: float = 0.0
    fail_prob: float = 0.0
    oom_above_mb: float | None = None  # a memory hint above this runs out of memory


class SimulatedBackends:
    """An executor for GpuAgent whose work is simulated: nothing sleeps, ``run`` returns the
    drawn latency. ``load`` is drawn uniformly from ``load_range`` for every decision."""

    def __init__(self, arms: list[SimArm], *, seed: int = 0, noise: float = 0.05,
                 load_range: tuple[float, float] = (0.0, 1.0)):
        self.arms = {a.spec.name: a for a in arms}
        self.backends = [a.spec for a in arms]
        self.rng = np.random.default_rng(seed)
        self.noise = noise
        self.load_range = load_range
        self.current_load = 0.0
        self.runs: list[str] = []

    def arms_for(self, workload: str) -> list[BackendSpec]:
        return [b for b in self.backends if b.serves(workload)]

    def unavailable_reason(self, workload: str) -> str:
        return f"no simulated backend runs {workload} workloads"

    def observe(self, backends) -> dict[str, BackendReading]:
        self.current_load = float(self.rng.uniform(*self.load_range))
        return {b.name: BackendReading(self.current_load, b.memory_limit_mb) for b in backends}

    def finished(self) -> None:
        pass

    def expected_latency(self, name: str, prompt_chars: int, max_tokens: int,
                         load: float) -> float:
        a = self.arms[name]
        c, k = prompt_chars / 1000.0, max_tokens / 1000.0
        return (a.base_s + a.prefill_s * c + a.per_ktoken_s * k) * (1 + a.load_sensitivity * load)

    def best_arm(self, workload: str, prompt_chars: int, max_tokens: int, load: float,
                 memory_hint_mb: float = 0.0) -> str:
        names = [b.name for b in self.arms_for(workload) if memory_hint_mb <= b.memory_limit_mb]
        return min(names, key=lambda n: self.expected_latency(n, prompt_chars, max_tokens, load))

    def run(self, request, backend: BackendSpec) -> RunResult:
        a = self.arms[backend.name]
        self.runs.append(backend.name)
        mean = self.expected_latency(backend.name, len(request.prompt), request.max_tokens,
                                     self.current_load)
        latency = mean * math.exp(self.noise * self.rng.standard_normal() - self.noise ** 2 / 2)
        if a.oom_above_mb is not None and (request.memory_hint_mb or 0) > a.oom_above_mb:
            exc = MemoryError(f"simulated: {backend.name} ran out of memory")
            exc.simulated_s = latency / 2  # it got halfway
            raise exc
        if a.fail_prob and self.rng.random() < a.fail_prob:
            exc = SimulatedFailure(f"simulated: {backend.name} crashed")
            exc.simulated_s = latency / 2
            raise exc
        return RunResult(f"[{backend.name}] {request.prompt[:20]}", request.max_tokens, latency,
                         simulated=True)


def demo_arms(workloads=("inference",)) -> list[SimArm]:
    """Three backends whose best choice depends on the context: a one-thread CPU (steady under
    load), a two-thread CPU (fastest when idle, slowed by load), and a GPU with a high fixed
    cost but fast per token, and only 8 GiB of memory."""
    w = tuple(workloads)
    return [
        SimArm(BackendSpec("cpu:1t", "cpu", 1, None, 16384, w), 0.05, 0.40, 20.0, 0.3),
        SimArm(BackendSpec("cpu:2t", "cpu", 2, None, 16384, w), 0.06, 0.25, 11.0, 3.0),
        SimArm(BackendSpec("cuda:0", "cuda", None, None, 8192, w), 0.60, 0.05, 2.0, 0.0),
    ]
