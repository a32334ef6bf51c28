"""Mutated and truncated GGUF files: the reader raises GGUFError or returns a file whose
tensor views lie inside it; it never crashes, hangs or allocates far beyond the file size."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import abi.gguf
from abi.errors import GGUFError
from abi.gguf import GGMLType, GGUFWriter

INTERESTING = [0, 1, 3, 4, 8, 9, 31, 255, 2**31, 2**32 - 1, 2**32, 2**62, 2**63, 2**64 - 1]


def _small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("seed") / "small.gguf"
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", "llama")
    w.add_metadata("llama.block_count", 2)
    w.add_metadata("tokenizer.ggml.tokens", ["a", "b", "<s>"])
    w.add_metadata("tokenizer.ggml.scores", [0.0, -1.0, 2.5])
    w.add_metadata("nested", [[1, 2], [3]])
    w.add_tensor("a", np.ones((2, 32), np.float32))
    w.add_tensor("b", np.zeros((1, 36), np.uint8), GGMLType.Q4_0)
    w.write()
    return path.read_bytes()


def _mutations(size, hot):
    pos = st.one_of(st.integers(0, min(size - 1, hot)), st.integers(0, size - 1))
    return st.lists(st.one_of(
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("bytes"), pos, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("u64"), pos, st.sampled_from(INTERESTING)),
        st.tuples(st.just("u32"), pos, st.sampled_from(INTERESTING).map(lambda v: v & 0xFFFFFFFF)),
        st.tuples(st.just("delete"), pos, st.integers(1, 16)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=16)),
    ), min_size=1, max_size=4)


def _apply(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op in ops:
        kind, p = op[0], min(op[1], max(len(buf) - 1, 0))
        if kind == "truncate":
            del buf[p:]
        elif kind == "bytes":
            buf[p:p + len(op[2])] = op[2]
        elif kind in ("u64", "u32"):
            width = 8 if kind == "u64" else 4
            buf[p:p + width] = op[2].to_bytes(width, "little")
        elif kind == "delete":
            del buf[p:p + op[2]]
        else:
            buf[p:p] = op[2]
    return bytes(buf)


def _check(path, data, measure):
    path.write_bytes(data)
    if measure:
        tracemalloc.start()
    try:
        f = abi.gguf.load(path)
    except GGUFError:
        return
    finally:
        if measure:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak < 64 * len(data) + (1 << 20), f"peak {peak} for a {len(data)}-byte file"
    for name, info in f.tensors.items():
        view = f.tensor_data(name)
        assert view.nbytes == info.nbytes and info.offset + info.nbytes <= len(data)


@pytest.fixture(scope="module")
def small_seed(tmp_path_factory):
    return _small_file(tmp_path_factory)


@pytest.fixture(scope="module")
def model_header(default_gguf):
    """The default model's header and first tensor bytes (its tensors mostly run past the end)."""
    with open(default_gguf.path, "rb") as fh:
        return fh.read(default_gguf.data_offset + 4096)


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_small_files(small_seed, tmp_path_factory, data):
    ops = data.draw(_mutations(len(small_seed), 200))
    path = tmp_path_factory.getbasetemp() / "fuzz_small.gguf"
    _check(path, _apply(small_seed, ops), measure=True)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_default_model_header(model_header, tmp_path_factory, data):
    ops = data.draw(_mutations(len(model_header), 4096))
    path = tmp_path_factory.getbasetemp() / "fuzz_model.gguf"
    _check(path, _apply(model_header, ops), measure=False)
