"""The server's runtime behaviour: API key, two slots generating at once, the bounded queue
(429), client disconnects cancelling generations and freeing slots, /health and /metrics
answering during a generation, the loading state (503), the llama.cpp-style extras."""
from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest
import requests

from serve_helpers import serve

pytestmark = pytest.mark.model
MODEL = "smollm2-135m-instruct"
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
LONG = 2000  # tokens: ~10 s even at 200 tok/s, far more than any test waits for


@pytest.fixture(scope="module")
def server(default_model_path):
    with serve("--model", default_model_path, "--parallel", "2", "--queue", "1", "--api-key", KEY) as srv:
        yield srv


@pytest.fixture(scope="module")
def no_eos(default_model_path):
    """logit_bias that keeps the model from ending: generations run to max_tokens."""
    from abi.llm import load_model

    return {str(t): -100 for t in load_model(default_model_path).tokenizer.eog_ids}


def health(server) -> dict:
    return requests.get(server.url + "/health", timeout=10).json()


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def open_request(server, path, body, headers=AUTH) -> socket.socket:
    """Send a POST on a raw socket and return it unread (close it to disconnect)."""
    host, port = server.url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            f"Content-Length: {len(data)}"] + [f"{k}: {v}" for k, v in headers.items()]
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    return sock


def long_chat(no_eos, stream=True):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": LONG, "temperature": 0, "logit_bias": no_eos, "stream": stream}


