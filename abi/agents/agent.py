"""Agent: a conversation with one backend, with bounded history trimmed to the model's
context."""
from __future__ import annotations

import bisect
import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from abi.agents.backends import Backend, GenerationParams, make_backend
from abi.agents.config import (
    MAX_TEMPERATURE, MAX_TOKENS_LIMIT, MAX_TOP_P, MIN_TEMPERATURE, MIN_TOP_P, AgentConfig,
    check_int, check_range,
)
from abi.errors import ContextLengthExceeded, InvalidRequestError

MAX_INPUT_CHARS = 1_000_000  # one message; beyond this no model's context could hold it


@dataclass(frozen=True)
class Message:
    # "user", "assistant" or "tool" ("system" only in what is sent, never in history)
    role: str
    content: str | None
    tool_calls: tuple = ()            # an assistant's calls (OpenAI-style dicts)
    tool_call_id: str | None = None   # the call a tool message answers
    name: str | None = None           # the tool that answered

    def to_dict(self) -> dict:
        out = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [dict(c) for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, m: dict) -> "Message":
        return cls(m["role"], m.get("content"), tuple(m.get("tool_calls") or ()),
                   m.get("tool_call_id"), m.get("name"))


class Agent:
    """A conversational agent (the reference's ``abi.ai.agents.Agent``).

    ``Agent(AgentConfig(name=...))`` or ``Agent(name=..., backend=..., ...)``; ``client``
    replaces the connector a remote backend would build from the environment.

    History holds user and assistant turns (the system prompt is kept apart and sent
    first). It keeps at most ``max_history`` messages; what is sent is further trimmed,
    oldest turns first, to fit the model's context with room for ``max_tokens``.
    With history disabled, turns are neither sent nor recorded.
    """

    def __init__(self, config: AgentConfig | None = None, *, client: Any = None, **settings):
        if config is None:
            config = AgentConfig(**settings)
        elif settings:
            config = dataclasses.replace(config, **settings)
        elif not isinstance(config, AgentConfig):
            raise TypeError(f"config must be an AgentConfig, not {type(config).__name__}")
        else:
            config = dataclasses.replace(config)  # our own copy; the caller's stays as it is
        self.config = config
        self._backend: Backend = make_backend(config, client)
        self._history: list[Message] = []
        self._lock = threading.Lock()
        from abi.agents.tools import Tool

        self._tools = {t.name: t for t in map(Tool.of, config.tools or [])}

    def __repr__(self) -> str:
        return (f"Agent(name={self.config.name!r}, backend={self.config.backend!r}, "
                f"model={self.model!r}, history={len(self._history)})")

    # --- properties and settings ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def model(self) -> str | None:
        return self._backend.model

    def set_temperature(self, temperature: float) -> None:
        self.config.temperature = check_range("temperature", temperature, MIN_TEMPERATURE,
                                              MAX_TEMPERATURE)

    def set_top_p(self, top_p: float) -> None:
        self.config.top_p = check_range("top_p", top_p, MIN_TOP_P, MAX_TOP_P)

    def set_max_tokens(self, max_tokens: int) -> None:
        self.config.max_tokens = check_int("max_tokens", max_tokens, 1, MAX_TOKENS_LIMIT)

    def set_history_enabled(self, enabled: bool) -> None:
        self.config.enable_history = bool(enabled)

    # --- history -------------------------------------------------------------------------

    def history_count(self) -> int:
        return len(self._history)

    def history(self) -> list[Message]:
        with self._lock:
            return list(self._history)

    def clear_history(self) -> None:
        with self._lock:
            self._history.clear()

    def _record(self, user: str, reply: str, turn: list[Message] | None = None) -> None:
        """Keep a user turn and what answered it (``turn``: every message of a tool
        exchange, the final answer last)."""
        if not self.config.enable_history:
            return
        with self._lock:
            self._history += [Message("user", user)] + (turn or [Message("assistant", reply)])
            excess = len(self._history) - self.config.max_history
            if excess > 0:
                del self._history[:excess]
            while self._history and self._history[0].role != "user":
                del self._history[0]  # a conversation restarts on a user turn

    # --- conversation --------------------------------------------------------------------

    def chat(self, input: str) -> str:
        """Send ``input`` (with the history) and return the reply."""
        text = self._check_input(input)
        messages, params = self.build_request(text)
        if self._tools:
            return self._chat_with_tools(text, messages, params)
        reply = self._backend.complete(messages, params)
        self._record(text, reply)
        return reply

    def _chat_with_tools(self, text: str, messages: list[dict], params: GenerationParams) -> str:
        """Call -> execute -> observe until the model answers without calls, at most
        ``max_tool_steps`` rounds; then one more turn in which it may not call."""
        definitions = [t.definition() for t in self._tools.values()]
        turn: list[dict] = []
        for step in range(self.config.max_tool_steps + 1):
            choice = "auto" if step < self.config.max_tool_steps else "none"
            reply = self._backend.complete_turn(messages + turn, params, definitions, choice)
            turn.append(reply)
            if not reply.get("tool_calls"):
                break
            for call in reply["tool_calls"]:
                name = call["function"]["name"]
                tool = self._tools.get(name)
                result = (tool.run(call["function"]["arguments"]) if tool is not None else
                          f"error: there is no tool named {name!r}")
                turn.append({"role": "tool", "tool_call_id": call["id"], "name": name,
                             "content": result})
        answer = turn[-1].get("content") or ""
        self._record(text, answer, [Message.from_dict(m) for m in turn])
        return answer

    def process(self, input: str) -> str:
        """The same as ``chat`` (the reference has both names)."""
        return self.chat(input)

    def chat_stream(self, input: str) -> Iterator[str]:
        """The reply as text pieces as they are produced. The turn is recorded when the
        stream ends, or with what was produced if the caller stops early; not on error."""
        text = self._check_input(input)
        if self._tools:
            from abi.errors import NotSupported

            raise NotSupported("an agent with tools answers whole: use chat()")
        messages, params = self.build_request(text)
        return self._stream(text, messages, params)

    def _stream(self, text: str, messages: list[dict], params: GenerationParams) -> Iterator[str]:
        pieces: list[str] = []
        stream = self._backend.stream(messages, params)
        try:
            for piece in stream:
                pieces.append(piece)
                yield piece
        except GeneratorExit:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            if pieces:
                self._record(text, "".join(pieces))
            raise
        self._record(text, "".join(pieces))

    def _check_input(self, input: Any) -> str:
        if not isinstance(input, str):
            raise InvalidRequestError(f"input must be a string, not {type(input).__name__}")
        if not input.strip():
            raise InvalidRequestError("input is empty")
        if len(input) > MAX_INPUT_CHARS:
            raise InvalidRequestError(f"input is {len(input)} characters; at most "
                                      f"{MAX_INPUT_CHARS} are accepted")
        return input

    def build_request(self, text: str) -> tuple[list[dict], GenerationParams]:
        """What ``chat(text)`` would send now: the messages (system prompt, the history
        that fits, the new input) and the sampling parameters, max_tokens cut to what the
        context leaves."""
        text = self._check_input(text)
        cfg = self.config
        cfg.validate()  # settings may have been assigned directly
        head = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
        tail = [{"role": "user", "content": text}]
        with self._lock:
            history = [m.to_dict() for m in self._history] if cfg.enable_history else []
        max_tokens = cfg.max_tokens
        n_ctx = self._backend.context_length()
        if n_ctx is not None:
            count = self._backend.count_tokens
            budget = n_ctx - max_tokens
            # starts of whole turns; dropping more of them never adds tokens, so bisect
            starts = [i for i, m in enumerate(history) if m["role"] == "user"] + [len(history)]
            k = bisect.bisect_left(
                range(len(starts)), True,
                key=lambda k: count(head + history[starts[k]:] + tail) <= budget)
            if k < len(starts):
                history = history[starts[k]:]
            else:
                history = []
                prompt_tokens = count(head + tail)
                if prompt_tokens >= n_ctx:
                    raise ContextLengthExceeded(
                        f"the message{' and system prompt' if head else ''} take "
                        f"{prompt_tokens} tokens; the model's context holds {n_ctx}")
                max_tokens = n_ctx - prompt_tokens
        params = GenerationParams(temperature=cfg.temperature, top_p=cfg.top_p,
                                  max_tokens=max_tokens)
        return head + history + tail, params
