"""What every persona implements, and what it is handed for one turn."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from abi.personas.types import Persona, PersonaRequest, RoutingDecision

if TYPE_CHECKING:
    from abi.personas.abi.router import Analysis
    from abi.personas.config import MultiPersonaConfig
    from abi.personas.sessions import Session


class Generate(Protocol):
    def __call__(self, messages: list[dict], *, temperature: float | None = None,
                 max_tokens: int | None = None) -> str: ...


@dataclass
class TurnContext:
    """One turn: the request, its text after PII masking, Abi's analysis, the routing
    decision, the session, and ``generate`` (the persona's load-balanced backends)."""

    request: PersonaRequest
    text: str
    analysis: "Analysis"
    decision: RoutingDecision
    session: "Session"
    config: "MultiPersonaConfig"
    generate: Generate

    def messages(self, system: str) -> list[dict]:
        """system prompt, the session's earlier turns, this message."""
        head = [{"role": "system", "content": system}] if system else []
        return head + self.session.history() + [{"role": "user", "content": self.text}]


@dataclass
class PersonaReply:
    content: str
    sources: list[dict] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class PersonaHandler(abc.ABC):
    """A persona: shapes the prompt, generates through ``ctx.generate``, post-processes."""

    persona: Persona
    role: str = ""
    description: str = ""
    characteristics: tuple[str, ...] = ()

    @abc.abstractmethod
    def respond(self, ctx: TurnContext) -> PersonaReply:
        """This persona's reply to the turn."""

    def info(self) -> dict:
        return {"name": self.persona.value, "role": self.role, "description": self.description,
                "characteristics": list(self.characteristics)}
