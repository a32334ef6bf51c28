"""OpenAI connector against a fake OpenAI server on 127.0.0.1 (real HTTP, the API's wire
format)."""
from __future__ import annotations

import logging

import pytest

from abi.connectors.http import RetryPolicy, Timeouts
from abi.connectors.openai import (
    ChatMessage, OpenAIClient, collect_stream, function_tool,
)
from abi.errors import (
    AuthenticationError, ConfigError, HttpRequestFailed, MalformedResponse, ModelNotFound,
    RateLimited, StreamInterrupted, Timeout,
)
from fake_providers import OPENAI_KEY, FakeOpenAI, Reply, with_server

FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02, retry_after_max=0.05)
WEATHER = function_tool("get_weather", "Weather for a city",
                        {"type": "object", "properties": {"query": {"type": "string"}},
                         "required": ["query"]})


@pytest.fixture
def fake():
    yield from with_server(FakeOpenAI)


@pytest.fixture
def client(fake):
    return OpenAIClient(api_key=OPENAI_KEY, base_url=fake.url + "/v1", retry=FAST,
                        timeouts=Timeouts(connect=2, read=2))


def test_chat(client, fake):
    r = client.chat([{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "hello"}], "gpt-4", temperature=0.2, top_p=0.5,
                    max_tokens=16, stop=["\n"], seed=3)
    assert r.text == "You said: hello" and r.finish_reason == "stop"
    assert r.model == "gpt-4" and r.usage.total_tokens == 13
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent.json == {"model": "gpt-4", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        "temperature": 0.2, "top_p": 0.5, "max_tokens": 16, "stop": ["\n"], "seed": 3,
        "stream": False}


def test_chat_stream_and_collect(client, fake):
    chunks = list(client.chat_stream([ChatMessage("user", "stream me please")], "gpt-4o-mini"))
    assert "".join(c.text for c in chunks) == "You said: stream me please"
    assert len([c for c in chunks if c.text]) > 3  # really in pieces
    assert chunks[-1].usage.total_tokens == 13 and chunks[-1].choices == []
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}
    done = collect_stream(chunks)
    assert done.text == "You said: stream me please" and done.finish_reason == "stop"
    assert done.usage.prompt_tokens == 9


@pytest.mark.parametrize("split", [1, 2, 5, 17])
def test_chat_stream_survives_any_chunking(client, fake, split):
    fake.split = split
    text = "".join(c.text for c in client.chat_stream([{"role": "user", "content": "naïve 😀"}]))
    assert text == "You said: naïve 😀"


def test_tool_calls_plain_and_streamed(client):
    msgs = [{"role": "user", "content": "Paris"}]
    r = client.chat(msgs, tools=[WEATHER])
    assert r.finish_reason == "tool_calls" and r.text == ""
    call = r.tool_calls[0]
    assert (call.id, call.function.name, call.function.parsed_arguments()) == (
        "call_abc123", "get_weather", {"query": "Paris"})
    streamed = collect_stream(client.chat_stream(msgs, tools=[WEATHER], tool_choice="auto"))
    assert streamed.tool_calls[0].function.parsed_arguments() == {"query": "Paris"}
    assert streamed.tool_calls[0].id == "call_abc123" and streamed.message.content is None
    # the tool's answer goes back and the model uses it
    follow = msgs + [r.message.to_dict(),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
    assert client.chat(follow, tools=[WEATHER]).text == "Tool said: sunny, 21C"


def test_embeddings_in_input_order(client, fake):
    e = client.embeddings(["a", "bcd"])
    assert e.vectors[0][0] == 1.0 and e.vectors[1][0] == 3.0  # the fake sends them reversed
    assert e.model == "text-embedding-3-small"
    assert fake.requests[-1].json["encoding_format"] == "float"


def test_models(client):
    assert [m.id for m in client.models()] == ["gpt-4o-mini", "gpt-4"]


def test_unknown_model(client):
    with pytest.raises(ModelNotFound) as ei:
        client.chat([{"role": "user", "content": "x"}], "gpt-9")
    assert "gpt-9" in str(ei.value) and ei.value.context.model == "gpt-9"


def test_bad_key_is_authentication_error_without_the_key(fake, caplog):
    wrong = "sk-wrong-key-abcdefghijklmnop"
    c = OpenAIClient(api_key=wrong, base_url=fake.url + "/v1", retry=FAST)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError) as ei:
        c.chat([{"role": "user", "content": "x"}])
    assert wrong not in str(ei.value) and wrong not in caplog.text
    assert wrong not in repr(c)
    assert ei.value.context.format() == ("AgentError: AuthenticationError during API request "
                                         "[backend=openai] [model=gpt-4o-mini]")


