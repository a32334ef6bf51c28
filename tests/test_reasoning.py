"""Reasoning apart from the answer: the splitter on every way a stream can cut a reply, and
the server's reasoning_content (OpenAI) and thinking (Ollama), streamed and whole, with a
grammar forcing the model to write a <think> block."""
from __future__ import annotations

import json

import pytest
import requests

import abi.llm
from abi.llm.reasoning import ReasoningSplitter, prompt_opens_reasoning
from abi.llm.turns import TurnReader, read_turn

REPLIES = [
    ("<think>step one\nstep two</think>\n\nThe answer.", False, ("step one\nstep two", "The answer.")),
    ("  <think>x</think>y", False, ("x", "y")),
    ("no reasoning here <think>kept</think>", False, (None, "no reasoning here <think>kept</think>")),
    ("continued thought</think>\nanswer", True, ("continued thought", "answer")),
    ("<think>never closed", False, ("never closed", "")),
    ("<thinking is not the tag", False, (None, "<thinking is not the tag")),
    ("", False, (None, "")),
    ("<think></think>\n\nonly answer", False, ("", "only answer")),
]


@pytest.mark.parametrize("text, inside, expected", REPLIES)
def test_split_whole_reply(text, inside, expected):
    reply = read_turn(TurnReader(None, inside), text)
    assert (reply.reasoning, reply.content) == (expected[0] or None, expected[1])


@pytest.mark.parametrize("text, inside, expected", REPLIES)
def test_every_cut_of_a_stream_gives_the_whole_reply_split(text, inside, expected):
    for cut in range(len(text) + 1):
        for pieces in ([text[:cut], text[cut:]], list(text)):
            splitter = ReasoningSplitter(inside)
            parts = [p for piece in pieces for p in splitter.feed(piece)] + splitter.finish()
            reasoning = "".join(t for kind, t in parts if kind == "reasoning")
            content = "".join(t for kind, t in parts if kind == "content")
            assert (reasoning if expected[0] is not None else None, content) == expected, (cut, pieces)


def test_prompt_that_opens_the_block():
    assert prompt_opens_reasoning("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_template_kwargs_reach_the_template(default_model_path):
    template = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}")
    model = abi.llm.load_model(default_model_path, chat_template=template)
    messages = [{"role": "user", "content": "hi"}]
    assert "<think></think>" in model.detokenize(model.chat_tokens(messages, template_kwargs={"enable_thinking": False}))
    assert "<think>" not in model.detokenize(model.chat_tokens(messages))


# -- the server ---------------------------------------------------------------------------------

FORCED = 'root ::= "<think>Paris is in France.</think>\\n\\nParis."'   # GBNF: the reply, whole


@pytest.fixture(scope="module")
def server(default_model_path):
    from serve_helpers import serve

    with serve("--model", default_model_path, "--ctx", "512") as srv:
        yield srv


def _chat(server, **extra):
    body = {"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 40, "grammar": FORCED,
            "messages": [{"role": "user", "content": "Where is Paris?"}], **extra}
    return requests.post(server.url + "/v1/chat/completions", json=body, timeout=120)


@pytest.mark.model
def test_openai_reasoning_content(server):
    message = _chat(server).json()["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("Paris is in France.", "Paris.")
    inline = _chat(server, reasoning_format="none").json()["choices"][0]["message"]
    assert inline["content"].startswith("<think>Paris is in France.</think>") and inline.get("reasoning_content") is None
    events = [json.loads(line[6:]) for line in _chat(server, stream=True).text.splitlines()
              if line.startswith("data: {")]
    deltas = [e["choices"][0]["delta"] for e in events if e.get("choices")]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Paris is in France."
    assert "".join(d.get("content") or "" for d in deltas) == "Paris."


def test_ollama_thinking(tmp_path):
    """A model whose template opens the block (as DeepSeek-R1's does): what it writes is
    thinking until </think>; with think false the template closes the block first."""
    import numpy as np

    import model_fuzz
    from serve_helpers import serve

    meta, tensors = model_fuzz.base_model("llama", np.random.default_rng(0))
    meta["tokenizer.chat_template"] = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: <think>\n"
        "{% if enable_thinking is defined and not enable_thinking %}</think>\n{% endif %}")
    path = str(tmp_path / "thinker.gguf")
    model_fuzz.write(path, meta, tensors)
    body = {"model": "thinker", "messages": [{"role": "user", "content": "ab"}],
            "options": {"temperature": 0, "num_predict": 8}}
    with serve("--model", path) as server:
        whole = requests.post(server.url + "/api/chat", json={**body, "stream": False}, timeout=60).json()
        lines = [json.loads(x) for x in requests.post(server.url + "/api/chat", json=body, timeout=60).text.splitlines()]
        plain = requests.post(server.url + "/api/chat", json={**body, "stream": False, "think": False},
                              timeout=60).json()
    assert whole["message"]["thinking"] and whole["message"]["content"] == ""
    assert "".join(x["message"].get("thinking") or "" for x in lines) == whole["message"]["thinking"]
    assert "".join(x["message"]["content"] for x in lines) == ""
    assert plain["message"].get("thinking") is None and plain["message"]["content"]
