"""OpenAI API connector: chat completions (plain, streamed, with tools), embeddings, models.

The base URL is configurable (``ABI_OPENAI_BASE_URL``), so any OpenAI-compatible server
works (``python -m abi serve``, llama.cpp's server, Ollama's /v1, vLLM ...). The key
(``ABI_OPENAI_API_KEY``) is required for OpenAI's own API and optional elsewhere.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

from abi import config
from abi.connectors.http import (
    HttpClient, RetryPolicy, Timeouts, drop_none, require_keys,
)
from abi.errors import (
    AgentError, ErrorContext, GenerationFailed, HttpRequestFailed, InvalidRequestError,
    MalformedResponse,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
BACKEND = "openai"


# --- typed results ------------------------------------------------------------------------

@dataclass
class FunctionCall:
    name: str
    arguments: str  # JSON text, exactly as the model wrote it

    def parsed_arguments(self) -> Any:
        try:
            return json.loads(self.arguments) if self.arguments.strip() else {}
        except ValueError:
            raise MalformedResponse(f"tool call {self.name!r} has arguments that are not JSON: "
                                    f"{self.arguments[:120]!r}") from None


@dataclass
class ToolCall:
    id: str
    function: FunctionCall
    type: str = "function"

    def to_dict(self) -> dict:
        return {"id": self.id, "type": self.type,
                "function": {"name": self.function.name, "arguments": self.function.arguments}}


@dataclass
class ChatMessage:
    role: str
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [t.to_dict() for t in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass
class Choice:
    index: int
    message: ChatMessage
    finish_reason: str | None


@dataclass
class ChatCompletion:
    id: str
    model: str
    created: int
    choices: list[Choice]
    usage: Usage | None = None

    @property
    def message(self) -> ChatMessage:
        return self.choices[0].message

    @property
    def text(self) -> str:
        return self.choices[0].message.content or ""

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.choices[0].message.tool_calls

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason


@dataclass
class ToolCallDelta:
    """A piece of a streamed tool call: id and name come first, arguments in fragments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ChunkChoice:
    index: int
    content: str = ""
    role: str | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class ChatCompletionChunk:
    id: str
    model: str
    created: int
    choices: list[ChunkChoice]
    usage: Usage | None = None  # only on the last chunk, with stream_options.include_usage

    @property
    def text(self) -> str:
        return "".join(c.content for c in self.choices if c.index == 0)


@dataclass
class Embeddings:
    vectors: list[list[float]]
    model: str
    usage: Usage | None = None


@dataclass
class ModelInfo:
    id: str
    owned_by: str | None = None
    created: int | None = None


def function_tool(name: str, description: str, parameters: Mapping[str, Any]) -> dict:
    """A tool definition in the API's format (parameters: a JSON Schema object)."""
    return {"type": "function",
            "function": {"name": name, "description": description, "parameters": dict(parameters)}}


# --- parsing ----------------------------------------------------------------------------

def _usage(obj: Any) -> Usage | None:
    if not isinstance(obj, dict):
        return None
    return Usage(int(obj.get("prompt_tokens") or 0), int(obj.get("completion_tokens") or 0),
                 int(obj.get("total_tokens") or 0))


def _tool_calls(items: Any, what: str) -> list[ToolCall]:
    calls = []
    for item in items or []:
        require_keys(item, ("function",), what + " tool call")
        fn = require_keys(item["function"], ("name",), what + " tool call function")
        args = fn.get("arguments")
        if not isinstance(args, str):  # some servers send an object instead of JSON text
            args = json.dumps(args if args is not None else {})
        calls.append(ToolCall(id=str(item.get("id") or ""), type=item.get("type") or "function",
                              function=FunctionCall(name=str(fn["name"]), arguments=args)))
    return calls


def parse_chat_completion(obj: Any) -> ChatCompletion:
    what = "chat completion"
    require_keys(obj, ("choices",), what)
    if not isinstance(obj["choices"], list):
        raise MalformedResponse(f"{what}: choices is not a list")
    choices = []
    for i, ch in enumerate(obj["choices"]):
        require_keys(ch, ("message",), f"{what} choice {i}")
        msg = require_keys(ch["message"], (), f"{what} choice {i} message")
        content = msg.get("content")
        if content is not None and not isinstance(content, str):
            raise MalformedResponse(f"{what}: message content is a {type(content).__name__}")
        choices.append(Choice(index=int(ch.get("index", i)), finish_reason=ch.get("finish_reason"),
                              message=ChatMessage(role=msg.get("role") or "assistant",
                                                  content=content,
                                                  tool_calls=_tool_calls(msg.get("tool_calls"),
                                                                         what))))
    return ChatCompletion(id=str(obj.get("id", "")), model=str(obj.get("model", "")),
                          created=int(obj.get("created") or 0), choices=choices,
                          usage=_usage(obj.get("usage")))


