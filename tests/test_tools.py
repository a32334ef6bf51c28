"""Tool calling in the runtime (abi.llm.tools): definitions and tool_choice checked, the
template family found, and required / named choices enforced (reading calls back:
test_turns.py)."""
import json

import pytest

import abi.llm
from abi.errors import ToolCallError
from abi.llm.tools import ToolPlan, family_of

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two numbers",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                   "required": ["a", "b"]}}}
TOOLS = [WEATHER, ADD]
TEMPLATES = {"hermes": "{{ '<tool_call>' }}{{ tools }}", "mistral": "[TOOL_CALLS]{{ tools }}",
             "gpt-oss": "<|channel|>commentary to=functions.{{ tools }}",
             "llama3": "<|start_header_id|>{{ tools }}", "generic": None}


def _plan(family, choice=None):
    return ToolPlan(TEMPLATES[family], TOOLS, choice)


@pytest.mark.parametrize("family", list(TEMPLATES))
def test_family_of_template(family):
    assert family_of(TEMPLATES[family]) == family


@pytest.mark.parametrize("tools, choice, words", [
    ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "not among the tools"),
    ([WEATHER], "sometimes", "tool_choice must be"),
    ([], "required", "needs tools"),
    ([WEATHER], {"type": "function"}, "must name a function"),
    ([{"type": "function", "function": {"name": "bad name!"}}], None, "function.name"),
    ([WEATHER, WEATHER], None, "given twice"),
    ([{"type": "retrieval"}], None, r"tools\[0\] must be"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}], None,
     "malformed"),
])
def test_invalid_tools_and_choices_are_typed_errors(tools, choice, words):
    with pytest.raises(ToolCallError, match=words) as info:
        ToolPlan(None, tools, choice)
    assert info.value.http_status == 400


def test_generic_prompt_describes_tools_and_renders_calls_and_results():
    plan = _plan("generic")
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    msgs = plan.messages([{"role": "user", "content": "Weather?"},
                          {"role": "assistant", "content": "", "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
    assert msgs[0]["role"] == "system" and '"get_weather"' in msgs[0]["content"]
    assert json.loads(msgs[2]["content"]) == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert msgs[3] == {"role": "user", "content": "Result of get_weather: sunny"}


def test_template_families_get_calls_with_object_arguments():
    plan = _plan("hermes")
    call = {"id": "c", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    (msg,) = plan.messages([{"role": "assistant", "content": "", "tool_calls": [call]}])
    assert msg["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    assert plan.template_tools == plan.tools


@pytest.fixture(scope="module")
def engine(default_model_path):
    return abi.llm.Engine.from_model(abi.llm.load_model(default_model_path, n_ctx=1024))


@pytest.mark.parametrize("family", ["hermes", "llama3", "generic"])
def test_required_grammar_compiles_per_family(engine, family):
    from abi.llm.constrain import check

    model = engine.model
    check(ToolPlan(TEMPLATES[family], TOOLS, "required").grammar, model.tokenizer, model.n_vocab)


@pytest.mark.parametrize("choice, names", [
    ("required", {"get_weather", "add"}),
    ({"type": "function", "function": {"name": "add"}}, {"add"}),
])
def test_required_and_named_choice_force_a_valid_call(engine, choice, names):
    import jsonschema

    reply, stats = engine.chat_turn([{"role": "user", "content": "What is the weather in Paris?"}],
                                    tools=TOOLS, tool_choice=choice, max_tokens=60, temperature=0)
    assert stats.finish_reason == "stop" and reply.tool_calls
    for call in reply.tool_calls:
        assert call.name in names
        schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == call.name)
        jsonschema.validate(json.loads(call.arguments), schema)
