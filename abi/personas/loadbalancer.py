"""Health-weighted load balancing across a persona's backend endpoints.

Selection is smooth weighted round-robin (each pick adds every endpoint's effective weight
to its running score and takes the highest, which then pays back the total), so over time
each endpoint gets calls in proportion to ``weight * health score``; endpoints whose circuit
is open get none. A failed call is recorded against its endpoint and retried on the next
one; errors that are the request's own fault (too long, invalid) are raised at once and
count against no endpoint.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from abi.errors import AbiError, ConfigError, ContextLengthExceeded, GenerationFailed, \
    InvalidRequestError
from abi.personas.health import EndpointHealth

T = TypeVar("T")
_CALLER_ERRORS = (InvalidRequestError, ContextLengthExceeded, ConfigError)


@dataclass
class Endpoint:
    name: str
    backend: Any            # an abi.agents backend: complete(messages, params) -> str
    weight: float
    health: EndpointHealth
    current: float = 0.0    # smooth round-robin running score

    def effective_weight(self) -> float:
        return self.weight * self.health.score()


class LoadBalancer:
    def __init__(self, endpoints: list[Endpoint]):
        if not endpoints:
            raise ValueError("a load balancer needs at least one endpoint")
        self.endpoints = list(endpoints)
        self._lock = threading.Lock()

    def select(self, exclude: set[str] = frozenset()) -> Endpoint | None:
        """The next endpoint to call, or None when every one is excluded. When all the
        candidates rest (open circuits), the one that failed longest ago is tried."""
        with self._lock:
            candidates = [e for e in self.endpoints if e.name not in exclude]
            if not candidates:
                return None
            weighted = [(e, e.effective_weight()) for e in candidates]
            total = sum(w for _, w in weighted)
            if total <= 0:
                return min(candidates, key=lambda e: e.health.opened_at or 0.0)
            for e, w in weighted:
                e.current += w
            best = max(weighted, key=lambda ew: ew[0].current)[0]
            best.current -= total
            return best

    def call(self, fn: Callable[[Endpoint], T]) -> tuple[T, Endpoint]:
        """``fn(endpoint)`` on a selected endpoint, failing over to the others; the result
        and the endpoint that produced it. Raises the last endpoint's error when all fail."""
        tried: set[str] = set()
        last: BaseException | None = None
        while True:
            endpoint = self.select(tried)
            if endpoint is None:
                break
            tried.add(endpoint.name)
            start = time.perf_counter()
            try:
                result = fn(endpoint)
            except _CALLER_ERRORS:
                raise
            except Exception as exc:
                elapsed = (time.perf_counter() - start) * 1000.0
                endpoint.health.record(False, elapsed, f"{type(exc).__name__}: {exc}")
                last = exc
                continue
            endpoint.health.record(True, (time.perf_counter() - start) * 1000.0)
            return result, endpoint
        if isinstance(last, AbiError):
            raise last
        raise GenerationFailed(f"every backend endpoint failed; last error: "
                               f"{type(last).__name__}: {last}") from last
