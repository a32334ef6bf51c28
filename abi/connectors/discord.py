"""Discord connector: bot messages (send, edit, delete), webhooks, client-side rate-limit
buckets, and an interactions helper that checks Ed25519 request signatures.

Bot token from ``DISCORD_BOT_TOKEN`` (only the bot endpoints need it; webhooks carry their
own token in the URL). Interactions: Discord signs ``timestamp + body`` with the
application's key; ``InteractionVerifier`` rejects forged, malformed and stale requests.
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Mapping, Sequence

import requests

from abi import config
from abi.connectors.http import (
    HttpClient, RateLimiter, RetryPolicy, Timeouts, drop_none, parse_retry_after,
)
from abi.errors import ConfigError, ErrorContext, InvalidRequestError, MalformedResponse, \
    SignatureError

DEFAULT_BASE_URL = "https://discord.com/api/v10"
BACKEND = "discord"
MAX_CONTENT = 2000           # characters in a message's content
MAX_EMBEDS = 10
INTERACTION_MAX_AGE = 300.0  # seconds a signed interaction stays acceptable


# --- rate limits -------------------------------------------------------------------------

@dataclass
class _Bucket:
    remaining: int | None = None
    reset_at: float = 0.0   # monotonic time when ``remaining`` refills


@dataclass(frozen=True)
class Route:
    """One API route: method, path template and its major parameters (the ids Discord
    scopes rate limits by: channel, guild, webhook)."""

    method: str
    template: str
    params: tuple = ()

    @classmethod
    def of(cls, method: str, template: str, **params: Any) -> "Route":
        return cls(method, template, tuple(sorted((k, str(v)) for k, v in params.items())))

    @property
    def path(self) -> str:
        return self.template.format(**dict(self.params))

    @property
    def key(self) -> str:
        major = [f"{k}={v}" for k, v in self.params
                 if k in ("channel_id", "guild_id", "webhook_id", "webhook_token")]
        return f"{self.method} {self.template} " + " ".join(major)

    @property
    def major(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params
                        if k in ("channel_id", "guild_id", "webhook_id", "webhook_token"))


class DiscordRateLimiter(RateLimiter):
    """Discord's buckets: each reply says which bucket its route is in (X-RateLimit-Bucket),
    how many calls remain and when it resets; a call to an exhausted bucket waits for the
    reset, and a global 429 holds every call. Routes share a bucket only with the same major
    parameters."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, max_wait: float = 60.0):
        self._clock, self._sleep, self.max_wait = clock, sleep, max_wait
        self._lock = threading.Lock()
        self._route_bucket: dict[str, str] = {}          # route key -> bucket hash
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._global_until = 0.0
        self._majors: dict[str, str] = {}                # route key -> major params

    def register(self, route: Route) -> str:
        with self._lock:
            self._majors[route.key] = route.major
        return route.key

    def _bucket(self, key: str) -> _Bucket | None:
        bucket_hash = self._route_bucket.get(key)
        if bucket_hash is None:
            return None
        return self._buckets.get((bucket_hash, self._majors.get(key, "")))

    def wait(self, route: str) -> None:
        while True:
            with self._lock:
                now = self._clock()
                delay = self._global_until - now
                bucket = self._bucket(route)
                if delay <= 0 and bucket is not None and bucket.remaining is not None \
                        and bucket.remaining <= 0:
                    if bucket.reset_at > now:
                        delay = bucket.reset_at - now
                    else:
                        bucket.remaining = None  # the window has passed: unknown until told
                if delay <= 0:
                    if bucket is not None and bucket.remaining is not None:
                        bucket.remaining -= 1  # claim a slot so concurrent callers queue
                    return
            self._sleep(min(delay, self.max_wait))

    def update(self, route: str, response: requests.Response) -> None:
        h = response.headers
        now = self._clock()
        with self._lock:
            if response.status_code == 429 and self._is_global(response):
                wait = self.retry_after(response)
                if wait is not None:
                    self._global_until = max(self._global_until, now + wait)
            bucket_hash = h.get("X-RateLimit-Bucket")
            if not bucket_hash:
                return
            self._route_bucket[route] = bucket_hash
            key = (bucket_hash, self._majors.get(route, ""))
            bucket = self._buckets.setdefault(key, _Bucket())
            try:
                if h.get("X-RateLimit-Remaining") is not None:
                    bucket.remaining = int(h["X-RateLimit-Remaining"])
                if h.get("X-RateLimit-Reset-After") is not None:
                    bucket.reset_at = now + max(0.0, float(h["X-RateLimit-Reset-After"]))
            except ValueError:
                pass  # a garbled header leaves the bucket as it was
            if response.status_code == 429 and not self._is_global(response):
                wait = self.retry_after(response)
                if wait is not None:
                    bucket.remaining = 0
                    bucket.reset_at = max(bucket.reset_at, now + wait)

    @staticmethod
    def _is_global(response: requests.Response) -> bool:
        if response.headers.get("X-RateLimit-Global", "").lower() == "true" \
                or response.headers.get("X-RateLimit-Scope") == "global":
            return True
        body = _json_or_none(response)
        return isinstance(body, dict) and body.get("global") is True

    def retry_after(self, response: requests.Response) -> float | None:
        body = _json_or_none(response)  # the body's retry_after is precise (float seconds)
        if isinstance(body, dict) and isinstance(body.get("retry_after"), (int, float)):
            return max(0.0, float(body["retry_after"]))
        return parse_retry_after(response.headers.get("Retry-After"))


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except (ValueError, requests.RequestException):
        return None


