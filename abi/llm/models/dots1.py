"""dots.llm1 (rednote-hilab): Qwen3's attention (per-head Q/K norms, NeoX RoPE; as many K/V heads as
query heads) with a
mixture of experts gated as DeepSeek-V3's: the router's probabilities by the file's
``expert_gating_func`` (sigmoid in the released models), experts selected by the
probabilities plus a learned selection bias (``exp_probs_b``) but weighted by the unbiased
ones, normalised where ``expert_weights_norm`` says and scaled by ``expert_weights_scale``;
beside them ungated shared experts (``expert_shared_count`` of them, one FFN
``expert_shared_count * expert_feed_forward_length`` wide). The first
``leading_dense_block_count`` layers have a dense FFN instead."""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import UnsupportedModelError
from ..hparams import Metadata
from .decoder import Model, expert_gating
from .qwen3 import ModelArgs as Qwen3Args

__all__ = ["Model", "ModelArgs"]


@dataclass(frozen=True)
class ModelArgs(Qwen3Args):
    @classmethod
    def from_gguf(cls, metadata: dict) -> "ModelArgs":
        base = super().from_gguf(metadata)
        arch = base.arch
        if f"{arch}.expert_feed_forward_length" not in metadata:   # llama.cpp needs it
            raise UnsupportedModelError(f"metadata key '{arch}.expert_feed_forward_length' is missing")
        if not base.n_expert:
            raise UnsupportedModelError(f"{arch}: expert_count and expert_used_count must be > 0")
        if base.n_kv_heads != base.n_heads:   # llama.cpp loads K and V as wide as Q
            raise UnsupportedModelError(f"{arch}: head_count_kv {base.n_kv_heads} differs from head_count "
                                        f"{base.n_heads}, which llama.cpp does not load")
        m = Metadata(metadata, arch)
        return base.with_recipe(
            expert_gating=expert_gating(m),   # without the key llama.cpp aborts: required
            expert_norm=m.flag("expert_weights_norm", False), expert_probs_bias=True,
            n_dense_lead=m.int("leading_dense_block_count", 0, lo=0, hi=base.n_layers),
            n_ff_shexp=base.n_ff_exp * m.int("expert_shared_count"))
