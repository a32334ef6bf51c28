"""OLMo 2: no norm before attention or the FFN; RMSNorm of their outputs instead (before the
residual add), RMSNorm of Q and K over all heads at once, NeoX RoPE. Files with a sliding
window (OLMo 3) window every layer but each fourth; those layers' RoPE is unscaled."""
from __future__ import annotations

from dataclasses import dataclass

from ..hparams import Metadata
from . import decoder
from .decoder import Model, every_nth_global

__all__ = ["Model", "ModelArgs"]


@dataclass(frozen=True)
class ModelArgs(decoder.ModelArgs):
    rope_neox: bool = True

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        base = super().from_gguf(metadata)
        m = Metadata(metadata, base.arch)
        window = m.int("attention.sliding_window", 0, lo=0)
        swa = every_nth_global(base.n_layers, m.int("attention.sliding_window_pattern", 4, lo=0)) \
            if window else ()
        return base.with_recipe(attn_norm=False, post_norms=True, qk_norm="full", sliding_window=window,
                                swa_layers=swa, swa_rope_scaled=False)