# --- messages ----------------------------------------------------------------------------

@dataclass
class DiscordMessage:
    id: str
    channel_id: str
    content: str = ""
    author_id: str | None = None
    timestamp: str | None = None
    edited_timestamp: str | None = None
    webhook_id: str | None = None
    embeds: list[dict] = field(default_factory=list)
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_obj(cls, obj: Any) -> "DiscordMessage":
        if not isinstance(obj, dict) or "id" not in obj:
            raise MalformedResponse("discord: a message object needs an id")
        author = obj.get("author") if isinstance(obj.get("author"), dict) else {}
        return cls(id=str(obj["id"]), channel_id=str(obj.get("channel_id", "")),
                   content=obj.get("content") or "", author_id=author.get("id"),
                   timestamp=obj.get("timestamp"), edited_timestamp=obj.get("edited_timestamp"),
                   webhook_id=obj.get("webhook_id"), embeds=list(obj.get("embeds") or []), raw=obj)


_SNOWFLAKE = re.compile(r"^\d{1,20}$")


def _snowflake(value: Any, name: str) -> str:
    text = str(value)
    if not _SNOWFLAKE.match(text):
        raise InvalidRequestError(f"{name} must be a Discord id (digits), got {text[:40]!r}")
    return text


def _message_body(content: str | None, embeds: Sequence[Mapping] | None,
                  allowed_mentions: Mapping | None, *, require: bool) -> dict:
    if content is not None:
        if not isinstance(content, str):
            raise InvalidRequestError("content must be a string")
        if len(content) > MAX_CONTENT:
            raise InvalidRequestError(f"message content is {len(content)} characters; Discord "
                                      f"allows at most {MAX_CONTENT}")
    if embeds is not None and len(embeds) > MAX_EMBEDS:
        raise InvalidRequestError(f"{len(embeds)} embeds; Discord allows at most {MAX_EMBEDS}")
    if require and not content and not embeds:
        raise InvalidRequestError("a message needs content or at least one embed")
    return drop_none({"content": content, "embeds": list(embeds) if embeds is not None else None,
                      "allowed_mentions": dict(allowed_mentions) if allowed_mentions else None})


