"""The persona registry: which handler answers for each persona."""
from __future__ import annotations

import threading
from typing import Iterator

from abi.errors import InvalidRequestError
from abi.personas.base import PersonaHandler
from abi.personas.types import Persona


class PersonaRegistry:
    def __init__(self):
        self._handlers: dict[Persona, PersonaHandler] = {}
        self._lock = threading.Lock()

    def register(self, handler: PersonaHandler, *, replace: bool = False) -> None:
        """Make ``handler`` answer for ``handler.persona``; ``replace`` swaps an existing one
        (e.g. a custom Aviva with another document store)."""
        persona = Persona.parse(handler.persona)
        with self._lock:
            if persona in self._handlers and not replace:
                raise InvalidRequestError(f"persona {persona.value} is already registered; "
                                          "pass replace=True to swap it")
            self._handlers[persona] = handler

    def get(self, persona: Persona | str) -> PersonaHandler:
        persona = Persona.parse(persona)
        with self._lock:
            handler = self._handlers.get(persona)
        if handler is None:
            raise InvalidRequestError(f"persona {persona.value} is not registered")
        return handler

    def __contains__(self, persona) -> bool:
        try:
            return Persona.parse(persona) in self._handlers
        except InvalidRequestError:
            return False

    def __iter__(self) -> Iterator[PersonaHandler]:
        with self._lock:
            return iter(list(self._handlers.values()))

    def list(self) -> list[dict]:
        return [h.info() for h in self]