def cancelled(server) -> float:
    text = requests.get(server.url + "/metrics", headers=AUTH, timeout=10).text
    m = re.search(r'^abi_generations_total\{finish_reason="cancelled"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


# -- API key ---------------------------------------------------------------------------------------------

def test_api_key_guards_every_route_but_health(server):
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    for path in ("/v1/models", "/api/tags", "/metrics", "/props", "/openapi.json"):
        r = requests.get(server.url + path, timeout=10)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        wrong = requests.get(server.url + path, headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401
        assert requests.get(server.url + path, headers=AUTH, timeout=10).status_code == 200, path
    r = requests.get(server.url + "/v1/models", timeout=10)
    assert r.json()["error"]["type"] == "authentication_error"
    assert isinstance(requests.get(server.url + "/api/tags", timeout=10).json()["error"], str)


def test_official_clients_with_the_key(server):
    import ollama
    import openai

    good = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in good.models.list()] == [MODEL]
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert ollama.Client(host=server.url, headers=AUTH).list().models[0].model == MODEL
    with pytest.raises(ollama.ResponseError) as exc:
        ollama.Client(host=server.url).list()
    assert exc.value.status_code == 401


def test_api_key_from_the_environment(monkeypatch):
    from abi.server.cli import build_parser, options_from_args

    monkeypatch.setenv("ABI_API_KEY", "from-env")
    assert options_from_args(build_parser().parse_args([])).api_key == "from-env"
    assert options_from_args(build_parser().parse_args(["--api-key", "flag"])).api_key == "flag"
    monkeypatch.delenv("ABI_API_KEY")
    assert options_from_args(build_parser().parse_args([])).api_key is None


# -- slots, queue, cancellation -------------------------------------------------------------------------------

def test_two_slots_generate_at_once_with_unchanged_results(server, no_eos):
    prompts = ["Tell me about cats.", "Tell me about the sea."]
    body = lambda p: {"model": MODEL, "messages": [{"role": "user", "content": p}], "max_tokens": 24,
                      "temperature": 0, "logit_bias": no_eos}
    alone = [requests.post(server.url + "/v1/chat/completions", json=body(p), headers=AUTH,
                           timeout=120).json()["choices"][0]["message"]["content"] for p in prompts]
    together = [None, None]
    seen_busy = []

    def run(i):
        r = requests.post(server.url + "/v1/chat/completions", json=body(prompts[i]), headers=AUTH, timeout=120)
        together[i] = r.json()["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        seen_busy.append(health(server)["slots_processing"])
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert together == alone
    assert max(seen_busy) == 2


def test_n_choices_run_together_and_keep_each_seeds_output(server):
    body = dict(model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
                max_tokens=6, temperature=1.0, top_p=1.0, seed=1234)
    url = server.url + "/v1/chat/completions"
    alone = [requests.post(url, json={**body, "seed": 1234 + i}, headers=AUTH, timeout=60).json()
             for i in range(3)]
    # three choices on two slots: two decode together, the third follows on a freed slot
    many = requests.post(url, json={**body, "n": 3}, headers=AUTH, timeout=60).json()
    assert [c["message"]["content"] for c in many["choices"]] == \
        [a["choices"][0]["message"]["content"] for a in alone]
    assert [c["index"] for c in many["choices"]] == [0, 1, 2]
    # streamed, the choices' chunks interleave; each joins to its whole answer
    r = requests.post(url, json={**body, "n": 3, "stream": True,
                                 "stream_options": {"include_usage": True}},
                      headers=AUTH, timeout=60, stream=True)
    text, usage = ["", "", ""], None
    for line in r.iter_lines():
        if line.startswith(b"data: {"):
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for c in chunk["choices"]:
                text[c["index"]] += c["delta"].get("content") or ""
    assert text == [c["message"]["content"] for c in many["choices"]]
    assert usage["completion_tokens"] == many["usage"]["completion_tokens"]


def test_health_and_metrics_answer_during_a_generation(server, no_eos):
    sock = open_request(server, "/v1/chat/completions", long_chat(no_eos))
    try:
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")  # streaming has begun
        for _ in range(5):
            t0 = time.monotonic()
            assert health(server)["slots_processing"] >= 1
            assert requests.get(server.url + "/metrics", headers=AUTH, timeout=10).status_code == 200
            assert time.monotonic() - t0 < 2.0
    finally:
        sock.close()
    wait_for(lambda: health(server)["slots_processing"] == 0, what="the slot to be freed")


def test_queue_full_is_429_and_disconnects_free_everything(server, no_eos):
    before = cancelled(server)
    socks = [open_request(server, "/v1/chat/completions", long_chat(no_eos)) for _ in range(3)]
    try:
        wait_for(lambda: (h := health(server))["slots_processing"] == 2 and h["queue_depth"] == 1,
                 what="two busy slots and one queued request")
        r = requests.post(server.url + "/v1/chat/completions", json=long_chat(no_eos, False),
                          headers=AUTH, timeout=30)
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
        r = requests.post(server.url + "/api/chat", headers=AUTH, timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 429 and isinstance(r.json()["error"], str)
        socks[2].close()  # the queued one leaves the queue
        wait_for(lambda: health(server)["queue_depth"] == 0, what="the queue to empty")
        assert health(server)["slots_processing"] == 2
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: health(server)["slots_processing"] == 0, what="both slots to be freed")
    wait_for(lambda: cancelled(server) >= before + 2, what="two cancelled generations")
    metrics = requests.get(server.url + "/metrics", headers=AUTH, timeout=10).text
    assert re.search(r"^abi_requests_rejected_total [2-9]", metrics, re.M)
    # the server is whole again
    r = requests.post(server.url + "/v1/chat/completions", headers=AUTH, timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert r.status_code == 200


def test_a_non_streaming_client_that_leaves_cancels_its_generation(server, no_eos):
    before = cancelled(server)
    sock = open_request(server, "/v1/chat/completions", long_chat(no_eos, stream=False))
    wait_for(lambda: health(server)["slots_processing"] == 1, what="the generation to start")
    sock.close()
    wait_for(lambda: health(server)["slots_processing"] == 0, timeout=10, what="the slot to be freed")
    wait_for(lambda: cancelled(server) >= before + 1, what="a cancelled generation")


# -- metrics and extras ----------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? -?[0-9.e+-]+$')


def test_metrics_exposition(server):
    def scrape():
        text = requests.get(server.url + "/metrics", headers=AUTH, timeout=10).text
        values = {}
        for line in text.splitlines():
            if line.startswith("#"):
                assert re.match(r"^# (HELP|TYPE) abi_\w+ ", line), line
                continue
            assert SAMPLE.match(line), line
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
        return values

    before = scrape()
    r = requests.post(server.url + "/v1/completions", headers=AUTH, timeout=60,
                      json={"model": MODEL, "prompt": "Once upon", "max_tokens": 5, "temperature": 0})
    n = r.json()["usage"]["completion_tokens"]
    after = scrape()
    assert after["abi_generated_tokens_total"] - before["abi_generated_tokens_total"] == n
    assert after["abi_requests_total"] == before["abi_requests_total"] + 1
    assert after["abi_slots_total"] == 2 and after["abi_slots_busy"] == 0
    assert after["abi_queue_depth"] == 0 and after["abi_queue_limit"] == 1
    assert after["abi_tokens_per_second"] > 0 and after["abi_prompt_tokens_per_second"] > 0
    key = 'abi_http_requests_total{method="POST",route="/v1/completions",status="200"}'
    assert after[key] == before.get(key, 0) + 1


def test_tokenize_detokenize_props(server):
    r = requests.post(server.url + "/tokenize", headers=AUTH, timeout=10,
                      json={"content": "Hello world", "with_pieces": True}).json()
    assert [p["piece"] for p in r["tokens"]] == ["Hello", " world"]
    ids = [p["id"] for p in r["tokens"]]
    back = requests.post(server.url + "/detokenize", headers=AUTH, json={"tokens": ids}, timeout=10)
    assert back.json() == {"content": "Hello world"}
    bad = requests.post(server.url + "/detokenize", headers=AUTH, json={"tokens": [-1]}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"].split(".")[0] == "tokens"
    props = requests.get(server.url + "/props", headers=AUTH, timeout=10).json()
    assert props["total_slots"] == 2 and props["n_ctx"] == 8192 and props["model"] == MODEL
    assert props["default_generation_settings"]["temperature"] == 0.7


# -- the loading state, in-process ---------------------------------------------------------------------------------

def test_while_loading_everything_but_health_and_metrics_is_503():
    from starlette.testclient import TestClient

    from abi.server import ServeOptions, ServerState, create_app

    state = ServerState(ServeOptions())  # never loaded
    with TestClient(create_app(state=state, load=False)) as client:
        h = client.get("/health")
        assert h.status_code == 503 and h.json() == {"status": "loading"}
        r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "unavailable_error" and r.json()["error"]["code"] == "model_loading"
        r = client.post("/api/generate", json={"model": MODEL, "prompt": "x"})
        assert r.status_code == 503 and isinstance(r.json()["error"], str)
        m = client.get("/metrics")
        assert m.status_code == 200 and "abi_model_loaded 0" in m.text
        assert client.get("/openapi.json").json()["info"]["title"] == "abi"


def test_a_model_that_cannot_load_ends_the_server_with_its_error():
    import subprocess
    import sys

    from serve_helpers import free_port

    done = subprocess.run([sys.executable, "-m", "abi", "serve", "--port", str(free_port()),
                           "--model", "/no/such/model.gguf"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 4  # ModelNotFoundError's exit code
    assert "no model file at '/no/such/model.gguf'" in done.stderr
    # refused before the web server starts: no start-up or shutdown log around the error
    assert "Uvicorn running" not in done.stderr and "Shutting down" not in done.stderr


def test_the_banner_shows_the_port_bound_for_port_0():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "abi", "serve", "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "abi serve:" not in line:
            line = proc.stderr.readline()
            assert line, "the server ended before its banner"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    port = int(line.split("http://127.0.0.1:", 1)[1].split(" ", 1)[0])
    assert port > 0
