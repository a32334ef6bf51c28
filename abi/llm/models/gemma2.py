"""Gemma 2: Gemma 3's recipe without Q/K norms, with soft-capped attention scores (50) and
logits (30), and a sliding window (4096) on every other layer, whose RoPE keeps the scaling."""
from __future__ import annotations

from dataclasses import dataclass

from ..hparams import Metadata
from . import decoder
from .decoder import Model
from .gemma3 import gemma_recipe

__all__ = ["Model", "ModelArgs"]


@dataclass(frozen=True)
class ModelArgs(decoder.ModelArgs):
    rope_neox: bool = True

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        base = super().from_gguf(metadata)
        m = Metadata(metadata, base.arch)
        window = m.int("attention.sliding_window", 4096, lo=0)
        return base.with_recipe(
            **gemma_recipe(base, m, metadata, layers_27b=46, window=window, default_pattern=2),
            rope_base_swa=m.float("rope.freq_base_swa", base.rope_base),
            attn_softcap=m.float("attn_logit_softcapping", 50.0, lo_open=False),
            final_softcap=m.float("final_logit_softcapping", 30.0, lo_open=False))
