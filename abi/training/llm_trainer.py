"""LLM training: a llama-architecture model in numpy, trained on a TokenBin dataset.

Either fine-tunes a float32 copy of a llama GGUF model (``init_gguf``) or trains from
scratch with the tokenizer of ``vocab_from``. Each optimizer step draws
``gradient_accumulation_steps`` x ``batch_size`` windows of ``seq_len + 1`` tokens at random
offsets; metrics (loss, perplexity, tokens/s, gradient norm, learning rate) go to the
progress bar, TensorBoard and W&B; checkpoints hold weights, optimizer state, step and RNG
state, so a resumed run continues bit for bit; ``export_gguf_path`` writes the result as a
GGUF that abi and llama.cpp run.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import __version__
from ..errors import CheckpointError, ConfigError, DatasetError
from . import loop
from .checkpoint import CheckpointFile, resolve_checkpoint
from .datasets import read_tokenbin
from .llama import LlamaConfig, LlamaModel, init_params
from .loop import Checkpoints, StepResult
from .optim import make_optimizer
from .schedules import make_schedule
from .trainer import check_run_settings

CHECKPOINT_KIND = "llm"


@dataclass
class LlmTrainingConfig:
    data_path: str = ""                 # TokenBin file
    init_gguf: str | None = None        # fine-tune this llama GGUF ...
    vocab_from: str | None = None       # ... or train from scratch with this file's tokenizer
    # architecture of a from-scratch model
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int | None = None        # None: n_head (no grouped-query attention)
    n_ff: int | None = None             # None: 4 * n_embd
    context_length: int | None = None   # None: seq_len
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = False
    # optimisation
    steps: int = 100
    batch_size: int = 4
    seq_len: int = 64
    learning_rate: float = 3e-4
    optimizer: str = "adamw"
    lr_schedule: str = "warmup_cosine"
    warmup_steps: int | None = None
    min_lr: float = 0.0
    weight_decay: float | None = None
    grad_clip: float = 1.0
    gradient_accumulation_steps: int = 1
    seed: int = 42
    # checkpoints, logging, export
    checkpoint_interval: int = 0        # steps between checkpoints; 0: only the final one
    checkpoint_path: str | None = None
    max_checkpoints: int = 3
    on_save_error: str = "abort"        # abort | retry (CheckpointManager.save_or_keep)
    save_retries: int = 3
    save_retry_delay: float = 10.0
    log_dir: str | None = None
    enable_tensorboard: bool = False
    enable_wandb: bool = False
    wandb_project: str = "abi"
    log_interval: int = 1
    export_gguf_path: str | None = None
    export_type: str = "f32"            # f32 | f16 | q8_0

    def validate(self) -> None:
        if not self.data_path:
            raise ConfigError("data_path (a TokenBin file) is required", field="data_path")
        if bool(self.init_gguf) == bool(self.vocab_from):
            raise ConfigError("give exactly one of init_gguf (fine-tune) and vocab_from "
                              "(from scratch)", field="init_gguf")
        check_run_settings(self, ("steps", "batch_size", "seq_len", "gradient_accumulation_steps",
                                  "max_checkpoints", "log_interval"))
        if self.export_type not in ("f32", "f16", "q8_0"):
            raise ConfigError(f"export_type must be f32, f16 or q8_0, got {self.export_type!r}",
                              field="export_type")
        if (self.enable_tensorboard or self.enable_wandb) and not self.log_dir:
            raise ConfigError("enable_tensorboard/enable_wandb need a log_dir", field="log_dir")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LlmTrainingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def scratch_model_config(self, n_vocab: int) -> LlamaConfig:
        cfg = LlamaConfig(n_vocab=n_vocab, n_embd=self.n_embd, n_layer=self.n_layer,
                          n_head=self.n_head, n_head_kv=self.n_head_kv or self.n_head,
                          n_ff=self.n_ff or 4 * self.n_embd,
                          context_length=self.context_length or self.seq_len,
                          rope_freq_base=self.rope_freq_base, rms_eps=self.rms_eps,
                          tie_embeddings=self.tie_embeddings)
        cfg.validate()
        return cfg


@dataclass
class LlmTrainingReport:
    steps: int
    losses: list[float]                 # one per optimizer step
    final_loss: float                   # mean loss of the last min(10, steps) steps
    perplexity: float                   # exp(final_loss)
    tokens_per_second: float            # over the whole run
    wall_time_s: float
    checkpoints: list[str]
    export_path: str | None
    log_dir: str | None
    n_params: int
    resumed_from: str | None = None
    model: LlamaModel | None = field(default=None, repr=False)


@dataclass
class LlmCheckpoint:
    """A loaded LLM checkpoint (``load_llm_checkpoint``)."""

    path: str
    config: LlmTrainingConfig
    model_config: LlamaConfig
    step: int
    weights: dict[str, np.ndarray] = field(repr=False)
    optimizer_state: tuple[dict[str, np.ndarray], dict] = field(repr=False)
    rng_state: dict = field(repr=False)
    meta: dict = field(repr=False)

    def model(self) -> LlamaModel:
        """The checkpointed model, for inference or export."""
        return LlamaModel(self.model_config, {k: v.copy() for k, v in self.weights.items()})


def _llm_checkpoint_from_file(f: CheckpointFile) -> LlmCheckpoint:
    meta = f.meta
    if meta.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{f.path!r} is a {meta.get('kind')!r} checkpoint, not an LLM "
                              "checkpoint (use load_checkpoint)", f.path)
    weights = {k[len("weights/"):]: np.array(v) for k, v in f.tensors.items()
               if k.startswith("weights/")}
    optim = {k[len("optim/"):]: np.array(v) for k, v in f.tensors.items() if k.startswith("optim/")}
    return LlmCheckpoint(f.path, LlmTrainingConfig.from_dict(meta["config"]),
                         LlamaConfig(**meta["model_config"]), int(meta["step"]), weights,
                         (optim, meta["optimizer"]), meta["rng_state"], meta)


def load_llm_checkpoint(path) -> LlmCheckpoint:
    """Load and verify an LLM checkpoint (a file, or a run's base checkpoint path)."""
    return _llm_checkpoint_from_file(resolve_checkpoint(path))


def _vocab_source(config: LlmTrainingConfig) -> str:
    return config.init_gguf or config.vocab_from


def build_model(config: LlmTrainingConfig, rng: np.random.Generator) -> LlamaModel:
    """The model a run starts from: a float copy of ``init_gguf`` or a fresh one."""
    if config.init_gguf:
        from .gguf_export import load_llama_gguf

        model, _ = load_llama_gguf(config.init_gguf)
        if config.seq_len > model.config.context_length:
            raise ConfigError(f"seq_len {config.seq_len} exceeds the model's context length "
                              f"{model.config.context_length}", field="seq_len")
        return model
    from ..gguf import load as load_gguf

    gf = load_gguf(config.vocab_from)
    tokens = gf.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ConfigError(f"{config.vocab_from} has no tokenizer (tokenizer.ggml.tokens)",
                          field="vocab_from")
    cfg = config.scratch_model_config(len(tokens))
    if config.seq_len > cfg.context_length:
        raise ConfigError(f"seq_len {config.seq_len} exceeds context_length "
                          f"{cfg.context_length}", field="seq_len")
    return LlamaModel(cfg, init_params(cfg, rng))


def train_llm(config: LlmTrainingConfig | None = None, *, resume_from: str | None = None,
              on_step: Callable[[int, dict], None] | None = None,
              progress: bool = False) -> LlmTrainingReport:
    """Train (or resume) an LLM run; ``on_step(step, metrics)`` after every step."""
    start = time.perf_counter()
    ckpt = load_llm_checkpoint(resume_from) if resume_from else None
    if config is None:
        if ckpt is None:
            raise ConfigError("train_llm needs a config or resume_from", field="config")
        config = ckpt.config
    config.validate()

    data = read_tokenbin(config.data_path)
    need = config.seq_len + 1
    if data.count < need:
        raise DatasetError(f"{config.data_path} holds {data.count} tokens; a training window "
                           f"needs seq_len + 1 = {need}")
    init_seq, data_seq = np.random.SeedSequence(config.seed).spawn(2)
    rng = np.random.default_rng(data_seq)
    if ckpt is not None:
        model = LlamaModel(ckpt.model_config, {k: v.copy() for k, v in ckpt.weights.items()})
    else:
        model = build_model(config, np.random.default_rng(init_seq))
    mcfg = model.config
    max_id = int(np.max(data.tokens)) if data.count else 0
    if max_id >= mcfg.n_vocab:
        raise DatasetError(f"{config.data_path} has token id {max_id}, beyond the model's "
                           f"vocabulary of {mcfg.n_vocab} (tokenised with another model?)")

    optimizer = make_optimizer(config.optimizer, model.params, weight_decay=config.weight_decay)
    schedule = make_schedule(config.lr_schedule, config.learning_rate, config.steps,
                             warmup_steps=config.warmup_steps, min_lr=config.min_lr)
    step, losses, tokens_seen = 0, [], 0
    if ckpt is not None:
        fixed = ("batch_size", "seq_len", "gradient_accumulation_steps", "seed", "optimizer")
        changed = [f for f in fixed if getattr(config, f) != getattr(ckpt.config, f)]
        if changed:
            raise ConfigError(f"cannot resume {ckpt.path!r} with a different {', '.join(changed)}",
                              field=changed[0])
        optimizer.load_state_dict(*ckpt.optimizer_state)
        rng.bit_generator.state = ckpt.rng_state
        step = ckpt.step
        losses = list(ckpt.meta.get("losses", []))
        tokens_seen = int(ckpt.meta.get("tokens_seen", 0))

    checkpoints = Checkpoints(config.checkpoint_path, config.max_checkpoints, config.on_save_error,
                              config.save_retries, config.save_retry_delay)

    def snapshot():
        arrays, scalars = optimizer.state_dict()
        tensors = {f"weights/{k}": v for k, v in model.params.items()}
        tensors.update({f"optim/{k}": v for k, v in arrays.items()})
        meta = {"kind": CHECKPOINT_KIND, "abi_version": __version__, "config": config.to_dict(),
                "model_config": mcfg.to_dict(), "step": step, "rng_state": rng.bit_generator.state,
                "optimizer": scalars, "losses": losses, "tokens_seen": tokens_seen,
                "vocab_source": _vocab_source(config)}
        return tensors, meta

    from .logging import MetricsLogger

    logger = MetricsLogger(config.log_dir, tensorboard=config.enable_tensorboard,
                           wandb=config.enable_wandb, config=config.to_dict(),
                           project=config.wandb_project)
    tokens = data.tokens
    B, T, k = config.batch_size, config.seq_len, config.gradient_accumulation_steps
    train_time = 0.0

    def one_step(at: int) -> StepResult:
        """k random windows of seq_len + 1 tokens: their mean next-token gradient."""
        nonlocal step, tokens_seen, train_time
        t0 = time.perf_counter()
        grads = {name: np.zeros_like(p) for name, p in model.params.items()}
        step_loss = 0.0
        for _ in range(k):
            starts = rng.integers(0, data.count - need + 1, size=B)
            window = np.stack([np.asarray(tokens[s:s + need], dtype=np.int64) for s in starts])
            loss, _ = model.loss_and_grads(window[:, :-1], window[:, 1:], grads, 1.0 / k)
            step_loss += loss / k
        dt = time.perf_counter() - t0   # the forward and backward passes
        step, train_time, tokens_seen = at + 1, train_time + dt, tokens_seen + B * T * k
        losses.append(step_loss)
        return StepResult(step_loss, grads, {"loss": step_loss, "perplexity": math.exp(min(step_loss, 50.0)),
                                             "tokens_per_second": B * T * k / dt})

    def after(at: int, result: StepResult) -> None:
        if at % config.log_interval == 0 or at == config.steps:
            logger.log(at, result.metrics)
        if on_step is not None:
            on_step(at, result.metrics)

    try:
        step = loop.run(one_step, optimizer=optimizer, schedule=schedule, grad_clip=config.grad_clip,
                        start=step, total=config.steps, checkpoints=checkpoints,
                        interval=config.checkpoint_interval, snapshot=snapshot, on_step=after,
                        progress=progress, desc="train llm", resumed=ckpt is not None,
                        postfix=lambda r: {"loss": f"{r.loss:.3f}", "ppl": f"{r.metrics['perplexity']:.1f}",
                                           "tok_s": f"{r.metrics['tokens_per_second']:.0f}"})
    finally:
        logger.close()
    written = checkpoints.written

    export_path = None
    if config.export_gguf_path:
        from .gguf_export import export_gguf

        export_path = str(export_gguf(config.export_gguf_path, model, _vocab_source(config),
                                      config.export_type))
    tail = losses[-10:]
    final = float(np.mean(tail)) if tail else float("nan")
    run_tokens = B * T * k * (step - (ckpt.step if ckpt else 0))
    return LlmTrainingReport(
        steps=step, losses=losses, final_loss=final, perplexity=math.exp(min(final, 50.0)),
        tokens_per_second=run_tokens / train_time if train_time > 0 else 0.0,
        wall_time_s=time.perf_counter() - start, checkpoints=written, export_path=export_path,
        log_dir=config.log_dir, n_params=model.n_params,
        resumed_from=ckpt.path if ckpt else None, model=model)


def evaluate_loss(model: LlamaModel, tokens: np.ndarray, seq_len: int) -> float:
    """Mean next-token loss over consecutive windows of a token array."""
    tokens = np.asarray(tokens, np.int64)
    n = (tokens.size - 1) // seq_len
    if n < 1:
        raise DatasetError(f"need more than {seq_len} tokens to evaluate")
    x = tokens[: n * seq_len].reshape(n, seq_len)
    y = tokens[1: n * seq_len + 1].reshape(n, seq_len)
    return model.loss(x, y)