class DiscordClient:
    """Discord REST API client. Bot endpoints need a token; webhook ones do not."""

    def __init__(self, token: str | None = None, base_url: str | None = None, *,
                 timeouts: Timeouts | None = None, retry: RetryPolicy | None = None,
                 rate_limiter: DiscordRateLimiter | None = None):
        self._token = token or config.env("DISCORD_BOT_TOKEN", secret=True)
        self.base_url = base_url or config.env("ABI_DISCORD_BASE_URL", DEFAULT_BASE_URL)
        self.limiter = rate_limiter or DiscordRateLimiter()
        self.http = HttpClient(self.base_url, backend=BACKEND, secrets=[self._token],
                               timeouts=timeouts, retry=retry, rate_limiter=self.limiter)

    def __repr__(self) -> str:
        return f"DiscordClient(base_url={self.base_url!r}, token={'set' if self._token else None})"

    def close(self) -> None:
        self.http.close()

    def _auth(self) -> dict:
        if not self._token:
            raise ConfigError("DISCORD_BOT_TOKEN is not set: bot endpoints need the bot's token",
                              field="DISCORD_BOT_TOKEN")
        return {"Authorization": f"Bot {self._token}"}

    def _call(self, route: Route, *, body: Any = None, params: Mapping | None = None,
              bot: bool = True, secret: str | None = None) -> Any:
        if secret:
            self.http.redact.add(secret)
        key = self.limiter.register(route)
        headers = self._auth() if bot else {}
        obj = self.http.json(route.method, route.path, json_body=body, params=params,
                             headers=headers, route=key)
        return obj

    def _message(self, obj: Any, route: Route) -> DiscordMessage:
        try:
            return DiscordMessage.from_obj(obj)
        except MalformedResponse as exc:
            exc.context = ErrorContext.api_error(exc, BACKEND, self.http.redact(route.path))
            raise

    # bot messages ------------------------------------------------------------------------

    def send_message(self, channel_id: str | int, content: str | None = None, *,
                     embeds: Sequence[Mapping] | None = None,
                     reply_to: str | int | None = None,
                     allowed_mentions: Mapping | None = None, tts: bool = False) -> DiscordMessage:
        route = Route.of("POST", "/channels/{channel_id}/messages",
                         channel_id=_snowflake(channel_id, "channel_id"))
        body = _message_body(content, embeds, allowed_mentions, require=True)
        if tts:
            body["tts"] = True
        if reply_to is not None:
            body["message_reference"] = {"message_id": _snowflake(reply_to, "reply_to")}
        return self._message(self._call(route, body=body), route)

    def edit_message(self, channel_id: str | int, message_id: str | int,
                     content: str | None = None, *, embeds: Sequence[Mapping] | None = None,
                     allowed_mentions: Mapping | None = None) -> DiscordMessage:
        route = Route.of("PATCH", "/channels/{channel_id}/messages/{message_id}",
                         channel_id=_snowflake(channel_id, "channel_id"),
                         message_id=_snowflake(message_id, "message_id"))
        body = _message_body(content, embeds, allowed_mentions, require=True)
        return self._message(self._call(route, body=body), route)

    def delete_message(self, channel_id: str | int, message_id: str | int) -> None:
        route = Route.of("DELETE", "/channels/{channel_id}/messages/{message_id}",
                         channel_id=_snowflake(channel_id, "channel_id"),
                         message_id=_snowflake(message_id, "message_id"))
        self._call(route)

    def get_message(self, channel_id: str | int, message_id: str | int) -> DiscordMessage:
        route = Route.of("GET", "/channels/{channel_id}/messages/{message_id}",
                         channel_id=_snowflake(channel_id, "channel_id"),
                         message_id=_snowflake(message_id, "message_id"))
        return self._message(self._call(route), route)

    # webhooks (also how interaction follow-ups are sent) ---------------------------------

    def execute_webhook(self, webhook_id: str | int, webhook_token: str,
                        content: str | None = None, *, username: str | None = None,
                        avatar_url: str | None = None, embeds: Sequence[Mapping] | None = None,
                        allowed_mentions: Mapping | None = None, wait: bool = True,
                        thread_id: str | int | None = None) -> DiscordMessage | None:
        """Post through a webhook; with ``wait`` the created message comes back."""
        route = Route.of("POST", "/webhooks/{webhook_id}/{webhook_token}",
                         webhook_id=_snowflake(webhook_id, "webhook_id"),
                         webhook_token=_webhook_token(webhook_token))
        body = _message_body(content, embeds, allowed_mentions, require=True)
        body.update(drop_none({"username": username, "avatar_url": avatar_url}))
        params = drop_none({"wait": "true" if wait else "false",
                            "thread_id": _snowflake(thread_id, "thread_id")
                            if thread_id is not None else None})
        obj = self._call(route, body=body, params=params, bot=False, secret=webhook_token)
        return self._message(obj, route) if wait else None

    def edit_webhook_message(self, webhook_id: str | int, webhook_token: str,
                             message_id: str | int, content: str | None = None, *,
                             embeds: Sequence[Mapping] | None = None) -> DiscordMessage:
        """``message_id`` may be ``"@original"`` for an interaction's first response."""
        route = Route.of("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                         webhook_id=_snowflake(webhook_id, "webhook_id"),
                         webhook_token=_webhook_token(webhook_token),
                         message_id=_message_ref(message_id))
        body = _message_body(content, embeds, None, require=True)
        obj = self._call(route, body=body, bot=False, secret=webhook_token)
        return self._message(obj, route)

    def delete_webhook_message(self, webhook_id: str | int, webhook_token: str,
                               message_id: str | int) -> None:
        route = Route.of("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                         webhook_id=_snowflake(webhook_id, "webhook_id"),
                         webhook_token=_webhook_token(webhook_token),
                         message_id=_message_ref(message_id))
        self._call(route, bot=False, secret=webhook_token)

    def create_interaction_response(self, interaction_id: str | int, interaction_token: str,
                                    response: Mapping) -> None:
        """Answer an interaction over REST (instead of in the HTTP reply to Discord)."""
        route = Route.of("POST", "/interactions/{interaction_id}/{webhook_token}/callback",
                         interaction_id=_snowflake(interaction_id, "interaction_id"),
                         webhook_token=_webhook_token(interaction_token))
        self._call(route, body=dict(response), bot=False, secret=interaction_token)


