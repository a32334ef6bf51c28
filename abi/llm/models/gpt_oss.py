"""gpt-oss: a mixture of experts with biases everywhere (Q, K, V, output, router and every
expert), attention sinks (a learned logit per head in each softmax), a sliding window (128)
on every other layer, YaRN RoPE (NeoX), the clamped SwiGLU of its reference (alpha 1.702,
limit 7, up + 1), and routing by a softmax over the top-k router logits. The pre-FFN norm is
stored as ``post_attention_norm``. Its experts usually ship as MXFP4. (llama.cpp's "softmax
over the top-k logits" is the renormalised softmax of the shared recipe: the same weights.)"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnsupportedModelError
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
        if not base.n_expert:
            raise UnsupportedModelError(f"{base.arch}: expert_count and expert_used_count must be > 0")
        m = Metadata(metadata, base.arch)
        window = m.int("attention.sliding_window")
        return base.with_recipe(
            activation="swiglu_oai", expert_norm=True,
            attn_sinks=True, ffn_norm_tensor="post_attention_norm", sliding_window=window,
            swa_layers=every_nth_global(base.n_layers, m.int("attention.sliding_window_pattern", 2, lo=0)),
            rope_base_swa=m.float("rope.freq_base_swa", base.rope_base))
