"""An assistant turn read as it is generated: reasoning, content and tool calls, as events.

One reader serves a streamed reply and a whole one (the whole reply is the stream joined,
``read_turn``), so what a client assembles from streamed deltas is exactly what a request
without streaming returns, however the text was cut into pieces.

Events are ``("reasoning", text)``, ``("content", text)``, ``("call", ToolCall)`` and
``("error", why)``.

Streaming choice, correctness over latency: text that is not part of a call streams as it
comes, holding back only what could be the start of a call marker (as ``ReasoningSplitter``
does for ``</think>``). A call is held until it is complete (its closing marker, the next
call's marker, or the end of the turn) and sent whole once its JSON parses and names one of
the tools given; a call that does not parse is never announced: an ``error`` event says why
and its text follows as content, so nothing sent before contradicts the outcome. Calls that
parsed stay calls when a later one fails. A turn that begins like JSON (an object, an array,
a ```json fence) is held until it ends, since only the whole text tells a call from a JSON
answer: the call syntax of Llama 3 and of templates without tools, and what small Hermes/Qwen
models write instead of ``<tool_call>``. With tools, whitespace at the start and end of the
content is dropped, and a call's surroundings keep one run of whitespace between the texts on
either side.

gpt-oss writes harmony messages: ``<|channel|>analysis<|message|>…<|end|>`` (reasoning),
``<|start|>assistant<|channel|>final<|message|>…`` (the answer) and
``<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}`` (a call, ended by
``<|call|>``). The analysis channel is reasoning; kept inline (``inside=None``) its message
stays in the content with its markers, as ``<think>`` blocks do.
"""
from __future__ import annotations

import json
import re

from .reasoning import ReasoningSplitter, partial_suffix
from .tools import ParsedReply, ToolCall

_START, _CHANNEL, _MESSAGE = "<|start|>", "<|channel|>", "<|message|>"
_HARMONY_ENDS = ("<|end|>", "<|call|>", "<|return|>")
_RECIPIENT = re.compile(r"to=functions\.([A-Za-z0-9_.-]+)")
_CHANNEL_NAME = re.compile(r"<\|channel\|>\s*(\w+)")


def is_harmony(template_source: str | None) -> bool:
    """Whether a chat template writes OpenAI's harmony format (gpt-oss)."""
    src = template_source or ""
    return _CHANNEL in src and _MESSAGE in src


class _NotACall(ValueError):
    """Text that starts like a call but does not parse as one."""


def _json_values(text: str) -> list:
    """Consecutive JSON values in ``text`` (separated by whitespace, ';' or ','); the
    rest of the text must be empty."""
    dec, values, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i] in " \t\r\n;,":
            i += 1
        if i >= len(text):
            return values
        try:
            value, i = dec.raw_decode(text, i)
        except ValueError as exc:
            raise _NotACall(f"a tool call is not valid JSON: {exc}") from None
        values.append(value)


def _flatten(values: list) -> list:
    out = []
    for v in values:
        if isinstance(v, list):
            out += v
        elif isinstance(v, dict) and isinstance(v.get("tool_calls"), list):
            out += [c.get("function", c) if isinstance(c, dict) else c for c in v["tool_calls"]]
        else:
            out.append(v)
    return out


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def _parse_json_calls(text: str):
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    if not body.startswith(("{", "[")):
        return None
    try:
        values = _flatten(_json_values(body))
    except _NotACall:
        if '"name"' in body:
            raise
        return None
    if not values or not all(isinstance(v, dict) and "name" in v for v in values):
        if '"name"' in body and any(isinstance(v, dict) for v in values):
            raise _NotACall("JSON that names no function where a tool call was expected")
        return None  # plain JSON content (a structured answer), not a call
    return "", values


def _held(text: str, markers) -> int:
    """How much of the end of ``text`` could begin one of ``markers``."""
    return max((partial_suffix(text, m) for m in markers), default=0)


def _first(text: str, markers) -> tuple[int, str | None]:
    """The earliest of ``markers`` in ``text``: (index, marker), or (-1, None)."""
    best, found = -1, None
    for m in markers:
        i = text.find(m)
        if i >= 0 and (best < 0 or i < best):
            best, found = i, m
    return best, found


