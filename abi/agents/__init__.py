"""Conversational agents (the reference's ``abi.ai.agents``): ``Agent``, ``AgentConfig`` and
their backends: echo, local (the embedded runtime), openai, ollama, huggingface."""
from __future__ import annotations

from abi.agents.agent import Agent, Message
from abi.agents.backends import GenerationParams, make_backend
from abi.agents.config import BACKENDS, AgentConfig

__all__ = ["Agent", "AgentConfig", "BACKENDS", "GenerationParams", "Message", "make_backend"]
