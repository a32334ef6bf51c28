"""abi.quantize: llama.cpp's mixture rules, its quantisation searches (numpy reference vs
Cython twin, and vs ggml itself when its library is built), imatrix files, atomic output."""
from __future__ import annotations

import ctypes
import hashlib
import os
import struct

import numpy as np
import pytest

from abi import _kernels
from abi.cli import main as cli_main
from abi.errors import QuantizeError, RequantizeError
from abi.gguf import GGMLType, GGUFWriter
from abi.gguf.reader import GGUFFile
from abi.quantize import FILE_TYPES, load_imatrix, plan_types, quantize_model, use_more_bits

T = GGMLType
N_LAYER = 16            # enough layers for use_more_bits to pick a pattern
MORE_BITS_16 = {0, 1, 4, 7, 10, 13, 14, 15}   # llama.cpp's choice for 16 layers, by hand
D, FF, KV = 256, 512, 64


def _write_model(path, n_layer=N_LAYER, wide=D, dtype=np.float32, seed=0, extra=None):
    rng = np.random.default_rng(seed)
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", "llama")
    w.add_metadata("general.name", "quantize test")
    w.add_metadata("general.file_type", 0)
    w.add_metadata("llama.block_count", n_layer)
    w.add_metadata("llama.embedding_length", wide)
    w.add_metadata("llama.attention.head_count", 4)
    w.add_metadata("llama.attention.head_count_kv", 1)
    w.add_metadata("tokenizer.ggml.tokens", [f"t{i}" for i in range(32)])

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols)) * 0.05).astype(dtype)

    w.add_tensor("token_embd.weight", mat(32, wide))
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(wide, np.float32))
        w.add_tensor(p + "attn_q.weight", mat(16, wide))
        w.add_tensor(p + "attn_k.weight", mat(8, wide))
        w.add_tensor(p + "attn_v.weight", mat(8, wide))
        w.add_tensor(p + "attn_output.weight", mat(8, wide))
        w.add_tensor(p + "ffn_up.weight", mat(8, wide))
        w.add_tensor(p + "ffn_down.weight", mat(8, FF))
    w.add_tensor("output_norm.weight", np.ones(wide, np.float32))
    for name, arr in (extra or {}).items():
        w.add_tensor(name, arr)
    w.write()


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("q") / "src.gguf")
    _write_model(path)
    return path


def _expected(qtype: str, name: str) -> GGMLType:
    """The types llama-quantize gives this model (16 layers, tied embeddings), spelled out."""
    if not name.endswith("weight") or "norm" in name:
        return T.F32
    default = FILE_TYPES[qtype].default
    if qtype in ("F32", "F16", "BF16"):
        return default
    if name == "token_embd.weight":         # tied: quantised like an output tensor
        return T.Q8_0 if qtype == "Q8_0" else T.Q6_K
    layer = int(name.split(".")[1])
    if qtype in ("Q4_K_M", "Q5_K_M") and ("attn_v" in name or "ffn_down" in name):
        return T.Q6_K if layer in MORE_BITS_16 else default
    if qtype == "Q3_K_M":
        if "attn_v" in name:
            return T.Q5_K if layer < 2 else T.Q4_K
        if "ffn_down" in name:
            return T.Q5_K if layer < 1 else T.Q4_K
        if "attn_output" in name:
            return T.Q4_K
    return default


def test_use_more_bits_matches_the_hand_count():
    assert {i for i in range(16) if use_more_bits(i, 16)} == MORE_BITS_16
    assert {i for i in range(30) if use_more_bits(i, 30)} == {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}


# Bound on ||dequant - x|| / ||x|| per target, for Gaussian weights (measured worst tensor,
# plus ~25 %): the float types by their mantissa (f16 2^-11, bf16 2^-8), the 32-blocks by their
# level count, the mixtures by their lowest type.
REL_RMS_BOUND = {"F32": 0.0, "F16": 5e-4, "BF16": 4e-3, "Q8_0": 0.008, "Q6_K": 0.025,
                 "Q5_K_M": 0.05, "Q5_1": 0.05, "Q5_0": 0.06, "Q4_K_M": 0.1, "Q4_1": 0.1,
                 "Q4_0": 0.11, "Q3_K_M": 0.2}


