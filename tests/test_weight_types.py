"""Fail closed on weight types: for every GGML type the reader knows, a tiny llama whose
matrices and embedding are stored in that type either is refused at load with
UnsupportedTensorType, or runs, and then its logits agree with a float64 forward over the
same dequantised weights (the numpy oracle of each type). No type may load and compute
something else."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import abi._kernels as K
import abi.llm
from abi.errors import UnsupportedTensorType
from abi.gguf import GGMLType, load
from tiny_models import write_tiny_model

# The compiled forward quantises each activation row to 8 bits per block (qmatmul's bound:
# ~0.5-0.7 % of a product), through 2 layers whose sharp attention amplifies it. Measured
# relative L2 error of the logits: 2.3-5.0 % on the compiled path, ~1e-6 on the numpy path
# (exact float32 products); a kernel that leaves or mixes up rows is off by ~100 %. Top-1
# flips happen at float64 margins up to 0.14 (logits of ~10). Bound: 8 %, and the same top-1
# wherever the float64 top-2 margin is >= 0.5 (the margin the llama.cpp comparisons use).
REL_TOL = 0.08
MARGIN = 0.5
TOKENS = [5, 77, 258, 3, 140, 200, 12, 99, 31, 250, 7, 64]


def _dq(gguf, name) -> np.ndarray:
    info = gguf.tensors[name]
    return K.dequantize_reference(gguf.tensor_data(name), info.ggml_type, info.shape).astype(np.float64)


def reference_logits(path, ids) -> np.ndarray:
    """float64 llama forward (non-NeoX RoPE, GQA, SwiGLU, tied output) from the file."""
    g = load(path)
    md, arch = g.metadata, g.architecture
    D, L = md[f"{arch}.embedding_length"], md[f"{arch}.block_count"]
    H, KV = md[f"{arch}.attention.head_count"], md[f"{arch}.attention.head_count_kv"]
    eps, base = md[f"{arch}.attention.layer_norm_rms_epsilon"], md[f"{arch}.rope.freq_base"]
    hd, T = D // H, len(ids)

    def norm(x, name):
        w = g.tensor_array(name).astype(np.float64)
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(x):                                   # (T, heads, hd), consecutive pairs
        inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * c - b * s, a * s + b * c
        return out

    embd = _dq(g, "token_embd.weight")
    x = embd[np.asarray(ids)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(L):
        p = f"blk.{i}."
        h = norm(x, p + "attn_norm.weight")
        q = rope((h @ _dq(g, p + "attn_q.weight").T).reshape(T, H, hd))
        k = rope((h @ _dq(g, p + "attn_k.weight").T).reshape(T, KV, hd))
        v = (h @ _dq(g, p + "attn_v.weight").T).reshape(T, KV, hd)
        att = np.empty((T, H, hd))
        for hh in range(H):
            kv = hh // (H // KV)
            s = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask
            w = np.exp(s - s.max(-1, keepdims=True))
            att[:, hh] = (w / w.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + att.reshape(T, D) @ _dq(g, p + "attn_output.weight").T
        h = norm(x, p + "ffn_norm.weight")
        gate, up = h @ _dq(g, p + "ffn_gate.weight").T, h @ _dq(g, p + "ffn_up.weight").T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ _dq(g, p + "ffn_down.weight").T
    out = _dq(g, "output.weight") if "output.weight" in g.tensors else embd
    return norm(x, "output_norm.weight") @ out.T


def _agreement(logits: np.ndarray, ref: np.ndarray) -> tuple[float, bool]:
    rel = float(np.linalg.norm(logits - ref) / np.linalg.norm(ref))
    top2 = np.sort(ref, axis=-1)[:, -2:]
    confident = top2[:, 1] - top2[:, 0] >= MARGIN
    same = bool(np.all(logits.argmax(-1)[confident] == ref.argmax(-1)[confident]))
    return rel, same


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("types")


@pytest.mark.parametrize("t", list(GGMLType), ids=lambda t: t.name)
def test_every_type_is_refused_or_computed_right(t, tiny_dir, caplog):
    path = str(tiny_dir / f"tiny_{t.name.lower()}.gguf")
    write_tiny_model(path, "llama", t, seed=int(t))
    try:
        with caplog.at_level(logging.INFO, logger="abi.llm"):
            model = abi.llm.load_model(path, backend="cpu")
    except UnsupportedTensorType as exc:
        assert t.name in str(exc) and "token_embd.weight" in str(exc)
        assert t not in K.DEQUANTIZE_TYPES     # refused only where abi really has no kernel
        return
    assert t in K.DEQUANTIZE_TYPES
    # the compiled forward wherever it has the product; otherwise routed, and the log says so
    expected_path = "compiled" if t in K.MATMUL_TYPES else "numpy"
    assert model.forward_path == expected_path
    if expected_path == "numpy":
        assert f"no {t.name} product" in caplog.text
    ref = reference_logits(path, TOKENS)
    logits = model.logits(TOKENS).astype(np.float64)
    assert np.all(np.isfinite(logits))
    rel, same_top1 = _agreement(logits, ref)
    assert rel <= REL_TOL, f"{t.name}: relative error {rel:.4f}"
    assert same_top1, f"{t.name}: top-1 differs at a confident position"
    # the numpy forward of the architecture computes the same model too
    rel_np, same_np = _agreement(model.arch.forward(TOKENS, model.new_cache(), "all").astype(np.float64), ref)
    assert rel_np <= REL_TOL and same_np, f"{t.name}: numpy forward relative error {rel_np:.4f}"


def test_compiled_decoder_refuses_a_type_without_product(tiny_dir):
    """The compiled forward itself refuses a matrix it has no row product for (no unwritten
    outputs), whatever the caller checked before."""
    from abi.llm._decode import Decoder

    # the activation-only formats are dequantisable but have no row product as weights
    t = GGMLType.Q8_K
    assert t in K.DEQUANTIZE_TYPES and t not in K.MATMUL_TYPES
    path = str(tiny_dir / f"tiny_direct_{t.name.lower()}.gguf")
    write_tiny_model(path, "llama", t, seed=1)
    model = abi.llm.load_model(path, backend="cpu")
    assert model.forward_path == "numpy"
    with pytest.raises(UnsupportedTensorType, match=t.name):
        Decoder(model.arch, 1, 8)
