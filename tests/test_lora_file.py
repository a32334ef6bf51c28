"""The LoRA adapter file: written in llama.cpp's layout, read back exactly."""
import numpy as np
import pytest

from abi.errors import ConfigError, GGUFError
from abi.gguf import GGUFWriter, load
from abi.gguf.lora_adapter import lora_delta, read_lora_adapter, write_lora_adapter


def test_round_trip_and_layout(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"blk.0.attn_q.weight": (rng.standard_normal((4, 16)).astype(np.float32),
                                       rng.standard_normal((8, 4)).astype(np.float32))}
    path = tmp_path / "a.gguf"
    write_lora_adapter(path, "llama", 8.0, tensors)
    f = load(path)
    assert f.get("general.type") == "adapter" and f.get("adapter.type") == "lora"
    assert f.architecture == "llama" and f.get("adapter.lora.alpha") == 8.0
    # GGUF ne[] of lora_a is (n_in, rank): numpy (rank, n_in)
    assert f.tensors["blk.0.attn_q.weight.lora_a"].shape == (4, 16)
    assert f.tensors["blk.0.attn_q.weight.lora_b"].shape == (8, 4)
    alpha, back = read_lora_adapter(path, arch="llama")
    a, b = back["blk.0.attn_q.weight"]
    np.testing.assert_array_equal(a, tensors["blk.0.attn_q.weight"][0])
    np.testing.assert_allclose(lora_delta(a, b, alpha), 2.0 * b @ a, rtol=1e-6)
    with pytest.raises(GGUFError):
        read_lora_adapter(path, arch="qwen2")


def test_refuses_bad_input(tmp_path):
    with pytest.raises(ConfigError):
        write_lora_adapter(tmp_path / "x.gguf", "llama", 1.0,
                           {"w": (np.zeros((4, 3), np.float32), np.zeros((2, 5), np.float32))})
    w = GGUFWriter(tmp_path / "m.gguf")
    w.add_metadata("general.architecture", "llama")
    w.add_tensor("t.weight", np.zeros((2, 2), np.float32))
    w.write()
    with pytest.raises(GGUFError):
        read_lora_adapter(tmp_path / "m.gguf")
    w = GGUFWriter(tmp_path / "half.gguf")
    for k, v in (("general.type", "adapter"), ("general.architecture", "llama"), ("adapter.type", "lora")):
        w.add_metadata(k, v)
    w.add_tensor("t.weight.lora_a", np.zeros((2, 2), np.float32))
    w.write()
    with pytest.raises(GGUFError, match="only one"):
        read_lora_adapter(tmp_path / "half.gguf")
