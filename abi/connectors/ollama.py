"""Ollama connector: /api/chat, /api/generate, /api/embed and /api/tags.

Host from ``ABI_OLLAMA_HOST`` (default http://127.0.0.1:11434), model from
``ABI_OLLAMA_MODEL`` (default gpt-oss). Streamed replies are NDJSON, one object a line,
the last with ``"done": true``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from abi import config
from abi.connectors.http import HttpClient, RetryPolicy, Timeouts, drop_none, require_keys
from abi.errors import (
    AgentError, ErrorContext, HttpRequestFailed, InvalidRequestError, MalformedResponse,
)

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_MODEL = "gpt-oss"
BACKEND = "ollama"


@dataclass
class OllamaToolCall:
    name: str
    arguments: dict


@dataclass
class OllamaMessage:
    role: str
    content: str = ""
    tool_calls: list[OllamaToolCall] = field(default_factory=list)
    thinking: str | None = None


@dataclass
class OllamaStats:
    """Timings in nanoseconds and token counts, present on the final (done) object."""

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None

    @classmethod
    def from_obj(cls, obj: Mapping) -> "OllamaStats":
        return cls(**{k: obj.get(k) for k in cls.__dataclass_fields__})


@dataclass
class OllamaChatResponse:
    model: str
    message: OllamaMessage
    done: bool
    created_at: str | None = None
    done_reason: str | None = None
    stats: OllamaStats = field(default_factory=OllamaStats)

    @property
    def text(self) -> str:
        return self.message.content


@dataclass
class OllamaGenerateResponse:
    model: str
    response: str
    done: bool
    created_at: str | None = None
    done_reason: str | None = None
    context: list[int] | None = None
    stats: OllamaStats = field(default_factory=OllamaStats)

    @property
    def text(self) -> str:
        return self.response


@dataclass
class OllamaEmbeddings:
    model: str
    embeddings: list[list[float]]
    stats: OllamaStats = field(default_factory=OllamaStats)


@dataclass
class OllamaModel:
    name: str
    model: str
    size: int | None = None
    digest: str | None = None
    modified_at: str | None = None
    details: dict = field(default_factory=dict)


def _message(obj: Any, what: str) -> OllamaMessage:
    msg = require_keys(obj, (), what)
    content = msg.get("content") or ""
    if not isinstance(content, str):
        raise MalformedResponse(f"{what}: content is a {type(content).__name__}")
    calls = []
    for tc in msg.get("tool_calls") or []:
        fn = require_keys(require_keys(tc, ("function",), what + " tool call")["function"],
                          ("name",), what + " tool call function")
        args = fn.get("arguments") or {}
        if not isinstance(args, dict):
            raise MalformedResponse(f"{what}: tool call arguments are not an object")
        calls.append(OllamaToolCall(name=str(fn["name"]), arguments=args))
    return OllamaMessage(role=msg.get("role") or "assistant", content=content, tool_calls=calls,
                         thinking=msg.get("thinking"))


def parse_chat(obj: Any) -> OllamaChatResponse:
    require_keys(obj, ("message",), "ollama chat reply")
    return OllamaChatResponse(model=str(obj.get("model", "")), created_at=obj.get("created_at"),
                              message=_message(obj["message"], "ollama chat message"),
                              done=bool(obj.get("done", False)), done_reason=obj.get("done_reason"),
                              stats=OllamaStats.from_obj(obj))


def parse_generate(obj: Any) -> OllamaGenerateResponse:
    require_keys(obj, ("response",), "ollama generate reply")
    if not isinstance(obj["response"], str):
        raise MalformedResponse("ollama generate reply: response is not a string")
    return OllamaGenerateResponse(model=str(obj.get("model", "")), response=obj["response"],
                                  done=bool(obj.get("done", False)),
                                  created_at=obj.get("created_at"),
                                  done_reason=obj.get("done_reason"), context=obj.get("context"),
                                  stats=OllamaStats.from_obj(obj))


def _message_dict(m: Any) -> dict:
    if isinstance(m, Mapping):
        return dict(m)
    role = getattr(m, "role", None)
    if role is None:
        raise TypeError(f"a chat message must be a dict, not {type(m).__name__}")
    return {"role": role, "content": getattr(m, "content", "") or ""}


class OllamaClient:
    """Client for an Ollama server."""

    def __init__(self, host: str | None = None, model: str | None = None, *,
                 timeouts: Timeouts | None = None, retry: RetryPolicy | None = None):
        self.host = host or config.env("ABI_OLLAMA_HOST", DEFAULT_HOST)
        if "://" not in self.host:  # Ollama's own OLLAMA_HOST accepts host:port
            self.host = "http://" + self.host
        self.model = model or config.env("ABI_OLLAMA_MODEL", DEFAULT_MODEL)
        self.http = HttpClient(self.host, backend=BACKEND, timeouts=timeouts, retry=retry)

    def __repr__(self) -> str:
        return f"OllamaClient(host={self.host!r}, model={self.model!r})"

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def options(temperature: float | None = None, top_p: float | None = None,
                max_tokens: int | None = None, stop: Sequence[str] | None = None,
                seed: int | None = None, num_ctx: int | None = None,
                extra: Mapping[str, Any] | None = None) -> dict:
        """Ollama's ``options`` object from the usual sampling names."""
        return {**drop_none({"temperature": temperature, "top_p": top_p,
                             "num_predict": max_tokens, "stop": list(stop) if stop else None,
                             "seed": seed, "num_ctx": num_ctx}), **(extra or {})}

    # chat ------------------------------------------------------------------------------

    def _chat_body(self, messages, model, stream, options, tools, format, keep_alive, think):
        msgs = [_message_dict(m) for m in messages]
        if not msgs:
            raise InvalidRequestError("a chat request needs at least one message")
        return {**drop_none({"model": model or self.model, "messages": msgs,
                             "options": options or None, "tools": list(tools) if tools else None,
                             "format": format, "keep_alive": keep_alive, "think": think}),
                "stream": stream}

    def chat(self, messages: Sequence[Any], model: str | None = None, *,
             options: Mapping[str, Any] | None = None, tools: Sequence[Mapping] | None = None,
             format: Any = None, keep_alive: str | int | None = None,
             think: bool | None = None) -> OllamaChatResponse:
        body = self._chat_body(messages, model, False, options, tools, format, keep_alive, think)
        obj = self.http.json("POST", "/api/chat", json_body=body, model=body["model"])
        return self._parse(parse_chat, obj, "/api/chat", body["model"])

    def chat_stream(self, messages: Sequence[Any], model: str | None = None, *,
                    options: Mapping[str, Any] | None = None,
                    tools: Sequence[Mapping] | None = None, format: Any = None,
                    keep_alive: str | int | None = None,
                    think: bool | None = None) -> Iterator[OllamaChatResponse]:
        body = self._chat_body(messages, model, True, options, tools, format, keep_alive, think)
        return self._stream("/api/chat", body, parse_chat)

    # generate --------------------------------------------------------------------------

    def _generate_body(self, prompt, model, stream, system, options, raw, format, keep_alive,
                       context, images):
        if not isinstance(prompt, str):
            raise InvalidRequestError("prompt must be a string")
        return {**drop_none({"model": model or self.model, "prompt": prompt, "system": system,
                             "options": options or None, "raw": raw, "format": format,
                             "keep_alive": keep_alive, "context": context, "images": images}),
                "stream": stream}

    def generate(self, prompt: str, model: str | None = None, *, system: str | None = None,
                 options: Mapping[str, Any] | None = None, raw: bool | None = None,
                 format: Any = None, keep_alive: str | int | None = None,
                 context: Sequence[int] | None = None,
                 images: Sequence[str] | None = None) -> OllamaGenerateResponse:
        body = self._generate_body(prompt, model, False, system, options, raw, format,
                                   keep_alive, context, images)
        obj = self.http.json("POST", "/api/generate", json_body=body, model=body["model"])
        return self._parse(parse_generate, obj, "/api/generate", body["model"])

    def generate_stream(self, prompt: str, model: str | None = None, *,
                        system: str | None = None, options: Mapping[str, Any] | None = None,
                        raw: bool | None = None, format: Any = None,
                        keep_alive: str | int | None = None,
                        context: Sequence[int] | None = None,
                        images: Sequence[str] | None = None) -> Iterator[OllamaGenerateResponse]:
        body = self._generate_body(prompt, model, True, system, options, raw, format,
                                   keep_alive, context, images)
        return self._stream("/api/generate", body, parse_generate)

    # embeddings and models -------------------------------------------------------------

    def embed(self, input: str | Sequence[str], model: str | None = None, *,
              truncate: bool | None = None,
              keep_alive: str | int | None = None) -> OllamaEmbeddings:
        model = model or self.model
        body = drop_none({"model": model, "input": input, "truncate": truncate,
                          "keep_alive": keep_alive})
        obj = self.http.json("POST", "/api/embed", json_body=body, model=model)

        def parse(o):
            require_keys(o, ("embeddings",), "ollama embed reply")
            return OllamaEmbeddings(model=str(o.get("model", model)),
                                    embeddings=[[float(x) for x in v] for v in o["embeddings"]],
                                    stats=OllamaStats.from_obj(o))
        return self._parse(parse, obj, "/api/embed", model)

    def tags(self) -> list[OllamaModel]:
        """The models the server has pulled."""
        obj = self.http.json("GET", "/api/tags")

        def parse(o):
            require_keys(o, ("models",), "ollama tags reply")
            out = []
            for m in o["models"]:
                require_keys(m, ("name",), "ollama model")
                out.append(OllamaModel(name=str(m["name"]), model=str(m.get("model", m["name"])),
                                       size=m.get("size"), digest=m.get("digest"),
                                       modified_at=m.get("modified_at"),
                                       details=m.get("details") or {}))
            return out
        return self._parse(parse, obj, "/api/tags", None)

    # shared ----------------------------------------------------------------------------

    def _stream(self, path: str, body: dict, parse) -> Iterator:
        model = body["model"]
        for obj in self.http.stream_ndjson("POST", path, json_body=body, model=model,
                                           headers={"Accept": "application/x-ndjson"}):
            if "error" in obj:  # Ollama reports failures mid-stream as {"error": "..."}
                raise self._stream_error(str(obj["error"]), path, model)
            item = self._parse(parse, obj, path, model)
            yield item
            if item.done:
                return
        raise self.http.interrupted(path, 'the stream ended before an object with "done": true',
                                    model)

    def _stream_error(self, message: str, path: str, model: str) -> AgentError:
        message = self.http.redact(message)
        err = HttpRequestFailed(f"ollama {path} failed mid-stream: {message}")
        err.context = ErrorContext.api_error(err, BACKEND, path, None, model)
        return err

    def _parse(self, parse, obj, path: str, model: str | None):
        try:
            return parse(obj)
        except MalformedResponse as exc:
            exc.context = ErrorContext.api_error(exc, BACKEND, path, None, model)
            raise
        except (TypeError, ValueError, AttributeError) as exc:
            err = MalformedResponse(f"unexpected data from ollama {path}: {exc}")
            err.context = ErrorContext.api_error(err, BACKEND, path, None, model)
            raise err from None
