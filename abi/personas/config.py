"""Configuration of the multi-persona system, validated on creation; loadable from YAML.

``MultiPersonaConfig.from_yaml(path)`` reads a mapping with the same names as the dataclass
fields; ``abbey``, ``aviva``, ``policy``, ``health`` are nested mappings, ``alerts`` a list
of alert rules, ``endpoints`` a mapping persona -> list of backend endpoints.
"""
from __future__ import annotations

import dataclasses
import enum
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abi.agents.config import BACKENDS
from abi.errors import ConfigError
from abi.personas.types import Persona


class EmpathyLevel(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ResponseDepth(str, enum.Enum):
    CONCISE = "concise"
    BALANCED = "balanced"
    THOROUGH = "thorough"


RETRIEVAL_MODES = ("auto", "bm25", "embedding", "hybrid")
ROUTING_MODES = ("first_match", "weighted")
POLICY_ACTIONS = ("allow", "block", "redirect", "disclaim", "redact")


def _taxonomy() -> dict:
    import yaml

    path = Path(__file__).parent / "abi" / "taxonomy.yaml"
    return yaml.safe_load(path.read_text("utf-8"))


# the policy categories and their default actions: abi/personas/abi/taxonomy.yaml
DEFAULT_POLICY_ACTIONS = {name: entry["action"] for name, entry in _taxonomy().items()}
POLICY_CATEGORIES = tuple(DEFAULT_POLICY_ACTIONS)


def _enum(cls, value, name: str):
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).strip().lower())
    except ValueError:
        raise ConfigError(f"{name} must be one of {', '.join(m.value for m in cls)}, "
                          f"got {value!r}", field=name) from None


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{name} must be a number between {low:g} and {high:g}, got {value!r}",
                          field=name)
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {value:g}",
                          field=name)
    return float(value)


def _integer(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer between {low} and {high}, got {value!r}",
                          field=name)
    return value


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}", field=name)
    return value