_WEBHOOK_TOKEN = re.compile(r"^[A-Za-z0-9_\-\.]{1,200}$")
_WEBHOOK_URL = re.compile(r"/webhooks/(\d{1,20})/([A-Za-z0-9_\-\.]{1,200})/?$")


def _webhook_token(token: str) -> str:
    if not isinstance(token, str) or not _WEBHOOK_TOKEN.match(token):
        raise InvalidRequestError("webhook token has unexpected characters")
    return token


def _message_ref(message_id: str | int) -> str:
    return "@original" if message_id == "@original" else _snowflake(message_id, "message_id")


class Webhook:
    """A webhook from its URL (``https://discord.com/api/webhooks/<id>/<token>``)."""

    def __init__(self, url: str, *, client: DiscordClient | None = None):
        m = _WEBHOOK_URL.search(url.split("?", 1)[0])
        if not m:
            raise ConfigError("not a Discord webhook URL (expected .../webhooks/<id>/<token>)",
                              field="webhook_url")
        self.id, self._token = m.group(1), m.group(2)
        self.client = client or DiscordClient(base_url=url[:m.start()] or DEFAULT_BASE_URL)
        self.client.http.redact.add(self._token)

    def __repr__(self) -> str:
        return f"Webhook(id={self.id!r})"

    def send(self, content: str | None = None, **kwargs) -> DiscordMessage | None:
        return self.client.execute_webhook(self.id, self._token, content, **kwargs)

    def edit(self, message_id: str | int, content: str | None = None, **kwargs) -> DiscordMessage:
        return self.client.edit_webhook_message(self.id, self._token, message_id, content,
                                                **kwargs)

    def delete(self, message_id: str | int) -> None:
        self.client.delete_webhook_message(self.id, self._token, message_id)


# --- interactions --------------------------------------------------------------------------

class InteractionType(IntEnum):
    PING = 1
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    APPLICATION_COMMAND_AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


class InteractionResponseType(IntEnum):
    PONG = 1
    CHANNEL_MESSAGE_WITH_SOURCE = 4
    DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7


