"""Discord connector against a fake Discord API (real HTTP): messages, webhooks, rate-limit
buckets, and Ed25519-signed interactions served over a real HTTP endpoint."""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from abi.connectors.discord import (
    DiscordClient, DiscordRateLimiter, InteractionHandler, InteractionVerifier, Webhook,
    message_response,
)
from abi.connectors.http import RetryPolicy
from abi.errors import (
    AuthenticationError, ConfigError, HttpRequestFailed, InvalidRequestError, SignatureError,
)
from fake_providers import DISCORD_TOKEN, WEBHOOK_TOKEN, FakeDiscord, with_server

FAST = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.02, retry_after_max=1.0)


@pytest.fixture
def fake():
    yield from with_server(FakeDiscord)


@pytest.fixture
def bot(fake):
    return DiscordClient(token=DISCORD_TOKEN, base_url=fake.url + "/api/v10", retry=FAST)


def test_send_edit_delete(bot, fake):
    msg = bot.send_message(123, "hello", reply_to=99)
    assert (msg.content, msg.channel_id, msg.author_id) == ("hello", "123", "42")
    sent = fake.requests[-1]
    assert sent.headers["authorization"] == f"Bot {DISCORD_TOKEN}"
    assert sent.json == {"content": "hello", "message_reference": {"message_id": "99"}}
    edited = bot.edit_message(123, msg.id, "hello again")
    assert edited.content == "hello again" and edited.edited_timestamp
    assert bot.get_message(123, msg.id).content == "hello again"
    bot.delete_message(123, msg.id)
    assert msg.id not in fake.messages
    with pytest.raises(HttpRequestFailed) as ei:
        bot.delete_message(123, msg.id)
    assert ei.value.status == 404 and "Unknown Message" in str(ei.value)


def test_input_validation(bot, fake):
    with pytest.raises(InvalidRequestError):
        bot.send_message(1, "x" * 2001)
    with pytest.raises(InvalidRequestError):
        bot.send_message(1, "")
    with pytest.raises(InvalidRequestError):
        bot.send_message("../../guilds", "hi")
    assert fake.requests == []  # nothing bad left this process


def test_bot_token_required(monkeypatch, fake):
    monkeypatch.delenv("DISCORD_BOT_TOKEN", raising=False)
    c = DiscordClient(base_url=fake.url + "/api/v10")
    with pytest.raises(ConfigError) as ei:
        c.send_message(1, "hi")
    assert ei.value.field == "DISCORD_BOT_TOKEN"
    monkeypatch.setenv("DISCORD_BOT_TOKEN", DISCORD_TOKEN)
    assert DiscordClient(base_url=fake.url + "/api/v10").send_message(1, "hi").content == "hi"


def test_wrong_token(fake, caplog):
    caplog.set_level(logging.DEBUG)
    c = DiscordClient(token="wrong-token-value-123456", base_url=fake.url + "/api/v10",
                      retry=FAST)
    with pytest.raises(AuthenticationError) as ei:
        c.send_message(1, "hi")
    assert "wrong-token-value-123456" not in str(ei.value) + caplog.text + repr(c)


