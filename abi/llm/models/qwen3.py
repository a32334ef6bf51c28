"""Qwen3 (dense): the llama recipe with NeoX RoPE and per-head RMSNorm of Q and K before
RoPE; the head size comes from ``attention.key_length`` (128 where the width per head is
smaller)."""
from __future__ import annotations

from dataclasses import dataclass

from . import decoder
from .decoder import Model

__all__ = ["Model", "ModelArgs"]


@dataclass(frozen=True)
class ModelArgs(decoder.ModelArgs):
    rope_neox: bool = True

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        return super().from_gguf(metadata).with_recipe(qk_norm="head")