@pytest.mark.parametrize("qtype", list(FILE_TYPES))
def test_each_type_has_the_mixture_and_round_trips(src, tmp_path, qtype):
    out = str(tmp_path / f"{qtype}.gguf")
    res = quantize_model(src, out, qtype, progress=False)
    r = GGUFFile(out)
    s = GGUFFile(src)
    assert list(r.tensors) == list(s.tensors)                 # input order kept
    assert r.get("general.file_type") == FILE_TYPES[qtype].ftype
    assert r.get("general.quantization_version") == 2
    assert r.get("tokenizer.ggml.tokens") == s.get("tokenizer.ggml.tokens")
    for name, info in r.tensors.items():
        assert info.ggml_type == _expected(qtype, name), name
        assert info.offset % r.alignment == 0
        x = s.tensor_array(name).astype(np.float32)
        y = _kernels.dequantize(r.tensor_data(name), info.ggml_type, info.shape)
        rel = np.linalg.norm(y - x) / np.linalg.norm(x)
        assert rel <= REL_RMS_BOUND[qtype] + 1e-7, (name, info.ggml_type.name, rel)
    assert res.new_bytes == sum(t.nbytes for t in r.tensors.values())


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q3_K_M", "Q8_0", "F16"])
def test_gguf_package_reads_the_output(src, tmp_path, qtype):
    import gguf

    out = str(tmp_path / "o.gguf")
    quantize_model(src, out, qtype, progress=False)
    rd = gguf.GGUFReader(out)
    ours = GGUFFile(out)
    assert {t.name: int(t.tensor_type) for t in rd.tensors} == \
        {n: int(i.ggml_type) for n, i in ours.tensors.items()}
    v = rd.get_field("general.file_type")
    assert int(v.parts[v.data[0]][0]) == FILE_TYPES[qtype].ftype
    t = next(t for t in rd.tensors if t.name == "blk.3.attn_q.weight")
    deq = gguf.quants.dequantize(t.data, t.tensor_type)
    np.testing.assert_array_equal(deq.reshape(-1), _kernels.dequantize(
        ours.tensor_data(t.name), ours.tensors[t.name].ggml_type, (16, D)).reshape(-1))


def test_rows_not_whole_blocks_fall_back_as_llama_cpp_does(tmp_path):
    rng = np.random.default_rng(1)
    path = str(tmp_path / "odd.gguf")
    _write_model(path, n_layer=2, wide=288, extra={     # 288 = 9 * 32: no 256-blocks
        "blk.0.ffn_gate.weight": rng.standard_normal((4, 40)).astype(np.float32)})  # not even 32
    plan = plan_types(GGUFFile(path), "Q4_K_M")
    assert plan["blk.0.attn_q.weight"] == T.Q5_0         # Q4_K -> Q5_0
    assert plan["blk.0.attn_v.weight"] == T.Q5_0         # layer 0 of 2: no more bits
    assert plan["blk.1.attn_v.weight"] == T.Q8_0         # last layer: Q6_K -> Q8_0
    assert plan["blk.1.ffn_down.weight"] == T.Q6_K       # 512 columns: no fallback
    assert plan["token_embd.weight"] == T.Q8_0           # output-like with a partial block
    assert plan["blk.0.ffn_gate.weight"] == T.F16
    assert plan_types(GGUFFile(path), "Q5_K_M")["blk.1.attn_q.weight"] == T.Q5_1
    assert plan_types(GGUFFile(path), "Q3_K_M")["blk.1.attn_q.weight"] == T.Q4_0
    out = str(tmp_path / "odd-q4km.gguf")
    quantize_model(path, out, "Q4_K_M", progress=False)
    assert GGUFFile(out).tensors["blk.0.ffn_gate.weight"].ggml_type == T.F16


def test_untied_output_gets_q6_k_and_token_embd_keeps_the_default(tmp_path):
    rng = np.random.default_rng(2)
    path = str(tmp_path / "untied.gguf")
    _write_model(path, n_layer=2, extra={"output.weight": rng.standard_normal((32, D)).astype(np.float32)})
    plan = plan_types(GGUFFile(path), "Q4_K_M")
    assert plan["output.weight"] == T.Q6_K
    assert plan["token_embd.weight"] == T.Q4_K


