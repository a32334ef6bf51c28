"""Tiny random-weight GGUF models, written deterministically with abi's own writer and
quantiser, for checking each architecture and weight type against llama.cpp
(tools/make_reference.py tiny records llama.cpp's logits for them)."""
from __future__ import annotations

import hashlib

import numpy as np

from abi import _kernels
from abi.gguf import GGMLType, GGUFValueType, GGUFWriter

N_EMBD, N_FF, N_HEAD, N_KV, N_LAYER = 256, 512, 4, 2, 2
HEAD_DIM = N_EMBD // N_HEAD
N_VOCAB = 260

T = GGMLType
TINY_CASES = [(f"llama_{t.name.lower()}", "llama", t) for t in (
    T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K)]
# every other weight type the runtime runs (random valid blocks where abi has no quantiser)
TINY_CASES += [(f"llama_{t.name.lower()}", "llama", t) for t in (
    T.Q2_K, T.Q3_K, T.IQ4_NL, T.IQ4_XS, T.IQ3_XXS, T.IQ3_S, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_S,
    T.IQ1_M, T.TQ1_0, T.TQ2_0, T.MXFP4)]
TINY_CASES += [("qwen2_q8_0", "qwen2", T.Q8_0), ("gemma3_q8_0", "gemma3", T.Q8_0),
               ("llama_yarn_q8_0", "llama", T.Q8_0), ("qwen2_linear_q8_0", "qwen2", T.Q8_0)]
# the families of the decoder recipe, in the tensor names and keys llama.cpp's converter writes
FAMILIES = ("qwen3", "olmo2", "gemma2", "granite", "smollm3", "phi3")
TINY_CASES += [(f"{arch}_q8_0", arch, T.Q8_0) for arch in FAMILIES]
# mixtures of experts: (experts, used per token, expert FFN width) by case
MOE = {"qwen3moe_q8_0": (4, 2, 128), "llama_moe_q8_0": (4, 2, N_FF), "granitemoe_q8_0": (4, 2, N_FF),
       "gpt-oss_q8_0": (8, 4, 128), "qwen2moe_q8_0": (4, 2, 128), "dots1_q8_0": (8, 2, 128)}
TINY_CASES += [("qwen3moe_q8_0", "qwen3moe", T.Q8_0), ("llama_moe_q8_0", "llama", T.Q8_0),
               ("granitemoe_q8_0", "granitemoe", T.Q8_0), ("gpt-oss_q8_0", "gpt-oss", T.Q8_0),
               ("qwen2moe_q8_0", "qwen2moe", T.Q8_0), ("dots1_q8_0", "dots1", T.Q8_0)]
# the others' experts are feed_forward_length wide
OWN_EXPERT_WIDTH = ("qwen3moe", "gpt-oss", "qwen2moe", "dots1")
# shared experts: the width key qwen2moe's converter writes, the count dots1's does
SHARED_EXPERT = {"qwen2moe": {"expert_shared_feed_forward_length": 192},
                 "dots1": {"expert_shared_count": 2, "leading_dense_block_count": 1,
                           "expert_gating_func": 2, "expert_weights_norm": True,
                           "expert_weights_scale": 2.5}}