EPHEMERAL = 1 << 6


def pong() -> dict:
    return {"type": int(InteractionResponseType.PONG)}


def message_response(content: str, *, ephemeral: bool = False,
                     embeds: Sequence[Mapping] | None = None) -> dict:
    data = _message_body(content, embeds, None, require=True)
    if ephemeral:
        data["flags"] = EPHEMERAL
    return {"type": int(InteractionResponseType.CHANNEL_MESSAGE_WITH_SOURCE), "data": data}


def deferred_response(*, ephemeral: bool = False) -> dict:
    kind = InteractionResponseType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
    out: dict[str, Any] = {"type": int(kind)}
    if ephemeral:
        out["data"] = {"flags": EPHEMERAL}
    return out


class InteractionVerifier:
    """Checks the Ed25519 signature Discord puts on each interaction request
    (headers X-Signature-Ed25519 and X-Signature-Timestamp over ``timestamp + body``) and
    that the timestamp is recent, so a captured request cannot be replayed later."""

    def __init__(self, public_key: str | bytes | None = None, *,
                 max_age: float = INTERACTION_MAX_AGE, clock: Callable[[], float] = time.time):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        key = public_key or config.env("DISCORD_PUBLIC_KEY", required=True,
                                       hint="the application's public key (hex) from Discord")
        try:
            raw = bytes.fromhex(key) if isinstance(key, str) else bytes(key)
            if len(raw) != 32:
                raise ValueError
            self._key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise ConfigError("the Discord public key must be 32 bytes (64 hex digits)",
                              field="public_key") from None
        self.max_age = max_age
        self._clock = clock

    def verify(self, signature: str | None, timestamp: str | None, body: bytes) -> None:
        """Raise SignatureError unless ``signature`` signs ``timestamp + body`` and the
        timestamp is within ``max_age`` seconds of now."""
        from cryptography.exceptions import InvalidSignature

        if not signature or not timestamp:
            raise SignatureError("missing X-Signature-Ed25519 or X-Signature-Timestamp header")
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise SignatureError("X-Signature-Timestamp is not a Unix time in seconds")
        try:
            sig = bytes.fromhex(signature)
        except ValueError:
            raise SignatureError("X-Signature-Ed25519 is not hex") from None
        if len(sig) != 64:
            raise SignatureError("X-Signature-Ed25519 must be 64 bytes")
        try:
            self._key.verify(sig, timestamp.encode("ascii") + bytes(body))
        except InvalidSignature:
            raise SignatureError("interaction signature does not match") from None
        age = self._clock() - int(timestamp)
        if abs(age) > self.max_age:
            raise SignatureError(f"interaction timestamp is {abs(age):.0f}s "
                                 f"{'old' if age > 0 else 'in the future'}; at most "
                                 f"{self.max_age:g}s is accepted")

    def verify_request(self, headers: Mapping[str, str], body: bytes) -> dict:
        """Verify, then parse: the interaction object."""
        lower = {k.lower(): v for k, v in headers.items()}
        self.verify(lower.get("x-signature-ed25519"), lower.get("x-signature-timestamp"), body)
        try:
            obj = json.loads(body)
        except ValueError:
            raise InvalidRequestError("interaction body is not JSON") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), int):
            raise InvalidRequestError("interaction body has no integer type")
        return obj


class InteractionHandler:
    """Turns a raw interaction request into ``(status, response_body)`` for any web
    framework: 401 for a bad signature, 400 for a bad body, PONG for PING, and
    ``handler(interaction)`` for everything else."""

    def __init__(self, verifier: InteractionVerifier, handler: Callable[[dict], Mapping]):
        self.verifier = verifier
        self.handler = handler

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict]:
        try:
            interaction = self.verifier.verify_request(headers, body)
        except SignatureError as exc:
            return 401, {"error": str(exc)}
        except InvalidRequestError as exc:
            return 400, {"error": str(exc)}
        if interaction["type"] == InteractionType.PING:
            return 200, pong()
        return 200, dict(self.handler(interaction))
