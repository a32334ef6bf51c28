"""The persona HTTP API (the reference's "HTTP API" of the multi-persona system):

    POST /api/v1/chat              route automatically
    POST /api/v1/chat/abbey        force Abbey
    POST /api/v1/chat/aviva        force Aviva
    GET  /api/v1/personas          the personas
    GET  /api/v1/personas/metrics  requests, success rate, latency percentiles, alerts
    GET  /api/v1/personas/health   overall and per-persona health (503 when unhealthy)

Request: ``{"content", "user_id", "session_id", "persona"}`` (user_id defaults to
"anonymous"); response: ``PersonaResponse.to_dict()`` (content, persona, confidence,
latency_ms first). Errors: ``{"error": {"message", "type", "param", "code"}}`` with the
status of the typed error.

Which system answers: the one ``create_router(system)`` was given (an instance or a
factory); else ``app.state.personas`` (an instance or a factory); else one built on first
use from the environment (``MultiPersonaConfig.from_env()``). Tests can also override the
``get_persona_system`` dependency.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Callable, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import AbiError, InvalidRequestError
from ..personas import MultiPersonaConfig, MultiPersonaSystem, Persona, PersonaRequest
from .schemas import ErrorResponse

SystemSource = Union[MultiPersonaSystem, Callable[[], MultiPersonaSystem]]
MAX_BODY_BYTES = 1_000_000

# a malformed body or query is a 400 (not FastAPI's 422); a failing backend, its own status
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 429, 502, 503, 504)}

_default: MultiPersonaSystem | None = None
_default_lock = threading.Lock()

_REQUEST_SCHEMA = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["content"], "additionalProperties": False,
        # content must hold more than whitespace, as PersonaRequest checks
        "properties": {"content": {"type": "string", "pattern": "\\S"},
                       "user_id": {"type": "string", "minLength": 1},
                       "session_id": {"type": ["string", "null"]},
                       "persona": {"type": ["string", "null"], "enum": ["abi", "abbey", "aviva",
                                                                        None]}}}}}}}


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
    """The system for this request: ``app.state.personas``, else the default one."""
    source = getattr(request.app.state, "personas", None)
    if source is not None:
        system = _resolve(source)
        request.app.state.personas = system   # a factory runs once
        return system
    return default_system()


def error_response(exc: AbiError) -> JSONResponse:
    body = {"error": {"message": str(exc) or type(exc).__name__, "type": exc.error_type,
                      "param": getattr(exc, "field", None), "code": getattr(exc, "code", None)}}
    return JSONResponse(body, status_code=int(exc.http_status))


async def _read_request(request: Request, persona: Persona | None) -> PersonaRequest:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequestError(f"the request body is {len(raw)} bytes; at most "
                                  f"{MAX_BODY_BYTES} are accepted")
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object with 'content'")
    unknown = set(data) - {"content", "user_id", "session_id", "persona"}
    if unknown:
        raise InvalidRequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
    if "content" not in data:
        raise InvalidRequestError("'content' is required")
    chosen = persona if persona is not None else data.get("persona")
    return PersonaRequest(content=data["content"], user_id=data.get("user_id", "anonymous"),
                          session_id=data.get("session_id"), persona=chosen)


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

    async def chat(request: Request, persona: Persona | None,
                   target: MultiPersonaSystem) -> JSONResponse:
        try:
            req = await _read_request(request, persona)
            response = await run_in_threadpool(target.process, req)
        except AbiError as exc:
            return error_response(exc)
        return JSONResponse(response.to_dict())

    @router.post("/api/v1/chat", openapi_extra=_REQUEST_SCHEMA, responses=_ERRORS,
                 summary="Chat; Abi routes to the best persona")
    async def chat_auto(request: Request, target: MultiPersonaSystem = Depends(dependency)):
        return await chat(request, None, target)

    @router.post("/api/v1/chat/abbey", openapi_extra=_REQUEST_SCHEMA, responses=_ERRORS,
                 summary="Chat with Abbey")
    async def chat_abbey(request: Request, target: MultiPersonaSystem = Depends(dependency)):
        return await chat(request, Persona.ABBEY, target)

    @router.post("/api/v1/chat/aviva", openapi_extra=_REQUEST_SCHEMA, responses=_ERRORS,
                 summary="Chat with Aviva")
    async def chat_aviva(request: Request, target: MultiPersonaSystem = Depends(dependency)):
        return await chat(request, Persona.AVIVA, target)

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
