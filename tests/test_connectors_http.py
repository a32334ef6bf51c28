"""The shared HTTP layer: retries, backoff, Retry-After, timeouts, typed errors, stream
parsers at every chunk boundary, and secrets kept out of messages and logs."""
from __future__ import annotations

import json
import logging
import time

import pytest

from abi.connectors.http import (
    HttpClient, NDJSONParser, Redactor, RetryPolicy, SSEEvent, SSEParser, Timeouts,
    parse_retry_after,
)
from abi.errors import (
    AgentError, AuthenticationError, ConfigError, ConnectionRefused, HttpRequestFailed,
    MalformedResponse, ModelNotFound, RateLimited, StreamInterrupted, Timeout,
)
from fake_providers import FakeServer, Reply, Stream, free_port

FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02, retry_after_max=0.05)


class Echo(FakeServer):
    def handle(self, rec):
        return Reply(json={"ok": True, "path": rec.path})


@pytest.fixture
def server():
    s = Echo()
    yield s
    s.close()


class SleepLog(list):
    def __call__(self, seconds):
        self.append(seconds)


def client(server, **kw) -> HttpClient:
    kw.setdefault("retry", FAST)
    kw.setdefault("timeouts", Timeouts(connect=2, read=2))
    return HttpClient(server.url, backend="test", **kw)


# --- retries ----------------------------------------------------------------------------

def test_5xx_retried_then_success(server):
    server.fail(Reply(500, json={"error": "boom"}), times=1)
    server.fail(Reply(503, body=b"busy"), times=1)
    assert client(server).json("GET", "/x") == {"ok": True, "path": "/x"}
    assert len(server.requests) == 3


def test_exhausted_retries_raise_typed_error_with_retry_context(server, caplog):
    server.fail(Reply(502, json={"error": {"message": "upstream down"}}), times=5)
    with pytest.raises(HttpRequestFailed) as ei:
        client(server).json("POST", "/v1/x", json_body={"a": 1}, model="m1")
    err = ei.value
    assert err.status == 502 and "upstream down" in str(err)
    assert len(server.requests) == 3
    ctx = err.context
    assert (ctx.retry_attempt, ctx.max_retries, ctx.backend, ctx.http_status) == (3, 3, "test", 502)
    with caplog.at_level(logging.ERROR, logger="abi.agents"):
        line = ctx.log()
    assert line == ("AgentError: HttpRequestFailed during API request [backend=test] "
                    "[model=m1] [attempt=3/3]")
    assert line in caplog.text


def test_4xx_not_retried(server):
    server.fail(Reply(400, json={"error": {"message": "bad field"}}), times=3)
    with pytest.raises(HttpRequestFailed) as ei:
        client(server).json("POST", "/x", json_body={})
    assert ei.value.status == 400 and len(server.requests) == 1
    assert ei.value.context.retry_attempt is None


def test_error_types_by_status(server):
    c = client(server, retry=RetryPolicy(max_attempts=1))
    server.fail(Reply(401, json={"error": "no"}))
    with pytest.raises(AuthenticationError):
        c.json("GET", "/a")
    server.fail(Reply(404, json={"error": "model 'zz' not found"}))
    with pytest.raises(ModelNotFound) as ei:
        c.json("GET", "/b", model="zz")
    from abi.errors import ModelNotFoundError
    assert isinstance(ei.value, ModelNotFoundError) and ei.value.http_status == 404
    server.fail(Reply(404, json={"error": "nope"}))
    with pytest.raises(HttpRequestFailed) as ei:  # no model: a plain 404
        c.json("GET", "/c")
    assert not isinstance(ei.value, ModelNotFound)


def test_retry_after_honoured_and_capped(server):
    sleeps = SleepLog()
    server.fail(Reply(429, json={"error": "slow down"}, headers={"Retry-After": "1"}))
    c = client(server, sleep=sleeps, retry=RetryPolicy(max_attempts=2, retry_after_max=60))
    assert c.json("GET", "/x")["ok"]
    assert sleeps == [1.0]  # the server's wait, not our backoff
    sleeps.clear()
    server.fail(Reply(429, headers={"Retry-After": "100"}))
    c = client(server, sleep=sleeps, retry=RetryPolicy(max_attempts=2, retry_after_max=0.05))
    assert c.json("GET", "/x")["ok"]
    assert sleeps == [0.05]


def test_retry_after_real_sleep(server):
    server.fail(Reply(429, headers={"Retry-After": "0.3"}))
    c = client(server, retry=RetryPolicy(max_attempts=2, retry_after_max=1.0))
    t0 = time.monotonic()
    c.json("GET", "/x")
    assert time.monotonic() - t0 >= 0.3


