"""Core types of the multi-persona system: the personas, a request, a response, and what
routing decided."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from abi.errors import InvalidRequestError

MAX_CONTENT_CHARS = 100_000   # one message; far beyond any persona's context
MAX_ID_CHARS = 256


class Persona(str, enum.Enum):
    """The three personas. A str enum, so ``Persona.ABBEY == "abbey"``."""

    ABI = "abi"       # router and moderator
    ABBEY = "abbey"   # empathetic polymath
    AVIVA = "aviva"   # direct expert

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: "Persona | str", field: str = "persona") -> "Persona":
        """``value`` as a Persona (name, any case); InvalidRequestError naming the choices."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise InvalidRequestError(f"{field} must be one of {', '.join(p.value for p in cls)}, "
                                  f"got {value!r}")


class QueryType(str, enum.Enum):
    """What kind of request a message is (the query classifier's classes)."""

    CODE = "code"
    FACTUAL = "factual"
    EXPLANATION = "explanation"
    EMOTIONAL_SUPPORT = "emotional_support"
    CREATIVE = "creative"
    CHIT_CHAT = "chit_chat"

    def __str__(self) -> str:
        return self.value


def _check_id(name: str, value: Any, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise InvalidRequestError(f"{name} must be at most {MAX_ID_CHARS} printable characters")
    return value


@dataclass
class PersonaRequest:
    """One user message. ``persona`` forces a persona (None: route automatically);
    ``session_id`` groups turns into one conversation (None: the user's default session)."""

    content: str
    user_id: str
    session_id: str | None = None
    persona: Persona | str | None = None

    def __post_init__(self):
        if not isinstance(self.content, str):
            raise InvalidRequestError(f"content must be a string, not {type(self.content).__name__}")
        if not self.content.strip():
            raise InvalidRequestError("content is empty")
        if len(self.content) > MAX_CONTENT_CHARS:
            raise InvalidRequestError(f"content is {len(self.content)} characters; at most "
                                      f"{MAX_CONTENT_CHARS} are accepted")
        _check_id("user_id", self.user_id, required=True)
        _check_id("session_id", self.session_id, required=False)
        if self.persona is not None:
            self.persona = Persona.parse(self.persona)


@dataclass
class RoutingDecision:
    """Which persona answers and why. ``rule`` names the routing rule that decided (None for a
    forced persona or the default); ``scores`` holds each persona's routing score."""

    persona: Persona
    confidence: float
    reason: str
    rule: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    fallback: bool = False  # the default persona answered because confidence was too low


@dataclass
class PersonaResponse:
    """A persona's answer. ``latency_ms`` is the whole request (analysis, routing, generation).

    ``blocked``: Abi answered with a safe reply instead of generating one; ``policy``: the
    policy categories found (also when only redacted); ``sources``: documents Aviva cited;
    ``details``: anything else a persona reports (reasoning steps, fact checks ...).
    """

    content: str
    persona: Persona
    confidence: float
    latency_ms: float
    routing_reason: str
    session_id: str | None = None
    query_type: str | None = None
    emotion: str | None = None
    blocked: bool = False
    policy: list[str] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The HTTP API's response JSON (the reference's four fields first)."""
        return {
            "content": self.content,
            "persona": self.persona.value,
            "confidence": round(float(self.confidence), 4),
            "latency_ms": round(float(self.latency_ms), 3),
            "routing_reason": self.routing_reason,
            "session_id": self.session_id,
            "query_type": self.query_type,
            "emotion": self.emotion,
            "blocked": self.blocked,
            "policy": list(self.policy),
            "sources": [dict(s) for s in self.sources],
            "details": dict(self.details),
        }
