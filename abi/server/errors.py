"""The one place where exceptions become HTTP errors.

Status, type and code come from the error's class (``AbiError.http_status``,
``error_type``, ``code``, ``ConfigError.field``). OpenAI routes and the llama.cpp-style
extras answer ``{"error": {"message", "type", "param", "code"}}``; Ollama routes (``/api/``)
answer ``{"error": "message"}``, as Ollama does.
"""
from __future__ import annotations

import json
import logging

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import AbiError

log = logging.getLogger("abi.server")

_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
               413: "invalid_request_error", 429: "rate_limit_error"}


def describe(exc: BaseException) -> tuple[int, dict]:
    """(status, {"message", "type", "param", "code"}) for any exception."""
    if isinstance(exc, AbiError):
        status = int(exc.http_status)
        return status, {"message": str(exc) or type(exc).__name__, "type": exc.error_type,
                        "param": getattr(exc, "field", None), "code": getattr(exc, "code", None)}
    if isinstance(exc, RequestValidationError):
        return 400, _validation(exc)
    if isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        kind = _HTTP_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        return status, {"message": str(exc.detail), "type": kind, "param": None, "code": None}
    return 500, {"message": "internal server error (see the server's log)", "type": "server_error",
                 "param": None, "code": None}


def _validation(exc: RequestValidationError) -> dict:
    errors = exc.errors()
    parts, param = [], None
    for err in errors:
        if err.get("type") == "json_invalid":
            return {"message": "the request body is not valid JSON", "type": "invalid_request_error",
                    "param": None, "code": None}
        if tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), (bytes, str)):
            return {"message": "the request body must be a JSON object, sent with "
                               "'Content-Type: application/json'",
                    "type": "invalid_request_error", "param": None, "code": None}
    for err in errors[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        param = param or (".".join(loc) or None)
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return {"message": "invalid request: " + "; ".join(parts) + more,
            "type": "invalid_request_error", "param": param, "code": None}


def is_ollama_path(path: str) -> bool:
    # /api/v1/ is the persona API, which answers in OpenAI's shape
    return path.startswith("/api/") and not path.startswith("/api/v1/")


def error_body(path: str, info: dict) -> dict:
    if is_ollama_path(path):
        return {"error": info["message"]}
    return {"error": info}


def error_response(path: str, exc: BaseException) -> JSONResponse:
    status, info = describe(exc)
    if status >= 500 and not isinstance(exc, AbiError):
        log.error("unhandled error on %s", path, exc_info=exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers.update(exc.headers)  # e.g. 405's Allow, which RFC 9110 requires
    return JSONResponse(error_body(path, info), status_code=status, headers=headers or None)


def error_bytes(path: str, exc: BaseException) -> tuple[int, bytes]:
    """The same, as raw bytes (for the ASGI middleware, outside any route)."""
    status, info = describe(exc)
    return status, json.dumps(error_body(path, info)).encode()


def install(app) -> None:
    async def handle(request: Request, exc: Exception):
        return error_response(request.url.path, exc)

    for kind in (AbiError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)
