import struct

import numpy as np
import pytest

import abi.gguf
from abi.errors import (GGUFError, GGUFMagicError, GGUFTensorError, GGUFTruncatedError,
                        GGUFValueError, GGUFVersionError, ModelNotFoundError)
from abi.gguf import GGMLType
from gguf_oracle import oracle_tables, our_tables


def test_default_model_tables_equal_gguf_package(default_model_path):
    ours = our_tables(default_model_path)
    oracle = oracle_tables(default_model_path)
    assert list(ours[0]) == list(oracle[0])  # same keys, same file order
    assert ours[0] == oracle[0]
    assert ours[1] == oracle[1]
    assert ours[2] == oracle[2]


def test_default_model_facts(default_gguf):
    f = default_gguf
    assert f.version == 3 and f.alignment == 32
    assert f.architecture == "llama"
    assert len(f.tensors) == 272
    emb = f.tensors["token_embd.weight"]
    assert emb.shape == (49152, 576) and emb.ggml_type == GGMLType.Q8_0
    view = f.tensor_data("token_embd.weight")
    assert view.dtype == np.uint8 and view.nbytes == emb.nbytes
    assert not view.flags.owndata  # a view of the map, not a copy
    norm = f.tensor_array("blk.0.attn_norm.weight")
    assert norm.shape == (576,) and norm.dtype == np.float32


def test_block_geometry_matches_gguf_package():
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    for t in GGMLType:
        if t == GGMLType.Q8_1:
            continue  # gguf-py still lists the retired 40-byte layout; ggml's struct is 36 bytes
        if t.name in GGMLQuantizationType.__members__:
            assert (t.block_size, t.type_size) == GGML_QUANT_SIZES[GGMLQuantizationType[t.name]]


def _header(version=3, n_tensors=0, n_kv=0):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _kv_string(key, value):
    k, v = key.encode(), value.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", 8) + struct.pack("<Q", len(v)) + v


def _load_bytes(tmp_path, data):
    p = tmp_path / "x.gguf"
    p.write_bytes(data)
    return abi.gguf.load(p)


@pytest.mark.parametrize("data, error, offset", [
    (b"", GGUFTruncatedError, 0),
    (b"GGU", GGUFTruncatedError, 0),
    (b"GGML" + bytes(20), GGUFMagicError, 0),
    (b"GGUF" + struct.pack("<I", 7) + bytes(16), GGUFVersionError, 4),
    (b"GGUF" + struct.pack(">I", 3) + bytes(16), GGUFVersionError, 4),
    (b"GGUF" + struct.pack("<I", 3) + bytes(4), GGUFTruncatedError, 8),
    (_header(n_kv=1 << 60), GGUFValueError, 16),
    (_header(n_tensors=1 << 40), GGUFValueError, 8),
    (_header(n_kv=1) + struct.pack("<Q", 1 << 50) + bytes(20), GGUFValueError, 24),
    (_header(n_kv=1) + struct.pack("<Q", 1) + b"k" + struct.pack("<I", 99), GGUFValueError, 33),
    (_header(n_kv=1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 4, 1 << 40),
     GGUFValueError, 41),
    (_header(n_kv=2) + _kv_string("a", "x") + _kv_string("a", "y"), GGUFValueError, 46),
])
def test_malformed_headers(tmp_path, data, error, offset):
    with pytest.raises(error) as info:
        _load_bytes(tmp_path, data)
    assert info.value.offset == offset
    assert f"offset {offset}" in str(info.value)


def _tensor_file(tmp_path, name="t", ne=(32,), ttype=0, offset=0, data_bytes=128, extra=b""):
    head = _header(n_tensors=1) + struct.pack("<Q", len(name)) + name.encode()
    head += struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
    head += struct.pack("<IQ", ttype, offset) + extra
    head += bytes(-len(head) % 32)
    return _load_bytes(tmp_path, head + bytes(data_bytes))


def test_tensor_errors(tmp_path):
    assert _tensor_file(tmp_path).tensors["t"].shape == (32,)
    with pytest.raises(GGUFTensorError, match="unknown type id 4"):
        _tensor_file(tmp_path, ttype=4)
    with pytest.raises(GGUFTensorError, match="not a multiple of Q4_0's block size 32"):
        _tensor_file(tmp_path, ne=(16,), ttype=2)
    with pytest.raises(GGUFTensorError, match="runs past the end"):
        _tensor_file(tmp_path, ne=(64,))
    with pytest.raises(GGUFTensorError, match="alignment"):
        _tensor_file(tmp_path, offset=4)
    with pytest.raises(GGUFTensorError, match="5 dimensions"):
        _tensor_file(tmp_path, ne=(1, 1, 1, 1, 32))
    with pytest.raises(GGUFTensorError, match="too large"):
        _tensor_file(tmp_path, ne=(1 << 32, 1 << 32))


