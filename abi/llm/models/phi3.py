"""Phi-3: the llama recipe with NeoX RoPE, Q, K and V in one fused tensor and the gate and up
projections in one ``ffn_up`` (gate rows first), and LongRoPE: per-frequency factors, long
ones for contexts beyond ``rope.scaling.original_context_length``, short ones otherwise,
with ``rope.scaling.attn_factor`` on cos and sin. llama.cpp runs Phi-3's sliding window
as full attention, and so does abi."""
from __future__ import annotations

from dataclasses import dataclass

from ..hparams import Metadata
from . import decoder
from .decoder import Model

__all__ = ["Model", "ModelArgs"]


@dataclass(frozen=True)
class ModelArgs(decoder.ModelArgs):
    rope_neox: bool = True

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        base = super().from_gguf(metadata)
        m = Metadata(metadata, base.arch)
        return base.with_recipe(gate_up_fused=True,
                                rope_orig_ctx=m.int("rope.scaling.original_context_length", base.n_ctx_train))