N_LAYERS = {"smollm3": 4, "dots1": 3}   # smollm3's RoPE-less fourth; dots1's dense first
# llama.cpp requires output.weight for OLMo 2, Qwen2-MoE and dots1; for Gemma 3 a separate one keeps the logits
# soft (the tied, sqrt(D)-scaled embedding makes every position predict its own input token)
SEPARATE_OUTPUT = {"olmo2", "gemma3", "gpt-oss", "qwen2moe", "dots1"}
# Gemma 2 must tie its output: strong post-norms let the layers outweigh the embedding instead
POST_NORM_GAIN = {"gemma2": 6.0}
# metadata of the families beyond the shared keys (after "{arch}.")
EXTRA_KEYS = {
    "qwen3": {"attention.key_length": HEAD_DIM, "attention.value_length": HEAD_DIM},
    "qwen3moe": {"attention.key_length": HEAD_DIM, "attention.value_length": HEAD_DIM},
    "dots1": {"attention.key_length": HEAD_DIM, "attention.value_length": HEAD_DIM},
    "gpt-oss": {"attention.key_length": HEAD_DIM, "attention.value_length": HEAD_DIM,
                "attention.sliding_window": 8},
    "gemma2": {"attention.key_length": HEAD_DIM, "attention.value_length": HEAD_DIM,
               "attention.sliding_window": 8, "attn_logit_softcapping": 50.0,
               "final_logit_softcapping": 30.0},
    "gemma3": {"attention.key_length": HEAD_DIM, "attention.value_length": HEAD_DIM,
               "attention.sliding_window": 8, "attention.sliding_window_pattern": 2},
    "granite": {"embedding_scale": 12.0, "residual_scale": 0.22, "attention.scale": 0.0078125,
                "logit_scale": 8.0},
    "phi3": {"rope.scaling.original_context_length": 32, "rope.scaling.attn_factor": 1.19},
    "granitemoe": {"embedding_scale": 12.0, "residual_scale": 0.22, "attention.scale": 0.0078125,
                   "logit_scale": 8.0},
}
# RoPE scaling of the cases that test it (metadata keys after "{arch}.")
ROPE_SCALING = {
    "gpt-oss_q8_0": {"rope.scaling.type": "yarn", "rope.scaling.factor": 4.0,
                     "rope.scaling.original_context_length": 64},
    "llama_yarn_q8_0": {"rope.scaling.type": "yarn", "rope.scaling.factor": 4.0,
                        "rope.scaling.original_context_length": 64},
    "qwen2_linear_q8_0": {"rope.scaling.type": "linear", "rope.scaling.factor": 2.0},
}


def _byte_tokens() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def _vocab() -> tuple[list[str], list[int]]:
    tokens = _byte_tokens() + ["Ġt", "Ġa", "<|endoftext|>", "<|im_end|>"]
    types = [1] * 258 + [3, 3]
    return tokens, types


def _random_k_blocks(x: np.ndarray, qtype: GGMLType, rng) -> np.ndarray:
    """Valid blocks of a k-quant we have no quantiser for: random quants and scales, with
    the leading f16 super-block scales (d, dmin) set to a value matching x's spread."""
    n_blocks = x.size // qtype.block_size
    raw = rng.integers(0, 256, (n_blocks, qtype.type_size), dtype=np.uint8)
    d = np.full(n_blocks, x.std() / 64, np.float16)
    raw[:, 0:2] = d.view(np.uint8).reshape(-1, 2)
    raw[:, 2:4] = d.view(np.uint8).reshape(-1, 2)
    return raw.reshape(x.shape[0], -1)


