"""Qwen3-MoE: Qwen3's attention (per-head Q/K norms, NeoX RoPE) with a mixture-of-experts
FFN: a softmax router picks ``expert_used_count`` of ``expert_count`` experts per token
(``expert_feed_forward_length`` wide), their outputs weighted by the renormalised
probabilities."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnsupportedModelError
from .decoder import Model
from .qwen3 import ModelArgs as Qwen3Args

__all__ = ["Model", "ModelArgs"]


@dataclass(frozen=True)
class ModelArgs(Qwen3Args):
    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        args = super().from_gguf(metadata)
        if not args.n_expert:
            raise UnsupportedModelError(f"{args.arch}: expert_count and expert_used_count must be > 0")
        return args
