"""Gemma 3: embeddings scaled by sqrt(D), RMSNorm before and after both attention and
feed-forward, per-head RMSNorm of Q and K, GeGLU, NeoX RoPE, and sliding-window layers
(own RoPE base, unscaled) interleaved with global ones. GGUF norm weights already include
Gemma's +1."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import InvalidModelError
from ..hparams import Metadata
from . import decoder
from .decoder import Model, every_nth_global

__all__ = ["Model", "ModelArgs"]


def swa_pattern(m: Metadata, metadata: dict, n_layers: int, window: int, default_n: int) -> tuple:
    """Which layers use the window: a per-layer list, or every n-th layer global."""
    arch = m.arch
    pattern = metadata.get(f"{arch}.attention.sliding_window_pattern", default_n)
    if isinstance(pattern, list):
        swa = tuple(bool(p) for p in pattern)
    elif window > 0:
        swa = every_nth_global(n_layers, m.int("attention.sliding_window_pattern", default_n, lo=0))
    else:
        swa = (False,) * n_layers
    if len(swa) != n_layers:
        raise InvalidModelError(f"{arch}.attention.sliding_window_pattern has {len(swa)} entries "
                                f"for {n_layers} layers")
    return swa


def gemma_recipe(base, m: Metadata, metadata: dict, *, layers_27b: int, window: int,
                 default_pattern: int) -> dict:
    """What Gemma 2 and 3 share: norms before and after both blocks, GeGLU, embeddings scaled
    by sqrt(D), windowed layers, and llama.cpp's attention scale (its 27B model, recognised by
    the layer count as llama.cpp does, by the width per head; the others by the head size)."""
    width = base.n_embd // base.n_heads if base.n_layers == layers_27b else base.head_dim
    return dict(post_norms=True, activation="gelu", embd_scale=math.sqrt(base.n_embd),
                attn_scale=1.0 / math.sqrt(width), sliding_window=window,
                swa_layers=swa_pattern(m, metadata, base.n_layers, window, default_pattern))


@dataclass(frozen=True)
class ModelArgs(decoder.ModelArgs):
    rope_neox: bool = True

    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        base = super().from_gguf(metadata)
        m = Metadata(metadata, base.arch)
        window = m.int("attention.sliding_window", 0, lo=0)
        return base.with_recipe(
            **gemma_recipe(base, m, metadata, layers_27b=62, window=window, default_pattern=6),
            qk_norm="head", rope_base_swa=m.float("rope.freq_base_swa", 10000.0), swa_rope_scaled=False,
            final_softcap=m.float("final_logit_softcapping", 0.0, lo_open=False),
            attn_softcap=m.float("attn_logit_softcapping", 0.0, lo_open=False))
