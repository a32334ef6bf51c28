"""Trainer, optimisers, schedules, mixed precision: closed forms and finite differences."""
from __future__ import annotations

import math

import numpy as np
import pytest

from abi.errors import ConfigError, TrainingError
from abi.training import TrainingConfig, train
from abi.training import mlp
from abi.training.optim import SGD, Adam, AdamW, clip_grad_norm, global_norm, make_optimizer
from abi.training.precision import LossScaler, Precision, round_bf16
from abi.training.schedules import make_schedule


# --- schedules ----------------------------------------------------------------------------

def test_constant_schedule():
    f = make_schedule("constant", 0.01, 100)
    assert [f(s) for s in (0, 50, 99, 500)] == [0.01] * 4


def test_cosine_schedule_closed_form():
    lr, lo, T = 0.1, 0.01, 40
    f = make_schedule("cosine", lr, T, min_lr=lo)
    for s in (0, 1, 13, 20, 39, 40, 100):
        expect = lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * min(s, T) / T))
        assert f(s) == pytest.approx(expect, rel=1e-12)
    assert f(0) == pytest.approx(lr) and f(20) == pytest.approx((lr + lo) / 2)
    assert f(40) == pytest.approx(lo)


def test_warmup_cosine_schedule_closed_form():
    lr, T, W = 0.2, 50, 5
    f = make_schedule("warmup_cosine", lr, T, warmup_steps=W)
    assert [f(s) for s in range(W)] == pytest.approx([lr * (s + 1) / W for s in range(W)])
    for s in (5, 6, 27, 49, 50):
        expect = 0.5 * lr * (1 + math.cos(math.pi * min(s - W, T - W) / (T - W)))
        assert f(s) == pytest.approx(expect, rel=1e-12, abs=1e-15)
    assert f(W) == pytest.approx(lr)  # warmup ends at the peak


