"""Granite and Granite-MoE (the experts read from the file's expert keys, as for any
recipe): the llama recipe with four multipliers from the file: on the embeddings
(``embedding_scale``), on each residual branch (``residual_scale``), on the attention scores
(``attention.scale``, replacing 1/sqrt(head size)) and a divisor of the logits (``logit_scale``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..hparams import Metadata
from . import decoder
from .decoder import Model

__all__ = ["Model", "ModelArgs"]


@dataclass(frozen=True)
class ModelArgs(decoder.ModelArgs):
    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        base = super().from_gguf(metadata)
        m = Metadata(metadata, base.arch)
        # 0 (or absent) means "no multiplier", as llama.cpp reads them
        return base.with_recipe(
            embd_scale=m.float("embedding_scale", 0.0, lo_open=False) or 1.0,
            residual_scale=m.float("residual_scale", 0.0, lo_open=False) or 1.0,
            attn_scale=m.float("attention.scale", 0.0, lo_open=False),
            logit_scale=1.0 / m.float("logit_scale"))
