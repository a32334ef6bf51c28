"""Reasoning text (``<think>…</think>``, as Qwen3, DeepSeek-R1, SmolLM3 and others write it)
apart from the answer, as Ollama's ``thinking`` and llama-server's ``reasoning_content``.

A reply is reasoning from its start when it opens with ``<think>`` (leading whitespace
allowed) or when the prompt already opened the block (templates that end the generation
prompt with ``<think>``); the reasoning ends at ``</think>``, and the whitespace after the
tag is not part of the answer. Anything else is answer: a ``<think>`` in mid-answer stays
text. ``ReasoningSplitter`` does this on a stream of pieces, holding back only what could be
the start of a tag.
"""
from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def prompt_opens_reasoning(prompt_tail: str) -> bool:
    """Whether a rendered prompt ends inside a reasoning block (the model continues it)."""
    text = prompt_tail.rstrip()
    return text.endswith(OPEN)


class ReasoningSplitter:
    """Feed generated text piece by piece; get ``(kind, text)`` pieces back, kind
    ``"reasoning"`` or ``"content"``. ``finish()`` returns what was held back."""

    def __init__(self, inside: bool = False):
        self.state = "inside" if inside else "start"
        self.held = ""

    def feed(self, text: str) -> list[tuple[str, str]]:
        self.held += text
        out: list[tuple[str, str]] = []
        while self.held:
            if self.state == "start":
                stripped = self.held.lstrip()
                if stripped.startswith(OPEN):
                    self.state, self.held = "inside", stripped[len(OPEN):]
                elif OPEN.startswith(stripped):   # only whitespace or a tag's beginning yet
                    break
                else:
                    self.state = "content"
            elif self.state == "inside":
                end = self.held.find(CLOSE)
                if end >= 0:
                    if end:
                        out.append(("reasoning", self.held[:end]))
                    self.state, self.held = "after", self.held[end + len(CLOSE):]
                    continue
                keep = partial_suffix(self.held, CLOSE)
                if len(self.held) > keep:
                    out.append(("reasoning", self.held[:len(self.held) - keep]))
                    self.held = self.held[len(self.held) - keep:]
                break
            elif self.state == "after":   # the whitespace between </think> and the answer
                stripped = self.held.lstrip()
                if not stripped:
                    self.held = ""
                    break
                self.state, self.held = "content", stripped
            else:
                out.append(("content", self.held))
                self.held = ""
        return out

    def finish(self) -> list[tuple[str, str]]:
        held, self.held = self.held, ""
        if not held or self.state == "after":
            return []
        return [("reasoning" if self.state == "inside" else "content", held)]


def partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that begins ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
