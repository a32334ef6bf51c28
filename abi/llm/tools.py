"""Tool (function) calling in the runtime: tool definitions checked, ``tool_choice`` turned
into a constraint, and conversations with calls and results handed to the chat template.
Calls are read out of the model's output (abi.llm.turns) by the template's family:

- ``hermes``  (Hermes, Qwen 2.5+): ``<tool_call>{"name", "arguments"}</tool_call>`` blocks
- ``llama3``  (Llama 3.x): a JSON object ``{"name", "parameters"}``, maybe after ``<|python_tag|>``
- ``mistral`` ``[TOOL_CALLS][{"name", "arguments"}, ...]``
- ``gpt-oss`` ``<|channel|>commentary to=functions.NAME ... <|message|>{args}<|call|>``
- ``generic`` templates that know no tools: the tools are described in the system message and
  a call is a bare JSON object ``{"name", "arguments"}`` (or a JSON array of them).

``required`` and a named choice are enforced with the constraint engine (abi.llm.constrain).
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from ..errors import GrammarError, NotSupported, ToolCallError
from .constrain import _JSON_OPTIONS, Grammar, _check_schema

FAMILIES = ("hermes", "llama3", "mistral", "gpt-oss", "generic")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_CALLS = 4  # calls one constrained turn may make


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text of an object, as OpenAI sends it
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}

    def to_ollama(self) -> dict:
        return {"function": {"name": self.name, "arguments": json.loads(self.arguments)}}


@dataclass
class ParsedReply:
    """An assistant turn: text content, tool calls and reasoning. ``parse_error`` says why
    text that looked like a call was returned as content instead."""

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    parse_error: str | None = None
    reasoning: str | None = None


# -- requests -----------------------------------------------------------------------------------

def check_tools(tools) -> list[dict]:
    """OpenAI's tool list (Ollama uses the same shape), checked and normalised to
    ``{"type": "function", "function": {"name", "description", "parameters"}}``."""
    if tools is None:
        return []
    if not isinstance(tools, (list, tuple)):
        raise ToolCallError("tools must be a list of {type: function, function: {...}}", field="tools")
    out, seen = [], set()
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type", "function") != "function":
            raise ToolCallError(f"tools[{i}] must be {{type: 'function', function: {{name, "
                                "parameters}}", field="tools")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ToolCallError(f"tools[{i}].function.name must be 1-64 letters, digits, '_', "
                                f"'.' or '-', got {name!r}", field="tools")
        if name in seen:
            raise ToolCallError(f"tools[{i}]: the name {name!r} is given twice", field="tools")
        seen.add(name)
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise ToolCallError(f"tools[{i}].function.parameters must be a JSON schema object",
                                field="tools")
        try:
            _check_schema(params, "tools")
        except GrammarError as exc:
            raise ToolCallError(f"tools[{i}].function.parameters: {exc}", field="tools") from None
        entry = {"name": name}
        if fn.get("description") is not None:
            entry["description"] = str(fn["description"])
        entry["parameters"] = params
        out.append({"type": "function", "function": entry})
    return out


def check_tool_choice(tool_choice, tools: list[dict]) -> str:
    """``auto``, ``none``, ``required`` or the name of one tool (from OpenAI's
    ``{"type": "function", "function": {"name"}}``)."""
    names = [t["function"]["name"] for t in tools]
    if tool_choice is None:
        return "auto" if tools else "none"
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise ToolCallError(f"tool_choice must be 'auto', 'none', 'required' or "
                                f"{{type: 'function', function: {{name}}}}, got {tool_choice!r}",
                                field="tool_choice")
        if tool_choice == "required" and not tools:
            raise ToolCallError("tool_choice 'required' needs tools", field="tool_choice")
        return tool_choice
    fn = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise ToolCallError("tool_choice must name a function: {type: 'function', function: "
                            "{name}}", field="tool_choice")
    if name not in names:
        raise ToolCallError(f"tool_choice names {name!r}, which is not among the tools given "
                            f"({', '.join(names) or 'none'})", field="tool_choice")
    return name


def family_of(template_source: str | None) -> str:
    """Which call syntax a chat template teaches its model."""
    src = template_source or ""
    if "<tool_call>" in src:
        return "hermes"
    if "[TOOL_CALLS]" in src:
        return "mistral"
    if "<|channel|>" in src and "functions." in src:
        return "gpt-oss"
    if "<|start_header_id|>" in src and "tools" in src:
        return "llama3"
    return "generic"


def _arguments_object(arguments):
    """Templates render arguments as an object (``| tojson``); OpenAI sends JSON text."""
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            return arguments
        return value if isinstance(value, dict) else arguments
    return arguments


class ToolPlan:
    """How one request's tools are offered, constrained and read back."""

    def __init__(self, template_source: str | None, tools, tool_choice=None, tokenizer=None):
        self.tools = check_tools(tools)
        self.choice = check_tool_choice(tool_choice, self.tools)
        self.family = family_of(template_source)
        self.active = bool(self.tools) and self.choice != "none"
        self.names = [t["function"]["name"] for t in self.tools]
        self.grammar = self._grammar(tokenizer) if self.choice not in ("auto", "none") else None

    # -- the prompt ------------------------------------------------------------------------
    @property
    def template_tools(self) -> list[dict] | None:
        """What the template's ``tools`` variable gets (None where it does not know tools)."""
        return self.tools if self.active and self.family != "generic" else None

    def messages(self, messages: list[dict]) -> list[dict]:
        """The conversation for the template: calls and results as the family writes them."""
        if self.family != "generic":
            out = []
            for m in messages:
                if m.get("tool_calls"):
                    calls = [{**c, "function": {**c["function"], "arguments":
                              _arguments_object(c["function"].get("arguments"))}}
                             for c in m["tool_calls"]]
                    m = {**m, "tool_calls": calls}
                out.append(m)
            return out
        # templates without tools: calls as the JSON we ask for, results as user turns
        names = {}
        out = []
        for m in messages:
            if m.get("tool_calls"):
                calls = []
                for c in m["tool_calls"]:
                    names[c.get("id")] = c["function"]["name"]
                    calls.append({"name": c["function"]["name"],
                                  "arguments": _arguments_object(c["function"].get("arguments"))})
                text = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
                content = f"{m['content']}\n{text}" if m.get("content") else text
                out.append({"role": "assistant", "content": content})
            elif m.get("role") == "tool":
                name = m.get("name") or names.get(m.get("tool_call_id")) or "the tool"
                out.append({"role": "user", "content": f"Result of {name}: {m.get('content') or ''}"})
            else:
                out.append({k: v for k, v in m.items() if k in ("role", "content")})
        if self.active:
            out = self._with_system_prompt(out)
        return out

    def _with_system_prompt(self, messages: list[dict]) -> list[dict]:
        listing = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in self.tools)
        text = ("You can call these tools (JSON schemas of their arguments):\n" + listing +
                '\nTo call a tool, reply with only a JSON object {"name": <tool name>, '
                '"arguments": <arguments object>}, or a JSON array of such objects for several '
                "calls. Otherwise, answer normally.")
        if messages and messages[0].get("role") == "system":
            return [{"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}] + messages[1:]
        return [{"role": "system", "content": text}] + messages

    # -- the constraint ----------------------------------------------------------------------
    def _call_schema(self, name: str, key: str = "arguments") -> dict:
        params = next(t["function"]["parameters"] for t in self.tools if t["function"]["name"] == name)
        return {"type": "object", "properties": {"name": {"const": name}, key: params},
                "required": ["name", key], "additionalProperties": False}

    def _grammar(self, tokenizer) -> Grammar:
        names = self.names if self.choice == "required" else [self.choice]
        key = "parameters" if self.family == "llama3" else "arguments"
        options = [self._call_schema(n, key) for n in names]
        one = options[0] if len(options) == 1 else {"anyOf": options}
        many = {"type": "array", "items": one, "minItems": 1, "maxItems": _MAX_CALLS}
        if self.family == "hermes":   # %json inside Lark: the compact JSON options in the schema
            block = '"<tool_call>\\n" %json ' + json.dumps({**one, "x-guidance": _JSON_OPTIONS}) + \
                ' "\\n</tool_call>"'
            rest = ' ("\\n" call)?' * (_MAX_CALLS - 1) if self.choice == "required" else ""
            return Grammar.lark(f"start: call{rest}\ncall: {block}", field="tool_choice")
        if self.family == "mistral":
            tid = getattr(tokenizer, "_text_to_id", {}).get("[TOOL_CALLS]")
            if tid is None:
                raise NotSupported("tool_choice required/named: this vocabulary has no "
                                   "[TOOL_CALLS] token")
            return Grammar.lark(f"start: <[{tid}]> %json " + json.dumps({**many, "x-guidance": _JSON_OPTIONS}),
                                field="tool_choice")
        if self.family == "gpt-oss":
            raise NotSupported("tool_choice 'required' or a named function is not supported for "
                               "gpt-oss templates; use 'auto'")
        if self.family == "llama3" or self.choice != "required":
            return Grammar.json_schema(one, field="tool_choice")
        return Grammar.json_schema({"anyOf": [one, many]}, field="tool_choice")


def finish_reason_of(parsed: ParsedReply, reason: str) -> str:
    """OpenAI's finish reason: ``tool_calls`` when a complete turn made calls."""
    return "tool_calls" if parsed.tool_calls and reason == "stop" else reason
