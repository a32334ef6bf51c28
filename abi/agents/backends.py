"""Where an agent's replies come from. Each backend turns OpenAI-style messages
(``{"role", "content"}`` dicts) into a reply, whole or as a stream of text pieces."""
from __future__ import annotations

import abc
import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from abi.agents.config import AgentConfig
from abi.agents.prompts import render_transcript, transcript_stops
from abi.errors import AbiError, ErrorContext, GenerationFailed

Messages = Sequence[dict]


@dataclass(frozen=True)
class GenerationParams:
    temperature: float
    top_p: float
    max_tokens: int


def approx_tokens(messages: Messages) -> int:
    """Rough token count for backends that cannot count exactly: about four characters a
    token, plus the few tokens each message's role markers take."""
    return sum(4 + math.ceil(len(m.get("content") or "") / 4) for m in messages) + 2


class Backend(abc.ABC):
    name = "base"
    model: str | None = None

    @abc.abstractmethod
    def complete(self, messages: Messages, params: GenerationParams) -> str:
        """The whole reply to ``messages``."""

    def stream(self, messages: Messages, params: GenerationParams) -> Iterator[str]:
        yield self.complete(messages, params)

    def complete_turn(self, messages: Messages, params: GenerationParams, tools: list[dict],
                      tool_choice: str = "auto") -> dict:
        """One assistant turn with tools: an OpenAI-style message (``content``,
        ``tool_calls`` with ids and JSON-text arguments)."""
        from abi.errors import NotSupported

        raise NotSupported(f"the {self.name} backend does not support tools")

    def context_length(self) -> int | None:
        """Tokens the model accepts, or None when unknown."""
        return None

    def count_tokens(self, messages: Messages) -> int:
        return approx_tokens(messages)


class _WithContextLength(Backend):
    def __init__(self, config: AgentConfig):
        self._context_length = config.context_length

    def context_length(self) -> int | None:
        return self._context_length


class EchoBackend(_WithContextLength):
    """Answers ``Echo: <the last user message>``; keeps what it was sent, for tests."""

    name = "echo"

    def __init__(self, config: AgentConfig):
        super().__init__(config)
        self.model = config.model or "echo"
        self.last_messages: list[dict] = []
        self.last_params: GenerationParams | None = None

    def _reply(self, messages: Messages, params: GenerationParams) -> str:
        self.last_messages = [dict(m) for m in messages]
        self.last_params = params
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return f"Echo: {user}"

    def complete(self, messages: Messages, params: GenerationParams) -> str:
        return self._reply(messages, params)

    def stream(self, messages: Messages, params: GenerationParams) -> Iterator[str]:
        # word by word, whitespace kept, so joining the pieces gives the whole reply
        yield from re.findall(r"\s*\S+|\s+", self._reply(messages, params))


# --- local: the embedded runtime --------------------------------------------------------

_ENGINES: dict[tuple, Any] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(model: str | None, lora: tuple = ()):
    """The process-wide ``Engine`` for ``model`` (a path or name; None: the default model)
    with the LoRA adapters ``lora`` (``LoraSpec``s), loaded on first use with
    ``$ABI_AGENT_SLOTS`` slots (default 1). Its scheduler is the one path to it: agents in
    several threads decode together on its slots, and queue when all are busy."""
    import os

    from ..config import env

    key = os.path.realpath(model) if model and os.path.exists(model) else (model or "")
    key = (key, tuple((os.path.realpath(s.path), s.scale) for s in lora))
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            from ..llm import Engine  # imported on first use: importing agents stays fast

            slots = env("ABI_AGENT_SLOTS", 1, cast=int)
            engine = _ENGINES[key] = Engine(n_slots=slots, lora=list(lora)).load_model(model)
        return engine


