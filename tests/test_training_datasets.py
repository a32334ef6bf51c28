"""TokenBin and WDBX files: layout, validation, exact round trips, the convert CLI."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from abi.cli import main as cli_main
from abi.errors import DatasetError
from abi.training.datasets import (WdbxRecord, read_tokenbin, read_wdbx, tokenbin_to_wdbx,
                                   wdbx_to_tokenbin, write_tokenbin, write_wdbx)


def test_tokenbin_layout_is_as_documented(tmp_path):
    p = write_tokenbin(tmp_path / "t.bin", [1, 2, 65535])
    raw = p.read_bytes()
    assert raw[:4] == b"TKBN"
    assert struct.unpack("<HHQ", raw[4:16]) == (1, 2, 3)
    assert np.frombuffer(raw[16:], "<u2").tolist() == [1, 2, 65535]
    tb = read_tokenbin(p)
    assert tb.dtype == np.uint16 and tb.count == 3 and tb.tokens.tolist() == [1, 2, 65535]


def test_tokenbin_widens_to_uint32(tmp_path):
    tb = read_tokenbin(write_tokenbin(tmp_path / "t.bin", np.array([0, 70000, 2 ** 32 - 1])))
    assert tb.dtype == np.uint32 and tb.tokens.tolist() == [0, 70000, 2 ** 32 - 1]
    assert read_tokenbin(write_tokenbin(tmp_path / "e.bin", [])).count == 0


@pytest.mark.parametrize("ids,dtype", [([-1], None), ([2 ** 32], None), ([70000], "uint16"),
                                       ([1.5], None), ([1], "int8")])
def test_tokenbin_rejects_bad_ids(tmp_path, ids, dtype):
    with pytest.raises(DatasetError):
        write_tokenbin(tmp_path / "t.bin", np.array(ids), dtype=dtype)


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[:-1], "truncated"), (lambda b: b + b"\0", "trailing"),
    (lambda b: b"XXXX" + b[4:], "not a TokenBin"), (lambda b: b[:5], "not a TokenBin"),
    (lambda b: b[:4] + struct.pack("<H", 9) + b[6:], "version 9"),
    (lambda b: b[:6] + struct.pack("<H", 3) + b[8:], "width 3"),
    (lambda b: b[:8] + struct.pack("<Q", 2 ** 62) + b[16:], "truncated")])
def test_tokenbin_damage_is_a_clear_error(tmp_path, damage, match):
    p = write_tokenbin(tmp_path / "t.bin", np.arange(10))
    p.write_bytes(damage(p.read_bytes()))
    with pytest.raises(DatasetError, match=match):
        read_tokenbin(p)


def test_wdbx_round_trip_with_vectors_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    recs = [WdbxRecord(10 + i, rng.standard_normal(8).astype(np.float32), {"text": f"doc {i}", "i": i})
            for i in range(5)]
    recs.append(WdbxRecord(99, np.ones(8, np.float32), {}))
    p = write_wdbx(tmp_path / "s.wdbx", recs, dim=8, metadata={"model": "minilm"})
    w = read_wdbx(p)
    assert w.metadata == {"model": "minilm"} and w.dim == 8 and w.dtype == np.float32
    assert [r.id for r in w.records] == [r.id for r in recs]
    for a, b in zip(w.records, recs):
        assert a.metadata == b.metadata and a.vector.tobytes() == b.vector.tobytes()
    assert w.get(99).metadata == {}
    best = w.nearest(recs[2].vector, k=2)
    assert best[0][0] == 12 and best[0][1] == pytest.approx(1.0)
    raw = p.read_bytes()
    assert raw[:4] == b"WDBX" and raw[-16:-12] == b"XBDW"


def test_wdbx_rejects_bad_input(tmp_path):
    with pytest.raises(DatasetError, match="duplicate"):
        write_wdbx(tmp_path / "x", [(1, [1.0], {}), (1, [2.0], {})])
    with pytest.raises(DatasetError, match="dim"):
        write_wdbx(tmp_path / "x", [(1, [1.0, 2.0], {})], dim=3)
    with pytest.raises(DatasetError, match="fit"):
        write_wdbx(tmp_path / "x", [(1, [70000], {})], dtype="uint16")
    with pytest.raises(DatasetError):
        write_wdbx(tmp_path / "x", [(1, [1.0], {})], dtype="float64")


def test_wdbx_every_damaged_byte_is_detected(tmp_path):
    p = write_wdbx(tmp_path / "s.wdbx", [(i, np.full(3, i, np.float32), {"k": i}) for i in range(4)],
                   dim=3, metadata={"a": 1})
    good = p.read_bytes()
    for i in range(0, len(good), 7):
        blob = bytearray(good)
        blob[i] ^= 0x01
        p.write_bytes(bytes(blob))
        with pytest.raises(DatasetError):
            read_wdbx(p)
    for cut in (0, 3, 20, len(good) // 2, len(good) - 1):
        p.write_bytes(good[:cut])
        with pytest.raises(DatasetError):
            read_wdbx(p)


@pytest.mark.parametrize("n,chunk,dtype", [(5000, 1024, None), (1024, 1024, None), (0, 16, None),
                                           (3001, 100, "uint32")])
def test_tokenbin_wdbx_round_trips_exactly(tmp_path, n, chunk, dtype):
    toks = np.random.default_rng(n).integers(0, 49152, n)
    a = write_tokenbin(tmp_path / "a.bin", toks, dtype=dtype)
    w = tokenbin_to_wdbx(a, tmp_path / "a.wdbx", chunk_tokens=chunk)
    wf = read_wdbx(w)
    assert wf.metadata["kind"] == "tokens" and len(wf) == -(-n // chunk)
    b = wdbx_to_tokenbin(w, tmp_path / "b.bin")
    assert b.read_bytes() == a.read_bytes()
    w2 = tokenbin_to_wdbx(b, tmp_path / "b.wdbx", chunk_tokens=chunk)
    assert w2.read_bytes() == w.read_bytes()


def test_vector_store_is_not_a_token_dataset(tmp_path):
    p = write_wdbx(tmp_path / "v.wdbx", [(1, [0.5, 0.25], {})], dim=2)
    with pytest.raises(DatasetError, match="not a token dataset"):
        wdbx_to_tokenbin(p, tmp_path / "x.bin")


def test_convert_dataset_cli_round_trip(tmp_path, capsys):
    a = write_tokenbin(tmp_path / "data.bin", np.arange(3000) % 50000)
    assert cli_main(["convert", "dataset", "--input", str(a), "--output",
                     str(tmp_path / "data.wdbx"), "--format", "to-wdbx"]) == 0
    assert cli_main(["convert", "dataset", "--input", str(tmp_path / "data.wdbx"), "--output",
                     str(tmp_path / "back.bin"), "--format", "to-tokenbin"]) == 0
    assert (tmp_path / "back.bin").read_bytes() == a.read_bytes()
    out = capsys.readouterr().out
    assert "3000 tokens" in out
    # a damaged input is a clean error with the dataset exit code, not a traceback
    (tmp_path / "bad.bin").write_bytes(b"TKBN\x01\x00")
    assert cli_main(["convert", "dataset", "--input", str(tmp_path / "bad.bin"), "--output",
                     str(tmp_path / "o.wdbx"), "--format", "to-wdbx"]) == DatasetError.exit_code
    assert "not a TokenBin" in capsys.readouterr().err
    assert cli_main(["convert", "dataset", "--input", str(a), "--output", "x",
                     "--format", "to-csv"]) == 2


def test_convert_hf_to_gguf_dispatches(tmp_path, capsys):
    assert cli_main(["convert", "hf-to-gguf", "--help"]) == 0
    assert "--outtype" in capsys.readouterr().out
