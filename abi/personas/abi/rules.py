"""Routing rules engine: ordered rules from YAML that map the analysis of a message
(``signals``) to a persona and a confidence.

A rule file (see ``default_rules.yaml``)::

    mode: first_match            # or weighted
    rules:
      - name: technical_request
        when: {query_type: [code, factual], urgency: {lt: 0.9}}
        persona: aviva           # or "$redirect_to"
        confidence: $query_match # a number or "$<signal>"
        weight: 1.0              # weighted mode only

first_match: the first rule whose conditions all hold decides. weighted: every matching
rule adds ``weight * confidence`` to its persona; the persona with the largest sum wins,
with confidence = its sum / the summed weights of the matching rules (so rules that
disagree lower the confidence).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from abi.errors import ConfigError
from abi.personas.config import ROUTING_MODES
from abi.personas.types import Persona, QueryType, RoutingDecision

DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")

SIGNALS = {
    "policy_action", "policy_category", "policy_score", "redirect_to", "polarity", "emotion",
    "emotion_intensity", "urgency", "distress", "query_type", "query_confidence", "words",
    "session_turns", "previous_persona",
} | {f"p_{t.value}" for t in QueryType}
OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in")


def _compare(op: str, value: Any, target: Any) -> bool:
    if op == "eq":
        return value == target
    if op == "ne":
        return value != target
    if op == "in":
        return value in target
    if op == "not_in":
        return value not in target
    if value is None or isinstance(value, str):
        return False
    return {"lt": value < target, "lte": value <= target, "gt": value > target,
            "gte": value >= target}[op]


@dataclass
class Condition:
    signal: str
    op: str
    target: Any

    def holds(self, signals: Mapping[str, Any]) -> bool:
        value = signals.get(self.signal)
        if isinstance(value, Persona | QueryType):
            value = value.value
        return _compare(self.op, value, self.target)

    def describe(self, signals: Mapping[str, Any]) -> str:
        value = signals.get(self.signal)
        value = getattr(value, "value", value)
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        return f"{self.signal}={shown}"


@dataclass
class Rule:
    name: str
    persona: str                 # a persona name, or "$<signal>"
    conditions: list[Condition] = field(default_factory=list)
    confidence: float | str = 1.0
    weight: float = 1.0

    def matches(self, signals: Mapping[str, Any]) -> bool:
        return all(c.holds(signals) for c in self.conditions)

    def target(self, signals: Mapping[str, Any]) -> Persona | None:
        name = signals.get(self.persona[1:]) if self.persona.startswith("$") else self.persona
        if name is None:
            return None
        return Persona.parse(getattr(name, "value", name))

    def score(self, signals: Mapping[str, Any]) -> float:
        c = self.confidence
        if isinstance(c, str):
            if c == "$query_match":
                c = self._query_match(signals)
            else:
                c = signals.get(c[1:])
        if c is None or isinstance(c, str) or math.isnan(float(c)):
            return 0.0
        return min(1.0, max(0.0, float(c)))

    def _query_match(self, signals: Mapping[str, Any]) -> float:
        for cond in self.conditions:
            if cond.signal == "query_type" and cond.op in ("in", "eq"):
                types = cond.target if cond.op == "in" else [cond.target]
                return sum(float(signals.get(f"p_{t}", 0.0)) for t in types)
        return float(signals.get("query_confidence", 0.0))


def _parse_condition(rule: str, signal: str, spec: Any) -> list[Condition]:
    where = f"rules.{rule}.when.{signal}"
    if signal not in SIGNALS:
        raise ConfigError(f"{where}: unknown signal {signal!r}; known: {', '.join(sorted(SIGNALS))}",
                          field=where)
    if isinstance(spec, list):
        return [Condition(signal, "in", list(spec))]
    if isinstance(spec, dict):
        out = []
        for op, target in spec.items():
            if op not in OPERATORS:
                raise ConfigError(f"{where}: unknown operator {op!r}; known: {', '.join(OPERATORS)}",
                                  field=where)
            if op in ("in", "not_in") and not isinstance(target, list):
                raise ConfigError(f"{where}.{op} needs a list", field=where)
            if op in ("lt", "lte", "gt", "gte") and (isinstance(target, bool) or
                                                     not isinstance(target, (int, float))):
                raise ConfigError(f"{where}.{op} needs a number, got {target!r}", field=where)
            out.append(Condition(signal, op, target))
        return out
    return [Condition(signal, "eq", spec)]


def parse_rule(data: Any, index: int) -> Rule:
    if not isinstance(data, dict):
        raise ConfigError(f"rule {index} must be a mapping", field=f"rules[{index}]")
    unknown = set(data) - {"name", "when", "persona", "confidence", "weight"}
    if unknown:
        raise ConfigError(f"rule {index}: unknown key(s) {', '.join(sorted(unknown))}",
                          field=f"rules[{index}]")
    name = data.get("name") or f"rule_{index}"
    if not isinstance(name, str):
        raise ConfigError(f"rule {index}: name must be a string", field=f"rules[{index}].name")
    persona = data.get("persona")
    if not isinstance(persona, str):
        raise ConfigError(f"rule {name!r}: persona is required", field=f"rules.{name}.persona")
    if persona.startswith("$"):
        if persona[1:] not in SIGNALS:
            raise ConfigError(f"rule {name!r}: persona names unknown signal {persona!r}",
                              field=f"rules.{name}.persona")
    else:
        try:
            persona = Persona.parse(persona).value
        except Exception:
            raise ConfigError(f"rule {name!r}: unknown persona {persona!r}; known: abi, abbey, "
                              "aviva", field=f"rules.{name}.persona") from None
    when = data.get("when") or {}
    if not isinstance(when, dict):
        raise ConfigError(f"rule {name!r}: when must be a mapping", field=f"rules.{name}.when")
    conditions = [c for signal, spec in when.items() for c in _parse_condition(name, signal, spec)]
    confidence = data.get("confidence", 1.0)
    if isinstance(confidence, str):
        if not confidence.startswith("$") or (confidence[1:] not in SIGNALS and
                                              confidence != "$query_match"):
            raise ConfigError(f"rule {name!r}: confidence must be a number or $<signal>, got "
                              f"{confidence!r}", field=f"rules.{name}.confidence")
    elif isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
            or not 0.0 <= confidence <= 1.0:
        raise ConfigError(f"rule {name!r}: confidence must be between 0 and 1",
                          field=f"rules.{name}.confidence")
    weight = data.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ConfigError(f"rule {name!r}: weight must be a non-negative number",
                          field=f"rules.{name}.weight")
    return Rule(name, persona, conditions, confidence, float(weight))


class RulesEngine:
    """``evaluate(signals) -> RoutingDecision | None`` (None: no rule matched)."""

    def __init__(self, rules: list[Rule], mode: str = "first_match"):
        if mode not in ROUTING_MODES:
            raise ConfigError(f"routing mode must be one of {', '.join(ROUTING_MODES)}, got "
                              f"{mode!r}", field="mode")
        self.rules = list(rules)
        self.mode = mode

    @classmethod
    def from_dict(cls, data: Any, mode: str | None = None) -> "RulesEngine":
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            raise ConfigError("a rules file holds a mapping with a 'rules' list", field="rules")
        rules = [parse_rule(r, i) for i, r in enumerate(data["rules"])]
        names = [r.name for r in rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"duplicate rule name(s): {', '.join(dup)}", field="rules")
        return cls(rules, mode or data.get("mode", "first_match"))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike | None = None, mode: str | None = None):
        """The rules in ``path`` (None: the shipped defaults)."""
        from abi.config import load_yaml

        return cls.from_dict(load_yaml(path or DEFAULT_RULES), mode)

    def evaluate(self, signals: Mapping[str, Any]) -> RoutingDecision | None:
        matched = [r for r in self.rules if r.matches(signals) and r.target(signals) is not None]
        if not matched:
            return None
        if self.mode == "first_match":
            rule = matched[0]
            persona, conf = rule.target(signals), rule.score(signals)
            return RoutingDecision(persona, conf, self._reason(rule, signals, conf),
                                   rule=rule.name, scores={persona.value: conf})
        totals: dict[Persona, float] = {}
        weight_sum = sum(r.weight for r in matched) or 1.0
        for r in matched:
            p = r.target(signals)
            totals[p] = totals.get(p, 0.0) + r.weight * r.score(signals)
        persona = max(totals, key=totals.get)
        conf = totals[persona] / weight_sum
        best = max((r for r in matched if r.target(signals) == persona),
                   key=lambda r: r.weight * r.score(signals))
        return RoutingDecision(persona, conf, self._reason(best, signals, conf, weighted=True),
                               rule=best.name,
                               scores={p.value: s / weight_sum for p, s in totals.items()})

    @staticmethod
    def _reason(rule: Rule, signals: Mapping[str, Any], conf: float, weighted=False) -> str:
        why = ", ".join(c.describe(signals) for c in rule.conditions) or "always"
        how = "weighted rules led by" if weighted else "rule"
        return f"{how} '{rule.name}' ({why}); confidence {conf:.2f}"