class LocalBackend(Backend):
    """The embedded runtime: an ``Engine``'s chat template and its scheduler, which every
    generation goes through (so agents and routes sharing the engine share its slots, queue
    and metrics). The engine is ``engine`` (a server's loaded model; ``max_tokens`` caps
    what callers ask), else the process-wide one for ``config.model``, loaded on first use."""

    name = "local"

    def __init__(self, config: AgentConfig | None = None, engine: Any = None,
                 max_tokens: int | None = None):
        if config is None and engine is None:
            raise ValueError("give an agent config or an engine")
        self._engine = engine
        self.model = engine.model.path if engine is not None else config.model
        self.lora = tuple(config.lora) if config is not None else ()
        self._context_override = config.context_length if config is not None else None
        self.max_tokens = max_tokens

    @property
    def engine(self):
        if self._engine is None:
            self._engine = shared_engine(self.model, self.lora)
        return self._engine

    def context_length(self) -> int | None:
        n_ctx = int(self.engine.n_ctx)
        return min(n_ctx, self._context_override) if self._context_override else n_ctx

    def count_tokens(self, messages: Messages) -> int:
        return int(self.engine.count_chat_tokens(list(messages)))

    def _kwargs(self, params: GenerationParams) -> dict:
        limit = params.max_tokens if self.max_tokens is None else min(params.max_tokens,
                                                                       self.max_tokens)
        return {"max_tokens": limit, "temperature": params.temperature, "top_p": params.top_p}

    def _failed(self, exc: Exception) -> GenerationFailed:
        err = GenerationFailed(f"the local engine failed: {type(exc).__name__}: {exc}")
        err.context = ErrorContext.generation_error(err, self.name, self.model or "default",
                                                    str(exc))
        return err

    def complete(self, messages: Messages, params: GenerationParams) -> str:
        try:
            text = self.engine.chat(list(messages), stream=False, **self._kwargs(params))
        except AbiError:
            raise
        except Exception as exc:  # an engine bug must still reach the caller typed
            raise self._failed(exc) from exc
        if not isinstance(text, str):
            raise self._failed(TypeError(f"chat() returned {type(text).__name__}"))
        return text

    def complete_turn(self, messages: Messages, params: GenerationParams, tools: list[dict],
                      tool_choice: str = "auto") -> dict:
        try:
            reply, _ = self.engine.chat_turn(list(messages), tools=tools, tool_choice=tool_choice,
                                             **self._kwargs(params))
        except AbiError:
            raise
        except Exception as exc:
            raise self._failed(exc) from exc
        return {"role": "assistant", "content": reply.content,
                "tool_calls": [c.to_openai() for c in reply.tool_calls]}

    def stream(self, messages: Messages, params: GenerationParams) -> Iterator[str]:
        events = None
        try:
            events = self.engine.chat(list(messages), stream=True, **self._kwargs(params))
            for event in events:
                if event.text:
                    yield event.text
        except AbiError:
            raise
        except Exception as exc:
            raise self._failed(exc) from exc
        finally:   # however the stream ends (GeneratorExit too): its job stops, its slot frees
            if events is not None:
                events.close()


# --- remote providers -----------------------------------------------------------------

class OpenAIBackend(_WithContextLength):
    name = "openai"

    def __init__(self, config: AgentConfig, client: Any = None):
        super().__init__(config)
        from abi.connectors.openai import OpenAIClient

        self.client = client or OpenAIClient(base_url=config.base_url, model=config.model)
        self.model = config.model or self.client.model

    def complete(self, messages: Messages, params: GenerationParams) -> str:
        return self.client.chat(messages, self.model, temperature=params.temperature,
                                top_p=params.top_p, max_tokens=params.max_tokens).text

    def complete_turn(self, messages: Messages, params: GenerationParams, tools: list[dict],
                      tool_choice: str = "auto") -> dict:
        message = self.client.chat(messages, self.model, temperature=params.temperature,
                                   top_p=params.top_p, max_tokens=params.max_tokens, tools=tools,
                                   tool_choice=tool_choice).choices[0].message
        return {"role": "assistant", "content": message.content,
                "tool_calls": [t.to_dict() for t in message.tool_calls]}

    def stream(self, messages: Messages, params: GenerationParams) -> Iterator[str]:
        for chunk in self.client.chat_stream(messages, self.model, include_usage=False,
                                             temperature=params.temperature, top_p=params.top_p,
                                             max_tokens=params.max_tokens):
            if chunk.text:
                yield chunk.text


