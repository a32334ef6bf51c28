"""Streamed tool calls and reasoning end to end: tiny models whose templates write Hermes
calls and gpt-oss's harmony messages, forced by a grammar to write a recorded reply, served
and read with the official ``openai`` client (``stream=True``) and the ``ollama`` client. The
streamed deltas join to exactly the reply without streaming; content streams before the
calls; calls come with their indexes in order; harmony's analysis channel is reasoning."""
from __future__ import annotations

import json

import numpy as np
import ollama
import pytest
import requests

import model_fuzz
from abi.gguf import GGMLType
from serve_helpers import openai_client, serve

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ADD = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}
ASK = [{"role": "user", "content": "Weather?"}]
HARMONY_TOKENS = ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>",
                  "<|constrain|>"]
HERMES_REPLY = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                '</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>')


def _model(path, arch, template, extra_tokens=()):
    meta, tensors = model_fuzz.base_model(arch, np.random.default_rng(0))
    meta[f"{arch}.context_length"] = 512
    meta["tokenizer.chat_template"] = template
    if extra_tokens:   # control tokens after the byte vocabulary, with embedding rows
        meta["tokenizer.ggml.tokens"] = meta["tokenizer.ggml.tokens"] + list(extra_tokens)
        meta["tokenizer.ggml.token_type"] = meta["tokenizer.ggml.token_type"] + [3] * len(extra_tokens)
        n = len(meta["tokenizer.ggml.tokens"])
        embd = (0.3 * np.random.default_rng(1).standard_normal((n, model_fuzz.D))).astype(np.float32)
        tensors["token_embd.weight"] = [embd, GGMLType.F32, embd.shape]
        tensors["output.weight"] = [embd.copy(), GGMLType.F32, embd.shape]
    model_fuzz.write(str(path), meta, tensors)
    return str(path)


@pytest.fixture(scope="module")
def hermes(tmp_path_factory):
    template = "{# <tool_call> #}{% for m in messages %}{{ m['content'] }}\n{% endfor %}>"
    path = _model(tmp_path_factory.mktemp("hermes") / "hermes.gguf", "llama", template)
    with serve("--model", path, "--ctx", "512") as srv:
        yield srv


@pytest.fixture(scope="module")
def harmony(tmp_path_factory):
    template = ("{# <|channel|> functions. #}{% for m in messages %}<|start|>{{ m['role'] }}<|message|>"
                "{{ m['content'] }}<|end|>{% endfor %}<|start|>assistant")
    path = _model(tmp_path_factory.mktemp("harmony") / "harmony.gguf", "gpt-oss", template,
                  HARMONY_TOKENS)
    with serve("--model", path, "--ctx", "512") as srv:
        yield srv


def _gbnf(text: str) -> str:
    return "root ::= " + json.dumps(text)


def _harmony_grammar(parts) -> str:
    """Lark forcing a harmony reply: strings as text, token names as the control token."""
    ids = {t: 260 + i for i, t in enumerate(HARMONY_TOKENS)}
    return "start: " + " ".join(f"<[{ids[p]}]>" if p in ids else json.dumps(p) for p in parts)


def _stream(client, **kwargs):
    """(deltas in order, finish reason) of a streamed chat completion."""
    deltas, finish = [], None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            deltas.append(choice.delta)
            finish = choice.finish_reason or finish
    return deltas, finish


def _joined(deltas):
    calls = {}
    for d in deltas:
        for c in d.tool_calls or []:
            entry = calls.setdefault(c.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = entry["id"] or c.id
            entry["name"] += c.function.name or ""
            entry["arguments"] += c.function.arguments or ""
    return ("".join(d.content or "" for d in deltas) or None,
            "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) or None,
            [calls[k] for k in sorted(calls)], sorted(calls))


def _whole(message):
    calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
             for c in message.tool_calls or []]
    return message.content, getattr(message, "reasoning_content", None), calls


def _same(streamed, whole):
    content, reasoning, calls, indexes = streamed
    assert (content, reasoning) == whole[:2]
    assert indexes == list(range(len(whole[2])))
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == \
        [(c["name"], json.loads(c["arguments"])) for c in whole[2]]
    assert all(c["id"] for c in calls)


