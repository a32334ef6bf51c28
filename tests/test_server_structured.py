"""Structured output and tool calling through the server with the official clients:
``openai``'s ``beta.chat.completions.parse`` and ``ollama``'s ``format``, llama-server's
grammar/json_schema, a tool round trip (call, result, answer) on both APIs, streamed tool-call
deltas against the whole reply, and 400s for what cannot be honoured."""
from __future__ import annotations

import json

import jsonschema
import ollama
import pytest
import requests

from serve_helpers import openai_client, serve

pytestmark = pytest.mark.model
MODEL = "smollm2-135m-instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY = dict(temperature=0, max_tokens=60)


@pytest.fixture(scope="module")
def server(default_model_path):
    with serve("--model", default_model_path, "--ctx", "2048") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with openai_client(server) as c:
        yield c


def test_openai_parse_with_pydantic_model(client):
    from pydantic import BaseModel, Field

    class Person(BaseModel):
        name: str = Field(max_length=30)
        age: int = Field(ge=0, le=130)

    r = client.beta.chat.completions.parse(model=MODEL, response_format=Person, **GREEDY,
                                           messages=[{"role": "user", "content": "Ada is 36."}])
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(r.choices[0].message.parsed, Person)


def test_openai_json_object_streamed(client):
    stream = client.chat.completions.create(model=MODEL, messages=ASK, stream=True, **GREEDY,
                                            response_format={"type": "json_object"})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert isinstance(json.loads(text), dict)


def test_llama_server_grammar_and_json_schema_on_completions(server):
    url = server.url + "/v1/completions"
    r = requests.post(url, json={"model": MODEL, "prompt": "Yes or no?", "max_tokens": 5,
                                 "temperature": 0, "grammar": 'root ::= "yes" | "no"'}).json()
    assert r["choices"][0]["text"] in ("yes", "no")
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    r = requests.post(url, json={"model": MODEL, "prompt": "A digit as JSON:", "max_tokens": 20,
                                 "temperature": 0, "json_schema": schema}).json()
    jsonschema.validate(json.loads(r["choices"][0]["text"]), schema)


def test_length_cut_says_length(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "forecast": {
        "type": "string"}}, "required": ["city", "forecast"], "additionalProperties": False}
    r = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=3,
                                       response_format={"type": "json_schema", "json_schema": {
                                           "name": "w", "schema": schema, "strict": True}})
    assert r.choices[0].finish_reason == "length"
    with pytest.raises(ValueError):
        json.loads(r.choices[0].message.content)


def test_ollama_format_schema_and_json(server, default_model_path):
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    c = ollama.Client(host=server.url)
    r = c.chat(model=MODEL, messages=[{"role": "user", "content": "Name a big city."}],
               format=City.model_json_schema(), options={"temperature": 0, "num_predict": 60})
    City.model_validate_json(r.message.content)
    r = c.generate(model=MODEL, prompt="A colour as JSON.", format="json",
                   options={"temperature": 0, "num_predict": 40})
    # free JSON has no bound on its length: a complete object where the model ended it, and
    # where the 40 tokens ran out (greedy SmolLM2 may write a number for ever) a prefix of one
    if r.done_reason == "stop":
        assert isinstance(json.loads(r.response), dict)
    else:
        assert r.done_reason == "length" and r.response.startswith("{")
        assert_json_object_prefix(r.response, default_model_path)


def assert_json_object_prefix(text: str, model_path: str) -> None:
    """``text`` can still become a JSON object: llguidance's JSON grammar allows every one of
    its tokens in turn, as it does in generation."""
    from abi.llm import load_model
    from abi.llm.constrain import Constraint, Grammar

    tokenizer = load_model(model_path).tokenizer
    c = Constraint(Grammar.json_object(), tokenizer, len(tokenizer.token_types))
    try:
        for t in tokenizer.encode(text, add_bos=False):
            assert c.allowed()[t], (text, t)
            c.advance(t)
        assert not c.accepting   # a complete object would have ended the generation
    finally:
        c.close()


def test_openai_tool_round_trip(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER],
                                       tool_choice="required", **GREEDY)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    history = ASK + [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"}]
    final = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER],
                                           tool_choice="none", **GREEDY).choices[0]
    assert final.message.tool_calls is None and final.message.content.strip()


def test_streamed_tool_call_deltas_reassemble_to_the_whole_call(client):
    whole = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER],
                                           tool_choice="required", **GREEDY).choices[0].message
    calls, finish = {}, None
    for chunk in client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER],
                                                tool_choice="required", stream=True, **GREEDY):
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for d in choice.delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = d.id or entry["id"]
            entry["name"] += (d.function.name or "") if d.function else ""
            entry["arguments"] += (d.function.arguments or "") if d.function else ""
    assert finish == "tool_calls" and sorted(calls) == list(range(len(whole.tool_calls)))
    for k, call in enumerate(whole.tool_calls):
        assert calls[k]["id"] and calls[k]["name"] == call.function.name
        assert json.loads(calls[k]["arguments"]) == json.loads(call.function.arguments)


def test_ollama_tool_round_trip(server):
    # the first turn asks for a call (tool_choice: abi's extension; the client has no such
    # argument), read with the client's own response type; the rest goes through the client
    raw = requests.post(server.url + "/api/chat", json={
        "model": MODEL, "messages": ASK, "tools": [WEATHER], "tool_choice": "required",
        "stream": False, "options": {"temperature": 0, "num_predict": 60}}).json()
    reply = ollama.ChatResponse.model_validate(raw)
    (call,) = reply.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(dict(call.function.arguments), WEATHER["function"]["parameters"])
    c = ollama.Client(host=server.url)
    final = c.chat(model=MODEL, tools=[WEATHER], options={"temperature": 0, "num_predict": 40},
                   messages=ASK + [reply.message, {"role": "tool", "tool_name": "get_weather",
                                                   "content": "18 degrees, sunny"}])
    assert final.message.content.strip() or final.message.tool_calls


@pytest.mark.parametrize("path, extra, words", [
    ("/v1/chat/completions", {"tools": [WEATHER], "tool_choice": {"type": "function",
                                                                 "function": {"name": "nope"}}},
     "not among the tools"),
    ("/v1/chat/completions", {"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ("/v1/chat/completions", {"tools": [{"type": "function", "function": {"name": "x y"}}]},
     "function.name"),
    ("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "if": {}}}}}, "if"),
    ("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": 5}}}}, "malformed"),
    ("/v1/chat/completions", {"grammar": "root ::= (", "json_schema": {"type": "object"}},
     "give one"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x", "surprise": 1}]},
     "surprise"),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": "x", "tool_call_id": "c9"}]},
     "answers no earlier"),
    ("/v1/completions", {"prompt": "x", "grammar": "root ::= undefined"}, "grammar"),
    ("/api/chat", {"format": "yaml", "stream": False}, "format"),
    ("/api/chat", {"stream": False, "messages": [{"role": "user", "content": "x", "extra": 1}]},
     "extra"),
])
def test_unhonourable_requests_are_400_with_a_clear_message(server, path, extra, words):
    body = {"model": MODEL, "messages": ASK, "max_tokens": 3, **extra}
    r = requests.post(server.url + path, json=body)
    assert r.status_code == 400, r.text
    assert words in r.text
