"""SmolLM3: the llama recipe with no RoPE in every fourth layer (NoPE: those layers see
positions only through the causal mask), as llama.cpp's n_no_rope_layer_step = 4."""
from __future__ import annotations

from dataclasses import dataclass

from ..hparams import Metadata
from . import decoder
from .decoder import Model

__all__ = ["Model", "ModelArgs"]

NO_ROPE_LAYER_STEP = 4


@dataclass(frozen=True)
class ModelArgs(decoder.ModelArgs):
    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        base = super().from_gguf(metadata)
        m = Metadata(metadata, base.arch)
        return base.with_recipe(
            attn_scale=m.float("attention.scale", 0.0, lo_open=False),
            nope_layers=tuple((i + 1) % NO_ROPE_LAYER_STEP == 0 for i in range(base.n_layers)))
