"""The reference's ``training.llm_checkpoint``: LLM checkpoints hold the weights and the
optimizer state together (plus step, RNG state and the run's config), in the crash-safe
container of ``abi.training.checkpoint``."""
from __future__ import annotations

from .llm_trainer import CHECKPOINT_KIND, LlmCheckpoint, load_llm_checkpoint

__all__ = ["CHECKPOINT_KIND", "LlmCheckpoint", "load_llm_checkpoint"]