def parse_chunk(obj: Any) -> ChatCompletionChunk:
    what = "chat completion chunk"
    require_keys(obj, ("choices",), what)
    if not isinstance(obj["choices"], list):
        raise MalformedResponse(f"{what}: choices is not a list")
    choices = []
    for i, ch in enumerate(obj["choices"]):
        require_keys(ch, (), f"{what} choice")
        delta = ch.get("delta") or {}
        if not isinstance(delta, dict):
            raise MalformedResponse(f"{what}: delta is not an object")
        content = delta.get("content") or ""
        if not isinstance(content, str):
            raise MalformedResponse(f"{what}: delta content is a {type(content).__name__}")
        deltas = []
        for j, tc in enumerate(delta.get("tool_calls") or []):
            require_keys(tc, (), f"{what} tool call delta")
            fn = tc.get("function") or {}
            args = fn.get("arguments") or ""
            if not isinstance(args, str):
                args = json.dumps(args)
            deltas.append(ToolCallDelta(index=int(tc.get("index", j)), id=tc.get("id"),
                                        name=fn.get("name"), arguments=args))
        choices.append(ChunkChoice(index=int(ch.get("index", i)), content=content,
                                   role=delta.get("role"), tool_calls=deltas,
                                   finish_reason=ch.get("finish_reason")))
    return ChatCompletionChunk(id=str(obj.get("id", "")), model=str(obj.get("model", "")),
                               created=int(obj.get("created") or 0), choices=choices,
                               usage=_usage(obj.get("usage")))


def collect_stream(chunks: Iterable[ChatCompletionChunk]) -> ChatCompletion:
    """Join a chat stream into the ChatCompletion it stands for (tool-call fragments merged)."""
    texts: dict[int, list[str]] = {}
    roles: dict[int, str] = {}
    finish: dict[int, str | None] = {}
    calls: dict[int, dict[int, ToolCallDelta]] = {}
    first: ChatCompletionChunk | None = None
    usage = None
    for chunk in chunks:
        first = first or chunk
        usage = chunk.usage or usage
        for ch in chunk.choices:
            texts.setdefault(ch.index, []).append(ch.content)
            if ch.role:
                roles[ch.index] = ch.role
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
            for d in ch.tool_calls:
                acc = calls.setdefault(ch.index, {}).setdefault(d.index, ToolCallDelta(d.index))
                acc.id = acc.id or d.id
                acc.name = acc.name or d.name
                acc.arguments += d.arguments
    choices = []
    for idx in sorted(set(texts) | set(calls)):
        tool_calls = [ToolCall(id=d.id or "", function=FunctionCall(d.name or "", d.arguments))
                      for _, d in sorted(calls.get(idx, {}).items())]
        text = "".join(texts.get(idx, []))
        choices.append(Choice(index=idx, finish_reason=finish.get(idx),
                              message=ChatMessage(role=roles.get(idx, "assistant"),
                                                  content=text if text or not tool_calls else None,
                                                  tool_calls=tool_calls)))
    return ChatCompletion(id=first.id if first else "", model=first.model if first else "",
                          created=first.created if first else 0, choices=choices, usage=usage)


def _message_dict(m: Any) -> dict:
    if isinstance(m, ChatMessage):
        return m.to_dict()
    if isinstance(m, Mapping):
        return dict(m)
    role, content = getattr(m, "role", None), getattr(m, "content", None)
    if role is None:
        raise TypeError(f"a chat message must be a dict or ChatMessage, not {type(m).__name__}")
    return {"role": role, "content": content}


# --- the client -------------------------------------------------------------------------

