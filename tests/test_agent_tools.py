"""Agents with tools: schemas from Python signatures, the call -> execute -> observe loop
(tool errors fed back as results, a step limit, the whole exchange in history) on a scripted
backend, the local backend's constrained call on the default model, and --tool on the CLI."""
import json

import pytest

from abi.agents import Agent
from abi.agents.backends import Backend, LocalBackend, _ollama_messages
from abi.agents.config import AgentConfig
from abi.agents.tools import Tool
from abi.errors import ConfigError, NotSupported


def get_weather(city: str, unit: str = "C") -> str:
    """Current weather of a city."""
    if city == "Atlantis":
        raise ValueError("no such city")
    return f"18 {unit} and sunny in {city}"


class Scripted(Backend):
    """Replies from a script of turns; records what each request sent."""

    name = "scripted"

    def __init__(self, turns):
        self.turns, self.sent = list(turns), []

    def complete(self, messages, params):
        raise AssertionError("an agent with tools asks for turns")

    def complete_turn(self, messages, params, tools, tool_choice="auto"):
        self.sent.append(([dict(m) for m in messages], tool_choice))
        return self.turns.pop(0)


def _call(name, args, id="call_1"):
    return {"id": id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def _agent(turns, **cfg):
    agent = Agent(name="t", tools=[get_weather], **cfg)
    agent._backend = Scripted(turns)
    return agent


def test_schema_from_signature():
    tool = Tool.of(get_weather)
    assert tool.definition()["function"]["description"] == "Current weather of a city."
    assert tool.parameters["required"] == ["city"]
    assert set(tool.parameters["properties"]) == {"city", "unit"}


def test_loop_calls_executes_and_answers_keeping_history():
    agent = _agent([{"role": "assistant", "content": None,
                     "tool_calls": [_call("get_weather", {"city": "Paris"}),
                                    _call("get_weather", {"city": "Atlantis"}, "call_2")]},
                    {"role": "assistant", "content": "Sunny in Paris.", "tool_calls": []}])
    assert agent.chat("Weather?") == "Sunny in Paris."
    results = [m for m in agent.backend.sent[1][0] if m["role"] == "tool"]
    assert results[0]["content"] == "18 C and sunny in Paris" and results[0]["tool_call_id"] == "call_1"
    assert results[1]["content"].startswith("error: ValueError: no such city")
    assert [m.role for m in agent.history()] == ["user", "assistant", "tool", "tool", "assistant"]
    # the next turn sends the whole exchange back
    agent.backend.turns.append({"role": "assistant", "content": "Yes.", "tool_calls": []})
    agent.chat("Sure?")
    assert [m["role"] for m in agent.backend.sent[-1][0]] == [
        "user", "assistant", "tool", "tool", "assistant", "user"]


def test_unknown_tool_and_step_limit():
    loop = {"role": "assistant", "content": None, "tool_calls": [_call("teleport", {})]}
    agent = _agent([loop, loop, {"role": "assistant", "content": "Done.", "tool_calls": []}],
                   max_tool_steps=2)
    assert agent.chat("Go") == "Done."
    assert [choice for _, choice in agent.backend.sent] == ["auto", "auto", "none"]
    assert "no tool named 'teleport'" in agent.backend.sent[1][0][-1]["content"]


def test_tools_refuse_streaming_and_bad_settings():
    with pytest.raises(NotSupported):
        _agent([]).chat_stream("Hi")
    with pytest.raises(ConfigError):
        AgentConfig(name="t", tools="get_weather")
    with pytest.raises(ConfigError):
        Tool.of(lambda *args: None)


def test_ollama_messages_name_results_by_tool():
    msgs = _ollama_messages([{"role": "user", "content": "x"},
                             {"role": "assistant", "content": None,
                              "tool_calls": [_call("get_weather", {"city": "Paris"})]},
                             {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
    assert msgs[1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert msgs[2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}


@pytest.mark.model
def test_local_backend_turn_with_required_call(default_model_path):
    from abi.agents.backends import GenerationParams

    backend = LocalBackend(AgentConfig(name="t", backend="local", model=default_model_path))
    reply = backend.complete_turn([{"role": "user", "content": "Weather in Paris?"}],
                                  GenerationParams(0.0, 1.0, 60), [Tool.of(get_weather).definition()],
                                  "required")
    (call,) = reply["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert "city" in json.loads(call["function"]["arguments"])


def test_cli_tool_option_loads_functions():
    from abi.agents.cli import _load_tool

    assert _load_tool("json:dumps") is json.dumps
    with pytest.raises(ConfigError):
        _load_tool("json:nothing_here")


@pytest.fixture(scope="module")
def served(default_model_path):
    from serve_helpers import serve

    with serve("--model", default_model_path, "--ctx", "2048") as srv:
        yield srv


@pytest.mark.model
@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_remote_backends_round_trip_a_tool_call(served, kind):
    """The openai and ollama backends against abi's own server (it speaks both APIs): a
    required call comes back as a call (Ollama's API has no tool_choice, so there the call is
    the one the OpenAI route made), its result goes back as a tool message, and the model then
    answers in text -- the exchange an agent's loop runs."""
    from abi.agents.backends import GenerationParams, make_backend

    base = served.url + ("/v1" if kind == "openai" else "")
    backend = make_backend(AgentConfig(name="t", backend=kind, model="smollm2-135m-instruct", base_url=base))
    tools = [Tool.of(get_weather).definition()]
    params = GenerationParams(0.0, 1.0, 60)
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    caller = backend if kind == "openai" else make_backend(AgentConfig(
        name="t", backend="openai", model="smollm2-135m-instruct", base_url=served.url + "/v1"))
    turn = caller.complete_turn(messages, params, tools, "required")
    (call,) = turn["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    args = call["function"]["arguments"]
    args = json.loads(args) if isinstance(args, str) else args
    assert isinstance(args.get("city"), str)
    result = {"role": "tool", "content": get_weather(**args), "tool_call_id": call.get("id"),
              "name": "get_weather"}
    answer = backend.complete_turn(messages + [turn, result], params, tools,
                                   "none" if kind == "openai" else "auto")
    assert not answer.get("tool_calls") and answer["content"].strip()