def _optional_str(value, name: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{name} must be a non-empty string or null, got {value!r}", field=name)
    return value


def _build(cls, data: Any, name: str):
    """``cls(**data)`` for a mapping, naming unknown keys; an instance passes through."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must be a mapping, got {type(data).__name__}", field=name)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {name} setting(s): {', '.join(map(str, unknown))}; known: "
                          f"{', '.join(sorted(known))}", field=f"{name}.{unknown[0]}")
    return cls(**data)


@dataclass
class AbbeyConfig:
    """Abbey, the empathetic polymath: how much empathy she shows and how deep she goes
    (``thorough`` answers run a two-step reasoning chain: outline, then answer)."""

    empathy_level: EmpathyLevel = EmpathyLevel.MEDIUM
    response_depth: ResponseDepth = ResponseDepth.BALANCED
    temperature: float = 0.7

    def __post_init__(self):
        self.empathy_level = _enum(EmpathyLevel, self.empathy_level, "abbey.empathy_level")
        self.response_depth = _enum(ResponseDepth, self.response_depth, "abbey.response_depth")
        self.temperature = _number(self.temperature, "abbey.temperature", 0.0, 2.0)


@dataclass
class AvivaConfig:
    """Aviva, the direct expert.

    cite_sources: number the claims a document supports and list the documents.
    skip_preamble: drop openers such as "Sure! Here is ..." from answers.
    knowledge_paths: files or folders (.md, .txt, .rst) forming her document store.
    retrieval: bm25, embedding, hybrid (both, rank-fused) or auto (hybrid when the
        embedding model is already in the model cache, else bm25; never downloads).
    top_k: passages retrieved per question; fact_check: check answers against the store.
    """

    cite_sources: bool = True
    skip_preamble: bool = True
    knowledge_paths: list[str] = field(default_factory=list)
    retrieval: str = "auto"
    embedding_model: str | None = None
    top_k: int = 3
    fact_check: bool = True
    temperature: float = 0.2

    def __post_init__(self):
        _flag(self.cite_sources, "aviva.cite_sources")
        _flag(self.skip_preamble, "aviva.skip_preamble")
        _flag(self.fact_check, "aviva.fact_check")
        if isinstance(self.knowledge_paths, (str, os.PathLike)):
            self.knowledge_paths = [self.knowledge_paths]
        if not isinstance(self.knowledge_paths, (list, tuple)):
            raise ConfigError("aviva.knowledge_paths must be a list of paths",
                              field="aviva.knowledge_paths")
        self.knowledge_paths = [os.fspath(p) for p in self.knowledge_paths]
        if self.retrieval not in RETRIEVAL_MODES:
            raise ConfigError(f"aviva.retrieval must be one of {', '.join(RETRIEVAL_MODES)}, "
                              f"got {self.retrieval!r}", field="aviva.retrieval")
        _optional_str(self.embedding_model, "aviva.embedding_model")
        self.top_k = _integer(self.top_k, "aviva.top_k", 1, 50)
        self.temperature = _number(self.temperature, "aviva.temperature", 0.0, 2.0)


@dataclass
class PolicyConfig:
    """Content policy. ``threshold``: the classifier probability at which a category counts
    (for the harmful categories, their summed probability); ``actions``: category
    (``abi/personas/abi/taxonomy.yaml``) -> allow, block, redirect, disclaim or redact;
    ``redirect_to``: the persona a redirected request goes to.

    The default threshold is the one of highest recall at precision >= 0.90 on the
    out-of-fold predictions of the training data (``tools/eval_routing.py
    --cross-validate``), never tuned on the evaluation sets."""

    enabled: bool = True
    threshold: float = 0.75
    actions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_POLICY_ACTIONS))
    redirect_to: Persona = Persona.ABBEY
    redact_output: bool = True

    def __post_init__(self):
        _flag(self.enabled, "policy.enabled")
        _flag(self.redact_output, "policy.redact_output")
        self.threshold = _number(self.threshold, "policy.threshold", 0.05, 1.0)
        if not isinstance(self.actions, dict):
            raise ConfigError("policy.actions must be a mapping category -> action",
                              field="policy.actions")
        actions = dict(DEFAULT_POLICY_ACTIONS)
        for category, action in self.actions.items():
            if category not in POLICY_CATEGORIES:
                raise ConfigError(f"policy.actions: unknown category {category!r}; known: "
                                  f"{', '.join(POLICY_CATEGORIES)}", field=f"policy.actions.{category}")
            if action not in POLICY_ACTIONS:
                raise ConfigError(f"policy.actions.{category} must be one of "
                                  f"{', '.join(POLICY_ACTIONS)}, got {action!r}",
                                  field=f"policy.actions.{category}")
            actions[category] = action
        self.actions = actions
        try:
            self.redirect_to = Persona.parse(self.redirect_to)
        except Exception:
            raise ConfigError(f"policy.redirect_to must be a persona, got {self.redirect_to!r}",
                              field="policy.redirect_to") from None


@dataclass
class HealthConfig:
    """When a backend endpoint counts as degraded or unhealthy (over its last ``window``
    calls), and how long an endpoint that failed ``failure_threshold`` times in a row rests
    before it is tried again."""

    window: int = 50
    degraded_error_rate: float = 0.1
    unhealthy_error_rate: float = 0.5
    failure_threshold: int = 3
    cooldown_s: float = 30.0
    slow_latency_ms: float = 30_000.0

    def __post_init__(self):
        self.window = _integer(self.window, "health.window", 1, 100_000)
        self.degraded_error_rate = _number(self.degraded_error_rate,
                                           "health.degraded_error_rate", 0.0, 1.0)
        self.unhealthy_error_rate = _number(self.unhealthy_error_rate,
                                            "health.unhealthy_error_rate", 0.0, 1.0)
        if self.unhealthy_error_rate < self.degraded_error_rate:
            raise ConfigError("health.unhealthy_error_rate must be >= degraded_error_rate",
                              field="health.unhealthy_error_rate")
        self.failure_threshold = _integer(self.failure_threshold, "health.failure_threshold",
                                          1, 1000)
        self.cooldown_s = _number(self.cooldown_s, "health.cooldown_s", 0.0, 86_400.0)
        self.slow_latency_ms = _number(self.slow_latency_ms, "health.slow_latency_ms", 1.0, 1e9)


@dataclass
class EndpointConfig:
    """One backend a persona can generate with (several form a load-balanced pool)."""

    backend: str = "local"
    model: str | None = None
    base_url: str | None = None
    weight: float = 1.0
    name: str | None = None

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got "
                              f"{self.backend!r}", field="backend")
        _optional_str(self.model, "model")
        _optional_str(self.base_url, "base_url")
        _optional_str(self.name, "name")
        self.weight = _number(self.weight, "weight", 0.0, 1e6)

    @property
    def label(self) -> str:
        return self.name or f"{self.backend}:{self.model or 'default'}"


def _default_alerts() -> list[dict]:
    return [
        {"name": "high_latency_p90", "metric": "latency_p90_ms", "threshold": 20_000.0,
         "clear_threshold": 15_000.0, "min_requests": 10},
        {"name": "high_error_rate", "metric": "error_rate", "threshold": 0.25,
         "clear_threshold": 0.1, "min_requests": 10},
    ]


@dataclass
class MultiPersonaConfig:
    """Settings of a ``MultiPersonaSystem`` (the reference's fields first).

    backend/model: where every persona generates (``local``: the embedded default model;
        ``echo`` for tests; openai, ollama, huggingface through their connectors), unless
        ``endpoints`` gives a persona its own pool.
    rules: a routing rules YAML file (None: the shipped default); routing_mode overrides
        the file's mode (first_match or weighted).
    max_sessions/session_ttl_s/max_session_messages bound the per-user conversation state.
    embedding_model: the sentence-embedding GGUF (path or model name) of Abi's policy and
        query classifiers (None: all-MiniLM-L6-v2; "lexical": no embeddings, n-gram
        classifiers only).
    """

    default_persona: Persona = Persona.ABBEY
    enable_dynamic_routing: bool = True
    routing_confidence_threshold: float = 0.5
    abbey: AbbeyConfig = field(default_factory=AbbeyConfig)
    aviva: AvivaConfig = field(default_factory=AvivaConfig)
    backend: str = "local"
    model: str | None = None
    base_url: str | None = None
    max_tokens: int = 512
    top_p: float = 0.9
    context_length: int | None = None
    endpoints: dict[str, list] = field(default_factory=dict)
    rules: str | None = None
    routing_mode: str | None = None
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    enable_metrics: bool = True
    health: HealthConfig = field(default_factory=HealthConfig)
    alerts: list[dict] = field(default_factory=_default_alerts)
    max_sessions: int = 10_000
    session_ttl_s: float = 3600.0
    max_session_messages: int = 20
    embedding_model: str | None = None

    def __post_init__(self):
        try:
            self.default_persona = Persona.parse(self.default_persona, "default_persona")
        except Exception:
            raise ConfigError(f"default_persona must be one of abi, abbey, aviva, got "
                              f"{self.default_persona!r}", field="default_persona") from None
        _flag(self.enable_dynamic_routing, "enable_dynamic_routing")
        _flag(self.enable_metrics, "enable_metrics")
        self.routing_confidence_threshold = _number(
            self.routing_confidence_threshold, "routing_confidence_threshold", 0.0, 1.0)
        self.abbey = _build(AbbeyConfig, self.abbey, "abbey")
        self.aviva = _build(AvivaConfig, self.aviva, "aviva")
        self.policy = _build(PolicyConfig, self.policy, "policy")
        self.health = _build(HealthConfig, self.health, "health")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got "
                              f"{self.backend!r}", field="backend")
        _optional_str(self.model, "model")
        _optional_str(self.base_url, "base_url")
        _optional_str(self.rules, "rules")
        _optional_str(self.embedding_model, "embedding_model")
        self.max_tokens = _integer(self.max_tokens, "max_tokens", 1, 128_000)
        self.top_p = _number(self.top_p, "top_p", 0.0, 1.0)
        if self.context_length is not None:
            self.context_length = _integer(self.context_length, "context_length", 16, 10_000_000)
        if self.routing_mode is not None and self.routing_mode not in ROUTING_MODES:
            raise ConfigError(f"routing_mode must be one of {', '.join(ROUTING_MODES)}, got "
                              f"{self.routing_mode!r}", field="routing_mode")
        self.max_sessions = _integer(self.max_sessions, "max_sessions", 1, 10_000_000)
        self.session_ttl_s = _number(self.session_ttl_s, "session_ttl_s", 1.0, 1e9)
        self.max_session_messages = _integer(self.max_session_messages,
                                             "max_session_messages", 0, 10_000)
        self.endpoints = self._check_endpoints(self.endpoints)
        if not isinstance(self.alerts, list):
            raise ConfigError("alerts must be a list of alert rules", field="alerts")

    @staticmethod
    def _check_endpoints(endpoints) -> dict[str, list[EndpointConfig]]:
        if not isinstance(endpoints, dict):
            raise ConfigError("endpoints must be a mapping persona -> list of endpoints",
                              field="endpoints")
        out = {}
        for name, pool in endpoints.items():
            try:
                persona = Persona.parse(name)
            except Exception:
                raise ConfigError(f"endpoints: unknown persona {name!r}",
                                  field=f"endpoints.{name}") from None
            if not isinstance(pool, (list, tuple)) or not pool:
                raise ConfigError(f"endpoints.{name} must be a non-empty list",
                                  field=f"endpoints.{name}")
            out[persona.value] = [_build(EndpointConfig, e, f"endpoints.{name}") for e in pool]
        return out

    def endpoint_pool(self, persona: Persona) -> list[EndpointConfig]:
        """The endpoints ``persona`` generates with: its own pool, else the shared backend."""
        pool = self.endpoints.get(persona.value)
        if pool:
            return list(pool)
        return [EndpointConfig(backend=self.backend, model=self.model, base_url=self.base_url)]

    # --- loading --------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MultiPersonaConfig":
        return _build(cls, data, "config")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "MultiPersonaConfig":
        """The config in a YAML file; a relative ``rules`` or knowledge path is taken
        relative to the file's folder."""
        from abi.config import load_yaml

        data = load_yaml(path)
        base = os.path.dirname(os.path.abspath(os.fspath(path)))
        if isinstance(data.get("rules"), str) and not os.path.isabs(data["rules"]):
            data["rules"] = os.path.join(base, data["rules"])
        aviva = data.get("aviva")
        if isinstance(aviva, dict) and isinstance(aviva.get("knowledge_paths"), list):
            aviva["knowledge_paths"] = [
                p if not isinstance(p, str) or os.path.isabs(p) else os.path.join(base, p)
                for p in aviva["knowledge_paths"]]
        return cls.from_dict(data)

    @classmethod
    def from_env(cls) -> "MultiPersonaConfig":
        """``ABI_PERSONAS_CONFIG`` (a YAML file) if set; else the defaults, with the backend
        and model from ``ABI_PERSONA_BACKEND`` (default local) and ``ABI_PERSONA_MODEL``."""
        from abi.config import env

        path = env("ABI_PERSONAS_CONFIG")
        if path:
            return cls.from_yaml(path)
        return cls(backend=env("ABI_PERSONA_BACKEND", "local"), model=env("ABI_PERSONA_MODEL"))

    def to_dict(self) -> dict[str, Any]:
        def plain(value):
            if isinstance(value, enum.Enum):
                return value.value
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        return plain(self)