# -- call syntax of each family: text -> ("text", t), ("block", raw, body) segments (a call in
# the family's markers) and ("json", raw, body) (a whole turn that began like JSON) -------------

class _Markers:
    """Calls between an opening marker and a closing one (``close`` None: until the next
    opening marker or the end of the turn)."""

    def __init__(self, opens: tuple[str, ...], close: str | None):
        self.opens, self.close = opens, close
        self.held, self.marker = "", None   # marker: the open call's, None outside calls

    def feed(self, text: str) -> list[tuple]:
        self.held += text
        out = []
        while True:
            if self.marker is None:
                i, m = _first(self.held, self.opens)
                if m is not None:
                    if i:
                        out.append(("text", self.held[:i]))
                    self.marker, self.held = m, self.held[i + len(m):]
                    continue
                keep = _held(self.held, self.opens)
                if len(self.held) > keep:
                    out.append(("text", self.held[:len(self.held) - keep]))
                    self.held = self.held[len(self.held) - keep:]
                return out
            if self.close is not None:
                j, end = self.held.find(self.close), len(self.close)
            else:
                j, end = _first(self.held, self.opens)[0], 0
            if j < 0:
                return out
            out.append(("block", self.marker + self.held[:j + end], self.held[:j]))
            self.marker, self.held = None, self.held[j + end:]

    def finish(self) -> list[tuple]:
        held, self.held = self.held, ""
        if self.marker is not None:
            return [("block", self.marker + held, held)]
        return [("text", held)] if held else []


class _JsonTurn:
    """Families whose call is the turn itself as JSON: a turn that begins like JSON is held
    whole; otherwise its text goes to ``then`` (markers found mid-text)."""

    def __init__(self, starts, then: _Markers | None):
        self.starts, self.then = starts, then
        self.held, self.whole = "", None   # whole: None undecided, True held, False text

    def feed(self, text: str) -> list[tuple]:
        if self.whole is False:
            return self.then.feed(text) if self.then else [("text", text)]
        self.held += text
        if self.whole is None:
            self.whole = self.starts(self.held)
            if self.whole is False:
                held, self.held = self.held, ""
                return self.feed(held)
        return []

    def finish(self) -> list[tuple]:
        if self.whole is False:
            return self.then.finish() if self.then else []
        held, self.held = self.held, ""
        return [("json", held, held)] if held else []


def _json_start(text: str, prefixes=()) -> bool | None:
    """Whether a turn begins like a JSON call (an object, an array, a ```json fence, or one
    of ``prefixes``): None while it cannot tell yet."""
    s = text.lstrip()
    for p in prefixes:
        if s.startswith(p):
            return True
    for p in ("```json", "```") + tuple(prefixes):
        if p.startswith(s) and len(s) < len(p):
            return None
    for p in ("```json", "```"):
        if s.startswith(p):
            rest = s[len(p):].lstrip()
            return None if not rest else rest[0] in "{["
    if not s:
        return None
    return s[0] in "{["


def _body_hermes(body: str):
    return _flatten(_json_values(body.strip()))


def _body_mistral(body: str):
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\[ARGS\](.*)$", body, re.S)  # the v11 form: name[ARGS]{...}
    if m:
        values = _json_values(m.group(2))
        if len(values) != 1:
            raise _NotACall("a [TOOL_CALLS] call needs one JSON arguments object")
        return [{"name": m.group(1), "arguments": values[0]}]
    return _flatten(_json_values(body))


def _body_json(body: str):
    found = _parse_json_calls(body.replace("<|python_tag|>", ""))
    return None if found is None else found[1]


def _scanner(family: str):
    """(segmenter, parser of a marked call's body) of a family's call syntax."""
    if family == "hermes":   # small Qwen models also answer with a bare (fenced) JSON call
        return _JsonTurn(_json_start, _Markers(("<tool_call>",), "</tool_call>")), _body_hermes
    if family == "mistral":
        return _Markers(("[TOOL_CALLS]",), None), _body_mistral
    if family == "llama3":
        tag = "<|python_tag|>"
        return _JsonTurn(lambda t: _json_start(t, (tag,)), _Markers((tag,), None)), _body_json
    return _JsonTurn(_json_start, None), None