def test_webhooks_and_token_secrecy(fake, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3 logs request lines, URLs included
    hook = Webhook(f"{fake.url}/api/webhooks/555/{WEBHOOK_TOKEN}")
    hook.client.http.retry = FAST
    msg = hook.send("from a hook", username="abi")
    assert msg.webhook_id == "555" and msg.content == "from a hook"
    assert "authorization" not in fake.requests[-1].headers
    assert fake.requests[-1].query == {"wait": ["true"]}
    assert hook.edit(msg.id, "edited").content == "edited"
    hook.delete(msg.id)
    assert hook.send("no wait", wait=False) is None
    with pytest.raises(HttpRequestFailed) as ei:
        hook.delete(msg.id)
    err = ei.value
    assert WEBHOOK_TOKEN not in str(err) + err.context.format(verbose=True) + repr(hook)
    assert f"/webhooks/555/{WEBHOOK_TOKEN}" not in caplog.text
    assert "/webhooks/555/***" in caplog.text  # the request lines were logged, scrubbed


def test_bad_webhook_token(fake):
    hook = Webhook(f"{fake.url}/api/webhooks/555/not-the-token")
    with pytest.raises(AuthenticationError):
        hook.send("x")
    with pytest.raises(ConfigError):
        Webhook("https://example.invalid/not/a/hook")


class Sleeps(list):
    """Real sleeping, recorded: what the limiter chose to wait."""

    def __call__(self, seconds):
        self.append(seconds)
        time.sleep(seconds)


def test_bucket_waits_before_429(fake):
    """5 calls per 0.3 s per channel: the 6th..12th wait for the bucket's reset instead of
    drawing 429s."""
    sleeps = Sleeps()
    bot = DiscordClient(token=DISCORD_TOKEN, base_url=fake.url + "/api/v10",
                        retry=RetryPolicy(max_attempts=1),
                        rate_limiter=DiscordRateLimiter(sleep=sleeps))
    for i in range(12):
        bot.send_message(1, f"m{i}")
    assert fake.rate_limited == 0 and len(fake.messages) == 12
    assert len(sleeps) >= 2 and all(0 < s <= 0.3 for s in sleeps)


def test_buckets_are_per_channel():
    fake = FakeDiscord(limit=5, window=1.0)  # a window no slow machine outlasts by accident
    try:
        sleeps = Sleeps()
        bot = DiscordClient(token=DISCORD_TOKEN, base_url=fake.url + "/api/v10",
                            retry=RetryPolicy(max_attempts=1),
                            rate_limiter=DiscordRateLimiter(sleep=sleeps))
        for i in range(4):
            bot.send_message(1, f"a{i}")
            bot.send_message(2, f"b{i}")
        assert sleeps == [] and fake.rate_limited == 0
        bot.send_message(1, "a4")  # channel 1's fifth: allowed, the bucket now empty
        bot.send_message(1, "a5")  # the sixth waits
        assert len(sleeps) == 1 and fake.rate_limited == 0
    finally:
        fake.close()


def test_429_retry_after_from_body(fake):
    """A client that ignores buckets (max_wait 0) still recovers: the 429's retry_after."""
    limiter = DiscordRateLimiter(max_wait=0.0)
    limiter.wait = lambda route: None  # no proactive waiting at all
    bot = DiscordClient(token=DISCORD_TOKEN, base_url=fake.url + "/api/v10", retry=FAST,
                        rate_limiter=limiter)
    for i in range(8):
        bot.send_message(1, f"m{i}")
    assert fake.rate_limited >= 1 and len(fake.messages) == 8


def test_global_rate_limit(fake, bot):
    fake.global_once = True
    t0 = time.monotonic()
    assert bot.send_message(1, "after global").content == "after global"
    assert time.monotonic() - t0 >= 0.1 and fake.rate_limited == 1


# --- interactions ---------------------------------------------------------------------------

@pytest.fixture
def keys():
    private = Ed25519PrivateKey.generate()
    public_hex = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return private, public_hex


def sign(private, body: bytes, timestamp: str | None = None):
    ts = timestamp or str(int(time.time()))
    return {"X-Signature-Ed25519": private.sign(ts.encode() + body).hex(),
            "X-Signature-Timestamp": ts, "Content-Type": "application/json"}


@pytest.fixture
def endpoint(keys):
    """An interactions endpoint on 127.0.0.1, as a bot would run it."""
    handler = InteractionHandler(
        InteractionVerifier(keys[1]),
        lambda i: message_response(f"pong to /{i['data']['name']}", ephemeral=True))

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status, reply = handler.handle(dict(self.headers), body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/interactions"
    server.shutdown()
    server.server_close()


def test_interaction_ping_and_command(keys, endpoint):
    private = keys[0]
    ping = b'{"type": 1, "id": "1", "application_id": "2", "token": "t"}'
    r = requests.post(endpoint, data=ping, headers=sign(private, ping), timeout=5)
    assert (r.status_code, r.json()) == (200, {"type": 1})
    cmd = json.dumps({"type": 2, "id": "3", "token": "t", "data": {"name": "ask"}}).encode()
    r = requests.post(endpoint, data=cmd, headers=sign(private, cmd), timeout=5)
    assert r.json() == {"type": 4, "data": {"content": "pong to /ask", "flags": 64}}


def test_interaction_forged_or_stale_rejected(keys, endpoint):
    private, _ = keys
    body = b'{"type": 1}'
    other = Ed25519PrivateKey.generate()
    cases = {
        "other key": sign(other, body),
        "tampered body": sign(private, b'{"type": 2}'),
        "stale": sign(private, body, str(int(time.time()) - 3600)),
        "future": sign(private, body, str(int(time.time()) + 3600)),
        "no signature": {"Content-Type": "application/json"},
        "not hex": {**sign(private, body), "X-Signature-Ed25519": "zz" * 64},
    }
    for name, headers in cases.items():
        r = requests.post(endpoint, data=body, headers=headers, timeout=5)
        assert r.status_code == 401, name
    ts = str(int(time.time()))
    r = requests.post(endpoint, data=b"not json",
                      headers=sign(private, b"not json", ts), timeout=5)
    assert r.status_code == 400


def test_verifier_direct(keys):
    private, public_hex = keys
    now = 1_700_000_000
    v = InteractionVerifier(public_hex, max_age=60, clock=lambda: now)
    body = b'{"type": 1}'
    ts = str(now - 30)
    v.verify(private.sign(ts.encode() + body).hex(), ts, body)  # fresh enough: no error
    old = str(now - 61)
    with pytest.raises(SignatureError) as ei:
        v.verify(private.sign(old.encode() + body).hex(), old, body)
    assert "old" in str(ei.value)
    with pytest.raises(ConfigError):
        InteractionVerifier("abcd")
