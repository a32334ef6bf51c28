import numpy as np
import pytest

import abi.gguf
from abi.errors import ConfigError
from abi.gguf import GGMLType, GGUFValueType as V, GGUFWriter
from gguf_oracle import oracle_tables, our_tables

# one value of every metadata type, scalars and arrays (nested included)
VALUES = [
    ("t.u8", 255, V.UINT8), ("t.i8", -128, V.INT8), ("t.u16", 65535, V.UINT16),
    ("t.i16", -32768, V.INT16), ("t.u32", 4294967295, V.UINT32), ("t.i32", -2147483648, V.INT32),
    ("t.f32", 0.5, V.FLOAT32), ("t.bool", True, V.BOOL), ("t.str", "héllo ✓ 世界", V.STRING),
    ("t.u64", 2**64 - 1, V.UINT64), ("t.i64", -(2**63), V.INT64), ("t.f64", 1e300, V.FLOAT64),
    ("t.arr_i32", [1, -2, 3], V.INT32), ("t.arr_f32", [0.25, -1.5], V.FLOAT32),
    ("t.arr_bool", [True, False], V.BOOL), ("t.arr_str", ["a", "", "ü"], V.STRING),
    ("t.arr_u64", [0, 2**63], V.UINT64), ("t.arr_empty", [], V.UINT8),
]


def _write_sample(path, alignment=32):
    w = GGUFWriter(path, alignment=alignment)
    w.add_metadata("general.architecture", "llama")
    for key, value, vtype in VALUES:
        w.add_metadata(key, value, vtype)
    w.add_metadata("t.nested", [[1, 2], [3]], V.ARRAY)
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((3, 64)).astype(np.float32)
    f16 = rng.standard_normal((2, 32)).astype(np.float16)
    q4 = rng.integers(0, 256, (4, 2 * 18), dtype=np.uint8)  # 4 rows of 64 Q4_0 values
    w.add_tensor("f32", f32)
    w.add_tensor("f16", f16)
    w.add_tensor("q4", q4, GGMLType.Q4_0)
    w.add_tensor("i32", np.arange(5, dtype=np.int32))
    w.add_tensor("bf16", np.arange(32, dtype=np.uint16), GGMLType.BF16)
    w.write()
    return f32, f16, q4


@pytest.mark.parametrize("alignment", [32, 64])
def test_round_trip_and_oracle_agree(tmp_path, alignment):
    path = tmp_path / "sample.gguf"
    f32, f16, q4 = _write_sample(path, alignment)
    f = abi.gguf.load(path)
    assert f.alignment == alignment
    for key, value, vtype in VALUES:
        assert f.metadata[key] == value, key
        got = f.metadata_types[key]
        assert (got[1] if isinstance(got, tuple) else got) == vtype
    assert f.metadata["t.nested"] == [[1, 2], [3]]
    assert f.tensors["q4"].shape == (4, 64) and f.tensors["q4"].ggml_type == GGMLType.Q4_0
    np.testing.assert_array_equal(f.tensor_array("f32"), f32)
    np.testing.assert_array_equal(f.tensor_array("f16"), f16)
    np.testing.assert_array_equal(f.tensor_data("q4").reshape(4, -1), q4)
    for t in f.tensors.values():
        assert t.offset % alignment == 0
    assert our_tables(path) == oracle_tables(path)


def test_rewrite_default_model_header_keeps_tables(tmp_path, default_gguf):
    """Metadata copied with its recorded types, tensors copied raw: same tables again."""
    src = default_gguf
    w = GGUFWriter(tmp_path / "copy.gguf")
    for key, value in src.metadata.items():
        w.add_metadata(key, value, src.metadata_types[key])
    for name in list(src.tensors)[:5]:
        info = src.tensors[name]
        w.add_tensor(name, src.tensor_data(name), info.ggml_type, shape=info.shape)
    w.write()
    copy = abi.gguf.load(tmp_path / "copy.gguf")
    assert copy.metadata == src.metadata and copy.metadata_types == src.metadata_types
    for name in copy.tensors:
        assert np.array_equal(copy.tensor_data(name), src.tensor_data(name))
    assert our_tables(tmp_path / "copy.gguf") == oracle_tables(tmp_path / "copy.gguf")


def test_writer_rejects_bad_input(tmp_path):
    w = GGUFWriter(tmp_path / "bad.gguf")
    w.add_metadata("k", 1)
    with pytest.raises(ConfigError):
        w.add_metadata("k", 2)
    with pytest.raises(ConfigError):
        w.add_tensor("q", np.zeros((2, 18), np.uint8), GGMLType.Q4_0, shape=(2, 16))
    with pytest.raises(ConfigError):
        w.add_tensor("q", np.zeros((2, 10), np.uint8), GGMLType.Q4_0)
    with pytest.raises(ConfigError):
        w.add_metadata("mixed", [1, "a"])
    with pytest.raises(ConfigError):
        GGUFWriter(tmp_path / "x.gguf", alignment=24)


def test_failed_write_leaves_no_file(tmp_path):
    w = GGUFWriter(tmp_path / "never.gguf")
    w.add_tensor("x", np.zeros(4, np.float32))
    w._tensors[0] = ("x", (4,), GGMLType.F32, object())  # unwritable payload
    with pytest.raises(Exception):
        w.write()
    assert list(tmp_path.iterdir()) == []
