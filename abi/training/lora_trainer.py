"""LoRA fine-tuning of a GGUF model (``train_lora``), on the trainer's one loop: AdamW (or
any optimizer of optim.py), schedules, gradient accumulation and clipping, checkpoints with
bit-identical resume, TensorBoard/W&B offline logging, a progress bar with loss, tokens/s
and time left. The result is an adapter GGUF in llama.cpp's format (abi/gguf/lora_adapter.py).

Each optimizer step averages ``grad_accum`` micro-batches of ``batch_size`` examples drawn
by length (lora_data.LengthBatcher); the validation loss over the held-out split is logged
every ``val_every`` steps and at the end.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import CheckpointError, ConfigError
from . import loop
from .checkpoint import resolve_checkpoint
from .lora import LoraModel
from .lora_data import LengthBatcher, load_examples, pad_batch, split
from ..gguf.lora_adapter import write_lora_adapter
from .loop import Checkpoints, StepResult
from .optim import make_optimizer
from .schedules import make_schedule
from .trainer import check_run_settings

CHECKPOINT_KIND = "lora"


@dataclass
class LoraConfig:
    model: str = ""                     # the base GGUF (any quant type the runtime reads)
    data: str = ""                      # JSONL (lora_data)
    out: str | None = None              # the adapter GGUF written at the end
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    lora_layers: int | None = None      # adapt the last N layers (None: all)
    targets: tuple = ("q", "k", "v", "o")
    steps: int = 100
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_len: int = 512
    learning_rate: float = 1e-4
    optimizer: str = "adamw"
    lr_schedule: str = "warmup_cosine"
    warmup_steps: int | None = None
    min_lr: float = 0.0
    weight_decay: float | None = 0.0
    grad_clip: float = 1.0
    val_split: float = 0.0
    val_every: int = 0                  # steps between validation losses (0: only at the end)
    seed: int = 42
    threads: int | None = None          # BLAS and dequantising threads (None: the libraries' default)
    recompute: bool = True              # activation checkpointing (False: faster, more memory)
    weight_cache_mb: int = 32           # dequantised base matrices kept between uses
    prefix_cache_mb: int = 256          # streams entering the first adapted layer, per example
    checkpoint_dir: str | None = None   # base path of the checkpoints (numbered beside it)
    checkpoint_interval: int = 0
    max_checkpoints: int = 3
    on_save_error: str = "abort"
    save_retries: int = 3
    save_retry_delay: float = 10.0
    log_dir: str | None = None
    enable_tensorboard: bool = False
    enable_wandb: bool = False
    wandb_project: str = "abi"
    log_interval: int = 1

    def validate(self) -> None:
        if not self.model or not self.data:
            raise ConfigError("model (a GGUF file) and data (a JSONL file) are required", "model")
        check_run_settings(self, ("steps", "batch_size", "grad_accum", "max_seq_len", "rank",
                                  "max_checkpoints", "log_interval"))
        if self.val_every < 0 or (self.val_every and not self.val_split):
            raise ConfigError("val_every needs a val_split > 0", "val_every")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}", "threads")
        if (self.enable_tensorboard or self.enable_wandb) and not self.log_dir:
            raise ConfigError("enable_tensorboard/enable_wandb need a log_dir", field="log_dir")

    @property
    def checkpoint_path(self):   # the name check_run_settings and the loop use
        return self.checkpoint_dir

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LoraConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        out = cls(**{k: v for k, v in d.items() if k in known})
        out.targets = tuple(out.targets)
        return out


@dataclass
class LoraReport:
    steps: int
    losses: list[float]
    val_losses: list[tuple[int, float]]     # (step, loss)
    final_loss: float                       # mean of the last min(10, steps) steps
    tokens_per_second: float                # tokens through the model per second of training
    wall_time_s: float
    n_params: int
    n_train: int
    n_val: int
    truncated: int
    out: str | None
    checkpoints: list[str]
    resumed_from: str | None = None
    model: LoraModel | None = field(default=None, repr=False)


def _mean_loss(model: LoraModel, examples, indices, batch_size: int, start_hidden) -> float:
    total, count = 0.0, 0
    for b0 in range(0, len(indices), batch_size):
        chunk = indices[b0:b0 + batch_size]
        x, y, m = pad_batch([examples[i] for i in chunk])
        loss, n = model.loss_and_grads(x, y, m, None, start_hidden=start_hidden(chunk, x))
        total, count = total + loss * n, count + n
    return total / max(count, 1)


def train_lora(config: LoraConfig | None = None, *, resume_from: str | None = None,
               on_step: Callable[[int, dict], None] | None = None, progress: bool = False) -> LoraReport:
    """Train (or resume) a LoRA run and write the adapter to ``config.out``."""
    t_start = time.perf_counter()
    ckpt = resolve_checkpoint(resume_from) if resume_from else None
    if ckpt is not None and ckpt.meta.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{ckpt.path!r} is a {ckpt.meta.get('kind')!r} checkpoint, not a "
                              "LoRA one", ckpt.path)
    if config is None:
        if ckpt is None:
            raise ConfigError("train_lora needs a config or resume_from", field="config")
        config = LoraConfig.from_dict(ckpt.meta["config"])
    config.validate()
    model = LoraModel(config.model, rank=config.rank, alpha=config.alpha, dropout=config.dropout,
                      targets=config.targets, lora_layers=config.lora_layers, seed=config.seed,
                      cache_bytes=config.weight_cache_mb << 20, n_threads=config.threads,
                      recompute=config.recompute)
    if config.max_seq_len > model.args.n_ctx_train:
        raise ConfigError(f"max_seq_len {config.max_seq_len} exceeds the model's context "
                          f"{model.args.n_ctx_train}", "max_seq_len")
    examples, truncated = load_examples(config.data, model.gguf, config.max_seq_len)
    train_idx, val_idx = split(examples, config.val_split, config.seed)
    rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(2)[1])
    batcher = LengthBatcher(train_idx, [len(e) for e in examples], config.batch_size)

    # the stream entering the first adapted layer depends on no adapter: keep it per example,
    # computed one example at a time so that its bits never depend on the batch it came in
    prefix: dict[int, np.ndarray] = {}
    prefix_budget = [config.prefix_cache_mb << 20]

    def start_hidden(chunk, x):
        if model.first == 0:
            return None
        out = np.zeros(x.shape + (model.args.n_embd,), model.dtype)
        for j, i in enumerate(chunk):
            row = prefix.get(i)
            if row is None:
                row = model.hidden_before(examples[i].ids[None, :-1], model.first)[0]
                if row.nbytes <= prefix_budget[0]:
                    prefix[i] = row
                    prefix_budget[0] -= row.nbytes
            out[j, :len(row)] = row
        return out

    optimizer = make_optimizer(config.optimizer, model.params, weight_decay=config.weight_decay)
    schedule = make_schedule(config.lr_schedule, config.learning_rate, config.steps,
                             warmup_steps=config.warmup_steps, min_lr=config.min_lr)
    step, losses, val_losses, tokens_seen = 0, [], [], 0
    if ckpt is not None:
        old = LoraConfig.from_dict(ckpt.meta["config"])
        fixed = ("model", "data", "rank", "alpha", "targets", "lora_layers", "batch_size",
                 "grad_accum", "max_seq_len", "val_split", "seed", "optimizer", "dropout")
        changed = [f for f in fixed if getattr(config, f) != getattr(old, f)]
        if changed:
            raise ConfigError(f"cannot resume {ckpt.path!r} with a different {', '.join(changed)}",
                              field=changed[0])
        for k, p in model.params.items():
            p[...] = ckpt.tensors[f"weights/{k}"]
        optimizer.load_state_dict({k[len("optim/"):]: np.array(v) for k, v in ckpt.tensors.items()
                                   if k.startswith("optim/")}, ckpt.meta["optimizer"])
        rng.bit_generator.state = ckpt.meta["rng_state"]
        batcher.load_state(ckpt.meta["batcher"])
        step, losses = int(ckpt.meta["step"]), list(ckpt.meta["losses"])
        val_losses = [tuple(v) for v in ckpt.meta["val_losses"]]
        tokens_seen = int(ckpt.meta["tokens_seen"])

    checkpoints = Checkpoints(config.checkpoint_dir, config.max_checkpoints, config.on_save_error,
                              config.save_retries, config.save_retry_delay)

    def snapshot():
        arrays, scalars = optimizer.state_dict()
        tensors = {f"weights/{k}": v for k, v in model.params.items()}
        tensors.update({f"optim/{k}": v for k, v in arrays.items()})
        meta = {"kind": CHECKPOINT_KIND, "abi_version": __version__, "config": config.to_dict(),
                "step": step, "rng_state": rng.bit_generator.state, "batcher": batcher.state(),
                "optimizer": scalars, "losses": losses, "val_losses": val_losses,
                "tokens_seen": tokens_seen}
        return tensors, meta

    from .logging import MetricsLogger

    logger = MetricsLogger(config.log_dir, tensorboard=config.enable_tensorboard,
                           wandb=config.enable_wandb, config=config.to_dict(),
                           project=config.wandb_project)
    k = config.grad_accum
    train_time, run_tokens = 0.0, 0

    def one_step(at: int) -> StepResult:
        nonlocal step, tokens_seen, train_time, run_tokens
        t0 = time.perf_counter()
        grads = {name: np.zeros_like(p) for name, p in model.params.items()}
        step_loss, n_tokens = 0.0, 0
        for _ in range(k):
            chunk = batcher.next(rng)
            x, y, m = pad_batch([examples[i] for i in chunk])
            seed = int(rng.integers(1 << 62))
            loss, _ = model.loss_and_grads(x, y, m, grads, 1.0 / k, drop_seed=seed,
                                           start_hidden=start_hidden(chunk, x))
            step_loss += loss / k
            n_tokens += sum(len(examples[i]) - 1 for i in chunk)
        dt = time.perf_counter() - t0
        step, train_time = at + 1, train_time + dt
        tokens_seen, run_tokens = tokens_seen + n_tokens, run_tokens + n_tokens
        losses.append(step_loss)
        return StepResult(step_loss, grads, {"loss": step_loss, "tokens_per_second": n_tokens / dt})

    def after(at: int, result: StepResult) -> None:
        if val_idx and ((config.val_every and at % config.val_every == 0) or at == config.steps):
            v = _mean_loss(model, examples, val_idx, config.batch_size, start_hidden)
            val_losses.append((at, v))
            result.metrics["val_loss"] = v
        if at % config.log_interval == 0 or at == config.steps:
            logger.log(at, result.metrics)
        if on_step is not None:
            on_step(at, result.metrics)

    limit = contextlib.nullcontext()
    if config.threads:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(config.threads, "blas")
    try:
        with limit:
            step = loop.run(one_step, optimizer=optimizer, schedule=schedule, grad_clip=config.grad_clip,
                            start=step, total=config.steps, checkpoints=checkpoints,
                            interval=config.checkpoint_interval, snapshot=snapshot, on_step=after,
                            progress=progress, desc="train lora", resumed=ckpt is not None,
                            postfix=lambda r: {"loss": f"{r.loss:.3f}",
                                               "tok_s": f"{r.metrics['tokens_per_second']:.0f}"})
    finally:
        logger.close()
    if config.out:
        write_lora_adapter(config.out, model.args.arch, config.alpha, model.adapter_tensors(),
                           metadata={"general.name": f"LoRA r{config.rank} on {model.gguf.get('general.name', '')}"})
    tail = losses[-10:]
    return LoraReport(
        steps=step, losses=losses, val_losses=val_losses,
        final_loss=float(np.mean(tail)) if tail else float("nan"),
        tokens_per_second=run_tokens / train_time if train_time > 0 else 0.0,
        wall_time_s=time.perf_counter() - t_start, n_params=sum(p.size for p in model.params.values()),
        n_train=len(train_idx), n_val=len(val_idx), truncated=truncated, out=config.out,
        checkpoints=checkpoints.written, resumed_from=ckpt.path if ckpt else None, model=model)
