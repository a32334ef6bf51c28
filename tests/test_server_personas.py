"""The persona routes inside ``abi serve``: they generate with the server's loaded model
through its scheduler (slots, queue, metrics), behind its API key and error mapping; a
client that leaves cancels its request."""
from __future__ import annotations

import re
import threading

import pytest
import requests

from serve_helpers import serve
from test_server_runtime import AUTH, KEY, health, long_chat, open_request, wait_for

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def server(default_model_path, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("personas") / "personas.yaml"
    cfg.write_text("max_tokens: 6\n")
    with serve("--model", default_model_path, "--parallel", "1", "--queue", "2", "--api-key", KEY,
               env={"ABI_PERSONAS_CONFIG": str(cfg)}) as srv:
        yield srv


@pytest.fixture(scope="module")
def no_eos(default_model_path):
    from abi.llm import load_model

    return {str(t): -100 for t in load_model(default_model_path).tokenizer.eog_ids}


def generations(server) -> int:
    text = requests.get(server.url + "/metrics", headers=AUTH, timeout=10).text
    return sum(int(float(n)) for n in re.findall(r"^abi_generations_total\{[^}]*\} (\S+)", text, re.M))


def test_a_persona_request_waits_in_the_queue_and_shows_in_the_metrics(server, no_eos):
    url = server.url + "/api/v1/chat/abbey"
    body = {"content": "Say hi.", "user_id": "u"}
    assert requests.post(url, json=body, timeout=30).status_code == 401   # the server's key
    before = generations(server)
    busy = open_request(server, "/v1/chat/completions", long_chat(no_eos))
    answer = {}
    try:
        wait_for(lambda: health(server)["slots_processing"] == 1, what="the slot to be taken")
        t = threading.Thread(target=lambda: answer.update(r=requests.post(
            url, json=body, headers=AUTH, timeout=120)))
        t.start()
        wait_for(lambda: health(server)["queue_depth"] == 1, what="the persona request to queue")
    finally:
        busy.close()   # the slot frees; the persona request runs
    t.join(120)
    r = answer["r"]
    assert r.status_code == 200 and r.json()["persona"] == "abbey" and r.json()["content"]
    wait_for(lambda: generations(server) >= before + 2, what="both generations in the metrics")
    metrics = requests.get(server.url + "/metrics", headers=AUTH, timeout=10).text
    assert 'route="/api/v1/chat/abbey",status="200"' in metrics


@pytest.mark.parametrize("payload", [b'{"content": "hi", "mood": "happy"}', b'{"user_id": "u"}',
                                     b'{"content": 12}', b"{not json"])
def test_a_malformed_persona_body_is_400(server, payload):
    r = requests.post(server.url + "/api/v1/chat", data=payload, timeout=30,
                      headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_persona_client_that_leaves_is_cancelled(server, no_eos):
    """Like the OpenAI routes: a persona request whose client disconnects stops its
    generations (here it leaves the queue at once, while the slot's request runs on)."""
    busy = open_request(server, "/v1/chat/completions", long_chat(no_eos))
    try:
        wait_for(lambda: health(server)["slots_processing"] == 1, what="the slot to be taken")
        persona = open_request(server, "/api/v1/chat/abbey", {"content": "Say hi.", "user_id": "u"})
        wait_for(lambda: health(server)["queue_depth"] == 1, what="the persona request to queue")
        persona.close()
        wait_for(lambda: health(server)["queue_depth"] == 0, timeout=10,
                 what="the persona request to leave the queue")
        assert health(server)["slots_processing"] == 1   # the other request runs on
    finally:
        busy.close()
    wait_for(lambda: health(server)["slots_processing"] == 0, what="the slot to be freed")
