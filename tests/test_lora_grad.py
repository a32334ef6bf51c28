"""The LoRA backward against central finite differences, in float64, on tiny models of each
family the recipe serves (llama, qwen2's biases, gemma3's norms, GELU, window, soft-caps);
and the forward against the runtime's numpy reference forward."""
import numpy as np
import pytest

from abi.errors import TrainingError
from abi.gguf import GGMLType
from abi.training.lora import LoraModel, _rms
from tests.tiny_models import write_tiny_model

DIMS = {"n_embd": 32, "n_ff": 64, "n_head": 4, "n_kv": 2, "n_layer": 2}


def _model(tmp_path, arch, **kw):
    path = tmp_path / f"{arch}.gguf"
    write_tiny_model(path, arch, GGMLType.Q8_0, seed=1, dims=DIMS)
    return LoraModel(str(path), **kw)


@pytest.mark.parametrize("arch,softcaps,recompute", [
    ("llama", False, True), ("qwen2", False, True), ("gemma3", False, True), ("gemma3", True, True),
    ("gemma3", True, False)])
def test_gradients_match_finite_differences(tmp_path, arch, softcaps, recompute):
    m = _model(tmp_path, arch, rank=3, alpha=6.0, targets=tuple("q k v o gate up down".split()),
               dtype=np.float64, init_b=0.5, seed=2, recompute=recompute, dropout=0.2)
    if softcaps:   # Gemma 2's caps on Gemma 3's recipe: every step of the backward at once
        m.args = m.args.with_recipe(attn_softcap=2.0, final_softcap=3.0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 258, (2, 12))      # longer than the tiny gemma3's window of 8
    targets = rng.integers(0, 258, (2, 12))
    mask = rng.random((2, 12)) < 0.6
    grads = {k: np.zeros_like(v) for k, v in m.params.items()}
    m.loss_and_grads(ids, targets, mask, grads, drop_seed=7)   # dropout: the same masks each call
    eps = 1e-6
    for name, p in m.params.items():
        for idx in [tuple(rng.integers(0, d) for d in p.shape) for _ in range(2)]:
            old = p[idx]
            p[idx] = old + eps
            up = m.loss_and_grads(ids, targets, mask, None, drop_seed=7)[0]
            p[idx] = old - eps
            down = m.loss_and_grads(ids, targets, mask, None, drop_seed=7)[0]
            p[idx] = old
            fd = (up - down) / (2 * eps)
            assert abs(fd - grads[name][idx]) <= 1e-6 + 1e-5 * abs(fd), (name, idx, fd, grads[name][idx])


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_forward_matches_runtime(tmp_path, arch):
    """With B = 0 the adapted model is the base: its logits are the runtime's (the runtime's
    GELU is a float16 table, hence the tolerance)."""
    m = _model(tmp_path, arch, rank=2)
    ids = np.arange(1, 13)[None]
    x = m.hidden_before(ids, m.args.n_layers)
    y, _, _ = _rms(x[0], m.base.output_norm, m.args.norm_eps)
    ours = y @ np.asarray(next(m._head_rows(10 ** 6))[2]).T
    ref = m.base.forward(ids[0], m.base.new_cache(32), output="all")
    np.testing.assert_allclose(ours, ref, atol=2e-3 * np.abs(ref).max())


def test_refuses_what_it_cannot_train(tmp_path):
    path = tmp_path / "moe.gguf"
    write_tiny_model(path, "qwen3moe", GGMLType.Q8_0, name="qwen3moe_q8_0",
                     dims={**DIMS, "n_ff_exp": 32})
    with pytest.raises(TrainingError, match="n_expert=4"):
        LoraModel(str(path))


def test_fused_tensors_run_but_are_not_targets(tmp_path):
    """Phi-3 stores QKV and gate-up fused: the forward reads their parts, but an adapter on a
    part would not be a llama.cpp adapter of a file tensor, so it is refused."""
    path = tmp_path / "phi3.gguf"
    write_tiny_model(path, "phi3", GGMLType.Q8_0, name="phi3_q8_0", dims=DIMS)
    with pytest.raises(TrainingError, match="'q'"):
        LoraModel(str(path), targets=("q",))
    m = LoraModel(str(path), targets=("o", "down"), dtype=np.float64, init_b=0.5)
    ids = np.arange(1, 9)[None]
    grads = {k: np.zeros_like(v) for k, v in m.params.items()}
    loss, n = m.loss_and_grads(ids, ids, np.ones_like(ids, bool), grads)
    assert n == 8 and np.isfinite(loss) and all(np.abs(g).max() > 0 for g in grads.values())
