"""MultiPersonaSystem: the orchestrator. Each request is analysed and routed by Abi,
answered by a persona through that persona's load-balanced backends, checked for leaked
personal data, recorded in the session, the metrics and the health records, and the alert
rules are evaluated."""
from __future__ import annotations

import os
import time
from typing import Any

from abi.agents.backends import GenerationParams, make_backend
from abi.agents.config import AgentConfig
from abi.errors import AbiError, ConfigError, ContextLengthExceeded, InvalidRequestError
from abi.personas.abbey.persona import AbbeyPersona
from abi.personas.abi.persona import AbiPersona
from abi.personas.abi.router import AbiRouter, Analysis
from abi.personas.alerts import AlertManager
from abi.personas.aviva.knowledge import KnowledgeStore
from abi.personas.aviva.persona import AvivaPersona
from abi.personas.base import TurnContext
from abi.personas.config import EndpointConfig, MultiPersonaConfig
from abi.personas.health import HealthChecker, HealthStatus
from abi.personas.loadbalancer import Endpoint, LoadBalancer
from abi.personas.metrics import MetricsCollector
from abi.personas.registry import PersonaRegistry
from abi.personas.sessions import SessionStore
from abi.personas.types import Persona, PersonaRequest, PersonaResponse, RoutingDecision

DEFAULT_TEMPERATURE = 0.7


def fit_context(backend: Any, messages: list[dict], params: GenerationParams
                ) -> tuple[list[dict], GenerationParams]:
    """``messages`` trimmed to the backend's context (oldest earlier turns dropped first),
    and ``max_tokens`` cut to what the context leaves. ContextLengthExceeded when the
    system prompt and the message alone do not fit."""
    n_ctx = backend.context_length()
    if n_ctx is None:
        return messages, params
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    history, tail = messages[len(head):-1], messages[-1:]
    budget = n_ctx - params.max_tokens
    while history and backend.count_tokens(head + history + tail) > budget:
        drop = next((i for i in range(1, len(history)) if history[i]["role"] == "user"),
                    len(history))
        history = history[drop:]   # a whole turn at a time
    trimmed = head + history + tail
    if history:
        return trimmed, params
    used = backend.count_tokens(trimmed)
    if used >= n_ctx:
        raise ContextLengthExceeded(f"the message and the persona's instructions take {used} "
                                    f"tokens; the model's context holds {n_ctx}")
    return trimmed, GenerationParams(params.temperature, params.top_p,
                                     min(params.max_tokens, n_ctx - used))


