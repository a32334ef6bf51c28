"""Qwen2: the llama recipe with biases on the Q, K and V projections and NeoX-style RoPE."""
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
        return super().from_gguf(metadata).with_recipe(qkv_bias=True)
