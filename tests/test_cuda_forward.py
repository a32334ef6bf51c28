"""The CUDA forward pass and device sampling against the numpy forward, end to end, on tiny
random-weight models (llama, qwen2, gemma3; legacy quants, and K-quants with the unfused
paths; every family of the decoder recipe, mixtures of experts included, at reduced sizes).
In CI this runs in numba's CUDA simulator; ``pytest --backend cuda`` on a GPU.

Tolerances, against each architecture's numpy ``forward`` on the same weights:
- with an f16 KV cache (what the device stores): max |delta logit| <= 1e-3 * max |logit|
  and the same argmax at every position. Float32 results agree to ~1e-7, but a key that
  differs in its last float32 bit can round to the neighbouring f16 value; one such key
  moves the logits by up to ~2e-4 of their scale [measured in the simulator: 1e-7 where no
  key flips, <= 1.6e-4 with flips; the recipe families 9e-8 .. 1.1e-4, against a numpy
  forward whose one-row products are exact (``exact_products``), and 5e-4 for gemma2,
  whose numpy GeGLU reads llama.cpp's CPU f16 table where the device computes the float32
  tanh form];
- with the CPU's f32 KV cache: <= 5e-3 * max |logit| [measured <= 1.5e-3];
- against the CPU backend's compiled forward (``Model.logits``, which rounds activations to
  8 bits inside its products): mean KL <= 1e-3 [measured <= 1.4e-5]."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

BACKEND = os.environ.get("ABI_TEST_BACKEND", "cpu")
if BACKEND != "cuda":
    if "numba.cuda" in sys.modules and not sys.modules["numba.core.config"].ENABLE_CUDASIM:
        pytest.skip("numba.cuda was imported without the simulator before this module",
                    allow_module_level=True)
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba.core.config" in sys.modules:
        sys.modules["numba.core.config"].reload_config()
    import numba.cuda  # noqa: E402,F401  (now the simulator, for this whole process)

    del os.environ["NUMBA_ENABLE_CUDASIM"]  # but not for the subprocesses other tests start

from abi import _kernels  # noqa: E402
from abi.errors import BackendUnavailable  # noqa: E402
from abi.gguf import GGMLType as T, GGUFValueType, GGUFWriter  # noqa: E402
from abi.llm import load_model, sampling as host_sampling  # noqa: E402
from abi.llm.fidelity import log_softmax  # noqa: E402
from abi.llm.cuda_forward import CudaDecoder, DeviceSampling  # noqa: E402
from abi.llm.engine import Engine  # noqa: E402
from tiny_models import FAMILIES, MOE, TINY_CASES, _vocab, write_tiny_model  # noqa: E402

SIM = BACKEND != "cuda"


@pytest.fixture(autouse=True, scope="module")
def _fast_simulator():
    old = sys.getswitchinterval()
    sys.setswitchinterval(5e-4)  # see test_cuda_kernels
    yield
    sys.setswitchinterval(old)


def write_model(path, arch, types, D=64, F=128, H=4, KV=2, L=2, seed=0, output=None, extra=None, biases=()):
    """A tiny random model; ``types`` maps a tensor role (attn_q, ffn_down, token_embd ...)
    to its GGML type, ``"*"`` the default; ``output``: the type of a separate output matrix;
    ``biases``: the products given a bias."""
    rng = np.random.default_rng(seed)
    hd = D // H
    w = GGUFWriter(path)
    meta = {"context_length": 128, "embedding_length": D, "block_count": L, "feed_forward_length": F,
            "attention.head_count": H, "attention.head_count_kv": KV, "rope.freq_base": 10000.0,
            "attention.layer_norm_rms_epsilon": 1e-6, **(extra or {})}
    w.add_metadata("general.architecture", arch)
    for k, v in meta.items():
        w.add_metadata(f"{arch}.{k}", v)
    if arch == "gemma3":
        w.add_metadata("gemma3.attention.key_length", hd)
        w.add_metadata("gemma3.attention.value_length", hd)
        w.add_metadata("gemma3.attention.sliding_window", 6)
        w.add_metadata("gemma3.attention.sliding_window_pattern", 2)
        w.add_metadata("gemma3.rope.freq_base_swa", 500.0)
    tokens, ttypes = _vocab()
    for k, v in (("model", "gpt2"), ("pre", "default"), ("tokens", tokens), ("merges", ["Ġ t", "Ġ a"]),
                 ("eos_token_id", 258), ("bos_token_id", 258), ("add_bos_token", False)):
        w.add_metadata(f"tokenizer.ggml.{k}", v)
    w.add_metadata("tokenizer.ggml.token_type", ttypes, GGUFValueType.INT32)

    def put(name, x, role):
        t = types.get(role, types["*"])
        if t in (T.F32, T.F16):
            w.add_tensor(name, x.astype(np.float32 if t == T.F32 else np.float16))
        else:
            w.add_tensor(name, _kernels.quantize(x, t), t, shape=x.shape)

    def mat(rows, cols, gain=1.0):
        return (rng.standard_normal((rows, cols)) * (gain / np.sqrt(cols))).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    put("token_embd.weight", rng.standard_normal((len(tokens), D)).astype(np.float32), "token_embd")
    w.add_tensor("output_norm.weight", norm(D))
    if output is not None:
        put("output.weight", mat(len(tokens), D, 4.0), "output")
    for i in range(L):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", norm(D))
        put(p + "attn_q.weight", mat(H * hd, D, 2.0), "attn_q")
        put(p + "attn_k.weight", mat(KV * hd, D, 2.0), "attn_k")
        put(p + "attn_v.weight", mat(KV * hd, D), "attn_v")
        put(p + "attn_output.weight", mat(D, H * hd), "attn_output")
        w.add_tensor(p + "ffn_norm.weight", norm(D))
        put(p + "ffn_gate.weight", mat(F, D), "ffn_gate")
        put(p + "ffn_up.weight", mat(F, D), "ffn_up")
        put(p + "ffn_down.weight", mat(D, F), "ffn_down")
        if arch == "qwen2":
            for n, size in (("attn_q", H * hd), ("attn_k", KV * hd), ("attn_v", KV * hd)):
                w.add_tensor(p + n + ".bias", (0.1 * rng.standard_normal(size)).astype(np.float32))
        sizes = {"attn_q": H * hd, "attn_k": KV * hd, "attn_v": KV * hd, "attn_output": D, "ffn_gate": F,
                 "ffn_up": F, "ffn_down": D}
        for n in biases:
            w.add_tensor(p + n + ".bias", (0.3 * rng.standard_normal(sizes[n])).astype(np.float32))
        if arch == "gemma3":
            for n, size in (("attn_q_norm", hd), ("attn_k_norm", hd), ("post_attention_norm", D),
                            ("post_ffw_norm", D)):
                w.add_tensor(p + n + ".weight", norm(size))
    w.write()
    return str(path)


@pytest.fixture
def cuda_backend(monkeypatch):
    """backend="cuda" selects the simulator's device in CI (select_backend finds no driver)."""
    if SIM:
        from abi.llm import backend

        monkeypatch.setattr(backend, "select_backend", lambda name="auto": "cuda" if name == "cuda" else "cpu")


