"""Files from strangers: a model whose header contradicts its tensors, or whose weights hold
NaN/Inf, is a typed error before any kernel runs; never a signal, a raw exception, a hang
or logits the kernels did not compute."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import abi.llm
import model_fuzz
from abi import _kernels
from abi._kernels.finite import F16_SCALES, MXFP4_MAX_EXPONENT, nonfinite_blocks
from abi.errors import InvalidModelError, NonFiniteError
from abi.gguf import GGMLType
from kernel_blocks import sane_blocks

FUZZ_CASES = 2000


def _tiny(tmp_path, arch="llama", edit=None, name="m.gguf"):
    meta, tensors = model_fuzz.base_model(arch, np.random.default_rng(0))
    if edit is not None:
        edit(meta, tensors)
    path = str(tmp_path / name)
    model_fuzz.write(path, meta, tensors)
    return path


def _set(key, value):
    def edit(meta, tensors):
        meta[f"{meta['general.architecture']}.{key}"] = value
    return edit


def _declare(name, shape):
    def edit(meta, tensors):
        tensors[name][2] = shape
    return edit


def _swap(a, b):
    def edit(meta, tensors):
        tensors[a][2], tensors[b][2] = tensors[b][2], tensors[a][2]
    return edit


D, KVD, F = model_fuzz.D, model_fuzz.KV * model_fuzz.HD, model_fuzz.F
# the inconsistent headers that once corrupted the compiled forward's heap, on a tiny model
INCONSISTENT = {
    "swapped same-size shapes": _swap("blk.0.ffn_gate.weight", "blk.0.ffn_down.weight"),
    "transposed attn_k": _declare("blk.0.attn_k.weight", (D, KVD)),
    "embedding_length too small": _set("embedding_length", D - 16),
    "head_count_kv wrong": _set("attention.head_count_kv", 1),
    "head_count_kv zero": _set("attention.head_count_kv", 0),
    "head_count zero": _set("attention.head_count", 0),
    "feed_forward_length wrong": _set("feed_forward_length", 2 * F),
    "rope dimensions beyond the head": _set("rope.dimension_count", 128),
    "rope dimensions odd": _set("rope.dimension_count", 7),
    "rope base zero": _set("rope.freq_base", 0.0),
    "epsilon negative": _set("attention.layer_norm_rms_epsilon", -1e-6),
    "epsilon NaN": _set("attention.layer_norm_rms_epsilon", float("nan")),
    "context zero": _set("context_length", 0),
    "block_count huge": _set("block_count", 1 << 40),
    "head count a string": _set("attention.head_count", "4"),
    "head count a float": _set("attention.head_count", 4.0),
    "vocab larger than the table": _set("vocab_size", 300),
}


@pytest.mark.parametrize("case", sorted(INCONSISTENT))
def test_inconsistent_header_is_refused_in_a_subprocess(tmp_path, case):
    path = _tiny(tmp_path, edit=INCONSISTENT[case])
    code = (model_fuzz.LIMIT_MEMORY + "import sys, abi.llm\nfrom abi.errors import InvalidModelError\n"
            "try:\n    abi.llm.load_model(sys.argv[1]).logits([1, 2, 3])\n"
            "except InvalidModelError as exc:\n    print('refused:', exc); sys.exit(0)\n"
            "sys.exit('loaded')")
    run = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr[-2000:])
    assert "refused:" in run.stdout


@pytest.mark.parametrize("arch", ["qwen3moe", "gpt-oss", "dots1"])
def test_nan_states_in_a_mixture_of_experts_are_a_typed_error(tmp_path, arch):
    """A RoPE factor of 1e30 makes every state NaN: the router then ranks nothing, and the
    compiled forward once read expert -1 out of bounds. Now: a NonFiniteError, in a subprocess."""
    meta, tensors = model_fuzz.base_model(arch, np.random.default_rng(0))
    meta[f"{arch}.rope.scaling.attn_factor"] = 1e30
    path = str(tmp_path / "nan_moe.gguf")
    model_fuzz.write(path, meta, tensors)
    code = (model_fuzz.LIMIT_MEMORY + "import sys, abi.llm\nfrom abi.errors import NonFiniteError\n"
            "try:\n    abi.llm.load_model(sys.argv[1]).logits([1, 2, 3])\n"
            "except NonFiniteError:\n    sys.exit(0)\nsys.exit('no error')")
    run = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])


def test_refusal_names_the_tensor_and_both_shapes(tmp_path):
    path = _tiny(tmp_path, edit=_declare("blk.0.attn_k.weight", (D, KVD)))
    with pytest.raises(InvalidModelError) as err:
        abi.llm.load_model(path)
    assert "blk.0.attn_k.weight" in str(err.value)
    assert str((D, KVD)) in str(err.value) and str((KVD, D)) in str(err.value)


def test_refusal_names_the_key_and_value(tmp_path):
    with pytest.raises(InvalidModelError, match=r"llama\.attention\.head_count_kv.*found 0"):
        abi.llm.load_model(_tiny(tmp_path, edit=_set("attention.head_count_kv", 0)))


def test_fuzzed_models_give_typed_errors_or_agreeing_forwards():
    """A few thousand random inconsistent variants, in memory-limited worker processes."""
    results = model_fuzz.run_cases(FUZZ_CASES, seed=1)
    bad = [r for r in results if r[1] not in ("ok", "typed")]
    assert not bad, bad[:10]
    counts = model_fuzz.summary(results)
    assert sum(counts.values()) == FUZZ_CASES
    # both outcomes are exercised: the mutations are not all fatal, nor all harmless
    assert counts.get("ok", 0) > FUZZ_CASES // 10 and counts.get("typed", 0) > FUZZ_CASES // 2


# -- non-finite values ----------------------------------------------------------------------

SCANNED = [t for t in _kernels.DEQUANTIZE_TYPES if t != GGMLType.Q8_K]


@pytest.mark.parametrize("t", SCANNED, ids=lambda t: t.name)
def test_scan_flags_exactly_the_blocks_that_dequantise_to_non_finite(t):
    """On random bytes (so scale fields take every value, NaN and Inf included) the blocks
    the scan flags are those whose dequantised values are not all finite. MXFP4 is flagged
    from the exponent on which its largest code overflows, whatever its codes."""
    rng = np.random.default_rng(int(t))
    n = 4096
    raw = rng.integers(0, 256, n * t.type_size, dtype=np.uint8)
    with np.errstate(all="ignore"):
        values = _kernels.dequantize_reference(raw, t, (n * t.block_size,)).reshape(n, -1)
    broken = np.flatnonzero(~np.isfinite(values).all(axis=1))
    flagged = nonfinite_blocks(raw, t)
    if t in (GGMLType.F32, GGMLType.F16, GGMLType.BF16):
        assert np.array_equal(flagged, np.flatnonzero(~np.isfinite(values.reshape(-1))))
    elif t == GGMLType.MXFP4:
        assert set(broken) <= set(flagged)
        assert np.array_equal(flagged, np.flatnonzero(raw.reshape(n, -1)[:, 0] > MXFP4_MAX_EXPONENT))
    else:
        assert np.array_equal(flagged, broken)
    assert len(broken) > 0  # random bytes do hit non-finite scales


@pytest.mark.parametrize("t", [GGMLType.Q4_1, GGMLType.Q6_K], ids=lambda t: t.name)
def test_threaded_scan_flags_the_same_blocks(t):
    """A tensor large enough to be split over threads: the blocks flagged are those whose
    scale fields (read here with numpy) have all exponent bits set, wherever they lie."""
    rng = np.random.default_rng(5)
    n = 3 * 65536 + 7
    raw = sane_blocks(t, n, rng, 0.01).reshape(n, t.type_size).copy()
    spots = rng.choice(n, 9, replace=False)
    off = F16_SCALES[t][-1]
    raw[spots, off:off + 2] = np.frombuffer(np.float16(np.inf).tobytes(), np.uint8)
    raw[spots[:3], off + 1] |= 0x7E   # NaNs too
    fields = [raw[:, o].astype(np.uint16) | (raw[:, o + 1].astype(np.uint16) << 8) for o in F16_SCALES[t]]
    expected = np.flatnonzero(np.any([(f & 0x7C00) == 0x7C00 for f in fields], axis=0))
    assert np.array_equal(expected, np.sort(spots))
    for threads in (1, 2, 3):
        assert np.array_equal(nonfinite_blocks(raw.reshape(-1), t, threads), expected)


@pytest.mark.parametrize("t", SCANNED, ids=lambda t: t.name)
def test_scan_passes_sane_blocks(t):
    blocks = sane_blocks(t, 512, np.random.default_rng(3), 0.01) if t not in (
        GGMLType.F32, GGMLType.F16, GGMLType.BF16) else _kernels.quantize(
            np.random.default_rng(3).standard_normal(512 * 32).astype(np.float32), t)
    assert len(nonfinite_blocks(blocks, t)) == 0


def test_nan_in_a_weight_is_refused_at_load_and_skippable(tmp_path):
    def nan_norm(meta, tensors):
        tensors["output_norm.weight"][0] = tensors["output_norm.weight"][0].copy()
        tensors["output_norm.weight"][0][5] = np.nan
    path = _tiny(tmp_path, edit=nan_norm)
    with pytest.raises(InvalidModelError, match=r"output_norm\.weight.*NaN or Inf"):
        abi.llm.load_model(path)
    # skipping the scan: the NaN reaches the logits, which stop the run with a typed error
    # on the compiled forward too (its quantised activations once hid it as finite nonsense)
    model = abi.llm.load_model(path, check_finite=False)
    assert model.forward_path == "compiled"
    with pytest.raises(NonFiniteError):
        model.logits([1, 2, 3])
    with pytest.raises(NonFiniteError):
        model.generate("ab", max_tokens=4, temperature=0)


def test_nan_block_scale_is_refused(tmp_path):
    def nan_scale(meta, tensors):
        raw = tensors["token_embd.weight"][0].copy().reshape(-1, 34)
        raw[17, 0:2] = [0x00, 0x7E]   # f16 NaN
        tensors["token_embd.weight"][0] = raw
    with pytest.raises(InvalidModelError, match=r"'token_embd\.weight' \(Q8_0\) has 1 blocks"):
        abi.llm.load_model(_tiny(tmp_path, edit=nan_scale))


def test_activation_quantisers_carry_nan_and_inf():
    """A NaN or Inf input to an integer product gives a non-finite output, never a finite one."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 512)).astype(np.float32)
    for t in (GGMLType.Q8_0, GGMLType.Q4_1, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.IQ4_NL):
        raw = _kernels.quantize(w, t) if t in _kernels.QUANTIZE_TYPES else sane_blocks(t, 16 * 512 // t.block_size, rng, 0.01)
        for bad in (np.nan, np.inf, -np.inf):
            x = rng.standard_normal((1, 512)).astype(np.float32)
            x[0, 300] = bad
            y = _kernels.qmatmul(raw, t, (16, 512), x)
            assert not np.isfinite(y).any(), (t.name, bad)



def test_server_ends_a_nan_generation_with_finish_reason_error(tmp_path):
    """Served with --no-check, a model whose first generated token has a NaN embedding: the
    first token streams, the next forward is NaN, and the stream's choice ends with
    finish_reason "error" and an error event; the plain request is a typed 500."""
    import json

    import requests
    from serve_helpers import serve

    path = _tiny(tmp_path)
    model = abi.llm.load_model(path)
    first = int(model.logits(model.tokenize("ab"))[-1].argmax())

    def nan_row(meta, tensors):
        raw = tensors["token_embd.weight"][0].copy().reshape(-1, 34)   # Q8_0: 34-byte blocks
        per_row = model_fuzz.D // 32
        raw[first * per_row:(first + 1) * per_row, 0:2] = [0x00, 0x7E]   # f16 NaN scales
        tensors["token_embd.weight"][0] = raw
    path = _tiny(tmp_path, edit=nan_row, name="nan.gguf")
    with serve("--model", path, "--no-check") as server:
        body = {"model": "nan", "prompt": "ab", "max_tokens": 4, "temperature": 0}
        plain = requests.post(server.url + "/v1/completions", json=body, timeout=60)
        assert plain.status_code == 500 and "NaN" in plain.json()["error"]["message"]
        stream = requests.post(server.url + "/v1/completions", json={**body, "stream": True}, timeout=60)
        events = [json.loads(line[6:]) for line in stream.text.splitlines()
                  if line.startswith("data: {")]
    assert events[0]["choices"][0]["text"] == model.detokenize([first])
    finishes = [c["finish_reason"] for e in events for c in e.get("choices", []) if c.get("finish_reason")]
    assert finishes == ["error"] and "NaN" in events[-1]["error"]["message"]
