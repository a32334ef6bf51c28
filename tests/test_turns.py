"""Reading an assistant turn as it is generated (abi.llm.turns): for recorded outputs of each
tool family and of gpt-oss's harmony format, the events of the text fed character by
character and in random pieces join to exactly the reply of the whole text; calls are sent
only whole and valid, so a call that fails is content plus an error, never a half-sent call;
content before a call streams before the call is complete."""
import json
import random

import pytest

from abi.llm.tools import ToolPlan
from abi.llm.turns import TurnReader, join_turn, read_turn

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "properties": {
        "a": {"type": "number"}, "b": {"type": "number"}}}}}
TEMPLATES = {"hermes": "<tool_call>", "mistral": "[TOOL_CALLS]",
             "gpt-oss": "<|channel|><|message|>functions.", "llama3": "<|start_header_id|>tools",
             "generic": None}
PARIS, ONE_TWO = ("get_weather", {"city": "Paris"}), ("add", {"a": 1, "b": 2})

SMOL_PLAIN = ("The weather in Paris can vary greatly depending on the time of year and local "
              "conditions. The city's climate is influenced by the position of the sun during the "
              "summer months (June to August) and the cold winter months, which are known as the "
              "\"Arc de Triomphe\" or \"Montmartre\". However, it also has a unique seasonal "
              "variation that can be observed in Paris' weather patterns.\n\nThe city's climate is "
              "influenced by the position of the sun during the summer months")
SMOL_CALL_LIKE = ('You can call this tool (JSON schema):\n{"name": "get_weather", "description": '
                  '"Current weather of a city", "parameters": {\n    "type": "object",\n    '
                  '"properties": {\n        "city": {"type": "string"},\n        "temperature": 25,\n'
                  '        "humidity": 70.146893e-21,\n        "windSpeed": 1.2,\n        '
                  '"weatherCondition": "Clouds')
# (family, text as the model wrote it, reasoning, content, calls, parse error expected)
CASES = [
    ("hermes", 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
               '</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
     None, "Let me look.", [PARIS, ONE_TWO], False),
    ("hermes", "<think>\nThe user wants weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", "
               "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
     "\nThe user wants weather.\n", None, [PARIS], False),
    ("hermes", 'Sure <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
               ' and <tool_call>{"name": "nope", "arguments": {}}</tool_call>',
     None, 'Sure and <tool_call>{"name": "nope", "arguments": {}}</tool_call>', [PARIS], True),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',
     None, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', [], True),
    ("hermes", "Paris is sunny, no tool needed. <tool_ is not a tag", None,
     "Paris is sunny, no tool needed. <tool_ is not a tag", [], False),
    # Qwen2.5-Coder-1.5B-Instruct Q4_K_M, greedy, asked for the weather in Paris and Rome and 2 + 3
    ("hermes", '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris"\n  }\n}\n```',
     None, None, [PARIS], False),
    ("hermes", '```json\n{\n  "name": "add",\n  "arguments": {\n    "a": 2,\n    "b": 3\n  }\n}\n```',
     None, None, [("add", {"a": 2, "b": 3})], False),
    ("hermes", '{"answer": 42}', None, '{"answer": 42}', [], False),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
                '{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}]', None, None, [PARIS, ONE_TWO], False),
    ("mistral", 'Checking.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]add[ARGS]{"a": 1, "b": 2}',
     None, "Checking.", [PARIS, ONE_TWO], False),
    ("mistral", "[TOOL_CALLS]not json", None, "[TOOL_CALLS]not json", [], True),
    ("llama3", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
               '{"name": "add", "parameters": {"a": 1, "b": 2}}', None, None, [PARIS, ONE_TWO], False),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}', None, None, [PARIS], False),
    ("llama3", "It is sunny in Paris today.", None, "It is sunny in Paris today.", [], False),
    ("generic", '```json\n[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
                '{"name": "add", "arguments": {"a": 1, "b": 2}}]\n```', None, None, [PARIS, ONE_TWO], False),
    # SmolLM2-135M-Instruct Q4_1, greedy, 100 tokens: no call, and a call-like text that is not JSON
    ("generic", SMOL_PLAIN, None, SMOL_PLAIN, [], False),
    ("generic", SMOL_CALL_LIKE, None, SMOL_CALL_LIKE, [], False),
    ("generic", '{"city": "Paris", "sunny": true}', None, '{"city": "Paris", "sunny": true}', [], False),
    ("generic", '{"name": "get_weather", "arguments": {"city": ', None,
     '{"name": "get_weather", "arguments": {"city":', [], True),
    ("generic", "```python\nprint(1)\n```", None, "```python\nprint(1)\n```", [], False),
    ("gpt-oss", "<|channel|>analysis<|message|>User asks weather. Call the tool.<|end|><|start|>assistant"
                "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
                '{"city": "Paris"}', "User asks weather. Call the tool.", None, [PARIS], False),
    ("gpt-oss", '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>'
                '{"city": "Paris"}<|call|><|start|>assistant<|channel|>commentary to=functions.add'
                '<|message|>{"a": 1, "b": 2}<|call|>', None, None, [PARIS, ONE_TWO], False),
    ("gpt-oss", "<|channel|>analysis<|message|>Simple.<|end|><|start|>assistant<|channel|>final"
                "<|message|>Paris is sunny.", "Simple.", "Paris is sunny.", [], False),
    ("gpt-oss", "<|channel|>commentary to=functions.get_weather<|message|>{\"city\": ", None,
     "<|channel|>commentary to=functions.get_weather<|message|>{\"city\":", [], True),
]