CASES = {  # arch, tensor types, model dims, (prompt tokens, n_batch, prompt output, decode steps)
    "llama_q4_0": ("llama", {"*": T.Q4_0}, dict(L=1), (10, 8, "all", 2)),
    "qwen2_q8_0": ("qwen2", {"*": T.Q8_0, "token_embd": T.Q4_1}, dict(L=1), (10, 8, "all", 2)),
    # two layers: a local (window 6, own RoPE base) then a global one, post-norms between
    "gemma3_q8_0": ("gemma3", {"*": T.Q8_0, "ffn_down": T.Q5_0}, {}, (10, 8, "all", 2)),
    # YaRN: scaled frequencies and the magnitude factor on cos/sin
    "llama_yarn": ("llama", {"*": T.Q8_0}, dict(L=1, extra={
        "rope.scaling.type": "yarn", "rope.scaling.factor": 4.0,
        "rope.scaling.original_context_length": 32}), (10, 8, "all", 2)),
    # K-quants, with Q/K/V and gate/up of different types (no fused launches), separate output;
    # wider (256 columns), so fewer simulated tokens: one prompt batch, one decode step
    "llama_kquants": ("llama", {"*": T.Q4_K, "attn_v": T.Q6_K, "ffn_up": T.Q5_1, "ffn_down": T.Q6_K,
                                "token_embd": T.Q8_0, "output": T.F16},
                      dict(D=256, F=256, H=4, KV=1, L=1, output=True), (3, 4, "last", 1)),
    # a bias on every product (llama.cpp reads any a file has): the fused gate-up gemv adds
    # the up rows' bias too
    "llama_biases": ("llama", {"*": T.Q8_0}, dict(D=32, F=64, H=2, KV=1, L=1, biases=(
        "attn_q", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")), (3, 4, "all", 1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_the_numpy_forward(tmp_path, case):
    arch, types, dims, (n_prompt, n_batch, prompt_output, n_decode) = CASES[case]
    path = write_model(tmp_path / f"{case}.gguf", arch, types, **dims)
    model = load_model(path, n_ctx=64)
    ids = [5, 17, 200, 33, 9, 41, 120, 7, 8, 99, 250, 3][:n_prompt + n_decode]
    ref32 = model.arch.forward(ids, model.arch.new_cache(64), "all")
    ref16 = model.arch.forward(ids, model.arch.new_cache(64, "f16"), "all")
    dec = CudaDecoder(model.arch, n_batch=n_batch)
    cache = model.new_cache()
    prompt = dec.forward(ids[:n_prompt], cache, prompt_output)  # prefill kernels
    steps = [dec.forward([t], cache, "last") for t in ids[n_prompt:]]  # one token at a time
    got = np.concatenate([prompt] + steps)
    rows = slice(0, None) if prompt_output == "all" else slice(n_prompt - 1, None)
    ref16, ref32 = ref16[rows], ref32[rows]
    assert cache.length == len(ids) and cache.tokens == ids
    scale = np.abs(ref16).max()
    assert np.abs(got - ref16).max() <= 1e-3 * scale
    assert np.array_equal(got.argmax(axis=1), ref16.argmax(axis=1))
    assert np.abs(got - ref32).max() <= 5e-3 * scale
    p, q = log_softmax(model.logits(ids)[rows]), log_softmax(got)  # the CPU backend's compiled path
    assert (np.exp(p) * (p - q)).sum(-1).mean() <= 1e-3


# every family of the decoder recipe (no pre-norms and Q/K norms over all heads: olmo2; soft-caps
# and post-norms: gemma2; residual, logit and embedding scales: granite; RoPE-less layers:
# smollm3; LongRoPE and fused tensors: phi3; mixtures of experts: qwen3moe, Mixtral-style llama,
# granitemoe; attention sinks, the clamped SwiGLU and biases on every expert: gpt-oss; shared
# experts: qwen2moe (gated), dots1 (with sigmoid routing and a selection bias)), as
# tests/tiny_models.py writes them for the llama.cpp fixtures, but smaller
FAMILY_CASES = [(*c, None) for c in TINY_CASES if c[1] in FAMILIES or c[0] in MOE]
# expert gate and up stacks of different types: separate expert products (gpt-oss: each stack
# with its own biases), then the GLU kernel
FAMILY_CASES += [("qwen3moe_q8_0", "qwen3moe", T.Q8_0, {"ffn_up_exps": T.Q4_0}),
                 ("gpt-oss_q8_0", "gpt-oss", T.Q8_0, {"ffn_up_exps": T.Q4_0})]
SMALL = dict(n_embd=32, n_ff=32, n_head=2, n_kv=1, n_ff_exp=32)


@pytest.fixture
def exact_products(monkeypatch):
    """The numpy forward's products without the one-row path's 8-bit activations (a mixture of
    experts runs an expert on the one token that chose it): dequantised, exact in float32,
    as the device computes them."""
    qmatmul = _kernels.qmatmul

    def exact(raw, ggml_type, shape, x, n_threads=None):
        x = np.asarray(x, np.float32)
        if x.ndim == 2 and x.shape[0] > 1:
            return qmatmul(raw, ggml_type, shape, x, n_threads)
        y = qmatmul(raw, ggml_type, shape, np.repeat(x.reshape(1, -1), 2, axis=0), n_threads)
        return y[0] if x.ndim == 1 else y[:1]

    monkeypatch.setattr(_kernels, "qmatmul", exact)


@pytest.mark.parametrize("name,arch,qtype,types", FAMILY_CASES,
                         ids=[c[0] + ("_up_q4_0" if c[3] else "") for c in FAMILY_CASES])
def test_every_family_matches_the_numpy_forward(tmp_path, name, arch, qtype, types, exact_products):
    """Two prompt tokens (gemm, tiled attention), then one decoded (gemv, split attention):
    the tolerances of the module docstring against the numpy forward with an f16 cache."""
    path = str(tmp_path / f"{name}.gguf")
    write_tiny_model(path, arch, qtype, seed=zlib.crc32(name.encode()), name=name, dims=SMALL, stack_types=types)
    model = load_model(path, n_ctx=64)
    ids = [17, 200, 33]
    ref = model.arch.forward(ids, model.arch.new_cache(64, "f16"), "all")
    dec = CudaDecoder(model.arch, n_batch=4)
    cache = model.new_cache()
    got = np.concatenate([dec.forward(ids[:2], cache, "all"), dec.forward(ids[2:], cache, "last")])
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
    assert np.array_equal(got.argmax(axis=1), ref.argmax(axis=1))


@pytest.mark.parametrize("name,arch", [("qwen2moe_q8_0", "qwen2moe"), ("dots1_q8_0", "dots1")])
def test_grouped_expert_prefill_matches(tmp_path, name, arch, exact_products):
    """A longer prompt, so each expert gets several of the batch's tokens in its grouped
    products (a gated shared expert: qwen2moe; sigmoid routing with a selection bias, a dense
    first layer and shared experts: dots1): the module docstring's tolerances against the
    numpy forward with an f16 cache, and against the CPU backend's compiled forward where
    that routes as the exact forward does."""
    path = str(tmp_path / f"{name}.gguf")
    write_tiny_model(path, arch, T.Q8_0, seed=zlib.crc32(name.encode()), name=name, dims=SMALL)
    model = load_model(path, n_ctx=64)
    ids = [17, 200, 33, 5, 99, 120, 7, 41, 250, 3, 8]
    ref = model.arch.forward(ids, model.arch.new_cache(64, "f16"), "all")
    dec = CudaDecoder(model.arch, n_batch=16)
    cache = model.new_cache()
    got = np.concatenate([dec.forward(ids[:10], cache, "all"), dec.forward(ids[10:], cache, "last")])
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
    assert np.array_equal(got.argmax(axis=1), ref.argmax(axis=1))
    # the CPU's compiled forward rounds activations to 8 bits, which can send a token to
    # another expert at a router near-tie (measured: dots1's positions 5 and 6, KL 0.0012 and
    # 0.047 to the exact numpy forward, as to the device): compared where it agrees with the exact forward
    p, q = log_softmax(model.logits(ids)), log_softmax(got)
    exact = log_softmax(model.arch.forward(ids, model.arch.new_cache(64), "all"))
    same_route = (np.exp(p) * (p - exact)).sum(-1) <= 1e-3
    assert same_route.sum() >= len(ids) - 2
    assert (np.exp(p) * (p - q)).sum(-1)[same_route].mean() <= 1e-3


def test_a_recipe_step_without_a_kernel_is_refused(tmp_path):
    """Fail closed: a step the device cannot compute is a typed error at load, naming it."""
    import dataclasses

    from abi.errors import UnsupportedModelError
    from abi.llm.cuda_forward import unsupported_recipe

    path = write_model(tmp_path / "m.gguf", "llama", {"*": T.Q8_0}, D=32, F=32, H=2, KV=1, L=1)
    model = load_model(path, n_ctx=64)
    assert unsupported_recipe(model.arch.args) is None
    model.arch.args = dataclasses.replace(model.arch.args, activation="relu")
    with pytest.raises(UnsupportedModelError, match="relu activation"):
        CudaDecoder(model.arch, n_batch=4)


def test_outputs_prefix_reuse_and_truncation(tmp_path):
    path = write_model(tmp_path / "m.gguf", "llama", {"*": T.Q8_0}, L=1)
    model = load_model(path, n_ctx=64)
    ids = [1, 2, 3, 4, 5, 6, 7]
    dec = CudaDecoder(model.arch, n_batch=16)
    cache = model.new_cache()
    assert dec.forward(ids[:4], cache, "none") is None and cache.length == 4
    hidden = dec.forward(ids[4:], cache, "hidden")
    want = model.arch.forward(ids, model.arch.new_cache(64, "f16"), "hidden")[4:]
    assert hidden.shape == (3, 64) and np.abs(hidden - want).max() <= 1e-3 * np.abs(want).max()
    last = dec.forward([9], cache, "last")
    cache.truncate(5)                                   # keep the first 5, recompute the rest
    again = dec.forward([6, 7, 9], cache, "all")
    assert cache.tokens == [1, 2, 3, 4, 5, 6, 7, 9]
    np.testing.assert_allclose(again[-1:], last, rtol=0, atol=1e-5 * np.abs(last).max())
    with pytest.raises(ValueError):
        dec.forward([9999], cache, "last")              # outside the vocabulary
    from abi.errors import ContextLengthExceeded
    with pytest.raises(ContextLengthExceeded):
        dec.forward(list(range(60)), cache, "last")


def test_a_cache_filled_on_the_cpu_continues_on_the_device(tmp_path):
    path = write_model(tmp_path / "m.gguf", "llama", {"*": T.Q8_0}, L=1)
    model = load_model(path, n_ctx=64)
    ids = [4, 8, 15, 16, 23, 42]
    cache = model.new_cache()
    model.arch.forward(ids[:4], cache, "none")          # numpy forward, f32 host cache
    got = CudaDecoder(model.arch, n_batch=8).forward(ids[4:], cache, "all")
    want = model.arch.forward(ids, model.arch.new_cache(64, "f16"), "all")[4:]
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


def test_generation_samples_on_the_device(tmp_path, monkeypatch, cuda_backend):
    path = write_model(tmp_path / "g.gguf", "llama", {"*": T.Q8_0}, D=32, F=64, H=2, KV=1, L=1)
    reference = load_model(path, n_ctx=64, kv_dtype="f16")   # compiled CPU forward, f16 cache, CPU sampler

    def host_logits(*a, **k):
        raise AssertionError("logits were fetched to the host")

    monkeypatch.setattr(CudaDecoder, "forward", host_logits)  # the fast path never needs them
    prompt = [40, 41, 42, 43, 44]
    opts = dict(max_tokens=5, temperature=0.0, repetition_penalty=1.3, stop_tokens=[])
    engine = Engine(backend="cuda", n_ctx=64).load_model(path)
    assert engine.model.backend == "cuda"
    got = engine.create_streaming_response(prompt, **opts)
    tokens = [e.token_id for e in got]
    want = [e.token_id for e in Engine.from_model(reference).create_streaming_response(prompt, **opts)]
    assert tokens == want                                   # greedy with a repetition penalty
    assert engine.slots[0].cache.tokens == prompt + tokens[:-1]  # the last draw is not fed yet
    sampled = dict(max_tokens=3, temperature=0.9, top_k=20, top_p=0.9, seed=11, stop_tokens=[])
    first = [e.token_id for e in engine.create_streaming_response(prompt, **sampled)]
    again = [e.token_id for e in engine.create_streaming_response(prompt, **sampled)]
    assert first == again and len(first) == 3               # the seed fixes the draws


def test_device_sampling_settings_from_the_host_sampler():
    procs = host_sampling.make_logits_processors(1.2, 32, 0.5, 0.1, {7: 1.5})
    s = DeviceSampling.from_callables(host_sampling.make_sampler(0.8, 40, 0.95, 0.02, seed=9), procs)
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.seed) == (0.8, 40, 0.95, 0.02, 9)
    assert (s.repetition_penalty, s.presence, s.frequency, s.window) == (1.2, 0.5, 0.1, 32)
    assert s.bias_ids == [7] and s.bias_vals == [1.5]
    whole_history = host_sampling.make_logits_processors(1.2, 0)  # window 0: every token, host only
    assert DeviceSampling.from_callables(host_sampling.make_sampler(0.0), whole_history) is None
    assert DeviceSampling.from_callables(lambda x: 0, []) is None
    assert DeviceSampling.from_callables(host_sampling.make_sampler(0.0), [lambda t, x: x]) is None


@pytest.mark.skipif(BACKEND == "cuda", reason="needs a machine without a usable device")
def test_cuda_backend_without_a_device_is_a_clear_error(tmp_path):
    """No driver, or only numba's simulator (this module's numba.cuda): never a device."""
    from abi.llm.backend import select_backend

    with pytest.raises(BackendUnavailable, match="cuda"):
        select_backend("cuda")
    assert select_backend("auto") == "cpu"
    path = write_model(tmp_path / "m.gguf", "llama", {"*": T.Q8_0}, L=1)
    with pytest.raises(BackendUnavailable):
        load_model(path, backend="cuda")


@pytest.mark.skipif(SIM, reason="CUDA graphs need a GPU")
def test_graph_replay_matches_eager_launches(tmp_path):
    path = write_model(tmp_path / "m.gguf", "gemma3", {"*": T.Q4_K, "attn_v": T.Q6_K}, D=256, F=512, L=2)
    model = load_model(path, n_ctx=64)
    out = []
    for graphs in (False, True):
        dec = CudaDecoder(model.arch, n_batch=8, use_graphs=graphs)
        assert dec.use_graphs == graphs
        cache = model.new_cache()
        dec.forward([1, 2, 3], cache, "last")
        out.append(np.concatenate([dec.forward([t], cache, "last") for t in (4, 5, 6, 7)]))
    np.testing.assert_array_equal(out[0], out[1])


def test_kernels_compile_for_sm80_and_sm90(tmp_path):
    """Every kernel signature a forward pass and a sampled step launch, compiled by NVVM and
    assembled by ptxas, in a process without the simulator (the simulator never compiles)."""
    from abi._kernels.cuda.ptxcheck import describe

    path = write_model(tmp_path / "p.gguf", "qwen2", {"*": T.Q8_0}, D=32, F=64, H=2, KV=1, L=1)
    model = load_model(path, n_ctx=64)
    dec = CudaDecoder(model.arch, n_batch=8)
    items = []
    launch = dec._launch

    def record(plan, launchers=None):
        items.extend((k.__name__, describe(args)) for k, _, _, args in plan)
        launch(plan, launchers)

    dec._launch = record
    cache = model.new_cache()
    dec.forward([1, 2, 3], cache, "all")
    steps = dec.steps(cache, [4], DeviceSampling(0.8, 5, 0.9, repetition_penalty=1.1, window=4, seed=1))
    next(steps), next(steps)
    # a mixture of experts' launches: routing, grouping, the grouped and per-pair products
    moe_path = str(tmp_path / "moe.gguf")
    write_tiny_model(moe_path, "dots1", T.Q8_0, name="dots1_q8_0", dims=SMALL)
    moe = load_model(moe_path, n_ctx=64)
    moe_dec = CudaDecoder(moe.arch, n_batch=8)
    launch = moe_dec._launch   # what record() calls
    moe_dec._launch = record
    cache = moe.new_cache()
    moe_dec.forward([1, 2, 3], cache, "all")
    moe_dec.forward([4], cache, "last")
    # the matrix kernels are compiled per weight type: gemv[Q8_0], gemm[Q4_1] ...
    assert {name.split("[")[0] for name, _ in items} == {
        "dequant_rows", "residual_norm", "gemm", "gemv", "glu", "qk_prep", "attn_prefill", "attn_decode",
        "attn_combine", "penalize", "sample", "moe_route", "moe_group"}
    sigs = tmp_path / "sigs.json"
    sigs.write_text(json.dumps(items))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    res = subprocess.run([sys.executable, "-m", "abi._kernels.cuda.ptxcheck", str(sigs)], env=env,
                         capture_output=True, text=True, timeout=900)
    if res.returncode and ("NVVM" in res.stderr and "not" in res.stderr or "libnvvm" in res.stderr.lower()):
        pytest.skip("no CUDA toolkit (libNVVM) on this machine")
    assert res.returncode == 0, res.stderr[-3000:]
    reports = [json.loads(line) for line in res.stdout.splitlines()]
    assert {r["cc"] for r in reports} == {"sm_80", "sm_90"}
    assert len({r["kernel"].split("[")[0] for r in reports}) == 13
    assert all(" 0 bytes spill stores" in r.get("ptxas", " 0 bytes spill stores") for r in reports)
