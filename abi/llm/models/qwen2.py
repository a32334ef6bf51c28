"""Qwen2: the llama recipe with biases on the Q, K and V projections and NeoX-style RoPE."""
from __future__ import annotations

from dataclasses import dataclass

from . import llama


@dataclass(frozen=True)
class ModelArgs(llama.ModelArgs):
    rope_neox: bool = True


class Model(llama.Model):
    qkv_bias = True
