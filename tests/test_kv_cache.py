"""The KV cache in f32, f16 and q8_0 on the compiled forward: no numpy fallback, each dtype
against the numpy reference forward (same cache dtype), prefill == decode bit for bit and
a reused prefix == a cold run per dtype."""
import zlib

import numpy as np
import pytest

import abi.llm
from abi.errors import ConfigError
from abi.gguf import GGMLType
from abi.llm.cache import KV_DTYPES, KVCache, kv_row_bytes
from tiny_models import write_tiny_model

IDS = [int(i) for i in np.random.default_rng(5).integers(3, 250, 40)]


def _model(tmp_path, name, arch, qtype=GGMLType.Q8_0, **opts):
    path = tmp_path / f"{name}.gguf"
    if not path.exists():
        write_tiny_model(path, arch, qtype, seed=zlib.crc32(name.encode()), name=name)
    return abi.llm.load_model(path, **opts)


# Float weights, so the compiled forward quantises no activations and differs from the
# numpy one only by summation order, and by an f16 / q8_0 rounding that lands on the
# other side for a value that order moved: max |diff| <= tol * max |logit|.
TOLERANCE = {"f32": 3e-4, "f16": 1e-3, "q8_0": 1e-2}


@pytest.mark.parametrize("kv", KV_DTYPES)
@pytest.mark.parametrize("name, arch", [("llama_f32", "llama"), ("gemma2_f32", "gemma2")])
def test_compiled_matches_the_numpy_forward_per_dtype(tmp_path, name, arch, kv):
    m = _model(tmp_path, name, arch, GGMLType.F32, kv_dtype=kv)
    assert m.forward_path == "compiled"
    cache = m.new_cache()
    ours = m.forward(IDS, cache, output="all")
    assert cache.kv_dtype == kv and cache.k.nbytes == cache.bytes_per_token // 2 * cache.capacity
    ref = m.arch.forward(IDS, m.new_cache(), "all")
    assert np.abs(ours - ref).max() <= TOLERANCE[kv] * np.abs(ref).max()


def test_the_cache_holds_what_its_dtype_says(tmp_path):
    """The q8_0 and f16 caches are really rounded: close to the f32 cache, not equal."""
    caches = {}
    for kv in KV_DTYPES:
        m = _model(tmp_path, "llama_f32", "llama", GGMLType.F32, kv_dtype=kv)
        caches[kv] = m.new_cache()
        m.forward(IDS, caches[kv], output="all")
    n = len(IDS)   # layer 0's keys: the later layers' inputs saw the rounding
    exact = caches["f32"].k[:1, :, :n]
    half = caches["f16"].k[:1, :, :n]
    assert half.dtype == np.float16 and np.array_equal(half, exact.astype(np.float16))
    q8 = caches["q8_0"]
    assert q8.k.dtype == np.uint8 and q8.k.shape[-1] == kv_row_bytes("q8_0", q8.head_dim)
    got = q8._decode(q8.k[:1, :, :n], q8.head_dim)
    err = np.abs(got - exact).max()
    assert 0 < err <= np.abs(exact).max() / 127
    # the compiled quantiser writes the bytes the reference quantiser writes
    assert np.array_equal(q8.k[:1, :, :n], q8._encode(exact))


Q8 = GGMLType.Q8_0
# float weights too: their prompts take their own tiles (_ftile.pxd)
RECIPES = [("llama_q8_0", "llama", Q8), ("gemma3_q8_0", "gemma3", Q8), ("smollm3_q8_0", "smollm3", Q8),
           ("gpt-oss_q8_0", "gpt-oss", Q8), ("qwen3moe_q8_0", "qwen3moe", Q8),
           ("llama_f16", "llama", GGMLType.F16), ("gemma3_bf16", "gemma3", GGMLType.BF16)]


@pytest.mark.parametrize("kv", ["f16", "q8_0"])
@pytest.mark.parametrize("name, arch, qtype", RECIPES, ids=[r[0] for r in RECIPES])
def test_prefill_is_decode_and_a_cached_prefix_is_a_cold_run(tmp_path, name, arch, qtype, kv):
    m = _model(tmp_path, name, arch, qtype, kv_dtype=kv)
    batched = m.logits(IDS)
    cache = m.new_cache()
    stepped = np.concatenate([m.forward([t], cache) for t in IDS])
    assert np.array_equal(batched, stepped)
    cache.truncate(17)   # keep a prefix, run the rest
    assert np.array_equal(m.forward(IDS[17:], cache, output="all"), batched[17:])


def test_q8_0_needs_whole_blocks_per_head():
    with pytest.raises(ConfigError, match="divisible by 32"):
        KVCache(1, 1, 48, 16, "q8_0")
    with pytest.raises(ConfigError, match="kv_dtype"):
        KVCache(1, 1, 64, 16, "q4_0")


def test_an_unknown_kv_dtype_is_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match="kv_dtype"):
        _model(tmp_path, "llama_q8_0", "llama", kv_dtype="bf16")


def test_q8_0_on_the_cuda_forward_is_a_typed_error(tmp_path, monkeypatch):
    """The CUDA forward keeps its own f16 device cache: q8_0 is refused at load, not ignored."""
    import abi.llm.backend

    monkeypatch.setattr(abi.llm.backend, "select_backend", lambda name: "cuda")
    with pytest.raises(ConfigError, match="CUDA"):
        _model(tmp_path, "llama_q8_0", "llama", kv_dtype="q8_0")
