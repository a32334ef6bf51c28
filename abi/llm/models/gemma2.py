"""Gemma 2: Gemma 3's recipe without Q/K norms, with soft-capped attention scores (50) and
logits (30), and a sliding window (4096) on every other layer, whose RoPE keeps the scaling."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..hparams import Metadata
from . import decoder
from .decoder import Model
from .gemma3 import swa_pattern

__all__ = ["Model", "ModelArgs"]


@dataclass(frozen=True)
class ModelArgs(decoder.ModelArgs):
    rope_neox: bool = True

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        base = super().from_gguf(metadata)
        m = Metadata(metadata, base.arch)
        window = m.int("attention.sliding_window", 4096, lo=0)
        # llama.cpp scales the 27B model (46 layers) by the width per head, the others by the head size
        width = base.n_embd // base.n_heads if base.n_layers == 46 else base.head_dim
        return base.with_recipe(
            post_norms=True, activation="gelu", embd_scale=math.sqrt(base.n_embd),
            attn_scale=1.0 / math.sqrt(width), sliding_window=window,
            swa_layers=swa_pattern(m, metadata, base.n_layers, max(window, 1), 2),
            rope_base_swa=m.float("rope.freq_base_swa", base.rope_base),
            attn_softcap=m.float("attn_logit_softcapping", 50.0, lo_open=False),
            final_softcap=m.float("final_logit_softcapping", 30.0, lo_open=False))
