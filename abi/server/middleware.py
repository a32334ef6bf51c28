"""ASGI middleware in front of every route: the API key check, the request-body size limit,
and request counting for /metrics. Plain ASGI (not BaseHTTPMiddleware) so that streamed
responses and client disconnects pass through untouched."""
from __future__ import annotations

import hmac

from ..errors import RequestTooLarge, Unauthorized
from .errors import error_bytes

OPEN_PATHS = {"/health"}  # answer without the API key


class ServerMiddleware:
    def __init__(self, app, state):
        self.app = app
        self.state = state
        key = state.options.api_key
        self._key = key.encode() if key else None

    def _authorized(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    return hmac.compare_digest(token.strip(), self._key)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        metrics = self.state.metrics
        status = [500]
        started = [False]

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
            await send(message)

        async def refuse(exc):
            code, body = error_bytes(path, exc)
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode())]
            if code == 401:
                headers.append((b"www-authenticate", b"Bearer"))
            await send_counted({"type": "http.response.start", "status": code, "headers": headers})
            await send_counted({"type": "http.response.body", "body": body})

        metrics.request_started()
        try:
            if self._key is not None and path not in OPEN_PATHS and not self._authorized(scope):
                await refuse(Unauthorized("missing or wrong API key: send 'Authorization: "
                                          "Bearer <key>'"))
                return
            limit = self.state.options.max_body
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > limit:
                    await refuse(RequestTooLarge(f"the request body is over {limit} bytes"))
                    return
            received = [0]

            async def receive_limited():
                message = await receive()
                if message["type"] == "http.request":
                    received[0] += len(message.get("body", b""))
                    if received[0] > limit:  # chunked bodies announce no length
                        raise RequestTooLarge(f"the request body is over {limit} bytes")
                return message

            await self.app(scope, receive_limited, send_counted)
        finally:
            metrics.request_finished()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            metrics.record_http(method, label, status[0])
