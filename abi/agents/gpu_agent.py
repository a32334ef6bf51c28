"""The GPU-aware agent (the reference's ``abi.ai.GpuAgent``): runs AI requests on the
backend configuration a contextual bandit picks, and learns from each run's latency.

    agent = GpuAgent()
    r = agent.process(GpuRequest("Explain RAID 5", workload_type="inference",
                                 priority="high", max_tokens=128, memory_hint_mb=1024))
    r.content, r.gpu_backend_used, r.latency_ms, r.tokens, r.reward
    agent.get_gpu_stats()   # episodes, avg_episode_reward, backend_choices, exploration_rate

How a request is placed:
1. The backends that serve its workload type (found at start, ``backends_discovery``) and
   whose memory limit holds its memory hint; none left: InsufficientMemory. Among them,
   those whose free memory holds the hint now are preferred.
2. Each candidate gets a context vector (request and backend features, scaled by the
   priority weight); the workload type's LinUCB policy picks one. Higher priorities
   explore less (the bonus is divided by the weight): a critical request gets the
   configuration believed fastest.
3. The work runs there. Reward = -weight * latency in seconds (one-off model loading not
   counted); a failure costs ``failure_penalty_s`` more, running out of memory
   ``oom_penalty_s`` more, and the request moves to the next choice (``max_attempts``).
4. The policy and statistics are saved atomically to ``state_path`` after every episode
   and reloaded at start, so learning survives restarts.

Evidence (tests/test_gpu_agent.py): on the simulator of ``scheduler.simulator.demo_arms``,
where the best backend depends on prompt length, tokens and load, cumulative regret after
N = 1500 episodes stays under sqrt(N ln N) priority-weighted seconds (under 3% of what a
random choice loses) and the policy's choice is the best one (within 5%) in every context.

Requests run one at a time per agent: the configurations compete for the same cores, and
one run at a time keeps each latency a measurement of the configuration, not of contention.
"""
from __future__ import annotations

import enum
import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (AbiError, BackendUnavailable, ConfigError, ContextLengthExceeded,
                      GGUFError, InsufficientMemory, InvalidRequestError, ModelDownloadError,
                      ModelNotFoundError, SchedulingError, TokenizerError, UnsupportedModelError)
from .scheduler.features import FEATURES, context_vector
from .scheduler.state import load_state, save_state

log = logging.getLogger("abi.agents")

RECENT = 100  # episodes that exploration_rate and recent rewards look back over


class WorkloadType(str, enum.Enum):
    INFERENCE = "inference"
    TRAINING = "training"
    EMBEDDING = "embedding"
    FINE_TUNING = "fine_tuning"
    BATCH_INFERENCE = "batch_inference"


class Priority(str, enum.Enum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def weight(self) -> float:
        """How much a second of this request's latency counts in the reward."""
        return {"low": 0.5, "normal": 1.0, "high": 2.0, "critical": 4.0}[self.value]


def _enum(cls, value, what: str):
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).lower())
    except ValueError:
        raise ConfigError(f"{what} must be one of {', '.join(m.value for m in cls)}, "
                          f"got {value!r}", what) from None


@dataclass
class GpuRequest:
    """``max_tokens``: tokens to generate (inference), per line (batch_inference), samples
    (training), or prompt tokens to train on (fine_tuning). ``memory_hint_mb``: memory the
    work is expected to need; backends with less are not considered."""

    prompt: str
    workload_type: WorkloadType | str = WorkloadType.INFERENCE
    priority: Priority | str = Priority.NORMAL
    max_tokens: int = 256
    memory_hint_mb: float = 0.0

    def __post_init__(self):
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidRequestError("prompt must be a non-empty string")
        self.workload_type = _enum(WorkloadType, self.workload_type, "workload_type")
        self.priority = _enum(Priority, self.priority, "priority")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) \
                or self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}",
                              "max_tokens")
        hint = self.memory_hint_mb if self.memory_hint_mb is not None else 0.0
        if isinstance(hint, bool) or not isinstance(hint, (int, float)) or \
                not math.isfinite(hint) or hint < 0:
            raise ConfigError(f"memory_hint_mb must be a number >= 0, got {hint!r}",
                              "memory_hint_mb")
        self.memory_hint_mb = float(hint)