def test_hermes_calls_stream_after_the_content(hermes):
    args = dict(model="hermes", messages=ASK, tools=[WEATHER, ADD], temperature=0, max_tokens=200,
                extra_body={"grammar": _gbnf(HERMES_REPLY)})
    with openai_client(hermes) as client:
        whole = client.chat.completions.create(**args).choices[0]
        deltas, finish = _stream(client, **args)
    assert whole.finish_reason == finish == "tool_calls"
    assert _whole(whole.message) == ("Let me check.", None, [
        {"id": whole.message.tool_calls[0].id, "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"id": whole.message.tool_calls[1].id, "name": "add", "arguments": '{"a": 1, "b": 2}'}])
    _same(_joined(deltas), _whole(whole.message))
    first_call = next(i for i, d in enumerate(deltas) if d.tool_calls)
    assert "".join(d.content or "" for d in deltas[:first_call]) == "Let me check."
    assert deltas[first_call].tool_calls[0].id and deltas[first_call].tool_calls[0].function.name


def test_hermes_call_that_fails_is_content_streamed_and_whole(hermes):
    bad = 'Hm.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": '
    args = dict(model="hermes", messages=ASK, tools=[WEATHER], temperature=0, max_tokens=200,
                extra_body={"grammar": _gbnf(bad)})
    with openai_client(hermes) as client:
        whole = client.chat.completions.create(**args).choices[0]
        deltas, finish = _stream(client, **args)
    assert whole.message.content == bad.rstrip() and not whole.message.tool_calls
    assert whole.message.model_extra["tool_call_error"]
    assert finish == whole.finish_reason == "stop"
    assert _joined(deltas)[0] == bad.rstrip() and not _joined(deltas)[2]
    assert any((d.model_extra or {}).get("tool_call_error") for d in deltas)


def test_ollama_streams_each_call_whole(hermes):
    city = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"],
        "additionalProperties": False}}}
    body = {"model": "hermes", "messages": ASK, "tools": [city], "tool_choice": "required",
            "options": {"temperature": 0, "num_predict": 200}}
    whole = ollama.ChatResponse.model_validate(
        requests.post(hermes.url + "/api/chat", json={**body, "stream": False}).json())
    lines = [ollama.ChatResponse.model_validate_json(x) for x in
             requests.post(hermes.url + "/api/chat", json=body).text.splitlines()]
    assert whole.message.tool_calls and lines[-1].done
    parts = [x.message.tool_calls for x in lines if x.message.tool_calls]
    assert all(len(p) == 1 for p in parts)   # each call whole, in its own chunk
    assert [p[0] for p in parts] == whole.message.tool_calls
    assert "".join(x.message.content for x in lines) == whole.message.content


def test_harmony_reasoning_and_call(harmony):
    grammar = _harmony_grammar(["<|channel|>", "analysis", "<|message|>", "Sunny check.", "<|end|>",
                                "<|start|>", "assistant", "<|channel|>",
                                "commentary to=functions.get_weather ", "<|constrain|>", "json",
                                "<|message|>", '{"city": "Paris"}'])
    args = dict(model="harmony", messages=ASK, tools=[WEATHER], temperature=0, max_tokens=200,
                extra_body={"grammar": grammar})
    with openai_client(harmony) as client:
        whole = client.chat.completions.create(**args).choices[0]
        deltas, finish = _stream(client, **args)
    assert whole.finish_reason == finish == "tool_calls"
    message = whole.message
    assert message.model_extra["reasoning_content"] == "Sunny check."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    streamed = _joined(deltas)
    assert streamed[1] == "Sunny check." and streamed[0] is None
    assert [(c["name"], json.loads(c["arguments"])) for c in streamed[2]] == [("get_weather", {"city": "Paris"})]


def test_harmony_final_channel_and_the_inline_switch(harmony):
    grammar = _harmony_grammar(["<|channel|>", "analysis", "<|message|>", "Easy.", "<|end|>", "<|start|>",
                                "assistant", "<|channel|>", "final", "<|message|>", "Paris."])
    body = {"model": "harmony", "messages": ASK, "temperature": 0, "max_tokens": 200, "grammar": grammar}
    url = harmony.url + "/v1/chat/completions"
    message = requests.post(url, json=body).json()["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("Easy.", "Paris.")
    inline = requests.post(url, json={**body, "reasoning_format": "none"}).json()["choices"][0]["message"]
    assert inline["content"] == "<|channel|>analysis<|message|>Easy.<|end|>Paris."
    with openai_client(harmony) as client:
        deltas, _ = _stream(client, model="harmony", messages=ASK, temperature=0, max_tokens=200,
                            extra_body={"grammar": grammar})
    assert _joined(deltas)[:2] == ("Paris.", "Easy.")
