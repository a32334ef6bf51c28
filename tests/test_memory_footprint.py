"""What keeps the runtime's peak resident memory near llama.cpp's: a token table read by
rows leaves memory after the load-time scan, and a KV cache is sized once for the whole
prompt (or generation) instead of doubling batch by batch, which holds the old and the new
arrays together."""
import zlib

import numpy as np
import pytest

import abi.llm
from abi.gguf import GGMLType
from abi.gguf.reader import GGUFFile
from tiny_models import write_tiny_model

IDS = [int(i) for i in np.random.default_rng(7).integers(3, 250, 100)]


def _model(tmp_path, arch, **opts):
    path = tmp_path / f"{arch}.gguf"
    if not path.exists():
        write_tiny_model(path, arch, GGMLType.Q8_0, seed=zlib.crc32(arch.encode()))
    return abi.llm.load_model(path, **opts)


@pytest.fixture
def released(monkeypatch):
    names = []
    release = GGUFFile.release

    def spy(self, name):
        names.append(name)
        release(self, name)

    monkeypatch.setattr(GGUFFile, "release", spy)
    return names


# gemma3's tiny model has its own output matrix; llama's output is its token table, read whole
@pytest.mark.parametrize("arch, expected", [("gemma3", ["token_embd.weight"]), ("llama", [])])
def test_the_scan_releases_a_token_table_read_by_rows(tmp_path, released, arch, expected):
    m = _model(tmp_path, arch)
    assert released == expected
    cache = m.new_cache()   # the released rows are read back from the file
    assert np.array_equal(m.forward(IDS[:9], cache, output="all"), m.logits(IDS[:9]))


def test_no_scan_no_release(tmp_path, released):
    _model(tmp_path, "gemma3", check_finite=False)
    assert released == []


def test_a_prompt_sizes_the_cache_once(tmp_path):
    m = _model(tmp_path, "llama", n_batch=16)
    cache = m.new_cache()
    whole = m.forward(IDS, cache)
    assert cache.capacity == len(IDS)   # doubling by batches would have reached 128
    assert np.array_equal(whole, m.forward(IDS, m.new_cache()))


def test_a_generation_sizes_the_cache_for_its_tokens(tmp_path):
    m = _model(tmp_path, "llama")
    engine = abi.llm.Engine.from_model(m)
    stats = engine.generate_streaming_with_config(IDS[:70], abi.llm.StreamingConfig(
        max_tokens=30, temperature=0.0, stop_tokens=[]))
    assert stats.tokens_generated == 30
    assert engine.slots[0].cache.capacity == 100   # 70 + 30, held from the start
