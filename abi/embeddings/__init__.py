"""Embeddings: ``Encoder(model=None).encode(text)`` with BERT-family or decoder GGUF models,
and the Hugging Face -> GGUF converter for BERT models (``convert``)."""
from __future__ import annotations

from .encoder import DEFAULT_EMBEDDING_MODEL, Encoder
from .pooling import l2_normalize, pool

__all__ = ["Encoder", "DEFAULT_EMBEDDING_MODEL", "pool", "l2_normalize"]
