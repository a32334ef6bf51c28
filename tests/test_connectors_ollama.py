"""Ollama connector against a fake Ollama server (real HTTP, NDJSON streams)."""
from __future__ import annotations

import pytest

from abi.connectors.http import RetryPolicy, Timeouts
from abi.connectors.ollama import DEFAULT_HOST, DEFAULT_MODEL, OllamaClient
from abi.errors import (
    ConnectionRefused, HttpRequestFailed, MalformedResponse, ModelNotFound, StreamInterrupted,
)
from fake_providers import FakeOllama, Reply, free_port, with_server

FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02, retry_after_max=0.05)
TOOL = {"type": "function", "function": {"name": "lookup", "description": "look up",
                                         "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
def fake():
    yield from with_server(FakeOllama)


@pytest.fixture
def client(fake):
    return OllamaClient(host=fake.url, model="gpt-oss", retry=FAST,
                        timeouts=Timeouts(connect=2, read=2))


def test_chat(client, fake):
    opts = client.options(temperature=0.1, top_p=0.8, max_tokens=20, stop=["x"], seed=1)
    r = client.chat([{"role": "user", "content": "hi"}], options=opts)
    assert r.text == "You said: hi" and r.done and r.done_reason == "stop"
    assert r.stats.eval_count == 5 and r.stats.prompt_eval_count == 7
    sent = fake.requests[-1].json
    assert sent == {"model": "gpt-oss", "messages": [{"role": "user", "content": "hi"}],
                    "options": {"temperature": 0.1, "top_p": 0.8, "num_predict": 20,
                                "stop": ["x"], "seed": 1}, "stream": False}


def test_chat_stream(client):
    parts = list(client.chat_stream([{"role": "user", "content": "stream this"}]))
    assert "".join(p.text for p in parts) == "You said: stream this"
    assert parts[-1].done and not any(p.done for p in parts[:-1]) and len(parts) > 3
    assert parts[-1].stats.total_duration == 5000


def test_tool_calls(client):
    r = client.chat([{"role": "user", "content": "find it"}], tools=[TOOL])
    assert r.message.tool_calls[0].name == "lookup"
    assert r.message.tool_calls[0].arguments == {"query": "find it"}
    streamed = [c for p in client.chat_stream([{"role": "user", "content": "q"}], tools=[TOOL])
                for c in p.message.tool_calls]
    assert streamed[0].arguments == {"query": "q"}


def test_generate_and_stream(client, fake):
    r = client.generate("Once upon", system="tell tales")
    assert r.text == "Completing: Once upon" and r.context == [1, 2, 3]
    assert fake.requests[-1].json["system"] == "tell tales"
    parts = list(client.generate_stream("Once upon"))
    assert "".join(p.response for p in parts) == "Completing: Once upon" and parts[-1].done


def test_embed_and_tags(client):
    e = client.embed(["ab", "abcd"])
    assert e.embeddings == [[pytest.approx(0.2), 0.2, -0.3], [pytest.approx(0.4), 0.2, -0.3]]
    names = [m.name for m in client.tags()]
    assert names == ["gpt-oss:latest", "llama3.2:latest"]
    assert client.tags()[0].details["quantization_level"] == "Q4_K_M"


def test_unknown_model(client):
    with pytest.raises(ModelNotFound) as ei:
        client.chat([{"role": "user", "content": "x"}], model="nope")
    assert "try pulling it first" in str(ei.value)
    with pytest.raises(ModelNotFound):
        list(client.chat_stream([{"role": "user", "content": "x"}], model="nope"))


def test_error_line_mid_stream(client, fake):
    fake.stream_mode = "error"
    got = []
    with pytest.raises(HttpRequestFailed) as ei:
        for p in client.chat_stream([{"role": "user", "content": "hello"}]):
            got.append(p.text)
    assert "unexpected EOF" in str(ei.value) and got


def test_cut_stream(client, fake):
    fake.stream_mode = "cut"
    with pytest.raises(StreamInterrupted):
        list(client.chat_stream([{"role": "user", "content": "a longer message to cut"}]))


def test_stream_without_done(client, fake):
    fake.stream_mode = "no_done"
    with pytest.raises(StreamInterrupted) as ei:
        list(client.generate_stream("x"))
    assert '"done": true' in str(ei.value)


def test_malformed_line(client, fake):
    fake.stream_mode = "malformed"
    with pytest.raises(MalformedResponse):
        list(client.chat_stream([{"role": "user", "content": "hi"}]))


def test_5xx_retried(client, fake):
    fake.fail(Reply(500, json={"error": "llama runner process has terminated"}))
    assert client.chat([{"role": "user", "content": "again"}]).text == "You said: again"


def test_env_defaults(monkeypatch, fake):
    monkeypatch.delenv("ABI_OLLAMA_HOST", raising=False)
    monkeypatch.delenv("ABI_OLLAMA_MODEL", raising=False)
    c = OllamaClient()
    assert (c.host, c.model) == (DEFAULT_HOST, DEFAULT_MODEL) == ("http://127.0.0.1:11434",
                                                                   "gpt-oss")
    host = fake.url.removeprefix("http://")  # host:port, as OLLAMA_HOST allows
    monkeypatch.setenv("ABI_OLLAMA_HOST", host)
    monkeypatch.setenv("ABI_OLLAMA_MODEL", "llama3.2")
    c = OllamaClient(retry=FAST)
    assert c.chat([{"role": "user", "content": "e"}]).model == "llama3.2"


def test_not_running():
    c = OllamaClient(host=f"http://127.0.0.1:{free_port()}", retry=FAST)
    with pytest.raises(ConnectionRefused):
        c.tags()
