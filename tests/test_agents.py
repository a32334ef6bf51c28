"""Agent and AgentConfig: validation, history, trimming to the context, streaming, and the
remote backends end to end against fake providers over real HTTP."""
from __future__ import annotations

import logging

import pytest

from abi.agents import Agent, AgentConfig, Message
from abi.agents.backends import StopFilter, approx_tokens
from abi.connectors.http import RetryPolicy
from abi.connectors.openai import OpenAIClient
from abi.errors import (
    AuthenticationError, ConfigError, ContextLengthExceeded, ErrorContext, HttpRequestFailed,
    InvalidRequestError, ModelNotFound, StreamInterrupted,
)
from fake_providers import (
    HF_TOKEN, OPENAI_KEY, FakeHuggingFace, FakeOllama, FakeOpenAI, Reply, with_server,
)

FAST = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02, retry_after_max=0.05)


# --- configuration ----------------------------------------------------------------------

def test_defaults_match_the_reference():
    c = AgentConfig(name="coding-assistant")
    assert (c.enable_history, c.temperature, c.top_p, c.backend) == (True, 0.7, 0.9, "echo")
    assert c.model is None and c.system_prompt is None and c.max_history > 0


@pytest.mark.parametrize("field,value,words", [
    ("temperature", 2.5, ["temperature", "0", "2", "2.5"]),
    ("temperature", -0.1, ["temperature", "between 0 and 2"]),
    ("temperature", float("nan"), ["temperature"]),
    ("temperature", "hot", ["temperature"]),
    ("top_p", 1.5, ["top_p", "between 0 and 1"]),
    ("top_p", True, ["top_p"]),
    ("backend", "gpt", ["backend", "echo", "local", "openai", "ollama", "huggingface"]),
    ("max_tokens", 0, ["max_tokens", "between 1"]),
    ("max_history", -1, ["max_history"]),
    ("model", "", ["model"]),
    ("enable_history", "yes", ["enable_history"]),
])
def test_invalid_settings(field, value, words):
    with pytest.raises(ConfigError) as ei:
        AgentConfig(name="a", **{field: value})
    assert ei.value.field == field
    assert all(w in str(ei.value) for w in words), str(ei.value)
    assert ei.value.context.operation == ErrorContext.CONFIGURATION


@pytest.mark.parametrize("name", ["", "   ", None, "x" * 129, "bad\nname", 7])
def test_name_required_and_validated(name):
    with pytest.raises(ConfigError) as ei:
        AgentConfig(name=name)
    assert ei.value.field == "name"


def test_name_is_required_argument():
    with pytest.raises(TypeError):
        AgentConfig()  # type: ignore[call-arg]


def test_range_edges_accepted():
    AgentConfig(name="a", temperature=0, top_p=0)
    AgentConfig(name="a", temperature=2, top_p=1)


def test_setters_validate():
    a = Agent(name="a")
    a.set_temperature(1.5)
    a.set_top_p(0.1)
    assert (a.config.temperature, a.config.top_p) == (1.5, 0.1)
    with pytest.raises(ConfigError) as ei:
        a.set_temperature(2.01)
    assert ei.value.field == "temperature" and a.config.temperature == 1.5
    with pytest.raises(ConfigError):
        a.set_top_p(-0.5)
    a.config.temperature = 9  # assigned behind the setter's back: caught at the next call
    with pytest.raises(ConfigError):
        a.chat("hi")


def test_agent_from_config_or_keywords():
    cfg = AgentConfig(name="a", temperature=0.3)
    a = Agent(cfg)
    a.set_temperature(1.0)
    assert cfg.temperature == 0.3  # the agent works on its own copy
    b = Agent(cfg, top_p=0.5)
    assert (b.config.temperature, b.config.top_p) == (0.3, 0.5)
    assert Agent(name="kw").name == "kw"
    from abi.ai.agents import Agent as AliasAgent
    assert AliasAgent is Agent


# --- echo: chat, process, history ----------------------------------------------------------

def test_chat_and_process():
    a = Agent(name="echo")
    assert a.chat("How do I write Hello World?") == "Echo: How do I write Hello World?"
    assert a.process("Another question") == "Echo: Another question"
    assert a.history_count() == 4
    assert a.history() == [Message("user", "How do I write Hello World?"),
                           Message("assistant", "Echo: How do I write Hello World?"),
                           Message("user", "Another question"),
                           Message("assistant", "Echo: Another question")]


