"""llama-server's own /completion route on a tiny model: the answer's fields (content, stop,
stop_type and stopping_word, tokens_predicted, tokens_evaluated, timings, probabilities),
grammar and json_schema, the SSE stream joining to the whole answer, and unknown fields
refused by name."""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import requests

import model_fuzz
from serve_helpers import serve

FORCED = 'root ::= "abc stop def"'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    meta, tensors = model_fuzz.base_model("llama", np.random.default_rng(0))
    meta["llama.context_length"] = 256
    path = str(tmp_path_factory.mktemp("completion") / "tiny.gguf")
    model_fuzz.write(path, meta, tensors)
    with serve("--model", path) as srv:
        yield srv


def _post(server, **body):
    return requests.post(server.url + "/completion", json={"prompt": "ab", "temperature": 0, **body},
                         timeout=120)


def test_whole_answer_with_a_grammar(server):
    r = _post(server, grammar=FORCED, n_predict=40, return_tokens=True).json()
    assert r["content"] == "abc stop def" and r["stop"] is True and r["stop_type"] == "eos"
    assert r["tokens_evaluated"] == 2 and r["tokens_predicted"] >= len(r["tokens"]) > 0
    assert r["prompt"] == "ab" and r["truncated"] is False
    assert r["timings"]["predicted_n"] == r["tokens_predicted"] and r["timings"]["prompt_n"] <= 2


def test_stop_word_and_limit(server):
    r = _post(server, grammar=FORCED, n_predict=40, stop=["stop"]).json()
    assert (r["content"], r["stop_type"], r["stopping_word"]) == ("abc ", "word", "stop")
    r = _post(server, n_predict=3).json()
    assert r["stop_type"] == "limit" and r["tokens_predicted"] == 3


def test_json_schema_and_probabilities(server):
    schema = {"type": "object", "properties": {"n": {"enum": [1, 2, 3]}}, "required": ["n"],
              "additionalProperties": False}
    r = _post(server, json_schema=schema, n_predict=40, n_probs=2).json()
    jsonschema.validate(json.loads(r["content"]), schema)
    probs = r["completion_probabilities"]
    assert probs and all(len(p["top_logprobs"]) == 2 for p in probs)
    assert "".join(p["token"] for p in probs) == r["content"]


def test_stream_joins_to_the_whole_answer(server):
    whole = _post(server, grammar=FORCED, n_predict=40).json()
    r = _post(server, grammar=FORCED, n_predict=40, stream=True)
    lines = [line for line in r.text.splitlines() if line]
    assert all(line.startswith("data: ") for line in lines) and "[DONE]" not in r.text
    events = [json.loads(line[6:]) for line in lines]
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == whole["content"]
    assert events[-1]["stop_type"] == "eos" and events[-1]["tokens_predicted"] == whole["tokens_predicted"]


@pytest.mark.parametrize("extra, words", [({"mirostat": 2}, "mirostat"),
                                          ({"grammar": "root ::= nothing"}, "grammar"),
                                          ({"logit_bias": [["hello", 1.0]]}, "logit_bias")])
def test_what_cannot_be_honoured_is_400(server, extra, words):
    r = _post(server, **extra)
    assert r.status_code == 400 and words in r.text, r.text
