"""The OpenAI and Ollama connectors (and agents on them) against our own server,
``python -m abi serve`` (started with ``--host`` and ``--port``)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from abi.agents import Agent
from abi.connectors.http import RetryPolicy
from abi.connectors.ollama import OllamaClient
from abi.connectors.openai import OpenAIClient, collect_stream
from fake_providers import free_port

pytestmark = pytest.mark.model
ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "abi", "serve", "--host", "127.0.0.1",
                             "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"abi serve exited {proc.returncode}: {proc.stdout.read()[-2000:]}")
            try:
                if requests.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail("abi serve did not answer /v1/models within 180 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openai_connector(server):
    c = OpenAIClient(base_url=server + "/v1", retry=ONCE)
    models = c.models()
    assert models and all(m.id for m in models)
    msgs = [{"role": "user", "content": "Say hi."}]
    r = c.chat(msgs, models[0].id, max_tokens=8, temperature=0)
    assert r.choices and isinstance(r.text, str) and r.finish_reason in ("stop", "length")
    chunks = list(c.chat_stream(msgs, models[0].id, max_tokens=8, temperature=0))
    joined = collect_stream(chunks)
    assert joined.text == "".join(ch.text for ch in chunks) and joined.finish_reason


def test_ollama_connector(server):
    c = OllamaClient(host=server, retry=ONCE)
    tags = c.tags()
    assert tags
    model = tags[0].name
    msgs = [{"role": "user", "content": "Say hi."}]
    r = c.chat(msgs, model, options=c.options(temperature=0, max_tokens=8))
    assert r.done and isinstance(r.text, str)
    parts = list(c.chat_stream(msgs, model, options=c.options(temperature=0, max_tokens=8)))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    g = list(c.generate_stream("The sky is", model, options=c.options(max_tokens=6)))
    assert g[-1].done


def test_agents_on_our_server(server, monkeypatch):
    monkeypatch.delenv("ABI_OPENAI_API_KEY", raising=False)
    model = OpenAIClient(base_url=server + "/v1").models()[0].id
    for backend, base in (("openai", server + "/v1"), ("ollama", server)):
        a = Agent(name=backend, backend=backend, base_url=base, model=model, max_tokens=8,
                  temperature=0)
        assert isinstance(a.chat("Hello"), str)
        assert "".join(a.chat_stream("Again")) == a.history()[-1].content