def test_overlapping_and_duplicate_tensors(tmp_path):
    def two(name2, offset2):
        head = _header(n_tensors=2)
        for name, off in (("a", 0), (name2, offset2)):
            head += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<IQIQ", 1, 32, 0, off)
        head += bytes(-len(head) % 32)
        return _load_bytes(tmp_path, head + bytes(256))
    assert len(two("b", 128).tensors) == 2
    with pytest.raises(GGUFTensorError, match="overlap"):
        two("b", 96)
    with pytest.raises(GGUFTensorError, match="duplicate tensor name 'a'"):
        two("a", 128)


def test_bad_alignment(tmp_path):
    kv = struct.pack("<Q", 17) + b"general.alignment" + struct.pack("<II", 4, 24)
    with pytest.raises(GGUFValueError, match="power-of-two"):
        _load_bytes(tmp_path, _header(n_kv=1) + kv)


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError):
        abi.gguf.load(tmp_path / "nope.gguf")


def test_version_2_is_read(tmp_path):
    f = _load_bytes(tmp_path, _header(version=2, n_kv=1) + _kv_string("general.name", "v2"))
    assert f.version == 2 and f.metadata == {"general.name": "v2"}


def test_invalid_utf8_string_value_is_kept_as_bytes(tmp_path):
    kv = struct.pack("<Q", 1) + b"k" + struct.pack("<IQ", 8, 2) + b"\xff\xfe"
    assert _load_bytes(tmp_path, _header(n_kv=1) + kv).metadata["k"] == b"\xff\xfe"


def _kv_string_array(key: str, items: list[bytes], count: int | None = None) -> bytes:
    body = b"".join(struct.pack("<Q", len(b)) + b for b in items)
    return (struct.pack("<Q", len(key)) + key.encode() + struct.pack("<IIQ", 9, 8, len(items) if count is None
                                                                       else count) + body)


def test_string_array_keeps_invalid_utf8_as_bytes(tmp_path):
    items = [b"a", b"\xff\xfe", b"", "é".encode()]
    f = _load_bytes(tmp_path, _header(n_kv=1) + _kv_string_array("k", items))
    assert f.metadata["k"] == ["a", b"\xff\xfe", "", "é"]


def test_string_array_cut_short_is_refused(tmp_path):
    kv = _kv_string_array("k", [b"ab", b"cd"])
    with pytest.raises(GGUFValueError, match="claims 2 bytes but only 1 remain"):
        _load_bytes(tmp_path, _header(n_kv=1) + kv[:-1])
    with pytest.raises(GGUFError, match="length of string in 'k'"):   # a length cut in two
        _load_bytes(tmp_path, _header(n_kv=1) + _kv_string_array("k", [b"abcdefghijkl"], count=2)
                    + b"\x01\x00")


def test_every_error_is_gguf_error():
    for cls in (GGUFMagicError, GGUFVersionError, GGUFTruncatedError, GGUFValueError,
                GGUFTensorError):
        assert issubclass(cls, GGUFError)


def test_a_file_cut_short_is_called_truncated(tmp_path, default_model_path):
    cut = tmp_path / "cut.gguf"
    with open(default_model_path, "rb") as f:
        cut.write_bytes(f.read(1000))
    with pytest.raises(GGUFError, match="truncated"):
        abi.gguf.load(cut)


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads Linux's /proc")
def test_release_drops_a_tensors_pages_and_keeps_its_values(default_model_path):
    f = abi.gguf.load(default_model_path)

    def resident_file_mib():
        line = next(x for x in open("/proc/self/status") if x.startswith("RssFile:"))
        return int(line.split()[1]) / 1024

    data = f.tensor_data("token_embd.weight")   # 28.7 MiB
    total = int(data.sum(dtype=np.uint64))       # every page mapped
    before = resident_file_mib()
    f.release("token_embd.weight")
    assert before - resident_file_mib() > 20
    assert int(data.sum(dtype=np.uint64)) == total   # read back from the file
    with pytest.raises(GGUFTensorError):
        f.release("no.such.tensor")