# -- harmony (gpt-oss) -------------------------------------------------------------------------------

class _Harmony:
    """Harmony messages -> ("reasoning", t), ("text", t) and ("call", raw, name, body)."""

    def __init__(self, split: bool):
        self.split = split
        self.held, self.head, self.kind = "", None, None   # kind: None reading a header
        self.name = None

    def feed(self, text: str) -> list[tuple]:
        self.held += text
        out = []
        while self.held:
            if self.kind is None:
                s = self.held
                if not (s.startswith((_CHANNEL, _START)) or _CHANNEL.startswith(s)
                        or _START.startswith(s)):
                    self.kind, self.head = "text", ""    # no harmony header: plain text
                    continue
                j = s.find(_MESSAGE)
                if j < 0:
                    break
                self.head, self.held = s[:j + len(_MESSAGE)], s[j + len(_MESSAGE):]
                to = _RECIPIENT.search(self.head)
                channel = _CHANNEL_NAME.search(self.head)
                self.name = to.group(1) if to else None
                if to:
                    self.kind = "call"
                elif channel and channel.group(1) == "analysis":
                    self.kind = "reasoning" if self.split else "inline"
                    if not self.split:
                        out.append(("text", self.head))
                else:
                    self.kind = "text"
                continue
            ends = _HARMONY_ENDS + (_START, _CHANNEL)
            j, m = _first(self.held, ends)
            if self.kind == "call":
                if j < 0:
                    break
                end = len(m) if m in _HARMONY_ENDS else 0
                out.append(("call", self.head + self.held[:j + end], self.name, self.held[:j]))
            else:
                upto = j if j >= 0 else len(self.held) - _held(self.held, ends)
                kind = "reasoning" if self.kind == "reasoning" else "text"
                if upto:
                    out.append((kind, self.held[:upto]))
                if j < 0:
                    self.held = self.held[upto:]
                    break
                end = len(m) if m in _HARMONY_ENDS else 0
                if self.kind == "inline" and end:
                    out.append(("text", m))
            self.held, self.kind = self.held[j + end:], None
        return out

    def finish(self) -> list[tuple]:
        held, self.held = self.held, ""
        if self.kind == "call":
            return [("call", self.head + held, self.name, held)]
        if not held:
            return []
        return [("reasoning" if self.kind == "reasoning" else "text", held)]


def _body_harmony(name: str, body: str):
    values = _json_values(body) if body.strip() else [{}]
    if len(values) != 1:
        raise _NotACall(f"the call of {name!r} holds {len(values)} JSON values, not one")
    return [{"name": name, "arguments": values[0]}]


# -- the reader ------------------------------------------------------------------------------------

