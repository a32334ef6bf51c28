"""``python -m abi serve`` through the official ``ollama`` client: chat and generate (plain
and NDJSON-streamed, with options and timings), context continuation, embed, tags, show, ps,
version and errors. One server per module; generations stay a few tokens long."""
from __future__ import annotations

import json

import numpy as np
import pytest
import requests

import ollama

from serve_helpers import serve

pytestmark = pytest.mark.model
MODEL = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
HI = [{"role": "user", "content": "Say hi."}]
TIMINGS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_count", "eval_duration")


@pytest.fixture(scope="module")
def server(default_model_path):
    with serve("--model", default_model_path, "--embedding-model", "default") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.url, timeout=120)


@pytest.fixture(scope="module")
def engine(default_model_path):
    from abi.llm import Engine

    return Engine().load_model(default_model_path)


def test_chat_matches_the_library_and_reports_timings(client, engine):
    r = client.chat(model=MODEL, messages=HI, options={"num_predict": 5, "temperature": 0})
    assert r.message.role == "assistant" and r.message.content == engine.chat(HI, max_tokens=5, temperature=0)
    assert r.done and r.done_reason == "length" and r.eval_count == 5
    assert r.prompt_eval_count >= 1 and r.total_duration >= r.eval_duration > 0
    assert r.prompt_eval_duration > 0 and r.load_duration >= 0
    assert r.total_duration > 10**6  # nanoseconds: more than a millisecond for 5 tokens


def test_chat_stream_ends_with_one_done_line(client):
    parts = list(client.chat(model=MODEL, messages=HI, stream=True,
                             options={"num_predict": 5, "temperature": 0}))
    plain = client.chat(model=MODEL, messages=HI, options={"num_predict": 5, "temperature": 0})
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content for p in parts) == plain.message.content
    last = parts[-1]
    assert last.done_reason == "length" and last.eval_count == 5
    assert all(isinstance(getattr(last, k), int) for k in TIMINGS)


def test_stream_is_ndjson(server):
    with requests.post(server.url + "/api/generate", stream=True, timeout=60,
                       json={"model": MODEL, "prompt": "Hi", "options": {"num_predict": 3}}) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[-1]["done"] is True and not any(x["done"] for x in lines[:-1])
    assert set(TIMINGS) <= set(lines[-1]) and lines[-1]["eval_count"] == 3


def test_options_stop_seed_and_num_ctx(client):
    r = client.generate(model=MODEL, prompt="1, 2, 3, 4,", raw=True,
                        options={"num_predict": 8, "temperature": 0, "stop": [","]})
    assert r.done_reason == "stop" and "," not in r.response and r.response.strip().isdigit()
    opts = {"num_predict": 6, "temperature": 1.0, "top_k": 50, "top_p": 0.95, "min_p": 0.01,
            "repeat_penalty": 1.2, "seed": 7}
    a = client.generate(model=MODEL, prompt="Name a fruit.", options=opts)
    b = client.generate(model=MODEL, prompt="Name a fruit.", options=opts)
    assert a.response == b.response
    with pytest.raises(ollama.ResponseError) as exc:
        client.generate(model=MODEL, prompt="word " * 40, raw=True, options={"num_ctx": 16})
    assert exc.value.status_code == 400 and "context" in exc.value.error


def test_generate_context_continues_a_conversation(client):
    first = client.generate(model=MODEL, prompt="My name is Ada.", options={"num_predict": 4, "temperature": 0})
    assert first.context and len(first.context) > 4
    second = client.generate(model=MODEL, prompt="What is my name?", context=first.context,
                             options={"num_predict": 4, "temperature": 0})
    assert second.context[:len(first.context)] == first.context
    # the earlier turn was already in the slot's cache: only the new turn was evaluated
    assert second.prompt_eval_count < len(second.context) - len(first.context) + 1


def test_logprobs(client):
    r = client.chat(model=MODEL, messages=HI, options={"num_predict": 3, "temperature": 0},
                    logprobs=True, top_logprobs=2)
    assert len(r.logprobs) == 3 and "".join(x.token for x in r.logprobs) == r.message.content
    assert all(len(x.top_logprobs) == 2 and x.logprob <= 0 for x in r.logprobs)


def test_empty_request_reports_the_model_loaded(client):
    r = client.generate(model=MODEL, prompt="")
    assert r.done and r.done_reason == "load" and r.response == ""


def test_embed(client):
    from abi.embeddings import Encoder

    texts = ["first text", "second text"]
    r = client.embed(model=EMBED, input=texts)
    np.testing.assert_allclose(np.array(r.embeddings), Encoder().encode_batch(texts), atol=1e-6)
    one = client.embed(model=EMBED, input="first text")
    np.testing.assert_allclose(one.embeddings[0], r.embeddings[0], atol=1e-6)
    assert r.prompt_eval_count > 0
    legacy = client.embeddings(model=EMBED, prompt="first text")
    np.testing.assert_allclose(legacy.embedding, r.embeddings[0], atol=1e-6)


def test_tags_show_ps_version(client, server):
    tags = client.list()
    names = [m.model for m in tags.models]
    assert names == [MODEL, EMBED]
    llm = tags.models[0]
    assert llm.details.family == "llama" and llm.details.quantization_level == "Q4_1"
    assert llm.details.parameter_size == "135M" and len(llm.digest) == 64 and llm.size > 0
    shown = client.show(MODEL)
    assert shown.capabilities == ["completion"] and "im_start" in shown.template
    assert shown.modelinfo["general.architecture"] == "llama"
    assert client.show(EMBED).capabilities == ["embedding"]
    running = client.ps()
    assert [m.model for m in running.models] == [MODEL, EMBED] and running.models[0].context_length > 0
    version = requests.get(server.url + "/api/version", timeout=10).json()["version"]
    import abi

    assert version == abi.__version__


def test_errors_in_ollama_shape(client, server):
    with pytest.raises(ollama.ResponseError) as exc:
        client.chat(model="llama3", messages=HI)
    assert exc.value.status_code == 404 and "llama3" in exc.value.error
    with pytest.raises(ollama.ResponseError) as exc:
        client.chat(model=MODEL, messages=HI, options={"temperature": -1})
    assert exc.value.status_code == 400
    r = requests.post(server.url + "/api/chat", json={"model": MODEL, "messages": "nope"}, timeout=10)
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = requests.post(server.url + "/api/chat", timeout=10, json={
        "model": MODEL, "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]})
    assert r.status_code == 400 and "image" in r.json()["error"]