def _sha(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_input_is_never_modified(src, tmp_path):
    before = _sha(src)
    quantize_model(src, str(tmp_path / "a.gguf"), "Q4_K_M", progress=False)
    assert _sha(src) == before


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_a_failure_mid_write_leaves_no_file(src, tmp_path, monkeypatch, exc):
    calls = []
    real = _kernels.quantize_rows

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise exc
        return real(*a, **k)

    monkeypatch.setattr(_kernels, "quantize_rows", flaky)
    out = tmp_path / "out.gguf"
    with pytest.raises(type(exc)):
        quantize_model(src, str(out), "Q4_K_M", progress=False)
    assert len(calls) == 5
    assert os.listdir(tmp_path) == []


def test_errors_are_typed(src, tmp_path):
    with pytest.raises(QuantizeError, match="Q4_K_M") as e:
        quantize_model(src, str(tmp_path / "x.gguf"), "Q4_K_Z", progress=False)
    assert "unknown" in str(e.value)
    with pytest.raises(QuantizeError, match="is the input"):
        quantize_model(src, src, "Q8_0", progress=False)
    q = str(tmp_path / "q.gguf")
    quantize_model(src, q, "Q4_0", progress=False)
    with pytest.raises(RequantizeError) as e:
        quantize_model(q, str(tmp_path / "r.gguf"), "Q8_0", progress=False)
    assert e.value.ggml_type in ("Q4_0", "Q6_K") and e.value.tensor in str(e.value)
    assert "--allow-requantize" in str(e.value)
    assert not os.path.exists(tmp_path / "r.gguf")
    # with the flag it works; a tensor already in its target type is copied as is
    quantize_model(q, str(tmp_path / "r.gguf"), "Q4_0", progress=False, allow_requantize=True)
    a, b = GGUFFile(q), GGUFFile(str(tmp_path / "r.gguf"))
    assert (a.tensor_data("blk.2.attn_q.weight") == b.tensor_data("blk.2.attn_q.weight")).all()
    quantize_model(q, str(tmp_path / "s.gguf"), "Q8_0", progress=False, allow_requantize=True)
    assert GGUFFile(str(tmp_path / "s.gguf")).tensors["blk.2.attn_q.weight"].ggml_type == T.Q8_0


def test_cli(src, tmp_path, capsys):
    out = str(tmp_path / "c.gguf")
    assert cli_main(["quantize", src, out, "q6_k", "-q"]) == 0
    assert "Q6_K" in capsys.readouterr().out
    assert GGUFFile(out).tensors["blk.0.attn_q.weight"].ggml_type == T.Q6_K
    assert cli_main(["quantize", src, str(tmp_path / "d.gguf"), "Q9"]) == QuantizeError.exit_code
    assert "choose one of" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "d.gguf")


# --- importance matrix -------------------------------------------------------------------

def _write_imatrix_gguf(path, entries: dict[str, np.ndarray], counts: dict[str, float]):
    w = GGUFWriter(path)
    w.add_metadata("general.type", "imatrix")
    w.add_metadata("imatrix.datasets", ["test.txt"])
    w.add_metadata("imatrix.chunk_count", 3)
    w.add_metadata("imatrix.chunk_size", 512)
    for name, sums in entries.items():
        w.add_tensor(name + ".in_sum2", sums.reshape(1, -1).astype(np.float32))
        w.add_tensor(name + ".counts", np.array([[counts[name]]], np.float32))
    w.write()


def _write_imatrix_dat(path, entries: dict[str, np.ndarray], ncall: int):
    with open(path, "wb") as fh:
        fh.write(struct.pack("<i", len(entries)))
        for name, v in entries.items():
            raw = name.encode()
            fh.write(struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, v.size))
            fh.write(v.astype(np.float32).tobytes())
        fh.write(struct.pack("<i", 3))           # trailing chunk count (optional)


def test_imatrix_formats_parse(tmp_path):
    a = np.arange(1, 257, dtype=np.float32)
    _write_imatrix_gguf(str(tmp_path / "m.gguf"), {"blk.0.attn_q.weight": a, "blk.0.ffn_down.weight": a},
                        {"blk.0.attn_q.weight": 4.0, "blk.0.ffn_down.weight": 0.0})
    m = load_imatrix(tmp_path / "m.gguf")
    np.testing.assert_allclose(m["blk.0.attn_q.weight"], a / 4)
    np.testing.assert_array_equal(m["blk.0.ffn_down.weight"], np.ones(256, np.float32))  # count 0
    _write_imatrix_dat(str(tmp_path / "m.dat"), {"blk.0.attn_q.weight": a}, ncall=8)
    np.testing.assert_allclose(load_imatrix(tmp_path / "m.dat")["blk.0.attn_q.weight"], a / 8)
    (tmp_path / "bad.dat").write_bytes(struct.pack("<ii", 1, 100) + b"abc")
    with pytest.raises(QuantizeError, match="truncated"):
        load_imatrix(tmp_path / "bad.dat")