@dataclass
class GpuResponse:
    content: str
    gpu_backend_used: str
    latency_ms: float          # the whole request, one-off model loading included
    tokens: int
    reward: float
    workload_type: str = "inference"
    explored: bool = False     # chosen for its exploration bonus, not its predicted speed
    failed_backends: list[str] = field(default_factory=list)  # tried first, failed
    result: Any = field(default=None, repr=False)  # embedding array, training report, ...
    work_ms: float = 0.0       # the work alone: what the policy learns from and get_gpu_stats averages


@dataclass
class GpuStats:
    episodes: int
    avg_episode_reward: float
    backend_choices: dict[str, int]
    exploration_rate: float    # share of the last RECENT choices that were exploratory
    exploration_alpha: dict[str, float]  # each workload policy's current bonus coefficient
    failures: int
    oom_events: int
    episodes_per_workload: dict[str, int]
    avg_latency_ms: dict[str, float]      # per backend: its work in successful runs
    recent_avg_reward: float
    state_path: str | None


def default_state_path() -> Path:
    from .. import config

    explicit = config.env("ABI_GPU_AGENT_STATE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "abi" / "gpu_agent.json"


@dataclass
class GpuAgentConfig:
    state_path: str | os.PathLike | None = None   # None: $ABI_GPU_AGENT_STATE or ~/.cache/abi
    persist: bool = True                          # False: learn in memory only
    model: str | None = None                      # LLM (path or cache name); None: default
    embedding_model: str | None = None
    temperature: float = 0.7
    n_ctx: int = 4096
    alpha0: float = 1.0
    alpha_min: float = 0.05
    decay_episodes: float = 100.0
    discount: float = 0.995                       # < 1: keep following a changing machine
    ridge: float = 1.0
    failure_penalty_s: float = 10.0
    oom_penalty_s: float = 30.0
    max_attempts: int = 3


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    # numba's CudaAPIError carries the driver's code (2: CUDA_ERROR_OUT_OF_MEMORY); CuPy's
    # allocator raises OutOfMemoryError
    if name == "CudaAPIError":
        return getattr(exc, "code", None) == 2
    return name == "OutOfMemoryError"


# the caller's mistakes (or a model that cannot be opened): no backend would do better, so
# no episode is recorded and no other backend is tried
_REQUEST_ERRORS = (InvalidRequestError, ContextLengthExceeded, ConfigError, ModelNotFoundError,
                   ModelDownloadError, UnsupportedModelError, GGUFError, TokenizerError)


class GpuAgent:
    def __init__(self, config: GpuAgentConfig | None = None, *, executor=None, **options):
        if config is None:
            config = GpuAgentConfig(**options)
        elif options:
            import dataclasses

            config = dataclasses.replace(config, **options)
        if config.max_attempts < 1:
            raise ConfigError("max_attempts must be >= 1", "max_attempts")
        self.config = config
        if executor is None:
            from .gpu_workloads import LocalExecutor

            executor = LocalExecutor(model=config.model, embedding_model=config.embedding_model,
                                     temperature=config.temperature, n_ctx=config.n_ctx)
        self.executor = executor
        self.state_path = (Path(config.state_path) if config.state_path is not None
                           else default_state_path()) if config.persist else None
        self._policies: dict = {}
        self._lock = threading.RLock()        # policies and statistics
        self._run_lock = threading.Lock()     # one request runs at a time
        self._stats = {"episodes": 0, "reward_sum": 0.0, "choices": {}, "failures": 0,
                       "ooms": 0, "per_workload": {}, "latency_ms_sum": {}, "successes": {}}
        self._recent_explore: deque = deque(maxlen=RECENT)
        self._recent_reward: deque = deque(maxlen=RECENT)
        if self.state_path is not None:
            self._load()

    @property
    def backends(self):
        return list(self.executor.backends)

    # -- policy state --------------------------------------------------------------------------
    def _policy(self, workload: str):
        policy = self._policies.get(workload)
        if policy is None:
            from .scheduler.linucb import LinUCB

            c = self.config
            policy = self._policies[workload] = LinUCB(
                len(FEATURES), ridge=c.ridge, alpha0=c.alpha0, alpha_min=c.alpha_min,
                decay_episodes=c.decay_episodes, discount=c.discount)
        return policy

    def _load(self) -> None:
        state = load_state(self.state_path)
        if state is None:
            return
        if list(state.get("features", [])) != list(FEATURES):
            log.warning("GPU agent state %s was learned on other features; starting afresh",
                        self.state_path)
            return
        try:
            for workload, d in state["policies"].items():
                self._policy(_enum(WorkloadType, workload, "workload_type").value).load_dict(d)
            stats = state["stats"]
            for key in self._stats:
                self._stats[key] = type(self._stats[key])(stats[key])
            self._recent_explore.extend(bool(v) for v in state.get("recent_explore", []))
            self._recent_reward.extend(float(v) for v in state.get("recent_reward", []))
        except (KeyError, TypeError, ValueError, AbiError) as exc:
            raise SchedulingError(f"the GPU agent state {str(self.state_path)!r} is damaged "
                                  f"({exc}); delete it to start learning afresh") from None

    def save(self) -> None:
        """Write the learned state (done after every episode when persisting)."""
        if self.state_path is None:
            return
        with self._lock:
            self._save_locked()

    def _save_locked(self) -> None:
        save_state(self.state_path, {
            "features": list(FEATURES),
            "policies": {w: p.to_dict() for w, p in sorted(self._policies.items())},
            "stats": self._stats,
            "recent_explore": list(self._recent_explore),
            "recent_reward": list(self._recent_reward),
        })

    # -- scheduling ------------------------------------------------------------------------------
    def candidates(self, request: GpuRequest):
        """The backends that may run ``request``; raises when there are none."""
        workload = request.workload_type.value
        arms = self.executor.arms_for(workload)
        if not arms:
            raise BackendUnavailable(self.executor.unavailable_reason(workload))
        fits = [a for a in arms if request.memory_hint_mb <= a.memory_limit_mb]
        if not fits:
            biggest = max(arms, key=lambda a: a.memory_limit_mb)
            raise InsufficientMemory(
                f"memory hint of {request.memory_hint_mb:.0f} MB fits no backend for "
                f"{workload}: the largest is {biggest.name} with {biggest.memory_limit_mb} MB")
        return fits

    def _contexts(self, request: GpuRequest, arms) -> dict:
        readings = self.executor.observe(arms)
        roomy = [a for a in arms if request.memory_hint_mb <= readings[a.name].free_mb]
        w = request.priority.weight
        return {a.name: context_vector(
            len(request.prompt), request.max_tokens, request.memory_hint_mb,
            readings[a.name].load, 1.0 - readings[a.name].free_mb / max(1, a.memory_limit_mb), w)
            for a in (roomy or arms)}

    def _record(self, workload: str, arm: str, x, reward: float, explored: bool, *,
                latency_ms: float | None, oom: bool = False) -> None:
        with self._lock:
            self._record_locked(workload, arm, x, reward, explored, latency_ms, oom)

    def _record_locked(self, workload, arm, x, reward, explored, latency_ms, oom) -> None:
        s = self._stats
        self._policy(workload).update(arm, x, reward, track_noise=latency_ms is not None)
        s["episodes"] += 1
        s["reward_sum"] += reward
        s["choices"][arm] = s["choices"].get(arm, 0) + 1
        s["per_workload"][workload] = s["per_workload"].get(workload, 0) + 1
        if latency_ms is None:
            s["failures"] += 1
            s["ooms"] += int(oom)
        else:
            s["latency_ms_sum"][arm] = s["latency_ms_sum"].get(arm, 0.0) + latency_ms
            s["successes"][arm] = s["successes"].get(arm, 0) + 1
        self._recent_explore.append(explored)
        self._recent_reward.append(reward)
        try:
            self.save()
        except OSError as exc:  # learning goes on in memory; say why it is not kept
            log.warning("GPU agent: could not save state to %s: %s", self.state_path, exc)

    def process(self, request: GpuRequest | str, **fields) -> GpuResponse:
        """Run ``request`` (a GpuRequest, or a prompt with GpuRequest's fields as keywords)
        on the configuration the policy picks, learn from it, and return the response."""
        if not isinstance(request, GpuRequest):
            request = GpuRequest(request, **fields)
        elif fields:
            raise ConfigError("pass either a GpuRequest or a prompt with keywords, not both")
        workload = request.workload_type.value
        weight = request.priority.weight
        t_start = time.perf_counter()
        with self._run_lock:
            arms = {a.name: a for a in self.candidates(request)}
            failed: list[str] = []
            errors: list[str] = []
            failed_s = 0.0
            for _ in range(self.config.max_attempts):
                contexts = self._contexts(request, [a for n, a in arms.items() if n not in failed])
                if not contexts:
                    break
                with self._lock:
                    choice = self._policy(workload).select(contexts, explore_scale=1.0 / weight)
                x = contexts[choice.arm]
                t0 = time.perf_counter()
                try:
                    result = self.executor.run(request, arms[choice.arm])
                except _REQUEST_ERRORS:
                    raise
                except Exception as exc:
                    spent = getattr(exc, "simulated_s", None) or time.perf_counter() - t0
                    failed_s += spent
                    oom = _is_oom(exc)
                    penalty = self.config.oom_penalty_s if oom else self.config.failure_penalty_s
                    self._record(workload, choice.arm, x, -weight * (spent + penalty),
                                 choice.explored, latency_ms=None, oom=oom)
                    log.warning("GPU agent: %s failed on %s (%s: %s); trying another backend",
                                workload, choice.arm, type(exc).__name__, exc)
                    failed.append(choice.arm)
                    errors.append(f"{choice.arm}: {type(exc).__name__}: {exc}")
                    continue
                finally:
                    self.executor.finished()
                reward = -weight * result.work_s
                if result.simulated:  # the clock saw none of it: add up what was reported
                    latency_ms = (failed_s + result.setup_s + result.work_s) * 1000.0
                else:
                    latency_ms = (time.perf_counter() - t_start) * 1000.0
                self._record(workload, choice.arm, x, reward, choice.explored,
                             latency_ms=result.work_s * 1000.0)
                return GpuResponse(result.content, choice.arm, latency_ms, result.tokens, reward,
                                   workload, choice.explored, failed, result.result,
                                   work_ms=result.work_s * 1000.0)
            raise SchedulingError(f"{workload} request failed on every backend tried: "
                                  + "; ".join(errors))

    # -- statistics ------------------------------------------------------------------------------
    def get_gpu_stats(self) -> GpuStats:
        with self._lock:
            s = self._stats
            n = s["episodes"]
            return GpuStats(
                episodes=n,
                avg_episode_reward=s["reward_sum"] / n if n else 0.0,
                backend_choices=dict(sorted(s["choices"].items())),
                exploration_rate=(sum(self._recent_explore) / len(self._recent_explore)
                                  if self._recent_explore else 1.0),
                exploration_alpha={w: p.alpha() for w, p in sorted(self._policies.items())},
                failures=s["failures"],
                oom_events=s["ooms"],
                episodes_per_workload=dict(sorted(s["per_workload"].items())),
                avg_latency_ms={a: s["latency_ms_sum"][a] / s["successes"][a]
                                for a in sorted(s["successes"])},
                recent_avg_reward=(sum(self._recent_reward) / len(self._recent_reward)
                                   if self._recent_reward else 0.0),
                state_path=str(self.state_path) if self.state_path else None,
            )

    def greedy_choice(self, request: GpuRequest) -> str:
        """The configuration the policy believes fastest for ``request`` now (no exploration,
        nothing run)."""
        contexts = self._contexts(request, self.candidates(request))
        with self._lock:
            return self._policy(request.workload_type.value).select(contexts, 0.0).arm
