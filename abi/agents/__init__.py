"""Conversational agents (the reference's ``abi.ai.agents``): ``Agent``, ``AgentConfig`` and
their backends: echo, local (the embedded runtime), openai, ollama, huggingface; and the
GPU-aware agent ``GpuAgent``, which schedules AI workloads over this machine's backends."""
from __future__ import annotations

from abi.agents.agent import Agent, Message
from abi.agents.backends import GenerationParams, make_backend
from abi.agents.config import BACKENDS, AgentConfig
from abi.agents.gpu_agent import (GpuAgent, GpuAgentConfig, GpuRequest, GpuResponse, GpuStats,
                                  Priority, WorkloadType)

__all__ = ["Agent", "AgentConfig", "BACKENDS", "GenerationParams", "GpuAgent", "GpuAgentConfig",
           "GpuRequest", "GpuResponse", "GpuStats", "Message", "Priority", "WorkloadType",
           "make_backend"]