class OpenAIClient:
    """Client for the OpenAI API or any server that speaks it."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None, *,
                 model: str | None = None, organization: str | None = None,
                 timeouts: Timeouts | None = None, retry: RetryPolicy | None = None):
        base_url = base_url or config.env("ABI_OPENAI_BASE_URL", DEFAULT_BASE_URL)
        own_api = base_url.rstrip("/") == DEFAULT_BASE_URL
        api_key = api_key or config.env(
            "ABI_OPENAI_API_KEY", required=own_api, secret=True,
            hint="set it to your OpenAI API key, or set ABI_OPENAI_BASE_URL to a server "
                 "that needs none")
        self.base_url = base_url
        self.model = model or config.env("ABI_OPENAI_MODEL", DEFAULT_MODEL)
        headers = {}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if organization:
            headers["OpenAI-Organization"] = organization
        self.http = HttpClient(base_url, backend=BACKEND, headers=headers, secrets=[api_key],
                               timeouts=timeouts, retry=retry)

    def __repr__(self) -> str:  # never the key
        return f"OpenAIClient(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self.http.close()

    def _chat_body(self, messages, model, stream, temperature, top_p, max_tokens, stop, seed,
                   tools, tool_choice, response_format, extra) -> dict:
        msgs = [_message_dict(m) for m in messages]
        if not msgs:
            raise InvalidRequestError("a chat request needs at least one message")
        body = drop_none({"model": model or self.model, "messages": msgs,
                          "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                          "stop": stop, "seed": seed, "tools": list(tools) if tools else None,
                          "tool_choice": tool_choice, "response_format": response_format})
        body["stream"] = stream
        body.update(extra or {})
        return body

    def chat(self, messages: Sequence[Any], model: str | None = None, *,
             temperature: float | None = None, top_p: float | None = None,
             max_tokens: int | None = None, stop: str | list[str] | None = None,
             seed: int | None = None, tools: Sequence[Mapping] | None = None,
             tool_choice: Any = None, response_format: Mapping | None = None,
             extra: Mapping[str, Any] | None = None) -> ChatCompletion:
        body = self._chat_body(messages, model, False, temperature, top_p, max_tokens, stop,
                               seed, tools, tool_choice, response_format, extra)
        obj = self.http.json("POST", "/chat/completions", json_body=body, model=body["model"])
        result = self._parse(parse_chat_completion, obj, "/chat/completions", body["model"])
        if not result.choices:
            raise GenerationFailed("the chat completion has no choices", context=(
                ErrorContext.generation_error(GenerationFailed, BACKEND, body["model"],
                                              "no choices")))
        return result

    def chat_stream(self, messages: Sequence[Any], model: str | None = None, *,
                    include_usage: bool = True, **kwargs) -> Iterator[ChatCompletionChunk]:
        """Chunks as the server sends them; ends at ``data: [DONE]``. A stream that stops
        before it, or a malformed chunk, raises (StreamInterrupted / MalformedResponse)."""
        keys = ("temperature", "top_p", "max_tokens", "stop", "seed", "tools", "tool_choice",
                "response_format", "extra")
        unknown = set(kwargs) - set(keys)
        if unknown:
            raise TypeError(f"unexpected arguments: {sorted(unknown)}")
        args = [kwargs.get(k) for k in keys]
        body = self._chat_body(messages, model, True, *args)
        if include_usage:
            body.setdefault("stream_options", {"include_usage": True})
        return self._stream(body)

    def _stream(self, body: dict) -> Iterator[ChatCompletionChunk]:
        path, model = "/chat/completions", body["model"]
        done = False
        for event in self.http.stream_sse("POST", path, json_body=body, model=model,
                                          headers={"Accept": "text/event-stream"}):
            data = event.data.strip()
            if data == "[DONE]":
                done = True
                break
            try:
                obj = json.loads(data)
            except ValueError:
                raise self.http.malformed(path, f"stream chunk is not JSON: {data[:120]!r}",
                                          model) from None
            if isinstance(obj, dict) and "error" in obj:
                err = obj["error"]
                msg = err.get("message") if isinstance(err, dict) else str(err)
                raise self._context(HttpRequestFailed(
                    f"openai stream reported an error: {self.http.redact(str(msg))}"), path, model)
            yield self._parse(parse_chunk, obj, path, model)
        if not done:
            raise self.http.interrupted(path, "the stream ended before data: [DONE]", model)

    def embeddings(self, input: str | Sequence[str], model: str | None = None) -> Embeddings:
        model = model or config.env("ABI_OPENAI_EMBEDDING_MODEL", DEFAULT_EMBEDDING_MODEL)
        obj = self.http.json("POST", "/embeddings", model=model,
                             json_body={"model": model, "input": input,
                                        "encoding_format": "float"})
        try:
            require_keys(obj, ("data",), "embeddings")
            rows = sorted(obj["data"], key=lambda d: require_keys(d, ("embedding",),
                                                                  "embedding").get("index", 0))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except MalformedResponse as exc:
            raise self._context(exc, "/embeddings", model) from None
        except (TypeError, ValueError, KeyError) as exc:
            raise self._context(MalformedResponse(f"embeddings: unexpected data ({exc})"),
                                "/embeddings", model) from None
        return Embeddings(vectors=vectors, model=str(obj.get("model", model)),
                          usage=_usage(obj.get("usage")))

    def models(self) -> list[ModelInfo]:
        obj = self.http.json("GET", "/models")
        try:
            require_keys(obj, ("data",), "model list")
            return [ModelInfo(id=str(require_keys(m, ("id",), "model")["id"]),
                              owned_by=m.get("owned_by"), created=m.get("created"))
                    for m in obj["data"]]
        except MalformedResponse as exc:
            raise self._context(exc, "/models", None) from None

    def _parse(self, parse, obj, path: str, model: str | None):
        try:
            return parse(obj)
        except MalformedResponse as exc:
            raise self._context(exc, path, model) from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise self._context(MalformedResponse(f"unexpected data from {path}: {exc}"),
                                path, model) from None

    def _context(self, err: AgentError, path: str, model: str | None) -> AgentError:
        err.context = ErrorContext.api_error(err, BACKEND, path, err.status, model)
        return err
