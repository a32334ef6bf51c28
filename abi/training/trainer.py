"""``train(TrainingConfig) -> TrainingReport``: the training loop of the reference's
training sub-feature, on a real (small) numpy model and a synthetic classification task.

One optimizer step consumes ``gradient_accumulation_steps`` micro-batches of ``batch_size``
samples; their gradients are combined weighted by sample count, so k micro-batches give the
same step as one k-times-larger batch. Checkpoints (weights, optimizer state, step, RNG
state, loss scaler, position in the epoch) are written every ``checkpoint_interval`` steps
and at the end; resuming from one continues bit for bit like the uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import CheckpointError, ConfigError, TrainingError
from . import loop, mlp
from .checkpoint import ON_SAVE_ERROR, CheckpointFile, resolve_checkpoint
from .loop import Checkpoints, StepResult
from .optim import OPTIMIZERS, make_optimizer
from .precision import LossScaler, Precision, all_finite, normalize_precision
from .schedules import SCHEDULES, make_schedule

CHECKPOINT_KIND = "mlp"


def check_run_settings(cfg, positive_ints) -> None:
    """The checks both trainers' configs share: integer counts >= 1, checkpointing, and a
    known optimizer and schedule."""
    for name in positive_ints:
        value = getattr(cfg, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}", field=name)
    if cfg.checkpoint_interval < 0:
        raise ConfigError("checkpoint_interval must be >= 0", field="checkpoint_interval")
    if cfg.checkpoint_interval > 0 and not cfg.checkpoint_path:
        raise ConfigError("checkpoint_interval needs a checkpoint_path", "checkpoint_path")
    if cfg.on_save_error not in ON_SAVE_ERROR:
        raise ConfigError(f"on_save_error must be one of {', '.join(ON_SAVE_ERROR)}, got "
                          f"{cfg.on_save_error!r}", field="on_save_error")
    if cfg.save_retries < 0 or not cfg.save_retry_delay >= 0:
        raise ConfigError("save_retries and save_retry_delay must be >= 0", field="save_retries")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose one of "
                          f"{', '.join(OPTIMIZERS)}", field="optimizer")
    if cfg.lr_schedule not in SCHEDULES:
        raise ConfigError(f"unknown lr schedule {cfg.lr_schedule!r}; choose one of "
                          f"{', '.join(SCHEDULES)}", field="lr_schedule")


@dataclass
class TrainingConfig:
    """Settings of ``train``; the first block are the reference's, with its defaults."""

    epochs: int = 10
    batch_size: int = 32
    sample_count: int = 1024
    model_size: int = 512          # parameter budget of the model
    learning_rate: float = 0.001
    optimizer: str = "adamw"       # sgd | adam | adamw
    lr_schedule: str = "constant"  # constant | cosine | warmup_cosine | step | polynomial
    gradient_accumulation_steps: int = 1
    checkpoint_interval: int = 0   # optimizer steps between checkpoints; 0: only the final one
    max_checkpoints: int = 3
    checkpoint_path: str | None = None
    on_save_error: str = "abort"   # abort | retry: keep the in-memory state (CheckpointManager.save_or_keep)
    save_retries: int = 3          # retry: further tries of the final save
    save_retry_delay: float = 10.0 # retry: seconds between them
    mixed_precision: bool | str = False  # False/"fp32", True/"fp16", "bf16"
    seed: int = 42
    # beyond the reference
    weight_decay: float | None = None    # None: the optimizer's default (adamw 0.01, else 0)
    momentum: float = 0.9                # sgd
    nesterov: bool = False               # sgd
    grad_clip: float = 1.0               # max global gradient norm; 0 disables clipping
    warmup_steps: int | None = None      # warmup_cosine; None: 10% of the run
    min_lr: float = 0.0                  # floor of cosine / polynomial schedules
    loss_scale: float = 2.0 ** 15        # initial dynamic loss scale (mixed precision)
    loss_scale_growth_interval: int = 200

    def validate(self) -> None:
        check_run_settings(self, ("epochs", "batch_size", "sample_count",
                                  "gradient_accumulation_steps", "max_checkpoints"))
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate!r}",
                              field="learning_rate")
        normalize_precision(self.mixed_precision)
        mlp.hidden_for_budget(self.model_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class TrainingReport:
    loss_per_epoch: list[float]
    steps: int                       # optimizer steps (skipped overflow steps included)
    skipped_steps: int               # steps skipped for a loss-scale overflow
    checkpoints: list[str]           # files written, in order
    wall_time_s: float
    final_loss: float
    accuracy: float                  # on the training set, with the final weights
    parameter_count: int
    loss_scale: float | None         # final dynamic loss scale (mixed precision only)
    resumed_from: str | None = None
    weights: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def checkpoints_written(self) -> int:
        return len(self.checkpoints)


@dataclass
class Checkpoint:
    """A loaded training checkpoint (``load_checkpoint``)."""

    path: str
    config: TrainingConfig
    step: int
    epoch: int
    weights: dict[str, np.ndarray] = field(repr=False)
    optimizer_state: tuple[dict[str, np.ndarray], dict] = field(repr=False)
    rng_state: dict = field(repr=False)
    meta: dict = field(repr=False)
    perm: np.ndarray | None = field(default=None, repr=False)  # the current epoch's order

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Run the checkpointed model on inputs of shape (n, 16)."""
        x = np.asarray(x, np.float32)
        _, _, out = mlp.loss_and_grads(self.weights, x, np.zeros(len(x), np.int64))
        return out


def _checkpoint_from_file(f: CheckpointFile) -> Checkpoint:
    meta = f.meta
    if meta.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{f.path!r} is a {meta.get('kind')!r} checkpoint, not a training "
                              "checkpoint (use load_llm_checkpoint for LLM checkpoints)", f.path)
    weights = {k[len("weights/"):]: np.array(v) for k, v in f.tensors.items()
               if k.startswith("weights/")}
    optim = {k[len("optim/"):]: np.array(v) for k, v in f.tensors.items() if k.startswith("optim/")}
    perm = np.array(f.tensors["perm"]) if "perm" in f.tensors else None
    return Checkpoint(f.path, TrainingConfig.from_dict(meta["config"]), int(meta["step"]),
                      int(meta["epoch"]), weights, (optim, meta["optimizer"]), meta["rng_state"],
                      meta, perm)


def load_checkpoint(path) -> Checkpoint:
    """Load and verify a training checkpoint: a file, or a run's base checkpoint path (then
    the newest checkpoint that verifies)."""
    return _checkpoint_from_file(resolve_checkpoint(path))


def train(config: TrainingConfig | None = None, *, resume_from: str | None = None,
          on_step: Callable[[int, float], None] | None = None,
          progress: bool = False) -> TrainingReport:
    """Train the model. ``resume_from`` continues a checkpoint (its own config unless one is
    given); ``on_step(step, loss)`` is called after every optimizer step."""
    start_time = time.perf_counter()
    ckpt = load_checkpoint(resume_from) if resume_from else None
    if config is None:
        config = ckpt.config if ckpt else TrainingConfig()
    config.validate()
    precision = Precision(normalize_precision(config.mixed_precision))
    hidden = mlp.hidden_for_budget(config.model_size)
    n = config.sample_count
    task = mlp.SyntheticTask.generate(n, config.seed)
    init_seq, shuffle_seq = np.random.SeedSequence(config.seed).spawn(2)
    params = mlp.init_params(hidden, np.random.default_rng(init_seq))
    shuffle_rng = np.random.default_rng(shuffle_seq)
    optimizer = make_optimizer(config.optimizer, params, weight_decay=config.weight_decay,
                               momentum=config.momentum, nesterov=config.nesterov)
    scaler = None
    if precision.name != "fp32":
        scaler = LossScaler(config.loss_scale, growth_interval=config.loss_scale_growth_interval)

    k = config.gradient_accumulation_steps
    micro_per_epoch = -(-n // config.batch_size)
    steps_per_epoch = -(-micro_per_epoch // k)
    total_steps = config.epochs * steps_per_epoch
    schedule = make_schedule(config.lr_schedule, config.learning_rate, total_steps,
                             warmup_steps=config.warmup_steps, min_lr=config.min_lr)

    step, epoch, micro = 0, 0, 0
    perm: np.ndarray | None = None
    loss_sum, loss_count = 0.0, 0
    loss_per_epoch: list[float] = []
    if ckpt is not None:
        fixed = ("sample_count", "batch_size", "gradient_accumulation_steps", "model_size",
                 "seed", "optimizer")
        changed = [f for f in fixed if getattr(config, f) != getattr(ckpt.config, f)]
        if changed:
            raise ConfigError(f"cannot resume {ckpt.path!r} with a different {', '.join(changed)}; "
                              "a resumed run may change epochs, schedule and checkpointing only",
                              field=changed[0])
        if set(ckpt.weights) != set(params) or any(
                ckpt.weights[k_].shape != params[k_].shape for k_ in params):
            raise CheckpointError(f"checkpoint {ckpt.path!r} does not match model_size "
                                  f"{config.model_size}", ckpt.path)
        for name in params:
            params[name][...] = ckpt.weights[name]
        optimizer.load_state_dict(*ckpt.optimizer_state)
        shuffle_rng.bit_generator.state = ckpt.rng_state
        m = ckpt.meta
        step, epoch, micro = ckpt.step, ckpt.epoch, int(m["micro"])
        loss_sum, loss_count = float(m["loss_sum"]), int(m["loss_count"])
        loss_per_epoch = list(m["loss_per_epoch"])
        if scaler is not None and m.get("scaler"):
            scaler.load_state(m["scaler"])
        perm = None if ckpt.perm is None else ckpt.perm.copy()

    checkpoints = Checkpoints(config.checkpoint_path, config.max_checkpoints, config.on_save_error,
                              config.save_retries, config.save_retry_delay)

    def snapshot():
        arrays, scalars = optimizer.state_dict()
        tensors = {f"weights/{k_}": v for k_, v in params.items()}
        tensors.update({f"optim/{k_}": v for k_, v in arrays.items()})
        if perm is not None:
            tensors["perm"] = perm
        meta = {"kind": CHECKPOINT_KIND, "abi_version": __version__, "config": config.to_dict(),
                "step": step, "epoch": epoch, "micro": micro, "hidden": hidden,
                "rng_state": shuffle_rng.bit_generator.state, "optimizer": scalars,
                "scaler": scaler.state() if scaler else None, "loss_sum": loss_sum,
                "loss_count": loss_count, "loss_per_epoch": loss_per_epoch}
        return tensors, meta

    def one_step(at: int) -> StepResult:
        """One optimizer step's window of micro-batches: their mean gradient (None when the
        loss scale overflowed), and the epoch bookkeeping the checkpoint records."""
        nonlocal perm, micro, epoch, loss_sum, loss_count, step
        step = at + 1   # what a checkpoint taken after this step records
        if perm is None:
            perm = shuffle_rng.permutation(n)
        window_end = min(micro + k, micro_per_epoch)
        scale = scaler.scale if scaler else 1.0
        acc = {name: np.zeros_like(p) for name, p in params.items()}
        window_samples, window_loss, overflow = 0, 0.0, False
        for mb in range(micro, window_end):
            idx = perm[mb * config.batch_size:(mb + 1) * config.batch_size]
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is handled
                loss, grads, _ = mlp.loss_and_grads(params, task.x[idx], task.y[idx], precision, scale)
            if not (math.isfinite(loss) and all_finite(grads.values())):
                overflow = True
            else:
                for name, g in grads.items():
                    acc[name] += g.astype(np.float32) * np.float32(len(idx))
            window_samples += len(idx)
            window_loss += loss * len(idx)
        if overflow and scaler is None:
            raise TrainingError(f"training diverged: non-finite gradient at step {at}; "
                                "lower the learning rate")
        apply = scaler.update(overflow) if scaler else True
        if apply:
            inv = np.float32(1.0 / (scale * window_samples))
            for g in acc.values():
                g *= inv
        loss_sum += window_loss
        loss_count += window_samples
        micro = window_end
        if micro == micro_per_epoch:
            loss_per_epoch.append(loss_sum / loss_count)
            loss_sum, loss_count = 0.0, 0
            epoch, micro, perm = epoch + 1, 0, None
        return StepResult(window_loss / window_samples, acc if apply else None, {"epoch": epoch})

    step = loop.run(one_step, optimizer=optimizer, schedule=schedule, grad_clip=config.grad_clip,
                    start=step, total=total_steps, checkpoints=checkpoints,
                    interval=config.checkpoint_interval, snapshot=snapshot,
                    on_step=None if on_step is None else (lambda s, r: on_step(s, r.loss)),
                    progress=progress, resumed=ckpt is not None,
                    postfix=lambda r: {"loss": f"{r.loss:.4f}", "epoch": r.metrics["epoch"]})
    written = checkpoints.written

    final_loss, _, logits = mlp.loss_and_grads(params, task.x, task.y)
    accuracy = float((logits.argmax(axis=1) == task.y).mean())
    return TrainingReport(
        loss_per_epoch=loss_per_epoch, steps=step,
        skipped_steps=scaler.skipped if scaler else 0, checkpoints=written,
        wall_time_s=time.perf_counter() - start_time, final_loss=final_loss, accuracy=accuracy,
        parameter_count=mlp.parameter_count(hidden), loss_scale=scaler.scale if scaler else None,
        resumed_from=ckpt.path if ckpt else None,
        weights={k_: v.copy() for k_, v in params.items()})
