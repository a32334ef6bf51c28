"""Health of persona backends: each endpoint keeps a bounded window of recent call outcomes
and a count of consecutive failures; from these it is healthy, degraded or unhealthy.

An endpoint that failed ``failure_threshold`` times in a row is unhealthy (its circuit is
open) for ``cooldown_s``; after that one call may try it again (half-open): success closes
the circuit, failure opens it for another cooldown. ``HealthChecker.report()`` sums this up
per persona and overall.
"""
from __future__ import annotations

import enum
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from abi.personas.config import HealthConfig


class HealthStatus(str, enum.Enum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    def __str__(self) -> str:
        return self.value


_RANK = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNHEALTHY: 2}
MIN_SAMPLES = 5   # error rates over fewer calls say too little to act on


@dataclass
class Outcome:
    ok: bool
    latency_ms: float
    at: float


class EndpointHealth:
    """The health record of one endpoint. ``clock`` is injectable for tests."""

    def __init__(self, name: str, config: HealthConfig | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.config = config or HealthConfig()
        self.clock = clock
        self._lock = threading.Lock()
        self.window: deque[Outcome] = deque(maxlen=self.config.window)
        self.consecutive_failures = 0
        self.opened_at: float | None = None     # when the circuit opened
        self.last_error: str | None = None
        self.total = 0

    def record(self, ok: bool, latency_ms: float, error: str | None = None) -> None:
        with self._lock:
            now = self.clock()
            self.total += 1
            self.window.append(Outcome(bool(ok), float(latency_ms), now))
            if ok:
                self.consecutive_failures = 0
                self.opened_at = None
            else:
                self.consecutive_failures += 1
                self.last_error = error
                if self.consecutive_failures >= self.config.failure_threshold:
                    self.opened_at = now

    def error_rate(self) -> float:
        with self._lock:
            w = list(self.window)
        return sum(not o.ok for o in w) / len(w) if w else 0.0

    def mean_latency_ms(self) -> float:
        with self._lock:
            w = [o.latency_ms for o in self.window if o.ok]
        return sum(w) / len(w) if w else 0.0

    def circuit_open(self) -> bool:
        """True while the endpoint rests after repeated failures."""
        with self._lock:
            return self.opened_at is not None and \
                self.clock() - self.opened_at < self.config.cooldown_s

    def available(self) -> bool:
        """May a call go to this endpoint now (closed or half-open circuit)?"""
        return not self.circuit_open()

    def status(self) -> HealthStatus:
        cfg = self.config
        if self.circuit_open():
            return HealthStatus.UNHEALTHY
        with self._lock:
            n = len(self.window)
            failing = self.consecutive_failures >= cfg.failure_threshold
        rate = self.error_rate()
        if n >= MIN_SAMPLES and rate >= cfg.unhealthy_error_rate:
            return HealthStatus.UNHEALTHY
        if failing or (n >= MIN_SAMPLES and rate >= cfg.degraded_error_rate) or \
                self.mean_latency_ms() > cfg.slow_latency_ms:
            return HealthStatus.DEGRADED  # failing: half-open, one call may try it
        return HealthStatus.HEALTHY

    def score(self) -> float:
        """A load-balancing factor in [0, 1]: 0 while the circuit is open, lower with
        more recent errors."""
        if self.circuit_open():
            return 0.0
        status = self.status()
        base = {HealthStatus.HEALTHY: 1.0, HealthStatus.DEGRADED: 0.5,
                HealthStatus.UNHEALTHY: 0.1}[status]
        return base * (1.0 - 0.9 * self.error_rate())

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status().value,
                "error_rate": round(self.error_rate(), 4),
                "mean_latency_ms": round(self.mean_latency_ms(), 3),
                "consecutive_failures": self.consecutive_failures,
                "circuit_open": self.circuit_open(), "calls": self.total,
                "last_error": self.last_error}


def worst(statuses) -> HealthStatus:
    return max(statuses, key=_RANK.get, default=HealthStatus.HEALTHY)


class HealthChecker:
    """Endpoint health records grouped by persona."""

    def __init__(self, config: HealthConfig | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config or HealthConfig()
        self.clock = clock
        self.endpoints: dict[str, list[EndpointHealth]] = {}
        self._records: dict[str, EndpointHealth] = {}

    def register(self, persona: str, name: str) -> EndpointHealth:
        """The record of endpoint ``name`` (one per name, shared by the personas that use
        it), listed under ``persona``."""
        h = self._records.get(name)
        if h is None:
            h = self._records[name] = EndpointHealth(name, self.config, self.clock)
        listed = self.endpoints.setdefault(persona, [])
        if h not in listed:
            listed.append(h)
        return h

    def persona_status(self, persona: str) -> HealthStatus:
        """Unhealthy when no endpoint can take a call, degraded when some are not healthy."""
        records = self.endpoints.get(persona, [])
        if not records:
            return HealthStatus.HEALTHY
        statuses = [h.status() for h in records]
        if all(s is HealthStatus.UNHEALTHY for s in statuses):
            return HealthStatus.UNHEALTHY
        return HealthStatus.HEALTHY if all(s is HealthStatus.HEALTHY for s in statuses) \
            else HealthStatus.DEGRADED

    def report(self) -> dict:
        personas = {p: {"status": self.persona_status(p).value,
                        "endpoints": [h.to_dict() for h in hs]}
                    for p, hs in self.endpoints.items()}
        overall = worst(HealthStatus(v["status"]) for v in personas.values())
        return {"status": overall.value, "personas": personas}
