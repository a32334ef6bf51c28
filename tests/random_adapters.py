"""Deterministic random LoRA adapters for a base GGUF, in llama.cpp's format, for checking
abi's unmerged adapters against llama.cpp (tools/make_reference.py lora records its logits)."""
from __future__ import annotations

import hashlib

import numpy as np

from abi.gguf import load
from abi.gguf.lora_adapter import write_lora_adapter

PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def write_random_adapter(base_path, path, rank: int = 4, alpha: float = 8.0, std: float = 0.05,
                         seed: int = 0, targets=PROJECTIONS) -> str:
    """An adapter on every ``targets`` projection of every layer: A ~ N(0, 1/n_in) and
    B ~ N(0, std^2), so the term's size does not grow with the width. Returns its sha256."""
    base = load(base_path)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, info in base.tensors.items():
        parts = name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in targets and parts[3] == "weight":
            n_out, n_in = info.shape
            a = rng.standard_normal((rank, n_in)).astype(np.float32) / np.float32(np.sqrt(n_in))
            b = (rng.standard_normal((n_out, rank)) * std).astype(np.float32)
            tensors[name] = (a, b)
    write_lora_adapter(path, base.architecture, alpha, tensors)
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()