def test_imatrix_lowers_the_error_where_it_weighs(src, tmp_path):
    """Columns the imatrix marks as important come out closer to the source than without it."""
    rng = np.random.default_rng(3)
    imp = np.where(rng.random(D) < 0.1, 100.0, 0.01).astype(np.float32)
    names = [f"blk.{i}.{t}.weight" for i in range(N_LAYER) for t in ("attn_q", "attn_k", "attn_output")]
    _write_imatrix_gguf(str(tmp_path / "m.gguf"), {n: imp for n in names}, {n: 1.0 for n in names})
    s = GGUFFile(src)
    for qtype in ("Q4_K_M", "Q3_K_M", "Q4_0", "Q5_1", "Q6_K"):
        plain, weighted = str(tmp_path / "p.gguf"), str(tmp_path / "w.gguf")
        quantize_model(src, plain, qtype, progress=False)
        res = quantize_model(src, weighted, qtype, imatrix=str(tmp_path / "m.gguf"), progress=False)
        assert {t.name for t in res.tensors if t.imatrix} == set(names)
        errs = []
        for path in (plain, weighted):
            r = GGUFFile(path)
            e = 0.0
            for n in names:
                x = s.tensor_array(n)
                y = _kernels.dequantize(r.tensor_data(n), r.tensors[n].ggml_type, x.shape)
                e += float((((y - x) ** 2) * imp).sum())
            errs.append(e)
        assert errs[1] < 0.9 * errs[0], (qtype, errs)


def test_imatrix_guards_the_first_ffn_down_of_q4_0(src):
    plan = plan_types(GGUFFile(src), "Q4_0", has_imatrix=True)
    assert [plan[f"blk.{i}.ffn_down.weight"] for i in range(4)] == [T.Q4_1, T.Q4_1, T.Q4_0, T.Q4_0]
    assert plan_types(GGUFFile(src), "Q4_0")["blk.0.ffn_down.weight"] == T.Q4_0


def test_imatrix_of_the_wrong_size_is_refused(src, tmp_path):
    _write_imatrix_gguf(str(tmp_path / "m.gguf"), {"blk.0.attn_q.weight": np.ones(100, np.float32)},
                        {"blk.0.attn_q.weight": 1.0})
    with pytest.raises(QuantizeError, match="100 values"):
        quantize_model(src, str(tmp_path / "o.gguf"), "Q4_K_M", imatrix=str(tmp_path / "m.gguf"),
                       progress=False)


# --- the kernels: numpy reference vs Cython twin, and vs ggml ---------------------------------

SEARCH_TYPES = [T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]


def _rows(seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((5, 512)) * 0.03).astype(np.float32)
    x[0] = 0                                   # all-zero groups
    x[1, :272] = 0                             # zero sub-blocks inside a block
    x[2] = np.round(x[2] * 400) / 400          # many ties
    x[3, ::7] *= 20                            # outliers
    return x


@pytest.mark.parametrize("t", SEARCH_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("weighted", [False, True])
def test_quantize_rows_cython_matches_numpy(t, weighted):
    x = _rows(int(t))
    qw = np.random.default_rng(9).random(512).astype(np.float32) + 0.01 if weighted else None
    np.testing.assert_array_equal(_kernels.quantize_rows(x, t, qw, n_threads=2),
                                  _kernels.quantize_rows_reference(x, t, qw))


def test_k_quant_block_quantisers_are_the_searches():
    x = _rows(1)
    for t in (T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K):
        assert t in _kernels.QUANTIZE_TYPES
        np.testing.assert_array_equal(_kernels.quantize(x, t), _kernels.quantize_reference(x, t))
        # without an imatrix the blocks are independent: the same bytes as quantize_rows
        np.testing.assert_array_equal(_kernels.quantize(x, t), _kernels.quantize_rows(x, t))


def _ggml():
    for d in (os.environ.get("LLAMA_CPP_LIB_DIR", ""), "/work/llamacpp/build/bin"):
        p = os.path.join(d, "libggml-base.so")
        if d and os.path.exists(p):
            lib = ctypes.CDLL(p)
            f = lib.ggml_quantize_chunk
            f.restype = ctypes.c_size_t
            f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                          ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
            return f
    return None


@pytest.mark.parametrize("t", SEARCH_TYPES, ids=lambda t: t.name)
def test_quantize_rows_is_bit_identical_to_ggml(t):
    f = _ggml()
    if f is None:
        pytest.skip("llama.cpp's libggml-base.so is not built (set LLAMA_CPP_LIB_DIR)")
    x = _rows(int(t) + 100)
    for qw in (None, np.random.default_rng(4).random(512).astype(np.float32) + 0.01):
        ours = _kernels.quantize_rows(x, t, qw)
        theirs = np.zeros_like(ours)
        f(int(t), x.ctypes.data, theirs.ctypes.data, 0, x.shape[0], x.shape[1],
          None if qw is None else qw.ctypes.data)
        np.testing.assert_array_equal(ours, theirs)
        if qw is None:      # quantize is the same search
            np.testing.assert_array_equal(_kernels.quantize(x, t), theirs)
