"""The HTTP layer every connector shares: timeouts, retries with backoff, typed errors,
incremental SSE and NDJSON parsing, and keeping secrets out of messages.

Retries: 429, 5xx (but 501) and connection failures or timeouts are retried with
exponential backoff and full jitter; a ``Retry-After`` from the server (seconds or an HTTP
date, capped by ``RetryPolicy.retry_after_max``) replaces the backoff. A streamed reply is
retried only before its body starts: tokens already handed out cannot be taken back.
"""
from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import requests
import urllib3.exceptions

from abi.errors import (
    AgentError, AuthenticationError, ConfigError, ConnectionRefused, ErrorContext,
    HttpRequestFailed, MalformedResponse, ModelNotFound, RateLimited, StreamInterrupted,
    Timeout,
)

log = logging.getLogger("abi.connectors")

USER_AGENT = "abi-connectors/0.1"
MAX_ERROR_BODY = 300          # characters of a provider's error text kept in our message
MAX_LINE_BYTES = 16 << 20     # one SSE/NDJSON line; longer is an error, not a growing buffer


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for the TCP connection and between two reads of the reply."""

    connect: float = 10.0
    read: float = 120.0

    def as_requests(self) -> tuple[float, float]:
        return (self.connect, self.read)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4            # the first try included
    backoff_base: float = 0.5        # seconds; attempt k waits up to base * 2**(k-1)
    backoff_max: float = 30.0
    retry_after_max: float = 120.0   # longest server-requested wait we honour
    retry_statuses: frozenset = field(
        default_factory=lambda: frozenset({429} | set(range(500, 600)) - {501, 505}))

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**(attempt-1))]."""
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds == float("inf"):  # NaN or inf
        return None
    return max(0.0, seconds)


class Redactor:
    """Replaces known secrets and secret-looking tokens with ``***`` in any text we emit."""

    # Authorization values and the usual key shapes, should a server echo one we never saw
    _PATTERNS = re.compile(
        r"(Bearer |Bot )[A-Za-z0-9._~+/=\-]{16,}|\bsk-[A-Za-z0-9_\-]{8,}|\bhf_[A-Za-z0-9]{8,}")

    def __init__(self, secrets: Iterable[str | None] = ()):
        self._secrets: list[str] = []
        self._lock = threading.Lock()
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4:
            with self._lock:
                if secret not in self._secrets:
                    self._secrets = sorted(self._secrets + [secret], key=len, reverse=True)
            if self is not _PROCESS_SECRETS:
                _PROCESS_SECRETS.add(secret)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return self._PATTERNS.sub(lambda m: (m.group(1) or "") + "***", text)


_PROCESS_SECRETS = Redactor()


class _RedactingFilter(logging.Filter):
    """urllib3 logs request lines at DEBUG, URL included, and a webhook URL holds its token:
    scrub every secret a connector has seen from those records."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's business, not ours
            return True
        clean = _PROCESS_SECRETS(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_URLLIB3_LOGGER = logging.getLogger("urllib3.connectionpool")
if not any(isinstance(f, _RedactingFilter) for f in _URLLIB3_LOGGER.filters):
    _URLLIB3_LOGGER.addFilter(_RedactingFilter())


# --- incremental stream parsers ---------------------------------------------------------

@dataclass
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """text/event-stream decoder (WHATWG rules) fed bytes in pieces split anywhere: inside a
    line, between CR and LF, inside a multi-byte UTF-8 character."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES):
        self._buf = bytearray()
        self._skip_lf = False       # the last piece ended in CR: a leading LF belongs to it
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._max = max_line_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        buf = self._buf
        buf += chunk
        if not self._started and len(buf) >= 3:
            self._started = True
            if buf[:3] == b"\xef\xbb\xbf":  # a BOM may open the stream
                del buf[:3]
        pos = 0
        if self._skip_lf and buf[:1] == b"\n":
            pos = 1
        if buf:
            self._skip_lf = False
        n = len(buf)
        while pos < n:
            lf, cr = buf.find(b"\n", pos), buf.find(b"\r", pos)
            if lf < 0 and cr < 0:
                break
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            line = bytes(buf[pos:end])
            if buf[end] == 0x0D:  # CR, maybe CRLF
                if end + 1 < n:
                    pos = end + 2 if buf[end + 1] == 0x0A else end + 1
                else:
                    pos = end + 1
                    self._skip_lf = True
            else:
                pos = end + 1
            self._line(line.decode("utf-8", errors="replace"), events)
        del buf[:pos]
        if len(buf) > self._max:
            raise MalformedResponse(f"event-stream line longer than {self._max} bytes")
        return events

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(SSEEvent(data="\n".join(self._data), event=self._event or "message",
                                       id=self._last_id, retry=self._retry))
            self._data, self._event = [], ""
            return
        if line.startswith(":"):
            return  # comment / keep-alive
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)

    @property
    def pending(self) -> bool:
        """Whether an event or a line was left unfinished (the stream stopped mid-event)."""
        return bool(self._buf.strip()) or bool(self._data)