def test_rate_limited_after_retries(server):
    server.fail(Reply(429, json={"error": {"message": "Rate limit reached"}},
                      headers={"Retry-After": "7"}), times=3)
    with pytest.raises(RateLimited) as ei:
        client(server).json("GET", "/x")
    assert ei.value.retry_after == 7.0 and ei.value.status == 429
    assert ei.value.http_status == 429


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_backoff_is_exponential_with_jitter():
    p = RetryPolicy(backoff_base=1.0, backoff_max=5.0)
    for attempt, cap in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 5.0)):
        draws = [p.backoff(attempt) for _ in range(200)]
        assert all(0 <= d <= cap for d in draws)
        assert max(draws) > cap * 0.7 and len(set(draws)) > 150  # spread, not fixed


def test_backoff_used_between_5xx_retries(server):
    sleeps = SleepLog()
    server.fail(Reply(500), times=2)
    client(server, sleep=sleeps, retry=RetryPolicy(max_attempts=3, backoff_base=1.0,
                                                   backoff_max=10)).json("GET", "/x")
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0


# --- transport failures -------------------------------------------------------------------

def test_connection_refused_is_typed_and_retried():
    sleeps = SleepLog()
    c = HttpClient(f"http://127.0.0.1:{free_port()}", backend="ollama", retry=FAST,
                   sleep=sleeps)
    with pytest.raises(ConnectionRefused) as ei:
        c.json("GET", "/api/tags")
    assert len(sleeps) == 2
    assert "cannot connect to ollama" in str(ei.value)
    assert ei.value.context.retry_attempt == 3


def test_read_timeout_is_typed(server):
    server.fail(Reply(json={"late": True}, delay=1.0), times=2)
    c = client(server, timeouts=Timeouts(connect=2, read=0.2),
               retry=RetryPolicy(max_attempts=2, backoff_base=0.01))
    t0 = time.monotonic()
    with pytest.raises(Timeout) as ei:
        c.json("GET", "/slow")
    assert time.monotonic() - t0 < 1.5
    assert len(server.requests) == 2 and "0.2s" in str(ei.value)


def test_bad_base_url_is_config_error():
    with pytest.raises(ConfigError) as ei:
        HttpClient("127.0.0.1:11434", backend="x", retry=FAST).json("GET", "/api/tags")
    assert ei.value.field == "base_url"


def test_non_json_body_is_malformed(server):
    server.fail(Reply(body=b"<html>hello</html>"))
    with pytest.raises(MalformedResponse) as ei:
        client(server).json("GET", "/x")
    assert "<html>" in str(ei.value)


# --- streams over real HTTP ------------------------------------------------------------------

def test_stream_sse_one_byte_chunks(server):
    events = 'data: {"a": 1}\r\n\r\n: keepalive\n\nevent: x\ndata: é€😀\ndata: two\n\n'
    server.fail(Stream([events], split=1))
    got = list(client(server).stream_sse("POST", "/s", json_body={}))
    assert [e.data for e in got] == ['{"a": 1}', "é€😀\ntwo"]
    assert got[1].event == "x"


