"""Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen2's attention (biases on Q, K and V, NeoX
RoPE) with a mixture of experts: a softmax router whose top-k probabilities weight the
experts as they are (not renormalised), beside a shared expert
(``expert_shared_feed_forward_length`` wide, else ``feed_forward_length``) scaled by the
sigmoid of its own one-row gate, ``ffn_gate_inp_shexp``. As llama.cpp, the gating is
softmax whatever ``expert_gating_func`` says (the recipe's default)."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnsupportedModelError
from ..hparams import Metadata
from .decoder import Model
from .qwen2 import ModelArgs as Qwen2Args

__all__ = ["Model", "ModelArgs"]


@dataclass(frozen=True)
class ModelArgs(Qwen2Args):
    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        base = super().from_gguf(metadata)
        if not base.n_expert:
            raise UnsupportedModelError(f"{base.arch}: expert_count and expert_used_count must be > 0")
        m = Metadata(metadata, base.arch)
        return base.with_recipe(
            # without the key, llama.cpp splits feed_forward_length among the used experts
            n_ff_exp=m.int("expert_feed_forward_length", base.n_ff // base.n_expert_used),
            expert_norm=False, shexp_gate=True,
            n_ff_shexp=m.int("expert_shared_feed_forward_length", base.n_ff))