class NDJSONParser:
    """Newline-delimited JSON objects, fed bytes in pieces split anywhere."""

    def __init__(self, source: str = "stream", max_line_bytes: int = MAX_LINE_BYTES):
        self._buf = bytearray()
        self._source = source
        self._max = max_line_bytes

    def feed(self, chunk: bytes) -> list[dict]:
        self._buf += chunk
        out: list[dict] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            self._parse(bytes(self._buf[start:nl]), out)
            start = nl + 1
        del self._buf[:start]
        if len(self._buf) > self._max:
            raise MalformedResponse(f"{self._source}: NDJSON line longer than {self._max} bytes")
        return out

    def finish(self) -> list[dict]:
        """At end of stream: a last line without its newline is fine if it is whole JSON."""
        rest, self._buf = bytes(self._buf), bytearray()
        out: list[dict] = []
        if rest.strip():
            try:
                self._parse(rest, out)
            except MalformedResponse:
                raise StreamInterrupted(
                    f"{self._source}: stream ended in the middle of a line") from None
        return out

    def _parse(self, line: bytes, out: list[dict]) -> None:
        line = line.strip()
        if not line:
            return
        try:
            obj = json.loads(line)
        except ValueError:
            raise MalformedResponse(
                f"{self._source}: malformed NDJSON line {_excerpt(line)!r}") from None
        if not isinstance(obj, dict):
            raise MalformedResponse(f"{self._source}: NDJSON line is not an object: "
                                    f"{_excerpt(line)!r}")
        out.append(obj)


def _excerpt(raw: bytes | str, limit: int = 120) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text if len(text) <= limit else text[:limit] + "..."


# --- the client ---------------------------------------------------------------------------

class RateLimiter:
    """Hook for provider-specific client-side rate limiting (see discord.DiscordRateLimiter)."""

    def wait(self, route: str) -> None:  # before each attempt
        pass

    def update(self, route: str, response: requests.Response) -> None:  # after each reply
        pass

    def retry_after(self, response: requests.Response) -> float | None:
        return parse_retry_after(response.headers.get("Retry-After"))


