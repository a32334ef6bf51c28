"""Prompt templates: named system prompts, and the plain transcript used for backends that
take one prompt string instead of chat messages (HuggingFace text generation)."""
from __future__ import annotations

from typing import Mapping, Sequence

from abi.errors import ConfigError

SYSTEM_PROMPTS: dict[str, str] = {
    "assistant": "You are a helpful assistant. Answer clearly and concisely.",
    "coder": "You are a careful programming assistant. Give correct, minimal code and say "
             "briefly why it works.",
    "concise": "Answer in as few words as the question allows.",
}

_ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


def system_prompt(name: str) -> str:
    try:
        return SYSTEM_PROMPTS[name]
    except KeyError:
        raise ConfigError(f"no system prompt named {name!r}; known: "
                          f"{', '.join(sorted(SYSTEM_PROMPTS))}", field="system_prompt") from None


def render_transcript(messages: Sequence[Mapping[str, str]]) -> str:
    """``System: ...\\n\\nUser: ...\\n\\nAssistant:`` - the model continues after the last
    label; ``transcript_stops()`` keeps it from writing the user's next turn."""
    parts = []
    for m in messages:
        label = _ROLE_LABELS.get(m["role"], m["role"].capitalize())
        parts.append(f"{label}: {m['content'].strip()}")
    parts.append("Assistant:")
    return "\n\n".join(parts)


def transcript_stops() -> list[str]:
    return ["\nUser:", "\nSystem:"]