def validate_calls(raw_calls, names) -> list[ToolCall]:
    """ToolCalls of parsed call objects; _NotACall saying what is wrong with one."""
    calls = []
    for raw in raw_calls:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise _NotACall("a tool call lacks a function name")
        if raw["name"] not in names:
            raise _NotACall(f"the model called {raw['name']!r}, which is not among the tools given")
        args = raw.get("arguments", raw.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                raise _NotACall(f"the arguments of {raw['name']!r} are not JSON") from None
        if not isinstance(args, dict):
            raise _NotACall(f"the arguments of {raw['name']!r} are not an object")
        calls.append(ToolCall(raw["name"], json.dumps(args, ensure_ascii=False)))
    return calls


class TurnReader:
    """Feed an assistant turn's text (control tokens rendered) piece by piece; get events.

    ``plan``: the request's ``ToolPlan`` (None or inactive: no calls are read). ``inside``:
    None keeps reasoning inline in the content, else whether the reply starts inside a
    ``<think>`` block (the prompt opened it). ``harmony``: the model writes harmony messages.
    """

    def __init__(self, plan=None, inside: bool | None = False, harmony: bool = False):
        self.tools = plan is not None and plan.active
        self.names = plan.names if self.tools else []
        self.harmony = _Harmony(inside is not None) if harmony else None
        self.reasoning = None if harmony or inside is None else ReasoningSplitter(inside)
        self.scan, self.body = _scanner(plan.family) if self.tools and not harmony else (None, None)
        self.lstrip, self.space = self.tools, ""   # content's whitespace, with tools

    def feed(self, text: str) -> list[tuple]:
        out: list[tuple] = []
        if self.harmony is not None:
            self._harmony(self.harmony.feed(text), out)
        elif self.reasoning is not None:
            for kind, t in self.reasoning.feed(text):
                self._after_reasoning(kind, t, out)
        else:
            self._scanned(text, out)
        return out

    def finish(self) -> list[tuple]:
        out: list[tuple] = []
        if self.harmony is not None:
            self._harmony(self.harmony.finish(), out)
        else:
            if self.reasoning is not None:
                for kind, t in self.reasoning.finish():
                    self._after_reasoning(kind, t, out)
            if self.scan is not None:
                self._segments(self.scan.finish(), out)
        return out

    def _after_reasoning(self, kind, text, out):
        if kind == "reasoning":
            out.append(("reasoning", text))
        else:
            self._scanned(text, out)

    def _scanned(self, text, out):
        if self.scan is None:
            self._content(text, out)
        else:
            self._segments(self.scan.feed(text), out)

    def _segments(self, segments, out):
        for seg in segments:
            if seg[0] == "text":
                self._content(seg[1], out)
            else:
                parse = self.body if seg[0] == "block" else _body_json
                self._block(seg[1], lambda body=seg[2], parse=parse: parse(body), out)

    def _harmony(self, segments, out):
        for seg in segments:
            if seg[0] == "reasoning":
                out.append(seg)
            elif seg[0] == "text":
                self._content(seg[1], out)
            elif not self.tools:   # a call with no tools offered: its text, as written
                self._content(seg[1], out)
            else:
                self._block(seg[1], lambda s=seg: _body_harmony(s[2], s[3]), out)

    def _block(self, raw: str, parse, out):
        try:
            found = parse()
            calls = validate_calls(found, self.names) if found is not None else None
            if found is not None and not calls:
                raise _NotACall("a tool call marker with no call")
        except (_NotACall, IndexError) as exc:
            out.append(("error", str(exc) or "a tool call without arguments"))
            self._content(raw, out)
            return
        if calls is None:   # JSON that is an answer, not a call
            self._content(raw, out)
            return
        self.lstrip = True   # the whitespace before the call separates what comes after
        out += [("call", c) for c in calls]

    def _content(self, text, out):
        if not self.tools:
            if text:
                out.append(("content", text))
            return
        if self.lstrip:
            text = text.lstrip()
            if not text:
                return
            self.lstrip = False
        text = self.space + text
        kept = text.rstrip()
        self.space = text[len(kept):]
        if kept:
            out.append(("content", kept))


def join_turn(events) -> ParsedReply:
    """The reply a list of events makes: what a client joins from the stream."""
    reasoning = "".join(t for kind, t in events if kind == "reasoning")
    content = "".join(t for kind, t in events if kind == "content")
    calls = [c for kind, c in events if kind == "call"]
    error = next((t for kind, t in events if kind == "error"), None)
    return ParsedReply(content if content or not calls else None, calls, error, reasoning or None)


def read_turn(reader: TurnReader, text: str) -> ParsedReply:
    """A whole turn: the stream of one piece, joined."""
    return join_turn(reader.feed(text) + reader.finish())


def turn_reader(model, plan=None, inside: bool | None = False) -> TurnReader:
    """The reader of ``model``'s replies (harmony or not) for a request's tool plan."""
    return TurnReader(plan, inside, is_harmony(model.template.source))


def needs_special_text(model, plan=None) -> bool:
    """Whether replies must be generated with control tokens rendered: call markers
    (``[TOOL_CALLS]``, ``<|python_tag|>``, ...) and harmony channels may be control tokens.
    Templates without tools get plain JSON calls, and control tokens stay unseen."""
    tools = plan is not None and plan.active and plan.family != "generic"
    return tools or is_harmony(model.template.source)