class HttpClient:
    """requests.Session with a base URL, default headers, timeouts, retries and typed errors.

    ``backend`` names the provider in errors and their ErrorContext; ``secrets`` are values
    (API keys, tokens) that must never appear in a message.
    """

    def __init__(self, base_url: str, *, backend: str, headers: Mapping[str, str] | None = None,
                 secrets: Iterable[str | None] = (), timeouts: Timeouts | None = None,
                 retry: RetryPolicy | None = None, session: requests.Session | None = None,
                 rate_limiter: RateLimiter | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self.backend = backend
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        self.redact = Redactor(secrets)
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()
        self.rate_limiter = rate_limiter or RateLimiter()
        self._sleep = sleep

    def close(self) -> None:
        self.session.close()

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    # requests -------------------------------------------------------------------------

    def request(self, method: str, path: str, *, json_body: Any = None,
                params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, stream: bool = False,
                model: str | None = None, route: str | None = None,
                retry: RetryPolicy | None = None) -> requests.Response:
        """Send with retries; return a 2xx response or raise the typed error for the last one.

        ``model`` turns a 404 into ModelNotFound and goes into the error context; ``route``
        keys the rate limiter (default: method and path).
        """
        policy = retry or self.retry
        endpoint = self.redact(path)
        route = route or f"{method} {path}"
        all_headers = {**self.headers, **(headers or {})}
        if json_body is not None:
            all_headers.setdefault("Content-Type", "application/json")
        body = None if json_body is None else json.dumps(json_body).encode("utf-8")
        attempts = max(1, policy.max_attempts)
        for attempt in range(1, attempts + 1):
            self.rate_limiter.wait(route)
            try:
                resp = self.session.request(method, self.url(path), data=body, params=params,
                                            headers=all_headers, stream=stream,
                                            timeout=self.timeouts.as_requests())
            except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
                    requests.exceptions.InvalidURL) as exc:
                raise ConfigError(f"{self.backend}: {self.redact(self.base_url)!r} is not a "
                                  f"usable base URL ({type(exc).__name__})",
                                  field="base_url") from None
            except requests.RequestException as exc:
                err = self._transport_error(exc, method, endpoint, model)
                if attempt < attempts:
                    delay = policy.backoff(attempt)
                    self._log_retry(method, endpoint, type(err).__name__, delay, attempt, attempts)
                    self._sleep(delay)
                    continue
                raise self._finalize(err, endpoint, model, attempt, attempts) from None
            self.rate_limiter.update(route, resp)
            if 200 <= resp.status_code < 300:
                return resp
            if attempt < attempts and resp.status_code in policy.retry_statuses:
                hinted = self.rate_limiter.retry_after(resp)
                delay = (min(hinted, policy.retry_after_max) if hinted is not None
                         else policy.backoff(attempt))
                resp.close()
                self._log_retry(method, endpoint, f"HTTP {resp.status_code}", delay, attempt,
                                attempts)
                self._sleep(delay)
                continue
            err = self.status_error(resp, method, endpoint, model, streamed=stream)
            resp.close()
            raise self._finalize(err, endpoint, model, attempt, attempts)
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kwargs) -> Any:
        """request() and decode the JSON body (an empty body gives None)."""
        model = kwargs.get("model")
        resp = self.request(method, path, **kwargs)
        if not resp.content.strip():
            return None
        try:
            return resp.json()
        except ValueError:
            raise self._with_context(MalformedResponse(
                f"{self.backend} returned a body that is not JSON for {method} "
                f"{self.redact(path)}: {self.redact(_excerpt(resp.content))!r}",
                status=resp.status_code), path, model, resp.status_code) from None

    def stream_bytes(self, method: str, path: str, **kwargs) -> Iterator[bytes]:
        """The reply body as byte pieces as they arrive. A dropped connection or a read
        timeout mid-body raises StreamInterrupted / Timeout (never a silent end)."""
        model = kwargs.get("model")
        endpoint = self.redact(path)
        # a compressing server holds tokens back to fill its blocks: ask for none
        kwargs["headers"] = {"Accept-Encoding": "identity", **(kwargs.get("headers") or {})}
        resp = self.request(method, path, stream=True, **kwargs)
        try:
            raw = resp.raw
            reader = getattr(raw, "read1", None)  # urllib3 2: returns what has arrived
            while True:
                try:
                    piece = (reader(65536, decode_content=True) if reader is not None
                             else raw.read(65536, decode_content=True))
                except (urllib3.exceptions.ReadTimeoutError, requests.Timeout):
                    raise self._with_context(Timeout(
                        f"{self.backend} stopped sending for {self.timeouts.read:g}s in the "
                        f"middle of {method} {endpoint}"), path, model, resp.status_code) from None
                except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                    raise self._with_context(StreamInterrupted(
                        f"{self.backend} connection dropped in the middle of the streamed "
                        f"reply to {method} {endpoint} ({type(exc).__name__})",
                        status=resp.status_code), path, model, resp.status_code) from None
                if not piece:
                    return
                yield piece
        finally:
            resp.close()

    def stream_sse(self, method: str, path: str, **kwargs) -> Iterator[SSEEvent]:
        """SSE events of a streamed reply. Ending mid-event raises StreamInterrupted."""
        parser = SSEParser()
        try:
            for piece in self.stream_bytes(method, path, **kwargs):
                yield from parser.feed(piece)
        except AgentError as exc:
            raise self._ensure_context(exc, path, kwargs.get("model"))
        if parser.pending:
            raise self.interrupted(path, "the event stream ended in the middle of an event",
                                   kwargs.get("model"))

    def stream_ndjson(self, method: str, path: str, **kwargs) -> Iterator[dict]:
        """JSON objects of a streamed NDJSON reply."""
        parser = NDJSONParser(source=f"{self.backend} {method} {self.redact(path)}")
        try:
            for piece in self.stream_bytes(method, path, **kwargs):
                yield from parser.feed(piece)
            yield from parser.finish()
        except AgentError as exc:
            raise self._ensure_context(exc, path, kwargs.get("model"))

    # errors ----------------------------------------------------------------------------

    def interrupted(self, path: str, what: str, model: str | None = None) -> StreamInterrupted:
        return self._with_context(StreamInterrupted(
            f"{self.backend}: {what} ({self.redact(path)})"), path, model, None)

    def malformed(self, path: str, what: str, model: str | None = None) -> MalformedResponse:
        return self._with_context(MalformedResponse(
            f"{self.backend}: {self.redact(what)} ({self.redact(path)})"), path, model, None)

    def _ensure_context(self, err: AgentError, path: str, model: str | None) -> AgentError:
        if err.context is None:
            self._with_context(err, path, model, err.status)
        return err

    def _with_context(self, err: AgentError, path: str, model: str | None,
                      status: int | None) -> AgentError:
        err.context = ErrorContext.api_error(err, self.backend, self.redact(path), status, model)
        return err

    def status_error(self, resp: requests.Response, method: str, endpoint: str,
                     model: str | None, streamed: bool = False) -> AgentError:
        status = resp.status_code
        detail = self.redact(_provider_message(resp, streamed))
        what = f"{self.backend} {method} {endpoint} returned HTTP {status}"
        if detail:
            what += f": {detail}"
        if status in (401, 403):
            return AuthenticationError(what + " (check the API key or token)", status=status)
        if status == 404 and model is not None:
            return ModelNotFound(f"{self.backend} has no model {model!r} ({what})", status=status)
        if status == 429:
            return RateLimited(what, status=status,
                               retry_after=self.rate_limiter.retry_after(resp))
        return HttpRequestFailed(what, status=status)

    def _transport_error(self, exc: requests.RequestException, method: str, endpoint: str,
                         model: str | None) -> AgentError:
        where = f"{self.backend} at {self.redact(self.base_url)}"
        if isinstance(exc, requests.ConnectTimeout):
            return Timeout(f"connecting to {where} timed out after {self.timeouts.connect:g}s")
        if isinstance(exc, requests.ReadTimeout):
            return Timeout(f"{where} sent no reply to {method} {endpoint} within "
                           f"{self.timeouts.read:g}s")
        if isinstance(exc, requests.ConnectionError) and _is_connect_failure(exc):
            return ConnectionRefused(f"cannot connect to {where} ({_root_cause(exc)}); "
                                     "is the server running and the URL right?")
        return HttpRequestFailed(f"{method} {endpoint} to {where} failed: "
                                 f"{type(exc).__name__} ({_root_cause(exc)})")

    def _finalize(self, err: AgentError, endpoint: str, model: str | None, attempt: int,
                  attempts: int) -> AgentError:
        if attempt > 1:
            err.context = ErrorContext.retry_error(err, self.backend, endpoint, attempt, attempts,
                                                   model=model, status=err.status)
            err.args = (f"{err.args[0]} (after {attempt} attempts)",)
        else:
            err.context = ErrorContext.api_error(err, self.backend, endpoint, err.status, model)
        return err

    def _log_retry(self, method, endpoint, why, delay, attempt, attempts) -> None:
        log.warning("%s %s %s: %s; retrying in %.2fs (attempt %d/%d)", self.backend, method,
                    endpoint, why, delay, attempt + 1, attempts)


