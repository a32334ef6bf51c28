"""The multi-persona assistant (the reference's ``abi.ai.personas``): Abi routes and
moderates, Abbey answers with empathy and depth, Aviva answers directly and cites sources.

    from abi.ai.personas import MultiPersonaSystem, MultiPersonaConfig, PersonaRequest
    system = MultiPersonaSystem(MultiPersonaConfig(default_persona="abbey"))
    response = system.process(PersonaRequest("Help me understand recursion", "user-123"))
    response.persona, response.content, response.confidence, response.latency_ms
"""
from __future__ import annotations

from abi.personas.config import (
    AbbeyConfig, AvivaConfig, EmpathyLevel, EndpointConfig, HealthConfig, MultiPersonaConfig,
    PolicyConfig, ResponseDepth,
)
from abi.personas.system import MultiPersonaSystem
from abi.personas.types import (
    Persona, PersonaRequest, PersonaResponse, QueryType, RoutingDecision,
)

__all__ = [
    "AbbeyConfig", "AvivaConfig", "EmpathyLevel", "EndpointConfig", "HealthConfig",
    "MultiPersonaConfig", "MultiPersonaSystem", "Persona", "PersonaRequest", "PersonaResponse",
    "PolicyConfig", "QueryType", "ResponseDepth", "RoutingDecision",
]