def test_429_then_success(client, fake):
    fake.fail(Reply(429, json={"error": {"message": "Rate limit reached", "type": "requests"}},
                    headers={"Retry-After": "0.01"}), times=2)
    assert client.chat([{"role": "user", "content": "hi"}]).text == "You said: hi"
    assert len(fake.requests) == 3


def test_429_exhausted(client, fake):
    fake.fail(Reply(429, json={"error": {"message": "Rate limit reached"}},
                    headers={"Retry-After": "2"}), times=3)
    with pytest.raises(RateLimited) as ei:
        client.chat([{"role": "user", "content": "hi"}])
    assert ei.value.retry_after == 2.0 and "Rate limit reached" in str(ei.value)


def test_server_error_status(client, fake):
    fake.fail(Reply(500, json={"error": {"message": "The server had an error"}}), times=3)
    with pytest.raises(HttpRequestFailed) as ei:
        client.chat([{"role": "user", "content": "hi"}])
    assert ei.value.status == 500 and ei.value.context.retry_attempt == 3


def test_stream_cut_midway(client, fake):
    fake.stream_mode = "cut"
    got = []
    with pytest.raises(StreamInterrupted):
        for c in client.chat_stream([{"role": "user", "content": "a fairly long message"}]):
            got.append(c.text)
    assert got  # some came through before the cut


def test_stream_without_done(client, fake):
    fake.stream_mode = "no_done"
    with pytest.raises(StreamInterrupted) as ei:
        list(client.chat_stream([{"role": "user", "content": "hi"}]))
    assert "[DONE]" in str(ei.value)


def test_stream_malformed_chunk(client, fake):
    fake.stream_mode = "malformed"
    with pytest.raises(MalformedResponse) as ei:
        list(client.chat_stream([{"role": "user", "content": "hi"}]))
    assert "not JSON" in str(ei.value) and ei.value.context.backend == "openai"


def test_stream_stall_is_timeout(fake):
    fake.stream_mode = "stall"
    c = OpenAIClient(api_key=OPENAI_KEY, base_url=fake.url + "/v1", retry=FAST,
                     timeouts=Timeouts(connect=2, read=0.3))
    with pytest.raises(Timeout):
        list(c.chat_stream([{"role": "user", "content": "hi"}]))


def test_stream_error_event(client, fake):
    fake.fail(Reply(200, body=b'data: {"error": {"message": "overloaded"}}\n\n',
                    headers={"Content-Type": "text/event-stream"}))
    with pytest.raises(HttpRequestFailed) as ei:
        list(client.chat_stream([{"role": "user", "content": "hi"}]))
    assert "overloaded" in str(ei.value)


def test_malformed_completion(client, fake):
    fake.fail(Reply(json={"id": "x", "choices": [{"index": 0, "message": {"content": 5}}]}))
    with pytest.raises(MalformedResponse):
        client.chat([{"role": "user", "content": "hi"}])
    fake.fail(Reply(json={"id": "x"}))
    with pytest.raises(MalformedResponse) as ei:
        client.chat([{"role": "user", "content": "hi"}])
    assert "choices" in str(ei.value)


def test_env_configuration(monkeypatch, fake):
    monkeypatch.delenv("ABI_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ABI_OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError) as ei:
        OpenAIClient()
    assert ei.value.field == "ABI_OPENAI_API_KEY" and "ABI_OPENAI_API_KEY" in str(ei.value)
    monkeypatch.setenv("ABI_OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ABI_OPENAI_BASE_URL", fake.url + "/v1")
    monkeypatch.setenv("ABI_OPENAI_MODEL", "gpt-4")
    c = OpenAIClient(retry=FAST)
    assert c.chat([{"role": "user", "content": "env"}]).model == "gpt-4"
    assert OPENAI_KEY not in repr(c)


def test_compatible_server_needs_no_key(monkeypatch):
    server = FakeOpenAI(key=None)
    try:
        monkeypatch.delenv("ABI_OPENAI_API_KEY", raising=False)
        c = OpenAIClient(base_url=server.url + "/v1", retry=FAST)
        assert c.chat([{"role": "user", "content": "local"}]).text == "You said: local"
        assert "authorization" not in server.requests[-1].headers
    finally:
        server.close()