def _random_blocks_like(x: np.ndarray, qtype: GGMLType, rng) -> np.ndarray:
    """Valid blocks of any type we cannot quantise to: random quants, with the scales set so
    the dequantised values have x's spread (raw random bytes where abi cannot dequantise)."""
    from kernel_blocks import sane_blocks

    n_blocks = x.size // qtype.block_size
    if qtype not in _kernels.DEQUANTIZE_TYPES:
        return rng.integers(0, 256, (x.shape[0], x.size // x.shape[0] // qtype.block_size * qtype.type_size),
                            dtype=np.uint8)
    seed = int(rng.integers(1 << 32))

    def blocks(scale):
        return sane_blocks(qtype, n_blocks, np.random.default_rng(seed), scale)

    spread = float(np.std(_kernels.dequantize_reference(blocks(0.01), qtype, (x.size,))))
    out = blocks(0.01 * float(x.std()) / spread)
    return out.reshape(x.shape[0], -1)


# The recorded llama.cpp references (tests/fixtures/tiny) were made with random Q5_K blocks,
# from before we had a Q5_K quantiser: keep them so the file digests still match.
_RANDOM_BLOCKS = {T.Q5_K}


def _weight(w: GGUFWriter, name: str, x: np.ndarray, qtype: GGMLType, rng) -> None:
    if qtype in (T.F32, T.F16):
        w.add_tensor(name, x.astype(np.float32 if qtype == T.F32 else np.float16))
    elif qtype in _RANDOM_BLOCKS:
        w.add_tensor(name, _random_k_blocks(x, qtype, rng), qtype, shape=x.shape)
    elif qtype in _kernels.QUANTIZE_TYPES:
        w.add_tensor(name, _kernels.quantize(x.astype(np.float32), qtype), qtype, shape=x.shape)
    else:
        w.add_tensor(name, _random_blocks_like(x, qtype, rng), qtype, shape=x.shape)


def write_tiny_model(path, arch: str, qtype: GGMLType, seed: int = 0, name: str = "", dims: dict | None = None,
                     stack_types: dict | None = None) -> str:
    """Write the model and return its sha256 (fixtures record it to detect drift). ``dims``
    overrides sizes (n_embd, n_ff, n_head, n_kv, n_layer, n_ff_exp) for smaller models, ``stack_types``
    the type of expert stacks by name ("ffn_up_exps": Q4_0); the recorded fixtures use neither."""
    dims = dims or {}
    N_EMBD, N_FF = dims.get("n_embd", globals()["N_EMBD"]), dims.get("n_ff", globals()["N_FF"])
    N_HEAD, N_KV = dims.get("n_head", globals()["N_HEAD"]), dims.get("n_kv", globals()["N_KV"])
    if arch == "dots1":   # llama.cpp loads its K and V as wide as Q: no grouped queries
        N_KV = N_HEAD
    HEAD_DIM = N_EMBD // N_HEAD
    rng = np.random.default_rng(seed)
    w = GGUFWriter(path)
    for key, value in ROPE_SCALING.get(name, {}).items():
        w.add_metadata(f"{arch}.{key}", value)
    w.add_metadata("general.architecture", arch)
    # llama.cpp sets token attributes by model name ("phi3": "</s>", ...), which this vocabulary lacks
    w.add_metadata("general.name", f"tiny {'p3' if arch == 'phi3' else arch} {qtype.name}")
    w.add_metadata(f"{arch}.context_length", 256)
    w.add_metadata(f"{arch}.embedding_length", N_EMBD)
    n_layer = dims.get("n_layer", N_LAYERS.get(arch, N_LAYER))
    w.add_metadata(f"{arch}.block_count", n_layer)
    w.add_metadata(f"{arch}.feed_forward_length", N_FF)
    w.add_metadata(f"{arch}.attention.head_count", N_HEAD)
    w.add_metadata(f"{arch}.attention.head_count_kv", N_KV)
    w.add_metadata(f"{arch}.rope.freq_base", 10000.0)
    w.add_metadata(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    for key, value in EXTRA_KEYS.get(arch, {}).items():
        if key in ("attention.key_length", "attention.value_length"):
            value = HEAD_DIM
        w.add_metadata(f"{arch}.{key}", value)
    if name in MOE:
        n_exp, n_used, n_ff_exp = MOE[name]
        n_ff_exp = dims.get("n_ff_exp", n_ff_exp) if arch in OWN_EXPERT_WIDTH else N_FF
        w.add_metadata(f"{arch}.expert_count", n_exp)
        w.add_metadata(f"{arch}.expert_used_count", n_used)
        if arch in OWN_EXPERT_WIDTH:
            w.add_metadata(f"{arch}.expert_feed_forward_length", n_ff_exp)
        for key, value in SHARED_EXPERT.get(arch, {}).items():
            w.add_metadata(f"{arch}.{key}", value)
        n_ff_shexp = {"qwen2moe": SHARED_EXPERT["qwen2moe"]["expert_shared_feed_forward_length"],
                      "dots1": n_ff_exp * SHARED_EXPERT["dots1"]["expert_shared_count"]}.get(arch, 0)
    tokens, types = _vocab()
    w.add_metadata("tokenizer.ggml.model", "gpt2")
    w.add_metadata("tokenizer.ggml.pre", "default")
    w.add_metadata("tokenizer.ggml.tokens", tokens)
    w.add_metadata("tokenizer.ggml.token_type", types, GGUFValueType.INT32)
    w.add_metadata("tokenizer.ggml.merges", ["Ġ t", "Ġ a"])
    w.add_metadata("tokenizer.ggml.eos_token_id", 258)
    w.add_metadata("tokenizer.ggml.bos_token_id", 258)
    w.add_metadata("tokenizer.ggml.add_bos_token", False)

    def mat(rows, cols, gain=1.0):
        return rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(gain / np.sqrt(cols))

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    embd_type = qtype if qtype not in (T.F16, T.BF16) else T.F32  # llama.cpp reads any; keep one
    # small enough that the tied output gives logits of a few units: soft, informative distributions
    embd = (0.15 * rng.standard_normal((N_VOCAB, N_EMBD))).astype(np.float32)
    _weight(w, "token_embd.weight", embd, embd_type, rng)
    w.add_tensor("output_norm.weight", norm(N_EMBD))
    if arch == "phi3":   # LongRoPE factors (the long ones apply: contexts past 32 tokens)
        for kind, spread in (("long", 3.0), ("short", 0.5)):
            w.add_tensor(f"rope_factors_{kind}.weight",
                         (1.0 + spread * rng.random(HEAD_DIM // 2)).astype(np.float32))
    if arch in SEPARATE_OUTPUT:
        _weight(w, "output.weight", (0.15 * rng.standard_normal((N_VOCAB, N_EMBD))).astype(np.float32), qtype, rng)
    pre_norms = arch != "olmo2"
    post_norms = arch in ("gemma2", "gemma3", "olmo2")
    for i in range(n_layer):
        p = f"blk.{i}."
        if pre_norms:
            w.add_tensor(p + "attn_norm.weight", norm(N_EMBD))
        if arch == "phi3":   # fused, as its converter writes it
            qkv = [mat(N_HEAD * HEAD_DIM, N_EMBD, 2.0), mat(N_KV * HEAD_DIM, N_EMBD, 2.0), mat(N_KV * HEAD_DIM, N_EMBD)]
            _weight(w, p + "attn_qkv.weight", np.concatenate(qkv), qtype, rng)
        else:
            _weight(w, p + "attn_q.weight", mat(N_HEAD * HEAD_DIM, N_EMBD, 2.0), qtype, rng)
            _weight(w, p + "attn_k.weight", mat(N_KV * HEAD_DIM, N_EMBD, 2.0), qtype, rng)
            _weight(w, p + "attn_v.weight", mat(N_KV * HEAD_DIM, N_EMBD), qtype, rng)
        _weight(w, p + "attn_output.weight", mat(N_EMBD, N_HEAD * HEAD_DIM), qtype, rng)
        if pre_norms:   # gpt-oss stores its pre-FFN norm under the post-attention name
            w.add_tensor(p + ("post_attention_norm" if arch == "gpt-oss" else "ffn_norm") + ".weight", norm(N_EMBD))
        if name in MOE and i >= SHARED_EXPERT.get(arch, {}).get("leading_dense_block_count", 0):
            # a router (kept F32, as llama.cpp's converter does) and stacked experts
            w.add_tensor(p + "ffn_gate_inp.weight", mat(n_exp, N_EMBD, 4.0))
            for part, rows, cols in (("gate", n_ff_exp, N_EMBD), ("up", n_ff_exp, N_EMBD), ("down", N_EMBD, n_ff_exp)):
                stack = np.concatenate([mat(rows, cols) for _ in range(n_exp)])
                t = (stack_types or {}).get(f"ffn_{part}_exps", qtype)
                w.add_tensor(p + f"ffn_{part}_exps.weight", _kernels.quantize(stack, t), t,
                             shape=(n_exp, rows, cols))
            if n_ff_shexp:   # the shared expert, its one-row gate kept F32 as the converter does
                _weight(w, p + "ffn_gate_shexp.weight", mat(n_ff_shexp, N_EMBD), qtype, rng)
                _weight(w, p + "ffn_up_shexp.weight", mat(n_ff_shexp, N_EMBD), qtype, rng)
                _weight(w, p + "ffn_down_shexp.weight", mat(N_EMBD, n_ff_shexp), qtype, rng)
            if arch == "qwen2moe":
                w.add_tensor(p + "ffn_gate_inp_shexp.weight", mat(1, N_EMBD, 4.0).reshape(-1))
            if arch == "dots1":   # the selection bias, of the scale of sigmoid probabilities
                w.add_tensor(p + "exp_probs_b.bias", (0.2 * rng.standard_normal(n_exp)).astype(np.float32))
        elif arch == "phi3":   # gate rows, then up rows, in one tensor
            _weight(w, p + "ffn_up.weight", np.concatenate([mat(N_FF, N_EMBD), mat(N_FF, N_EMBD)]), qtype, rng)
            _weight(w, p + "ffn_down.weight", mat(N_EMBD, N_FF), qtype, rng)
        else:
            _weight(w, p + "ffn_gate.weight", mat(N_FF, N_EMBD), qtype, rng)
            _weight(w, p + "ffn_up.weight", mat(N_FF, N_EMBD), qtype, rng)
            _weight(w, p + "ffn_down.weight", mat(N_EMBD, N_FF), qtype, rng)
        if arch == "gpt-oss":   # biases on every product, the router's included, and the sinks
            for n, size in (("attn_q", N_HEAD * HEAD_DIM), ("attn_k", N_KV * HEAD_DIM), ("attn_v", N_KV * HEAD_DIM),
                            ("attn_output", N_EMBD), ("ffn_gate_inp", n_exp)):
                w.add_tensor(p + n + ".bias", (0.1 * rng.standard_normal(size)).astype(np.float32))
            for part, rows in (("gate", n_ff_exp), ("up", n_ff_exp), ("down", N_EMBD)):
                w.add_tensor(p + f"ffn_{part}_exps.bias", (0.1 * rng.standard_normal((n_exp, rows))).astype(np.float32))
            w.add_tensor(p + "attn_sinks.weight", rng.standard_normal(N_HEAD).astype(np.float32))
        if arch in ("qwen2", "qwen2moe"):
            for n, size in (("attn_q", N_HEAD * HEAD_DIM), ("attn_k", N_KV * HEAD_DIM), ("attn_v", N_KV * HEAD_DIM)):
                w.add_tensor(p + n + ".bias", (0.1 * rng.standard_normal(size)).astype(np.float32))
        if arch in ("gemma3", "qwen3", "qwen3moe", "dots1"):
            w.add_tensor(p + "attn_q_norm.weight", norm(HEAD_DIM))
            w.add_tensor(p + "attn_k_norm.weight", norm(HEAD_DIM))
        if arch == "olmo2":   # over all heads at once
            w.add_tensor(p + "attn_q_norm.weight", norm(N_HEAD * HEAD_DIM))
            w.add_tensor(p + "attn_k_norm.weight", norm(N_KV * HEAD_DIM))
        if post_norms:
            gain = np.float32(POST_NORM_GAIN.get(arch, 1.0))
            w.add_tensor(p + "post_attention_norm.weight", norm(N_EMBD) * gain)
            w.add_tensor(p + "post_ffw_norm.weight", norm(N_EMBD) * gain)
    w.write()
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()
