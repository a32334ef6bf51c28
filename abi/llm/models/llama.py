"""Llama family (SmolLM2, TinyLlama, Llama 2/3, Mistral): pre-RMSNorm blocks, RoPE (with
Llama 3's per-frequency factors where the file has them), grouped-query attention, SwiGLU,
tied or separate output matrix: the decoder's default recipe."""
from __future__ import annotations

from .decoder import Model, ModelArgs

__all__ = ["Model", "ModelArgs"]
