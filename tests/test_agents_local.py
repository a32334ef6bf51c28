"""The ``local`` backend on the embedded runtime (``abi.llm.Engine``) and the default model."""
from __future__ import annotations

import pytest

from abi.agents import Agent, backends

pytestmark = pytest.mark.model


def test_lazy_load_and_shared_engine():
    a = Agent(name="one", backend="local", temperature=0, max_tokens=4)
    b = Agent(name="two", backend="local", temperature=0, max_tokens=4)
    assert a.backend._engine is None  # creating an agent loads nothing
    reply = a.chat("Say hello.")
    assert isinstance(reply, str) and reply.strip()
    b.chat("Say hello.")
    assert a.backend.engine is b.backend.engine  # one engine per model in the process
    assert backends._ENGINES[("", ())] is a.backend.engine  # keyed by model and adapters; "" is the default


def test_stream_pieces_make_the_recorded_reply():
    a = Agent(name="s", backend="local", temperature=0, max_tokens=12)
    pieces = list(a.chat_stream("What is the capital of France?"))
    assert len(pieces) > 1 and all(isinstance(p, str) and p for p in pieces)
    assert a.history()[-1].content == "".join(pieces)
    assert a.history()[0].content == "What is the capital of France?"


def test_history_trimmed_to_the_model_context():
    a = Agent(name="t", backend="local", temperature=0, max_tokens=4, context_length=160)
    engine = a.backend.engine
    long_turn = "Tell me about the sea. " * 6
    for _ in range(4):
        a.chat(long_turn)
    everything = [m.to_dict() for m in a.history()] + [{"role": "user", "content": long_turn}]
    assert engine.count_chat_tokens(everything) + 4 > 160  # trimming is needed...
    messages, params = a.build_request(long_turn)
    assert engine.count_chat_tokens(messages) + params.max_tokens <= 160  # ...and done
    assert messages[-1]["content"] == long_turn and messages[0]["role"] == "user"
    assert a.chat(long_turn).strip()


def test_context_length_defaults_to_the_model():
    a = Agent(name="c", backend="local")
    assert a.backend.context_length() == int(a.backend.engine.n_ctx) > 0