def _is_connect_failure(exc: BaseException) -> bool:
    """Whether the request never reached the server (so nothing was processed)."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError,
                            urllib3.exceptions.NameResolutionError)):
            return True
        nxt = getattr(cur, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = nxt or cur.__cause__ or cur.__context__
    return False


def _root_cause(exc: BaseException) -> str:
    """A short reason without URLs (they may carry tokens): the innermost error's class."""
    seen = set()
    cur: BaseException = exc
    while id(cur) not in seen:
        seen.add(id(cur))
        nxt = getattr(cur, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        nxt = nxt or cur.__cause__
        if nxt is None:
            break
        cur = nxt
    if isinstance(cur, OSError) and cur.strerror:
        return cur.strerror
    return type(cur).__name__


def _provider_message(resp: requests.Response, streamed: bool = False) -> str:
    """The human part of a provider's error body: OpenAI's error.message, Ollama's and
    HuggingFace's error, Discord's message; else the start of the text."""
    try:
        # a streamed error reply is read only in part: its size is the server's choice
        raw = resp.raw.read(65536, decode_content=True) if streamed else resp.content
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        return ""
    if not raw:
        return ""
    try:
        body = json.loads(raw)
    except ValueError:
        return _excerpt(raw, MAX_ERROR_BODY).strip()
    msg: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message") or err.get("code")
        elif isinstance(err, str):
            msg = err
        elif isinstance(err, list) and err:
            msg = "; ".join(str(e) for e in err[:3])
        if msg is None:
            msg = body.get("message") or body.get("detail")
    if msg is None:
        msg = raw
    return _excerpt(msg if isinstance(msg, (str, bytes)) else json.dumps(msg), MAX_ERROR_BODY)


def join_url(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts if p])


def drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


def require_keys(obj: Any, keys: Sequence[str], what: str) -> dict:
    """obj must be a dict holding ``keys``; else MalformedResponse saying which is missing."""
    if not isinstance(obj, dict):
        raise MalformedResponse(f"{what}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise MalformedResponse(f"{what}: missing {', '.join(missing)}")
    return obj


__all__ = [
    "HttpClient", "NDJSONParser", "NO_RETRY", "RateLimiter", "Redactor", "RetryPolicy",
    "SSEEvent", "SSEParser", "Timeouts", "drop_none", "join_url", "parse_retry_after",
    "require_keys",
]