def test_stream_cut_midway_raises(server):
    data = b"".join(b'{"i": %d}\n' % i for i in range(50))
    server.fail(Stream([data], cut=len(data) // 2, content_type="application/x-ndjson"))
    got = []
    with pytest.raises(StreamInterrupted):
        for obj in client(server).stream_ndjson("POST", "/s", json_body={}):
            got.append(obj)
    assert 0 < len(got) < 50


def test_stream_bad_chunk_framing_raises(server):
    server.fail(Stream(['{"i": 1}\n'], bad_framing=True, content_type="application/x-ndjson"))
    with pytest.raises(StreamInterrupted):
        list(client(server).stream_ndjson("POST", "/s", json_body={}))


def test_stream_stall_times_out_not_hangs(server):
    server.fail(Stream(['{"i": 1}\n'], stall=3.0, content_type="application/x-ndjson"))
    c = client(server, timeouts=Timeouts(connect=2, read=0.3))
    t0 = time.monotonic()
    got = []
    with pytest.raises(Timeout):
        for obj in c.stream_ndjson("POST", "/s", json_body={}):
            got.append(obj)
    assert got == [{"i": 1}] and time.monotonic() - t0 < 2.5


def test_stream_malformed_ndjson_line(server):
    server.fail(Stream(['{"i": 1}\n', '{"i": \n', '{"i": 3}\n'],
                       content_type="application/x-ndjson"))
    with pytest.raises(MalformedResponse) as ei:
        list(client(server).stream_ndjson("POST", "/s", json_body={}, model="m"))
    assert ei.value.context is not None and ei.value.context.model == "m"


def test_stream_error_status_before_body_is_retried(server):
    server.fail(Reply(503, json={"error": "loading"}))
    server.fail(Stream(["data: ok\n\n"]))
    assert [e.data for e in client(server).stream_sse("POST", "/s", json_body={})] == ["ok"]


def test_stream_ending_mid_event_raises(server):
    server.fail(Stream(["data: one\n\ndata: tw"]))
    with pytest.raises(StreamInterrupted):
        list(client(server).stream_sse("POST", "/s", json_body={}))


# --- parsers at every split point -----------------------------------------------------

SSE_TEXT = ("\ufeffdata: first\r\n\r\n"
            ": comment\n"
            "event: update\rdata: é😀 x\rdata:  two spaces\r\r"
            "id: 7\nretry: 1500\ndata: {\"k\": [1, 2]}\n\n"
            "data\n\n"
            "event: only-event\n\n"
            "data: last\n\n")
SSE_EXPECTED = [SSEEvent("first"), SSEEvent("é😀 x\n two spaces", event="update"),
                SSEEvent('{"k": [1, 2]}', id="7", retry=1500), SSEEvent("", id="7", retry=1500),
                SSEEvent("last", id="7", retry=1500)]


def _sse_feed(pieces):
    p = SSEParser()
    out = []
    for piece in pieces:
        out += p.feed(piece)
    return out, p


def test_sse_parser_whole():
    events, parser = _sse_feed([SSE_TEXT.encode()])
    assert events == SSE_EXPECTED and not parser.pending


def test_sse_parser_every_split_point():
    data = SSE_TEXT.encode()
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1, 7):
            events, _ = _sse_feed([data[:i], data[i:j], data[j:]])
            assert events == SSE_EXPECTED, (i, j)


def test_sse_parser_byte_by_byte():
    data = SSE_TEXT.encode()
    events, _ = _sse_feed([data[i:i + 1] for i in range(len(data))])
    assert events == SSE_EXPECTED


def test_sse_parser_line_limit():
    p = SSEParser(max_line_bytes=100)
    with pytest.raises(MalformedResponse):
        p.feed(b"data: " + b"x" * 200)


NDJSON_OBJS = [{"a": 1}, {"s": "é😀\\n"}, {"nested": {"x": [1, 2, {"y": None}]}}, {"done": True}]


def test_ndjson_parser_every_split_point():
    data = b"".join(json.dumps(o).encode() + (b"\r\n" if i % 2 else b"\n")
                    for i, o in enumerate(NDJSON_OBJS)) + b"\n"
    for i in range(len(data) + 1):
        p = NDJSONParser()
        out = p.feed(data[:i]) + p.feed(data[i:]) + p.finish()
        assert out == NDJSON_OBJS, i


def test_ndjson_last_line_without_newline():
    p = NDJSONParser()
    assert p.feed(b'{"a": 1}\n{"b"') == [{"a": 1}]
    assert p.feed(b": 2}") == []
    assert p.finish() == [{"b": 2}]


def test_ndjson_errors():
    with pytest.raises(MalformedResponse):
        NDJSONParser().feed(b"[1, 2]\n")
    with pytest.raises(MalformedResponse):
        NDJSONParser().feed(b"{oops}\n")
    p = NDJSONParser()
    p.feed(b'{"a": ')
    with pytest.raises(StreamInterrupted):
        p.finish()
    with pytest.raises(MalformedResponse):
        NDJSONParser(max_line_bytes=64).feed(b"{" + b" " * 100)


# --- secrets --------------------------------------------------------------------------------

SECRET = "sk-live-SECRETSECRET-123456"


class Leaky(FakeServer):
    """Echoes the credentials it was sent in its errors, the worst case for us."""

    def handle(self, rec):
        return Reply(401, json={"error": {"message": "bad key " + rec.headers["authorization"]}})


def test_secrets_never_in_messages_or_logs(caplog):
    server = Leaky()
    try:
        c = HttpClient(server.url, backend="openai", headers={"Authorization": f"Bearer {SECRET}"},
                       secrets=[SECRET], retry=FAST)
        caplog.set_level(logging.DEBUG)
        with pytest.raises(AuthenticationError) as ei:
            c.json("GET", f"/v1/{SECRET}/models")  # even in a path
        err = ei.value
        texts = [str(err), repr(err), err.context.format(verbose=True), caplog.text]
        assert all(SECRET not in t for t in texts)
        assert "bad key Bearer ***" in str(err)
        assert "***" in err.context.format(verbose=True)
    finally:
        server.close()


def test_redactor_patterns():
    r = Redactor(["mytoken-123"])
    assert r("a mytoken-123 b") == "a *** b"
    assert r("Authorization: Bearer abcdefghijklmnopqrstuvwxyz") == "Authorization: Bearer ***"
    assert r("the bot said hello") == "the bot said hello"
    assert r("key sk-abcdefghijklmnop and hf_abcdefghijklmnop") == "key *** and ***"


def test_agent_error_base():
    assert issubclass(Timeout, AgentError) and issubclass(RateLimited, HttpRequestFailed)


def test_stream_gzip_encoded_body(server):
    import zlib

    comp = zlib.compressobj(wbits=31)  # gzip container
    lines = [b'{"i": %d}\n' % i for i in range(20)]
    pieces = [comp.compress(line) + comp.flush(zlib.Z_SYNC_FLUSH) for line in lines]
    pieces.append(comp.flush())
    server.fail(Stream(pieces, content_type="application/x-ndjson",
                       headers={"Content-Encoding": "gzip"}))
    got = list(client(server).stream_ndjson("POST", "/s", json_body={}))
    assert got == [{"i": i} for i in range(20)]
    assert server.requests[-1].headers["accept-encoding"] == "identity"
