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
            limit = self.state.max_body
            too_large = RequestTooLarge(
                f"the request body is over {limit} bytes, this server's limit (by default what "
                "the model's context can hold; set it with --max-body-bytes)")
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > limit:
                    await refuse(too_large)  # before reading a byte of it
                    return
            # chunked bodies announce no length: read here, refusing as soon as the limit is
            # passed, and hand the app the body whole
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client left: nobody to answer
                    status[0] = 499
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > limit:
                    await refuse(too_large)
                    return
                if not message.get("more_body", False):
                    break
            pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

            async def replay():
                return pending.pop(0) if pending else await receive()

            await self.app(scope, replay, send_counted)
        finally:
            metrics.request_finished()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            metrics.record_http(method, label, status[0])