def test_step_schedule_closed_form():
    f = make_schedule("step", 1.0, 100, step_size=10, gamma=0.5)
    for s in (0, 9, 10, 19, 20, 55, 99):
        assert f(s) == pytest.approx(0.5 ** (s // 10))


def test_polynomial_schedule_closed_form():
    lr, lo, T, p = 0.3, 0.001, 30, 2.0
    f = make_schedule("polynomial", lr, T, min_lr=lo, power=p)
    for s in (0, 1, 15, 29, 30, 60):
        assert f(s) == pytest.approx(lo + (lr - lo) * (1 - min(s, T) / T) ** p, rel=1e-12)


def test_bad_schedule_names_its_choices():
    with pytest.raises(ConfigError, match="warmup_cosine"):
        make_schedule("linear-ish", 0.1, 10)
    with pytest.raises(ConfigError):
        make_schedule("cosine", -1.0, 10)


# --- optimisers ---------------------------------------------------------------------------

def _pair(seed=0):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((3, 4)).astype(np.float32)
    grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(4)]
    return p, grads


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_closed_form(nesterov):
    p, grads = _pair()
    params = {"w": p.copy()}
    opt = SGD(params, momentum=0.9, nesterov=nesterov)
    ref, v = p.astype(np.float64), np.zeros_like(p, np.float64)
    for g in grads:
        opt.step({"w": g}, 0.05)
        v = 0.9 * v + g
        ref = ref - 0.05 * ((g + 0.9 * v) if nesterov else v)
    np.testing.assert_allclose(params["w"], ref, rtol=1e-5, atol=1e-6)


def test_plain_sgd_is_gradient_descent():
    p, grads = _pair(1)
    params = {"w": p.copy()}
    opt = SGD(params, momentum=0.0)
    opt.step({"w": grads[0]}, 0.1)
    np.testing.assert_allclose(params["w"], p - 0.1 * grads[0], rtol=1e-6)


def _adam_reference(p, grads, lr, b1, b2, eps, wd, decoupled):
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        g = g.astype(np.float64)
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


@pytest.mark.parametrize("cls,decoupled", [(Adam, False), (AdamW, True)])
def test_adam_family_matches_closed_form(cls, decoupled):
    p, grads = _pair(2)
    params = {"w": p.copy()}
    opt = cls(params, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    for g in grads:
        opt.step({"w": g}, 0.01)
    ref = _adam_reference(p, grads, 0.01, 0.8, 0.95, 1e-6, 0.1, decoupled)
    np.testing.assert_allclose(params["w"], ref, rtol=1e-5, atol=1e-6)


def test_adamw_decay_is_decoupled_from_the_gradient():
    # with zero gradients AdamW shrinks weights by exactly (1 - lr*wd) per step; Adam's L2
    # decay instead feeds the weights through the adaptive moments
    p = np.full((2, 2), 3.0, np.float32)
    a, b = {"w": p.copy()}, {"w": p.copy()}
    AdamW(a, weight_decay=0.5).step({"w": np.zeros_like(p)}, 0.1)
    Adam(b, weight_decay=0.5).step({"w": np.zeros_like(p)}, 0.1)
    np.testing.assert_allclose(a["w"], p * (1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_allclose(b["w"], p - 0.1, rtol=1e-5)  # first adam step moves by ~lr


def test_weight_decay_leaves_vectors_alone():
    params = {"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}
    AdamW(params, weight_decay=0.5).step({k: np.zeros_like(v) for k, v in params.items()}, 0.1)
    assert np.all(params["b"] == 1.0) and np.all(params["w"] < 1.0)


def test_clip_grad_norm():
    g = {"a": np.array([3.0, 0.0], np.float32), "b": np.array([[0.0, 4.0]], np.float32)}
    norm = clip_grad_norm(g, 1.0)
    assert norm == pytest.approx(5.0)
    assert global_norm(g) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(g["a"], [0.6, 0.0], rtol=1e-5)
    untouched = {"a": np.array([0.3, 0.4], np.float32)}
    assert clip_grad_norm(untouched, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(untouched["a"], np.array([0.3, 0.4], np.float32))


def test_optimizer_state_round_trip_continues_identically():
    p, grads = _pair(3)
    a = {"w": p.copy()}
    opt = make_optimizer("adamw", a)
    for g in grads[:2]:
        opt.step({"w": g}, 0.01)
    arrays, scalars = opt.state_dict()
    b = {"w": a["w"].copy()}
    opt2 = make_optimizer("adamw", b)
    opt2.load_state_dict({k: v.copy() for k, v in arrays.items()}, dict(scalars))
    for g in grads[2:]:
        opt.step({"w": g}, 0.01)
        opt2.step({"w": g}, 0.01)
    np.testing.assert_array_equal(a["w"], b["w"])


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match="adamw"):
        make_optimizer("lion", {"w": np.zeros(2, np.float32)})


# --- the model's gradients ------------------------------------------------------------------

def test_mlp_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float64) for k, v in mlp.init_params(5, rng).items()}
    params["b1"] += rng.standard_normal(5) * 0.1
    x = rng.standard_normal((7, mlp.N_INPUTS))
    y = rng.integers(0, mlp.N_CLASSES, 7)
    fp64 = Precision("fp64")
    _, grads, _ = mlp.loss_and_grads(params, x, y, fp64)
    eps = 1e-6
    for name, p in params.items():
        num = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            lp = mlp.loss_and_grads(params, x, y, fp64)[0]
            p[i] = old - eps
            lm = mlp.loss_and_grads(params, x, y, fp64)[0]
            p[i] = old
            num[i] = (lp - lm) / (2 * eps)
        np.testing.assert_allclose(grads[name], num, rtol=1e-5, atol=1e-8, err_msg=name)


def test_parameter_budget():
    assert mlp.parameter_count(mlp.hidden_for_budget(512)) <= 512
    assert mlp.parameter_count(mlp.hidden_for_budget(512) + 1) > 512
    with pytest.raises(ConfigError, match="too small"):
        mlp.hidden_for_budget(10)


# --- the training loop ---------------------------------------------------------------------

def test_loss_falls_with_reference_defaults():
    r = train(TrainingConfig(epochs=4, sample_count=512))
    assert TrainingConfig().epochs == 10 and TrainingConfig().batch_size == 32
    assert TrainingConfig().model_size == 512 and TrainingConfig().optimizer == "adamw"
    assert TrainingConfig().learning_rate == 0.001
    assert len(r.loss_per_epoch) == 4
    assert r.loss_per_epoch[-1] < 0.85 * r.loss_per_epoch[0]
    assert all(b < a for a, b in zip(r.loss_per_epoch, r.loss_per_epoch[1:]))
    assert r.steps == 4 * 16 and r.parameter_count <= 512 and r.wall_time_s > 0


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 0.01), ("adamw", 0.01)])
@pytest.mark.parametrize("schedule", ["cosine", "warmup_cosine", "step", "polynomial"])
def test_every_optimizer_and_schedule_learns(optimizer, lr, schedule):
    r = train(TrainingConfig(epochs=3, sample_count=256, optimizer=optimizer,
                             learning_rate=lr, lr_schedule=schedule))
    assert r.loss_per_epoch[-1] < r.loss_per_epoch[0]


def test_gradient_accumulation_equals_a_larger_batch():
    # one step from 4 micro-batches of 8 vs one batch of 32 over the same shuffled samples
    common = dict(epochs=1, sample_count=32, optimizer="sgd", learning_rate=0.5,
                  momentum=0.0, grad_clip=0.0)
    a = train(TrainingConfig(batch_size=8, gradient_accumulation_steps=4, **common))
    b = train(TrainingConfig(batch_size=32, gradient_accumulation_steps=1, **common))
    assert a.steps == b.steps == 1
    init = mlp.init_params(mlp.hidden_for_budget(512), np.random.default_rng(
        np.random.SeedSequence(42).spawn(2)[0]))
    for k in a.weights:
        assert not np.allclose(a.weights[k], init[k]) or k == "b2"
        np.testing.assert_allclose(a.weights[k], b.weights[k], rtol=1e-5, atol=1e-7)
    assert a.loss_per_epoch[0] == pytest.approx(b.loss_per_epoch[0], rel=1e-6)


