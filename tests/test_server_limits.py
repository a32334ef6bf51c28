"""Request limits that protect the server (issue 17): bodies over the limit refused with a
typed 413 before they are read, prompts too long for the context refused by their length
before tokenising, and /health answering promptly while both arrive at once."""
from __future__ import annotations

import concurrent.futures as cf
import time

import pytest
import requests

from serve_helpers import serve

pytestmark = pytest.mark.model
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def model(default_model_path):
    from abi.llm import load_model

    return load_model(default_model_path, n_ctx=256)


def test_a_text_too_long_for_the_context_is_refused_untokenised(model, monkeypatch):
    from abi.errors import ContextLengthExceeded

    per_token = model.tokenizer.max_token_bytes
    assert per_token is not None and per_token > 1
    text = "x" * (100 * per_token + 1)

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised a text its length already ruled out")

    monkeypatch.setattr(model.tokenizer, "encode", no_tokenising)
    with pytest.raises(ContextLengthExceeded) as err:
        model.tokenize(text, max_tokens=100)
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(ContextLengthExceeded):
        model.chat_tokens([{"role": "user", "content": text}], max_tokens=100)


def test_the_length_bound_never_refuses_a_text_that_fits(model):
    # at the bound exactly, and characters the vocabulary drops (SmolLM2 lacks a few
    # control bytes) do not count against a text
    per_token = model.tokenizer.max_token_bytes
    ids = model.tokenize("x" * (10 * per_token), max_tokens=10)
    assert 0 < len(ids) < 10 * per_token
    vanishing = model.tokenizer.vanishing_chars
    if vanishing:
        text = vanishing[0] * (50 * per_token) + "hello"
        assert len(model.tokenize(text, add_bos=False, max_tokens=10)) <= 10


def test_body_limit_follows_the_context(default_model_path):
    from abi.server import ServeOptions
    from abi.server.state import LOADING_MAX_BODY, ServerState

    state = ServerState(ServeOptions(model=default_model_path, ctx=256))
    assert state.max_body == LOADING_MAX_BODY
    state.load()
    per_token = state.engine.model.tokenizer.max_token_bytes
    assert 256 * per_token < state.max_body < LOADING_MAX_BODY
    state.close()
    fixed = ServerState(ServeOptions(model=default_model_path, max_body=1234))
    assert fixed.max_body == 1234
    fixed.close()


@pytest.fixture(scope="module")
def server(default_model_path):
    with serve("--model", default_model_path, "--ctx", "256", "--max-tokens", "2") as srv:
        yield srv


def _post(url, path, body=None, data=None, chunked=False):
    headers = {"Content-Type": "application/json"}
    if chunked:  # no Content-Length: the server can only count while reading
        raw = data
        data = (raw[i:i + 65536] for i in range(0, len(raw), 65536))
    r = requests.post(url + path, json=body, data=data, headers=headers, timeout=60)
    return r.status_code, r.json()


def test_abuse_is_refused_typed_while_health_answers(server):
    props = requests.get(server.url + "/props", timeout=10).json()
    limit = props["max_body_bytes"]
    big = b'{"model": "%s", "prompt": "' % MODEL.encode() + b"a" * (4 * limit) + b'"}'
    long_text = "the quick brown fox " * ((limit - 2048) // 20)  # fits the body, not the context
    jobs = []
    with cf.ThreadPoolExecutor(12) as pool:
        for i in range(4):
            jobs.append(("413", pool.submit(_post, server.url, "/v1/completions", data=big,
                                            chunked=bool(i % 2))))
        for path, body in [("/v1/completions", {"model": MODEL, "prompt": long_text}),
                           ("/v1/chat/completions",
                            {"model": MODEL, "messages": [{"role": "user", "content": long_text}]}),
                           ("/api/generate", {"model": MODEL, "prompt": long_text, "stream": False})] * 2:
            jobs.append((path, pool.submit(_post, server.url, path, body=body)))
        latencies = []
        while not all(f.done() for _, f in jobs):
            t0 = time.perf_counter()
            assert requests.get(server.url + "/health", timeout=10).status_code == 200
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.01)
    for kind, future in jobs:
        status, body = future.result()
        if kind == "413":
            assert status == 413 and body["error"]["code"] == "request_too_large", body
        elif kind.startswith("/api/"):
            assert status == 400 and "context" in body["error"], body
        else:
            assert status == 400 and body["error"]["code"] == "context_length_exceeded", body
    # generous for a shared 2-core machine; tools/abuse_server.py measures the real p99
    assert max(latencies, default=0.0) < 1.0, latencies
    # the server still serves
    status, body = _post(server.url, "/v1/completions", body={"model": MODEL, "prompt": "Hi"})
    assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")


def test_cli_option_and_environment(monkeypatch):
    from abi.errors import ConfigError
    from abi.server.cli import build_parser, options_from_args

    parse = lambda *a: options_from_args(build_parser().parse_args(list(a)))
    monkeypatch.delenv("ABI_MAX_BODY_BYTES", raising=False)
    assert parse().max_body is None
    assert parse("--max-body-bytes", "5000").max_body == 5000
    monkeypatch.setenv("ABI_MAX_BODY_BYTES", "7000")
    assert parse().max_body == 7000
    with pytest.raises(ConfigError):
        parse("--max-body-bytes", "0")
