"""Operations: streaming quantiles and metrics, health records, load balancing, alert
rules with hysteresis, and bounded session state."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from abi.errors import ConfigError, ContextLengthExceeded, GenerationFailed, Timeout
from abi.personas.alerts import AlertManager, AlertRule, AlertState
from abi.personas.config import HealthConfig
from abi.personas.health import EndpointHealth, HealthChecker, HealthStatus
from abi.personas.loadbalancer import Endpoint, LoadBalancer
from abi.personas.metrics import MetricsCollector, P2Quantile
from abi.personas.sessions import SessionStore
from abi.personas.types import Persona


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


# --- quantiles and metrics ------------------------------------------------------------


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_p2_matches_numpy_on_skewed_latencies(q):
    rng = np.random.default_rng(1)
    xs = rng.lognormal(mean=5.0, sigma=0.6, size=20_000)
    est = P2Quantile(q)
    for x in xs:
        est.add(x)
    exact = np.quantile(xs, q)
    assert abs(est.value() - exact) / exact < 0.03


def test_p2_is_exact_for_few_values_and_bounded_in_memory():
    est = P2Quantile(0.5)
    assert est.value() is None
    for x in (5, 1, 3):
        est.add(x)
    assert est.value() == np.quantile([5, 1, 3], 0.5)
    for x in range(10):
        est.add(float(x))
    size = sys.getsizeof(est._heights)
    for x in range(100_000):
        est.add(float(x))
    assert len(est._heights) == 5 and sys.getsizeof(est._heights) == size
    assert abs(est.value() - 50_000) / 50_000 < 0.01
    with pytest.raises(ValueError):
        P2Quantile(1.0)


def test_metrics_collector_stats_and_percentiles():
    m = MetricsCollector(window=10)
    assert m.get_stats(Persona.ABBEY) is None and m.get_latency_percentiles("abbey") is None
    for i in range(100):
        m.record("abbey", float(i + 1), success=i % 10 != 0, confidence=0.8)
    m.record(Persona.ABI, 2.0, blocked=True)
    s = m.get_stats("abbey")
    assert (s.total_requests, s.successful_requests, s.failed_requests) == (100, 90, 10)
    assert s.success_rate == 0.9 and s.avg_latency_ms == 50.5 and s.max_latency_ms == 100
    assert s.recent_error_rate == pytest.approx(0.1)   # last 10: one failure
    lat = m.get_latency_percentiles(Persona.ABBEY)
    assert lat.p50 < lat.p90 < lat.p99 and abs(lat.p50 - 50.5) < 3 and lat.count == 100
    assert m.get_stats("abi").blocked_requests == 1
    snap = m.snapshot()
    assert snap["personas"]["aviva"]["total_requests"] == 0
    assert snap["personas"]["abbey"]["latency_ms"]["count"] == 100
    with pytest.raises(ValueError):
        m.record("abbey", -1.0)


# --- health ----------------------------------------------------------------------------


def test_circuit_opens_rests_and_recovers():
    clock = Clock()
    h = EndpointHealth("e", HealthConfig(failure_threshold=3, cooldown_s=30), clock)
    for _ in range(2):
        h.record(False, 5.0, "boom")
    assert h.status() is HealthStatus.DEGRADED or h.status() is HealthStatus.HEALTHY
    h.record(False, 5.0, "boom")
    assert h.circuit_open() and h.status() is HealthStatus.UNHEALTHY and h.score() == 0
    clock.t += 31
    assert h.available() and not h.circuit_open()      # half-open: one call may try
    h.record(True, 5.0)
    assert h.consecutive_failures == 0 and h.to_dict()["last_error"] == "boom"


def test_error_rate_sets_the_status():
    h = EndpointHealth("e", HealthConfig(window=10, degraded_error_rate=0.2,
                                         unhealthy_error_rate=0.6, failure_threshold=100))
    for ok in [True] * 8 + [False] * 2:
        h.record(ok, 1.0)
    assert h.status() is HealthStatus.DEGRADED
    for _ in range(5):
        h.record(False, 1.0)
    assert h.status() is HealthStatus.UNHEALTHY
    for _ in range(10):
        h.record(True, 1.0)
    assert h.status() is HealthStatus.HEALTHY and h.score() == 1.0


def test_health_checker_report():
    hc = HealthChecker(HealthConfig(failure_threshold=1, cooldown_s=60))
    a, b = hc.register("aviva", "a"), hc.register("aviva", "b")
    assert hc.register("abbey", "a") is a            # shared record
    a.record(False, 1.0)
    assert hc.persona_status("aviva") is HealthStatus.DEGRADED
    b.record(False, 1.0)
    rep = hc.report()
    assert rep["status"] == "unhealthy" and rep["personas"]["aviva"]["status"] == "unhealthy"
    assert rep["personas"]["abbey"]["status"] == "unhealthy"


# --- load balancing --------------------------------------------------------------------


def _endpoints(weights, config=None, clock=None):
    cfg = config or HealthConfig()
    return [Endpoint(f"e{i}", object(), w, EndpointHealth(f"e{i}", cfg, clock or Clock()))
            for i, w in enumerate(weights)]


def test_weighted_round_robin_is_proportional():
    lb = LoadBalancer(_endpoints([3, 1]))
    picks = [lb.select().name for _ in range(400)]
    assert picks.count("e0") == 300 and picks.count("e1") == 100
    assert picks[:4].count("e0") == 3     # smooth: the light endpoint is not starved


def test_unhealthy_endpoint_gets_no_calls_and_failover_works():
    clock = Clock()
    eps = _endpoints([1, 1], HealthConfig(failure_threshold=2, cooldown_s=10), clock)
    lb = LoadBalancer(eps)
    calls = []

    def fn(e):
        calls.append(e.name)
        if e.name == "e0":
            raise Timeout("slow")
        return "ok"

    results = [lb.call(fn) for _ in range(40)]
    assert all(r == "ok" and e.name == "e1" for r, e in results)
    # after one failure e0 weighs a tenth of e1; after the second its circuit opens
    assert calls.count("e0") == 2 and eps[0].health.circuit_open()
    assert calls.count("e1") == 40
    clock.t += 11                          # after the cooldown e0 is tried again, rarely
    for _ in range(40):
        lb.call(fn)
    assert calls.count("e0") == 3 and eps[0].health.circuit_open()


def test_caller_errors_are_not_failovers_and_total_failure_raises():
    eps = _endpoints([1, 1])
    lb = LoadBalancer(eps)

    def too_long(e):
        raise ContextLengthExceeded("too long")

    with pytest.raises(ContextLengthExceeded):
        lb.call(too_long)
    assert all(e.health.total == 0 for e in eps)

    def bug(e):
        raise RuntimeError("bad")

    with pytest.raises(GenerationFailed, match="every backend endpoint failed"):
        lb.call(bug)
    assert all(e.health.consecutive_failures == 1 for e in eps)

    def timeout(e):
        raise Timeout("t")

    with pytest.raises(Timeout):
        lb.call(timeout)


# --- alerts ----------------------------------------------------------------------------


def test_alert_hysteresis_and_callbacks():
    m = MetricsCollector(window=10)
    manager = AlertManager([{"name": "errors", "metric": "error_rate", "threshold": 0.3,
                             "clear_threshold": 0.1, "min_requests": 5}])
    seen = []
    manager.on_alert(seen.append)
    manager.on_alert(lambda a: 1 / 0)              # a broken observer changes nothing

    def feed(outcomes):
        for ok in outcomes:
            m.record("aviva", 1.0, ok)
        return manager.evaluate(m)

    assert feed([False] * 4) == []                 # under min_requests
    fired = feed([False])
    assert [a.state for a in fired] == [AlertState.FIRING] and fired[0].persona is Persona.AVIVA
    assert len(manager.active_alerts()) == 1
    assert feed([True] * 3) == []                  # 5/8 failed: still firing
    assert feed([True] * 4) == []                  # window 10: 2/10 = 0.2, between the thresholds
    resolved = feed([True] * 2)                    # 0/10
    assert [a.state for a in resolved] == [AlertState.RESOLVED]
    assert manager.active_alerts() == [] and [a.state for a in seen] == [AlertState.FIRING,
                                                                         AlertState.RESOLVED]
    assert len(manager.history) == 2


def test_latency_alert_per_persona():
    m = MetricsCollector()
    manager = AlertManager([AlertRule("slow", "latency_p90_ms", 100.0, 50.0,
                                      persona=Persona.ABBEY)])
    for _ in range(10):
        m.record("abbey", 500.0)
        m.record("aviva", 500.0)
    fired = manager.evaluate(m)
    assert [(a.rule, a.persona) for a in fired] == [("slow", Persona.ABBEY)]


@pytest.mark.parametrize("rule", [
    {"name": "x", "metric": "cpu", "threshold": 1},
    {"name": "x", "metric": "error_rate", "threshold": 0.5, "clear_threshold": 0.7},
    {"name": "x", "metric": "error_rate", "threshold": 0.5, "direction": "sideways"},
    {"name": "x", "metric": "error_rate", "threshold": "high"},
    {"name": "x", "metric": "error_rate", "threshold": 0.5, "colour": "red"},
])
def test_alert_rule_errors(rule):
    with pytest.raises(ConfigError):
        AlertManager([rule])


# --- sessions --------------------------------------------------------------------------


def test_sessions_are_bounded_and_expire():
    clock = Clock()
    store = SessionStore(max_sessions=2, ttl_s=60, max_messages=4, clock=clock)
    a = store.get("u1")
    for i in range(3):
        a.add_turn(f"q{i}", f"a{i}", "abbey")
    assert [m["content"] for m in a.messages] == ["q1", "a1", "q2", "a2"]
    assert a.turns == 3 and a.last_persona == "abbey"
    assert store.get("u1") is a
    store.get("u2")
    store.get("u3")                     # u1 was least recently used
    assert len(store) == 2 and store.peek("u1") is None
    clock.t += 61
    assert store.expire() == 2 and len(store) == 0
    s = store.get("u9", "s1")
    assert s.session_id == "s1" and store.end("u9", "s1") and not store.end("u9", "s1")