def test_gradient_accumulation_counts_optimizer_steps():
    r = train(TrainingConfig(epochs=2, batch_size=10, sample_count=95,
                             gradient_accumulation_steps=3))
    assert r.steps == 2 * 4  # 10 micro-batches per epoch -> windows of 3, 3, 3, 1


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_trains_close_to_fp32(precision):
    cfg = dict(epochs=3, sample_count=256, learning_rate=0.01)
    ref = train(TrainingConfig(**cfg))
    mixed = train(TrainingConfig(mixed_precision=precision, **cfg))
    assert mixed.loss_per_epoch[-1] < mixed.loss_per_epoch[0]
    assert mixed.loss_per_epoch[-1] == pytest.approx(ref.loss_per_epoch[-1], rel=0.02)
    for v in mixed.weights.values():
        assert v.dtype == np.float32  # fp32 master weights


def test_fp16_overflow_skips_the_step_and_lowers_the_scale():
    cfg = TrainingConfig(epochs=1, sample_count=64, batch_size=32, mixed_precision="fp16",
                         loss_scale=2.0 ** 40, learning_rate=0.01)
    seen = []
    r = train(cfg, on_step=lambda step, loss: seen.append(step))
    # 2**40 overflows fp16 gradients: both steps are skipped, the scale halves each time
    assert r.skipped_steps == 2 and r.loss_scale == 2.0 ** 38
    init = mlp.init_params(mlp.hidden_for_budget(512), np.random.default_rng(
        np.random.SeedSequence(42).spawn(2)[0]))
    for k in init:
        np.testing.assert_array_equal(r.weights[k], init[k])
    # a scale that fits trains normally
    ok = train(TrainingConfig(epochs=1, sample_count=64, batch_size=32, mixed_precision="fp16"))
    assert ok.skipped_steps == 0


def test_loss_scaler_grows_after_clean_steps():
    s = LossScaler(8.0, growth_interval=3)
    assert s.update(False) and s.update(False) and s.scale == 8.0
    assert s.update(False) and s.scale == 16.0
    assert not s.update(True) and s.scale == 8.0 and s.skipped == 1


def test_round_bf16():
    x = np.array([1.0, 1.00390625, 1.01171875, 3.14159265, -2.5e-3, np.inf, np.nan], np.float32)
    r = round_bf16(x)
    assert np.all((r[:-1].view(np.uint32) & 0xFFFF) == 0)
    assert r[0] == 1.0 and r[1] == 1.0            # halfway -> even (down)
    assert r[2] == np.float32(1.015625)           # halfway -> even (up)
    assert r[3] == np.float32(3.140625) and np.isinf(r[5]) and np.isnan(r[6])


def test_divergence_is_a_clear_error():
    with pytest.raises(TrainingError, match="diverged"):
        train(TrainingConfig(epochs=2, sample_count=64, optimizer="sgd", learning_rate=1e38,
                             grad_clip=0.0))


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=-1), dict(optimizer="x"),
                                 dict(lr_schedule="x"), dict(learning_rate=0.0),
                                 dict(mixed_precision="fp8"), dict(model_size=3),
                                 dict(checkpoint_interval=5)])
def test_bad_config_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        train(TrainingConfig(**bad))


def test_reference_example_through_the_ai_namespace(tmp_path):
    import abi

    training = abi.ai.training
    report = training.train(training.TrainingConfig(
        epochs=2, batch_size=8, sample_count=64, model_size=128, gradient_accumulation_steps=2,
        checkpoint_interval=1, max_checkpoints=3, checkpoint_path=str(tmp_path / "model.ckpt")))
    assert report.steps == 8 and report.checkpoints_written == 8
    assert len(list(tmp_path.glob("model-*.ckpt"))) == 3
    assert training.load_checkpoint(str(tmp_path / "model.ckpt")).step == 8
    assert training.llm_checkpoint.load_llm_checkpoint is training.load_llm_checkpoint


def test_importing_training_loads_no_optional_library():
    import subprocess
    import sys

    code = ("import sys, abi, abi.training, abi.ai.training\n"
            "from abi.training import train, TrainingConfig, LlmTrainingConfig, federated\n"
            "import abi.training.cli, abi.training.llm_trainer\n"
            "print(sorted(m for m in ('tensorboardX', 'tensorboard', 'wandb', 'flwr', 'tqdm')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