def _reader(family, inside=False):
    plan = ToolPlan(TEMPLATES[family], [WEATHER, ADD])
    return TurnReader(plan, inside, harmony=family == "gpt-oss")


def _chunked(text, sizes):
    i = 0
    for n in sizes:
        yield text[i:i + n]
        i += n
    yield text[i:]


def _streamed(family, text, sizes):
    reader = _reader(family)
    events = []
    for piece in _chunked(text, sizes):
        events += reader.feed(piece)
    return events + reader.finish()


def _summary(reply):
    return (reply.reasoning, reply.content, [(c.name, json.loads(c.arguments)) for c in reply.tool_calls],
            reply.parse_error is not None)


@pytest.mark.parametrize("family, text, reasoning, content, calls, error", CASES)
def test_whole_turns(family, text, reasoning, content, calls, error):
    reply = read_turn(_reader(family), text)
    assert _summary(reply) == (reasoning, content, calls, error)
    assert len({c.id for c in reply.tool_calls}) == len(calls)


@pytest.mark.parametrize("family, text", [c[:2] for c in CASES])
def test_any_chunking_joins_to_the_whole_reply(family, text):
    whole = _summary(read_turn(_reader(family), text))
    rng = random.Random(len(text))
    chunkings = [[1] * len(text)] + [[rng.randint(1, 9) for _ in range(len(text))] for _ in range(8)]
    for sizes in chunkings:
        events = _streamed(family, text, sizes)
        assert _summary(join_turn(events)) == whole
        # a call is announced once, whole: never before an error that would contradict it
        kinds = [k for k, _ in events]
        assert kinds.count("call") == len(whole[2])


def test_content_streams_before_the_call_is_complete():
    reader = _reader("hermes")
    out = reader.feed("Let me check the weather for you.\n<tool_ca")
    assert out == [("content", "Let me check the weather for you.")]
    assert reader.feed('ll>\n{"name": "get_weather", "arguments": {"city": "Par') == []
    out = reader.feed('is"}}\n</tool_call>')
    assert [k for k, _ in out] == ["call"] and out[0][1].name == "get_weather"


def test_harmony_reasoning_streams_and_can_stay_inline():
    text = "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Hi."
    reader = TurnReader(None, False, harmony=True)
    assert reader.feed(text[:40]) == [("reasoning", "Think.")]
    inline = read_turn(TurnReader(None, None, harmony=True), text)
    assert inline.reasoning is None
    assert inline.content == "<|channel|>analysis<|message|>Think.<|end|>Hi."


def test_harmony_call_without_tools_is_text():
    text = '<|channel|>commentary to=functions.x<|message|>{"a": 1}'
    reply = read_turn(TurnReader(None, False, harmony=True), text)
    assert reply.tool_calls == [] and reply.content == text and reply.parse_error is None


def test_tool_choice_none_reads_no_calls():
    text = '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    plan = ToolPlan(None, [WEATHER, ADD], "none")
    assert read_turn(TurnReader(plan), text).content == text