def test_history_is_sent():
    a = Agent(name="h", system_prompt="You are terse.")
    a.chat("one")
    a.chat("two")
    sent = a.backend.last_messages
    assert sent == [{"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "one"},
                    {"role": "assistant", "content": "Echo: one"},
                    {"role": "user", "content": "two"}]


def test_history_disabled_and_cleared():
    a = Agent(name="h", enable_history=False)
    a.chat("one")
    a.chat("two")
    assert a.history_count() == 0 and len(a.backend.last_messages) == 1
    a.set_history_enabled(True)
    a.chat("three")
    a.chat("four")
    assert a.history_count() == 4 and len(a.backend.last_messages) == 3
    a.set_history_enabled(False)
    a.chat("five")  # neither sent nor recorded
    assert a.history_count() == 4 and len(a.backend.last_messages) == 1
    a.clear_history()
    assert a.history_count() == 0 and a.history() == []


def test_history_bounded():
    a = Agent(name="h", max_history=5)
    for i in range(10):
        a.chat(f"m{i}")
    h = a.history()
    assert len(h) <= 5 and h[0].role == "user"
    assert h[-1] == Message("assistant", "Echo: m9") and h[0] == Message("user", "m8")
    b = Agent(name="h", max_history=0)
    b.chat("x")
    assert b.history_count() == 0


def test_history_trimmed_to_context():
    a = Agent(name="t", context_length=64, max_tokens=16, system_prompt="sys")
    for i in range(20):
        a.chat(f"message number {i} " + "x" * 20)
    sent = a.backend.last_messages
    budget = 64 - 16
    assert approx_tokens(sent) <= budget
    assert sent[0]["role"] == "system" and sent[-1]["content"].startswith("message number 19")
    assert sent[1]["role"] == "user"  # trimmed at a turn boundary
    assert a.history_count() == 40  # storage keeps the bounded history; only sending trims
    # with room for more, more is sent
    b = Agent(name="t", context_length=4096, max_tokens=16)
    for i in range(20):
        b.chat(f"message number {i}")
    assert len(b.backend.last_messages) == 39


def test_long_message_shrinks_max_tokens_then_errors():
    a = Agent(name="t", context_length=64, max_tokens=60)
    a.chat("y" * 100)  # 4 + 25 + 2 = 31 tokens: fits, with 33 left to generate
    assert a.backend.last_params.max_tokens == 64 - approx_tokens([{"content": "y" * 100}])
    with pytest.raises(ContextLengthExceeded):
        a.chat("z" * 400)


def test_bad_input():
    a = Agent(name="i")
    for bad in ("", "   ", None, 5):
        with pytest.raises(InvalidRequestError):
            a.chat(bad)
    assert a.history_count() == 0


def test_chat_stream_records_turn():
    a = Agent(name="s")
    pieces = list(a.chat_stream("stream these words"))
    assert len(pieces) == 4 and "".join(pieces) == "Echo: stream these words"
    assert a.history()[-1] == Message("assistant", "Echo: stream these words")


def test_chat_stream_stopped_early_records_partial():
    a = Agent(name="s")
    stream = a.chat_stream("one two three four")
    assert next(stream) == "Echo:"
    stream.close()
    assert a.history() == [Message("user", "one two three four"), Message("assistant", "Echo:")]


def test_stop_filter():
    f = StopFilter(["\nUser:"])
    out = "".join(f.feed(p) for p in ["Hello", " there\n", "Us", "er: more"]) + f.finish()
    assert out == "Hello there" and f.stopped
    g = StopFilter(["\nUser:"])
    assert "".join(g.feed(p) for p in ["a\n", "b\nU"]) + g.finish() == "a\nb\nU"


# --- remote backends over real HTTP ----------------------------------------------------------

@pytest.fixture
def openai_fake(monkeypatch):
    monkeypatch.setenv("ABI_OPENAI_API_KEY", OPENAI_KEY)
    yield from with_server(FakeOpenAI)


def test_openai_backend(openai_fake):
    a = Agent(name="o", backend="openai", model="gpt-4", base_url=openai_fake.url + "/v1",
              system_prompt="Be helpful.", temperature=0.2, max_tokens=32)
    assert a.chat("Hello!") == "You said: Hello!"
    assert "".join(a.chat_stream("again")) == "You said: again"
    sent = openai_fake.requests[-1].json
    assert sent["stream"] is True and sent["temperature"] == 0.2 and sent["max_tokens"] == 32
    assert sent["messages"] == [{"role": "system", "content": "Be helpful."},
                                {"role": "user", "content": "Hello!"},
                                {"role": "assistant", "content": "You said: Hello!"},
                                {"role": "user", "content": "again"}]
    assert a.history_count() == 4


def test_openai_backend_errors(openai_fake, monkeypatch, caplog):
    a = Agent(name="o", backend="openai", model="gpt-9", base_url=openai_fake.url + "/v1")
    with pytest.raises(ModelNotFound) as ei:
        a.chat("x")
    assert a.history_count() == 0
    with caplog.at_level(logging.ERROR):
        line = ei.value.context.log()
    assert line == "AgentError: ModelNotFound during API request [backend=openai] [model=gpt-9]"
    openai_fake.stream_mode = "cut"
    b = Agent(name="o", backend="openai", base_url=openai_fake.url + "/v1")
    with pytest.raises(StreamInterrupted):
        list(b.chat_stream("a message long enough to be cut in half"))
    assert b.history_count() == 0  # a failed turn is not recorded
    monkeypatch.delenv("ABI_OPENAI_API_KEY")
    monkeypatch.delenv("ABI_OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError) as ei:
        Agent(name="o", backend="openai")
    assert ei.value.field == "ABI_OPENAI_API_KEY"


def test_openai_backend_with_client(openai_fake):
    client = OpenAIClient(api_key=OPENAI_KEY, base_url=openai_fake.url + "/v1", retry=FAST)
    openai_fake.fail(Reply(500, json={"error": {"message": "oops"}}), times=2)
    a = Agent(name="o", backend="openai", client=client)
    with pytest.raises(HttpRequestFailed) as ei:
        a.chat("x")
    assert ei.value.context.format() == ("AgentError: HttpRequestFailed during API request "
                                         "[backend=openai] [model=gpt-4o-mini] [attempt=2/2]")
    assert a.chat("y") == "You said: y"


def test_ollama_backend():
    for fake in with_server(FakeOllama):
        a = Agent(name="l", backend="ollama", base_url=fake.url, context_length=4096,
                  temperature=0.1)
        assert a.model == "gpt-oss"
        assert a.chat("hi") == "You said: hi"
        assert "".join(a.chat_stream("more")) == "You said: more"
        sent = fake.requests[-1].json
        assert sent["options"] == {"temperature": 0.1, "top_p": 0.9, "num_predict": 1024,
                                   "num_ctx": 4096}
        assert len(sent["messages"]) == 3


def test_huggingface_backend(monkeypatch):
    monkeypatch.setenv("ABI_HF_API_TOKEN", HF_TOKEN)
    for fake in with_server(FakeHuggingFace):
        a = Agent(name="h", backend="huggingface", base_url=fake.url,
                  model="HuggingFaceTB/SmolLM2-1.7B-Instruct", system_prompt="Be kind.",
                  temperature=0)
        assert a.chat("hello") == "I heard: hello"  # the stop text is not part of the reply
        assert "".join(a.chat_stream("again")) == "I heard: again"
        sent = fake.requests[-1].json
        assert sent["inputs"] == ("System: Be kind.\n\nUser: hello\n\nAssistant: I heard: hello"
                                  "\n\nUser: again\n\nAssistant:")
        assert sent["parameters"]["do_sample"] is False and "temperature" not in sent["parameters"]
        with pytest.raises(ConfigError) as ei:
            monkeypatch.delenv("ABI_HF_MODEL", raising=False)
            Agent(name="h", backend="huggingface", base_url=fake.url)
        assert ei.value.field == "ABI_HF_MODEL"


def test_huggingface_backend_bad_token(monkeypatch):
    monkeypatch.setenv("ABI_HF_API_TOKEN", "hf_notTheRightToken99")
    for fake in with_server(FakeHuggingFace):
        a = Agent(name="h", backend="huggingface", base_url=fake.url,
                  model="HuggingFaceTB/SmolLM2-1.7B-Instruct")
        with pytest.raises(AuthenticationError) as ei:
            a.chat("x")
        assert "hf_notTheRightToken99" not in str(ei.value)
