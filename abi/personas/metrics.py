"""Per-persona metrics: requests, successes, failures, blocks, and latency percentiles
from a streaming quantile estimator (P-squared: five markers per quantile, O(1) memory
whatever the number of requests), plus a bounded window of recent outcomes for error
rates that forget old failures.

``get_stats(persona)`` and ``get_latency_percentiles(persona)`` are the reference's
``getStats`` and ``getLatencyPercentiles``; both give None for a persona with no requests.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from abi.personas.types import Persona


class P2Quantile:
    """Streaming estimate of the ``q``-quantile (Jain & Chlamtac's P-squared algorithm).

    Five markers track the minimum, the q/2, q and (1+q)/2 quantiles and the maximum; each
    new value moves marker counts, and markers whose position drifts from its desired
    position by a whole step are adjusted by piecewise-parabolic interpolation. Exact for
    the first five values.
    """

    __slots__ = ("q", "_heights", "_pos", "_desired", "_step", "count")

    def __init__(self, q: float):
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {q}")
        self.q = q
        self._heights: list[float] = []
        self._pos = [0.0, 1.0, 2.0, 3.0, 4.0]
        self._desired = [0.0, 2 * q, 4 * q, 2 + 2 * q, 4.0]
        self._step = [0.0, q / 2, q, (1 + q) / 2, 1.0]
        self.count = 0

    def add(self, x: float) -> None:
        x = float(x)
        self.count += 1
        h = self._heights
        if len(h) < 5:
            h.append(x)
            h.sort()
            return
        if x < h[0]:
            h[0] = x
            k = 0
        elif x >= h[4]:
            h[4] = max(h[4], x)
            k = 3
        else:
            k = next(i for i in range(4) if h[i] <= x < h[i + 1])
        pos = self._pos
        for i in range(k + 1, 5):
            pos[i] += 1
        for i in range(5):
            self._desired[i] += self._step[i]
        for i in (1, 2, 3):
            d = self._desired[i] - pos[i]
            if (d >= 1 and pos[i + 1] - pos[i] > 1) or (d <= -1 and pos[i - 1] - pos[i] < -1):
                s = 1.0 if d > 0 else -1.0
                new = self._parabolic(i, s)
                if not h[i - 1] < new < h[i + 1]:
                    new = self._linear(i, s)
                h[i] = new
                pos[i] += s

    def _parabolic(self, i: int, s: float) -> float:
        h, n = self._heights, self._pos
        return h[i] + s / (n[i + 1] - n[i - 1]) * (
            (n[i] - n[i - 1] + s) * (h[i + 1] - h[i]) / (n[i + 1] - n[i])
            + (n[i + 1] - n[i] - s) * (h[i] - h[i - 1]) / (n[i] - n[i - 1]))

    def _linear(self, i: int, s: float) -> float:
        h, n = self._heights, self._pos
        j = i + int(s)
        return h[i] + s * (h[j] - h[i]) / (n[j] - n[i])

    def value(self) -> float | None:
        """The estimate (None before any value); exact while there are five or fewer."""
        h = self._heights
        if not h:
            return None
        if self.count <= 5:
            # the same interpolation numpy's default percentile uses
            rank = self.q * (len(h) - 1)
            lo = int(math.floor(rank))
            hi = min(lo + 1, len(h) - 1)
            return h[lo] + (h[hi] - h[lo]) * (rank - lo)
        return h[2]


@dataclass
class PersonaStats:
    total_requests: int
    successful_requests: int
    failed_requests: int
    blocked_requests: int
    success_rate: float
    recent_error_rate: float
    avg_latency_ms: float
    min_latency_ms: float
    max_latency_ms: float
    avg_confidence: float
    last_request_at: float | None

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class LatencyPercentiles:
    p50: float
    p90: float
    p99: float
    count: int

    def to_dict(self) -> dict:
        return {"p50": round(self.p50, 3), "p90": round(self.p90, 3), "p99": round(self.p99, 3),
                "count": self.count}


class PersonaMetrics:
    """One persona's counters, latency estimators and recent-outcome window."""

    QUANTILES = (0.5, 0.9, 0.99)

    def __init__(self, window: int = 100):
        self.total = self.ok = self.failed = self.blocked = 0
        self.latency_sum = 0.0
        self.latency_min = math.inf
        self.latency_max = 0.0
        self.confidence_sum = 0.0
        self.last_at: float | None = None
        self.quantiles = {q: P2Quantile(q) for q in self.QUANTILES}
        self.recent: deque[bool] = deque(maxlen=window)   # True: success

    def record(self, latency_ms: float, success: bool, blocked: bool, confidence: float) -> None:
        self.total += 1
        self.ok += success
        self.failed += not success
        self.blocked += blocked
        self.latency_sum += latency_ms
        self.latency_min = min(self.latency_min, latency_ms)
        self.latency_max = max(self.latency_max, latency_ms)
        self.confidence_sum += confidence
        self.last_at = time.time()
        for est in self.quantiles.values():
            est.add(latency_ms)
        self.recent.append(success)

    def error_rate(self) -> float:
        return 1.0 - sum(self.recent) / len(self.recent) if self.recent else 0.0

    def stats(self) -> PersonaStats:
        n = self.total
        return PersonaStats(
            total_requests=n, successful_requests=self.ok, failed_requests=self.failed,
            blocked_requests=self.blocked, success_rate=self.ok / n if n else 0.0,
            recent_error_rate=self.error_rate(), avg_latency_ms=self.latency_sum / n if n else 0.0,
            min_latency_ms=self.latency_min if n else 0.0, max_latency_ms=self.latency_max,
            avg_confidence=self.confidence_sum / n if n else 0.0, last_request_at=self.last_at)

    def percentiles(self) -> LatencyPercentiles:
        v = {q: est.value() or 0.0 for q, est in self.quantiles.items()}
        return LatencyPercentiles(v[0.5], v[0.9], v[0.99], self.total)


class MetricsCollector:
    """Metrics of every persona, thread-safe; also counts routing outcomes."""

    def __init__(self, window: int = 100):
        self._window = window
        self._lock = threading.Lock()
        self._personas: dict[Persona, PersonaMetrics] = {}
        self.routed: dict[str, int] = {}
        self.fallbacks = 0
        self.forced = 0

    def record(self, persona: Persona | str, latency_ms: float, success: bool = True, *,
               blocked: bool = False, confidence: float = 0.0) -> None:
        persona = Persona.parse(persona)
        if not isinstance(latency_ms, (int, float)) or math.isnan(latency_ms) or latency_ms < 0:
            raise ValueError(f"latency_ms must be a non-negative number, got {latency_ms!r}")
        with self._lock:
            m = self._personas.get(persona)
            if m is None:
                m = self._personas[persona] = PersonaMetrics(self._window)
            m.record(float(latency_ms), bool(success), bool(blocked), float(confidence))

    def record_routing(self, persona: Persona, *, fallback: bool = False,
                       forced: bool = False) -> None:
        with self._lock:
            self.routed[persona.value] = self.routed.get(persona.value, 0) + 1
            self.fallbacks += fallback
            self.forced += forced

    def get_stats(self, persona: Persona | str) -> PersonaStats | None:
        with self._lock:
            m = self._personas.get(Persona.parse(persona))
            return m.stats() if m else None

    def get_latency_percentiles(self, persona: Persona | str) -> LatencyPercentiles | None:
        with self._lock:
            m = self._personas.get(Persona.parse(persona))
            return m.percentiles() if m else None

    def alert_values(self, persona: Persona) -> dict[str, float] | None:
        """What alert rules read: error_rate (recent window), latency_p50/p90/p99_ms,
        requests."""
        with self._lock:
            m = self._personas.get(persona)
            if m is None:
                return None
            p = m.percentiles()
            return {"error_rate": m.error_rate(), "latency_p50_ms": p.p50,
                    "latency_p90_ms": p.p90, "latency_p99_ms": p.p99, "requests": m.total,
                    "recent_requests": len(m.recent)}

    def snapshot(self) -> dict:
        """Every persona's stats and latency percentiles (zeros where none), for the API."""
        out = {}
        for persona in Persona:
            stats, lat = self.get_stats(persona), self.get_latency_percentiles(persona)
            out[persona.value] = {
                **(stats.to_dict() if stats else PersonaMetrics().stats().to_dict()),
                "latency_ms": (lat or LatencyPercentiles(0.0, 0.0, 0.0, 0)).to_dict()}
        with self._lock:
            routing = {"routed": dict(self.routed), "fallbacks": self.fallbacks,
                       "forced": self.forced}
        return {"personas": out, "routing": routing}

    def reset(self) -> None:
        with self._lock:
            self._personas.clear()
            self.routed.clear()
            self.fallbacks = self.forced = 0