class MultiPersonaSystem:
    """The multi-persona assistant (the reference's ``personas.MultiPersonaSystem``).

    ``MultiPersonaSystem(MultiPersonaConfig(backend="echo"))``; ``process(request)`` answers
    one ``PersonaRequest``. ``client`` replaces the connector of remote backends; ``local``
    answers every local endpoint (a server passes a ``LocalBackend`` on its engine);
    ``knowledge`` gives Aviva a ready document store. ``metrics`` is None when metrics are
    disabled.
    """

    def __init__(self, config: MultiPersonaConfig | None = None, *, client: Any = None,
                 knowledge: KnowledgeStore | None = None, router: AbiRouter | None = None,
                 local: Any = None):
        if config is not None and not isinstance(config, MultiPersonaConfig):
            raise TypeError(f"config must be a MultiPersonaConfig, not {type(config).__name__}")
        self.config = cfg = config or MultiPersonaConfig()
        self.router = router or AbiRouter(cfg)
        self.registry = PersonaRegistry()
        self.registry.register(AbiPersona())
        self.registry.register(AbbeyPersona(cfg.abbey))
        self.registry.register(AvivaPersona(cfg.aviva, knowledge))
        self.sessions = SessionStore(cfg.max_sessions, cfg.session_ttl_s, cfg.max_session_messages)
        self.metrics: MetricsCollector | None = MetricsCollector() if cfg.enable_metrics else None
        self.health = HealthChecker(cfg.health)
        self.alerts = AlertManager(cfg.alerts)
        self._client = client
        self._local = local
        self._backends: dict[tuple, Any] = {}
        self.balancers: dict[Persona, LoadBalancer] = {
            p: LoadBalancer([self._endpoint(p, e) for e in cfg.endpoint_pool(p)]) for p in Persona}
        self.router.warm_up()   # train the classifiers now, not inside the first request

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **kwargs) -> "MultiPersonaSystem":
        return cls(MultiPersonaConfig.from_yaml(path), **kwargs)

    def _endpoint(self, persona: Persona, e: EndpointConfig) -> Endpoint:
        key = (e.backend, e.model, e.base_url)
        backend = self._backends.get(key)
        if backend is None and e.backend == "local" and self._local is not None:
            if e.model:
                raise ConfigError(f"the {persona.value} persona's local endpoint names the model "
                                  f"{e.model!r}, but local endpoints here generate with the "
                                  "server's loaded model: drop its model, or serve that model",
                                  field="model")
            backend = self._local
        if backend is None:   # one backend per distinct endpoint, shared by the personas
            agent_cfg = AgentConfig(name=f"personas-{e.backend}", backend=e.backend,
                                    model=e.model, base_url=e.base_url,
                                    max_tokens=self.config.max_tokens,
                                    context_length=self.config.context_length)
            backend = self._backends[key] = make_backend(agent_cfg, self._client)
        health = self.health.register(persona.value, e.label)
        return Endpoint(e.label, backend, e.weight, health)

    @property
    def knowledge(self) -> KnowledgeStore:
        """Aviva's document store."""
        return self.registry.get(Persona.AVIVA).store

    # --- analysis and routing -------------------------------------------------------------

    def analyze(self, content: str, user_id: str | None = None,
                session_id: str | None = None) -> Analysis:
        """Abi's analysis of ``content`` (policy, sentiment, query type), without answering."""
        session = self.sessions.peek(user_id, session_id) if user_id else None
        return self.router.analyze(content, session)

    def route(self, request: PersonaRequest | str) -> RoutingDecision:
        """Which persona would answer ``request`` and why, without answering."""
        if isinstance(request, str):
            request = PersonaRequest(request, "anonymous")
        analysis = self.analyze(request.content, request.user_id, request.session_id)
        return self.router.route(analysis, request.persona)

    # --- answering ------------------------------------------------------------------------

    def _generator(self, persona: Persona, used: list[str]):
        balancer = self.balancers[persona]
        cfg = self.config

        def generate(messages: list[dict], *, temperature: float | None = None,
                     max_tokens: int | None = None) -> str:
            params = GenerationParams(
                temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
                top_p=cfg.top_p, max_tokens=max_tokens or cfg.max_tokens)

            def call(endpoint: Endpoint) -> str:
                msgs, p = fit_context(endpoint.backend, messages, params)
                return endpoint.backend.complete(msgs, p)

            text, endpoint = balancer.call(call)
            used.append(endpoint.name)
            return text

        return generate

    def process(self, request: PersonaRequest | dict) -> PersonaResponse:
        """Answer one request: route it (or take the persona it names), generate, and
        record it. Backend failures raise typed errors after every endpoint was tried."""
        start = time.perf_counter()
        if isinstance(request, dict):
            request = self._request_from_dict(request)
        elif not isinstance(request, PersonaRequest):
            raise InvalidRequestError(f"request must be a PersonaRequest, not "
                                      f"{type(request).__name__}")
        session = self.sessions.get(request.user_id, request.session_id)
        analysis = self.router.analyze(request.content, session)
        decision = self.router.route(analysis, request.persona)
        if self.metrics is not None:
            self.metrics.record_routing(decision.persona, fallback=decision.fallback,
                                        forced=decision.rule == "requested")
        used: list[str] = []
        ctx = TurnContext(request, analysis.text, analysis, decision, session, self.config,
                          self._generator(decision.persona, used))
        try:
            reply = self.registry.get(decision.persona).respond(ctx)
        except AbiError:
            self._record(decision, start, success=False, blocked=False)
            raise
        content, leaked = self.router.policy.redact_output(reply.content)
        disclaimer = analysis.policy.disclaimer
        if disclaimer and not analysis.policy.blocked:  # whatever the model wrote
            content = f"{content}\n\n{disclaimer}"
        session.add_turn(analysis.text, content, decision.persona.value)
        latency_ms = self._record(decision, start, success=True,
                                  blocked=analysis.policy.blocked)
        details = dict(reply.details)
        details["analysis"] = analysis.to_dict()
        details["rule"] = decision.rule
        details["endpoints"] = used
        if leaked:
            details["redacted_output"] = sorted({m.kind for m in leaked})
        return PersonaResponse(
            content=content, persona=decision.persona, confidence=decision.confidence,
            latency_ms=latency_ms, routing_reason=decision.reason,
            session_id=session.session_id, query_type=analysis.query.query_type.value,
            emotion=analysis.sentiment.emotion, blocked=analysis.policy.blocked,
            policy=analysis.policy.categories, sources=reply.sources, details=details)

    def chat(self, content: str, user_id: str = "anonymous", session_id: str | None = None,
             persona: Persona | str | None = None) -> PersonaResponse:
        """``process(PersonaRequest(content, user_id, session_id, persona))``."""
        return self.process(PersonaRequest(content, user_id, session_id, persona))

    @staticmethod
    def _request_from_dict(data: dict) -> PersonaRequest:
        known = {"content", "user_id", "session_id", "persona"}
        unknown = set(data) - known
        if unknown:
            raise InvalidRequestError(f"unknown request field(s): {', '.join(sorted(unknown))}")
        if "content" not in data or "user_id" not in data:
            raise InvalidRequestError("a request needs content and user_id")
        return PersonaRequest(**data)

    def _record(self, decision: RoutingDecision, start: float, *, success: bool,
                blocked: bool) -> float:
        latency_ms = (time.perf_counter() - start) * 1000.0
        if self.metrics is not None:
            self.metrics.record(decision.persona, latency_ms, success, blocked=blocked,
                                confidence=decision.confidence)
            self.alerts.evaluate(self.metrics)
        return latency_ms

    # --- reports --------------------------------------------------------------------------

    def list_personas(self) -> list[dict]:
        out = []
        for info in self.registry.list():
            persona = Persona(info["name"])
            out.append({**info, "default": persona is self.config.default_persona,
                        "status": self.health.persona_status(persona.value).value,
                        "endpoints": [e.name for e in self.balancers[persona].endpoints]})
        return out

    def health_report(self, probe: bool = False) -> dict:
        """Overall and per-persona health. ``probe=True`` first sends every endpoint a
        one-token request (for the local backend, that loads its model)."""
        if probe:
            self.probe()
        report = self.health.report()
        report["sessions"] = len(self.sessions)
        report["knowledge"] = {"passages": len(self.knowledge),
                               "retrieval": self.knowledge.method()}
        return report

    def probe(self) -> dict[str, bool]:
        """Send each distinct endpoint one short request; record and return the outcomes."""
        results: dict[str, bool] = {}
        for balancer in self.balancers.values():
            for e in balancer.endpoints:
                if e.name in results:
                    continue
                start = time.perf_counter()
                try:
                    e.backend.complete([{"role": "user", "content": "ping"}],
                                       GenerationParams(0.0, 1.0, 1))
                    ok, err = True, None
                except Exception as exc:  # the probe reports, it does not raise
                    ok, err = False, f"{type(exc).__name__}: {exc}"
                e.health.record(ok, (time.perf_counter() - start) * 1000.0, err)
                results[e.name] = ok
        return results

    def metrics_report(self) -> dict:
        if self.metrics is None:
            return {"enabled": False, "personas": {}, "alerts": []}
        return {"enabled": True, **self.metrics.snapshot(),
                "alerts": [a.to_dict() for a in self.alerts.active_alerts()]}

    def status(self) -> HealthStatus:
        return HealthStatus(self.health.report()["status"])
