"""Alert rules on persona metrics, with hysteresis, and a manager that calls back on changes.

A rule watches one metric of each persona (or of one persona): ``error_rate`` (over the
recent window), ``latency_p50_ms``, ``latency_p90_ms`` or ``latency_p99_ms``. It fires when
the value goes above ``threshold`` (below, for ``direction: below``) and resolves only when
the value comes back past ``clear_threshold``, so a value hovering at the threshold does
not flap. ``min_requests`` keeps a rule quiet until there are enough requests to judge.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from abi.errors import ConfigError
from abi.personas.metrics import MetricsCollector
from abi.personas.types import Persona

METRICS = ("error_rate", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms")
SEVERITIES = ("info", "warning", "critical")
log = logging.getLogger("abi.personas.alerts")


class AlertState(str, enum.Enum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass
class AlertRule:
    name: str
    metric: str
    threshold: float
    clear_threshold: float | None = None   # default: the threshold itself (no hysteresis)
    direction: str = "above"
    persona: Persona | None = None         # None: every persona, each on its own
    min_requests: int = 1
    severity: str = "warning"

    def __post_init__(self):
        where = f"alerts.{self.name}"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("an alert rule needs a name", field="alerts")
        if self.metric not in METRICS:
            raise ConfigError(f"{where}: metric must be one of {', '.join(METRICS)}, got "
                              f"{self.metric!r}", field=f"{where}.metric")
        if self.direction not in ("above", "below"):
            raise ConfigError(f"{where}: direction must be above or below",
                              field=f"{where}.direction")
        for key in ("threshold", "clear_threshold"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ConfigError(f"{where}.{key} must be a number", field=f"{where}.{key}")
        if self.clear_threshold is None:
            self.clear_threshold = self.threshold
        above = self.direction == "above"
        if (above and self.clear_threshold > self.threshold) or \
                (not above and self.clear_threshold < self.threshold):
            raise ConfigError(f"{where}: clear_threshold must lie on the healthy side of "
                              "threshold", field=f"{where}.clear_threshold")
        if self.persona is not None:
            self.persona = Persona.parse(self.persona)
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int) \
                or self.min_requests < 1:
            raise ConfigError(f"{where}.min_requests must be a positive integer",
                              field=f"{where}.min_requests")
        if self.severity not in SEVERITIES:
            raise ConfigError(f"{where}.severity must be one of {', '.join(SEVERITIES)}",
                              field=f"{where}.severity")

    @classmethod
    def from_dict(cls, data: Any) -> "AlertRule":
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ConfigError("an alert rule must be a mapping", field="alerts")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"alert rule: unknown key(s) {', '.join(sorted(unknown))}",
                              field="alerts")
        return cls(**data)

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.direction == "above" else value < self.threshold

    def cleared(self, value: float) -> bool:
        return value < self.clear_threshold if self.direction == "above" \
            else value > self.clear_threshold


@dataclass
class Alert:
    rule: str
    persona: Persona
    metric: str
    value: float
    threshold: float
    state: AlertState
    severity: str
    started_at: float
    resolved_at: float | None = None
    message: str = ""

    def to_dict(self) -> dict:
        return {"rule": self.rule, "persona": self.persona.value, "metric": self.metric,
                "value": round(self.value, 4), "threshold": self.threshold,
                "state": self.state.value, "severity": self.severity,
                "started_at": self.started_at, "resolved_at": self.resolved_at,
                "message": self.message}


class AlertManager:
    """Evaluates rules against a MetricsCollector and calls every callback with each
    ``Alert`` that starts firing or resolves. A failing callback is logged, never raised."""

    def __init__(self, rules: list[AlertRule | dict] = (), history: int = 256,
                 clock: Callable[[], float] = time.time):
        self.rules = [AlertRule.from_dict(r) for r in rules]
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ConfigError("alert rule names must be unique", field="alerts")
        self.clock = clock
        self._callbacks: list[Callable[[Alert], Any]] = []
        self._active: dict[tuple[str, Persona], Alert] = {}
        self.history: deque[Alert] = deque(maxlen=history)
        self._lock = threading.Lock()

    def add_rule(self, rule: AlertRule | dict) -> None:
        rule = AlertRule.from_dict(rule)
        if any(r.name == rule.name for r in self.rules):
            raise ConfigError(f"an alert rule named {rule.name!r} exists", field="alerts")
        self.rules.append(rule)

    def on_alert(self, callback: Callable[[Alert], Any]) -> None:
        self._callbacks.append(callback)

    add_callback = on_alert

    def active_alerts(self) -> list[Alert]:
        with self._lock:
            return list(self._active.values())

    def evaluate(self, metrics: MetricsCollector) -> list[Alert]:
        """Check every rule; the alerts that changed state (fired or resolved)."""
        changed: list[Alert] = []
        with self._lock:
            for rule in self.rules:
                for persona in ([rule.persona] if rule.persona else list(Persona)):
                    values = metrics.alert_values(persona)
                    if values is None or values["requests"] < rule.min_requests:
                        continue
                    value = values[rule.metric]
                    key = (rule.name, persona)
                    active = self._active.get(key)
                    if active is None and rule.breached(value):
                        alert = Alert(rule.name, persona, rule.metric, value, rule.threshold,
                                      AlertState.FIRING, rule.severity, self.clock(),
                                      message=f"{persona.value}: {rule.metric} {value:.4g} is "
                                              f"{rule.direction} {rule.threshold:g}")
                        self._active[key] = alert
                        changed.append(alert)
                    elif active is not None:
                        active.value = value
                        if rule.cleared(value):
                            del self._active[key]
                            resolved = Alert(rule.name, persona, rule.metric, value,
                                             rule.threshold, AlertState.RESOLVED, rule.severity,
                                             active.started_at, self.clock(),
                                             message=f"{persona.value}: {rule.metric} back to "
                                                     f"{value:.4g}")
                            changed.append(resolved)
            self.history.extend(changed)
            callbacks = list(self._callbacks)
        for alert in changed:
            for cb in callbacks:
                try:
                    cb(alert)
                except Exception:  # an observer's bug must not fail a user's request
                    log.exception("alert callback %r failed", cb)
        return changed