class OllamaBackend(_WithContextLength):
    name = "ollama"

    def __init__(self, config: AgentConfig, client: Any = None):
        super().__init__(config)
        from abi.connectors.ollama import OllamaClient

        self.client = client or OllamaClient(host=config.base_url, model=config.model)
        self.model = config.model or self.client.model

    def _options(self, params: GenerationParams) -> dict:
        return self.client.options(temperature=params.temperature, top_p=params.top_p,
                                   max_tokens=params.max_tokens, num_ctx=self._context_length)

    def complete(self, messages: Messages, params: GenerationParams) -> str:
        return self.client.chat(messages, self.model, options=self._options(params)).text

    def complete_turn(self, messages: Messages, params: GenerationParams, tools: list[dict],
                      tool_choice: str = "auto") -> dict:
        import json
        import uuid

        if tool_choice not in ("auto", "none"):
            from abi.errors import NotSupported

            raise NotSupported("Ollama has no tool_choice: the ollama backend offers tools "
                               "('auto') or none")
        msg = self.client.chat(_ollama_messages(messages), self.model,
                               tools=tools if tool_choice == "auto" else None,
                               options=self._options(params)).message
        calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                  "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                 for c in msg.tool_calls]
        return {"role": "assistant", "content": msg.content or None, "tool_calls": calls}

    def stream(self, messages: Messages, params: GenerationParams) -> Iterator[str]:
        for part in self.client.chat_stream(messages, self.model, options=self._options(params)):
            if part.text:
                yield part.text


def _ollama_messages(messages: Messages) -> list[dict]:
    """OpenAI-style tool turns as Ollama writes them: calls with object arguments, results
    named by their tool."""
    import json

    names, out = {}, []
    for m in messages:
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                names[c["id"]] = c["function"]["name"]
                calls.append({"function": {"name": c["function"]["name"],
                                           "arguments": json.loads(c["function"]["arguments"] or "{}")}})
            out.append({"role": "assistant", "content": m.get("content") or "", "tool_calls": calls})
        elif m.get("role") == "tool":
            out.append({"role": "tool", "content": m.get("content") or "",
                        "tool_name": names.get(m.get("tool_call_id"), m.get("name", ""))})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out


class StopFilter:
    """Holds back streamed text that may be the start of a stop string, and ends the text at
    the first stop string (which is not passed on)."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self._buf = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self._buf += text
        hits = [i for i in (self._buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self._buf, self.stopped = self._buf[:min(hits)], "", True
            return out
        keep = 0  # longest buffer tail that is a proper prefix of some stop string
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self._buf)), 0, -1):
                if self._buf.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        out = self._buf[:len(self._buf) - keep]
        self._buf = self._buf[len(self._buf) - keep:]
        return out

    def finish(self) -> str:
        out, self._buf = ("" if self.stopped else self._buf), ""
        return out


class HuggingFaceBackend(_WithContextLength):
    """Text generation on a plain transcript prompt (the Inference API takes one string)."""

    name = "huggingface"

    def __init__(self, config: AgentConfig, client: Any = None):
        super().__init__(config)
        from abi.connectors.huggingface import HuggingFaceClient

        self.client = client or HuggingFaceClient(base_url=config.base_url, model=config.model)
        self.model = self.client._model(config.model)  # ConfigError now if there is none

    def _kwargs(self, params: GenerationParams) -> dict:
        sample = params.temperature > 0
        return {"max_new_tokens": params.max_tokens,
                "temperature": params.temperature if sample else None,
                "do_sample": sample,
                "top_p": params.top_p if sample and 0 < params.top_p < 1 else None,
                "stop": transcript_stops()}

    def complete(self, messages: Messages, params: GenerationParams) -> str:
        result = self.client.text_generation(render_transcript(messages), self.model,
                                             **self._kwargs(params))
        stops = StopFilter(transcript_stops())
        return (stops.feed(result.generated_text) + stops.finish()).strip()

    def stream(self, messages: Messages, params: GenerationParams) -> Iterator[str]:
        stops = StopFilter(transcript_stops())
        first = True
        for token in self.client.text_generation_stream(render_transcript(messages), self.model,
                                                        **self._kwargs(params)):
            if token.special:
                continue
            text = stops.feed(token.text)
            if first:  # the transcript ends in "Assistant:"; the reply's leading space is noise
                text = text.lstrip()
                first = not text
            if text:
                yield text
            if stops.stopped:
                return
        tail = stops.finish().rstrip()
        if tail:
            yield tail


def make_backend(config: AgentConfig, client: Any = None) -> Backend:
    """The backend ``config.backend`` names; ``client`` replaces the connector the remote
    backends would build from the environment."""
    if config.backend == "echo":
        return EchoBackend(config)
    if config.backend == "local":
        return LocalBackend(config)
    cls = {"openai": OpenAIBackend, "ollama": OllamaBackend,
           "huggingface": HuggingFaceBackend}[config.backend]
    return cls(config, client)
