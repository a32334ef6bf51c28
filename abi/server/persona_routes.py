"""The persona HTTP API (the reference's "HTTP API" of the multi-persona system):

    POST /api/v1/chat              route automatically
    POST /api/v1/chat/abbey        force Abbey
    POST /api/v1/chat/aviva        force Aviva
    GET  /api/v1/personas          the personas
    GET  /api/v1/personas/metrics  requests, success rate, latency percentiles, alerts
    GET  /api/v1/personas/health   overall and per-persona health (503 when unhealthy)

Request: ``schemas.PersonaChatRequest`` (``content``, ``user_id`` defaulting to "anonymous",
``session_id``, ``persona``; an unknown field is a 400); response:
``PersonaResponse.to_dict()`` (content, persona, confidence, latency_ms first). Errors go
through the app's one error mapping (``server/errors.py``): ``{"error": {"message", "type",
"param", "code"}}`` with the status of the typed error.

Which system answers: the one ``create_router(system)`` was given (an instance or a
factory); else ``app.state.personas`` (an instance or a factory); else, in ``abi serve``, the
server's own (``ServerState.personas``: its local endpoints generate with the loaded model
through its engine's scheduler, so persona requests share the slots, queue, metrics and API
key);
else one built on first use from the environment (``MultiPersonaConfig.from_env()``). Tests
can also override the ``get_persona_system`` dependency.

A client that disconnects cancels its request: the generations the persona system started for
it (through any scheduler, in the request's ``CancelScope``) stop and free their slots, and
the ones it would start next are cancelled as they are submitted.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..llm.scheduler import CancelScope
from ..personas import MultiPersonaConfig, MultiPersonaSystem, Persona, PersonaRequest
from .schemas import ErrorResponse, PersonaChatRequest
from .streams import ClientGone, gone_response, guard

SystemSource = Union[MultiPersonaSystem, Callable[[], MultiPersonaSystem]]

# a malformed body or query is a 400 (not FastAPI's 422); a failing backend, its own status
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 429, 502, 503, 504)}

_default: MultiPersonaSystem | None = None
_default_lock = threading.Lock()


def _resolve(source: Any) -> MultiPersonaSystem:
    system = source() if callable(source) and not isinstance(source, MultiPersonaSystem) \
        else source
    if not isinstance(system, MultiPersonaSystem):
        raise TypeError(f"the persona system source gave {type(system).__name__}, not a "
                        "MultiPersonaSystem")
    return system


def default_system() -> MultiPersonaSystem:
    """The process-wide system built from the environment on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MultiPersonaSystem(MultiPersonaConfig.from_env())
        return _default


def get_persona_system(request: Request) -> MultiPersonaSystem:
    """The system for this request: ``app.state.personas``, else the server's, else the
    default one."""
    source = getattr(request.app.state, "personas", None)
    if source is not None:
        system = _resolve(source)
        request.app.state.personas = system   # a factory runs once
        return system
    server = getattr(request.app.state, "abi", None)
    if server is not None:
        return server.personas()
    return default_system()


def create_router(system: SystemSource | None = None) -> APIRouter:
    """The six routes, answered by ``system`` (an instance or a zero-argument factory,
    called on first use); None: resolved per request by ``get_persona_system``."""
    router = APIRouter(tags=["personas"])
    if system is None:
        dependency = get_persona_system
    else:
        lock, held = threading.Lock(), []

        def dependency() -> MultiPersonaSystem:
            with lock:
                if not held:
                    held.append(_resolve(system))
                return held[0]

    async def chat(request: Request, body: PersonaChatRequest, persona: Persona | None,
                   target: MultiPersonaSystem):
        req = PersonaRequest(content=body.content, user_id=body.user_id,
                             session_id=body.session_id,
                             persona=persona if persona is not None else body.persona)
        scope = CancelScope()

        def answer():
            with scope.entered():
                return target.process(req)

        try:
            response = await guard(request, scope, run_in_threadpool(answer))
        except ClientGone:
            return gone_response()
        return JSONResponse(response.to_dict())

    @router.post("/api/v1/chat", responses=_ERRORS, summary="Chat; Abi routes to the best persona")
    async def chat_auto(request: Request, body: PersonaChatRequest,
                        target: MultiPersonaSystem = Depends(dependency)):
        return await chat(request, body, None, target)

    @router.post("/api/v1/chat/abbey", responses=_ERRORS, summary="Chat with Abbey")
    async def chat_abbey(request: Request, body: PersonaChatRequest,
                         target: MultiPersonaSystem = Depends(dependency)):
        return await chat(request, body, Persona.ABBEY, target)

    @router.post("/api/v1/chat/aviva", responses=_ERRORS, summary="Chat with Aviva")
    async def chat_aviva(request: Request, body: PersonaChatRequest,
                         target: MultiPersonaSystem = Depends(dependency)):
        return await chat(request, body, Persona.AVIVA, target)

    @router.get("/api/v1/personas", responses=_ERRORS, summary="The personas")
    def personas(target: MultiPersonaSystem = Depends(dependency)):
        cfg = target.config
        return {"personas": target.list_personas(), "default_persona": cfg.default_persona.value,
                "dynamic_routing": cfg.enable_dynamic_routing,
                "routing_confidence_threshold": cfg.routing_confidence_threshold}

    @router.get("/api/v1/personas/metrics", responses=_ERRORS,
                summary="Per-persona metrics and active alerts")
    def metrics(target: MultiPersonaSystem = Depends(dependency)):
        return target.metrics_report()

    @router.get("/api/v1/personas/health", responses=_ERRORS,
                summary="Health of the personas' backends")
    def health(probe: bool = False, target: MultiPersonaSystem = Depends(dependency)):
        report = target.health_report(probe=probe)
        return JSONResponse(report, status_code=503 if report["status"] == "unhealthy" else 200)

    return router


router = create_router()
