"""``python -m abi train ...`` and ``python -m abi convert ...``: argument parsing only; the
work happens in the training modules."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ..errors import ConfigError

_TRAIN_USAGE = """\
usage: python -m abi train COMMAND [OPTIONS]

commands:
  run       train the model with the given options (defaults below)
  info      show the default configuration
  resume    resume training from a checkpoint: train resume PATH
  llm       train a llama-architecture LLM on a TokenBin dataset (see train llm --help)
  lora      fine-tune a GGUF model with LoRA on JSONL data (see train lora --help)
  help      show this help and every option

options of train run:
  -e, --epochs N                  number of epochs (default: 10)
  -b, --batch-size N              batch size (default: 32)
  --sample-count N                samples in the synthetic dataset (default: 1024)
  --model-size N                  model parameters (default: 512)
  --lr, --learning-rate X         learning rate (default: 0.001)
  --optimizer NAME                sgd, adam, adamw (default: adamw)
  --lr-schedule NAME              constant, cosine, warmup_cosine, step, polynomial (default: constant)
  --gradient-accumulation-steps N micro-batches per optimizer step (default: 1)
  --checkpoint-interval N         steps between checkpoints (default: 0 = final one only)
  --checkpoint-path PATH          path to save checkpoints (numbered beside it)
  --max-checkpoints N             checkpoints kept (default: 3)
  --mixed-precision [fp16|bf16]   enable mixed precision training (default type: fp16)
  --seed N                        random seed (default: 42)
  --weight-decay X, --momentum X, --nesterov, --grad-clip X, --warmup-steps N
  --json                          print the report as JSON
  --no-progress                   no progress bar
"""


def _add_save_error_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-save-error", choices=("abort", "retry"), default="abort",
                   help="a checkpoint that cannot be written: abort (the default) stops the run; "
                        "retry keeps training in memory and tries again (the final save "
                        "several times, a few seconds apart)")


def _print_checkpoints(paths: list[str]) -> None:
    # older files are pruned to --max-checkpoints: list only those still on disk
    kept = [p for p in paths if os.path.exists(p)]
    print(f"checkpoints written: {len(paths)} ({len(kept)} kept)")
    for path in kept:
        print(f"  {path}")


def _train_parser() -> argparse.ArgumentParser:
    from .trainer import TrainingConfig

    d = TrainingConfig()
    p = argparse.ArgumentParser(prog="python -m abi train run", add_help=True)
    p.add_argument("-e", "--epochs", type=int, default=d.epochs)
    p.add_argument("-b", "--batch-size", type=int, default=d.batch_size)
    p.add_argument("--sample-count", type=int, default=d.sample_count)
    p.add_argument("--model-size", type=int, default=d.model_size)
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float,
                   default=d.learning_rate)
    p.add_argument("--optimizer", default=d.optimizer, choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr-schedule", default=d.lr_schedule,
                   choices=["constant", "cosine", "warmup_cosine", "step", "polynomial"])
    p.add_argument("--gradient-accumulation-steps", type=int, default=d.gradient_accumulation_steps)
    p.add_argument("--checkpoint-interval", type=int, default=d.checkpoint_interval)
    p.add_argument("--checkpoint-path", default=d.checkpoint_path)
    p.add_argument("--max-checkpoints", type=int, default=d.max_checkpoints)
    _add_save_error_arg(p)
    p.add_argument("--mixed-precision", nargs="?", const="fp16", default="fp32",
                   choices=["fp16", "bf16", "fp32"])
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def _print_report(report, as_json: bool) -> None:
    if as_json:
        d = {f.name: getattr(report, f.name) for f in dataclasses.fields(report)
             if f.name != "weights"}
        print(json.dumps(d, indent=2))
        return
    for i, loss in enumerate(report.loss_per_epoch, 1):
        print(f"epoch {i:3d}  loss {loss:.6f}")
    print(f"steps: {report.steps} (skipped for overflow: {report.skipped_steps})")
    print(f"final loss: {report.final_loss:.6f}  accuracy: {report.accuracy:.3f}  "
          f"parameters: {report.parameter_count}")
    if report.loss_scale is not None:
        print(f"loss scale: {report.loss_scale:g}")
    _print_checkpoints(report.checkpoints)
    print(f"wall time: {report.wall_time_s:.3f} s")


def _run(argv: list[str]) -> int:
    from .trainer import TrainingConfig, train

    a = _train_parser().parse_args(argv)
    cfg = TrainingConfig(
        epochs=a.epochs, batch_size=a.batch_size, sample_count=a.sample_count,
        model_size=a.model_size, learning_rate=a.learning_rate, optimizer=a.optimizer,
        lr_schedule=a.lr_schedule, gradient_accumulation_steps=a.gradient_accumulation_steps,
        checkpoint_interval=a.checkpoint_interval, checkpoint_path=a.checkpoint_path,
        max_checkpoints=a.max_checkpoints, on_save_error=a.on_save_error,
        mixed_precision=a.mixed_precision, seed=a.seed,
        weight_decay=a.weight_decay, momentum=a.momentum, nesterov=a.nesterov,
        grad_clip=a.grad_clip, warmup_steps=a.warmup_steps)
    report = train(cfg, progress=not (a.no_progress or a.json))
    _print_report(report, a.json)
    return 0


def _info(argv: list[str]) -> int:
    from .llm_trainer import LlmTrainingConfig
    from .trainer import TrainingConfig

    print("default training configuration (train run):")
    for k, v in TrainingConfig().to_dict().items():
        print(f"  {k:<28} {v}")
    print("\ndefault LLM training configuration (train llm):")
    for k, v in LlmTrainingConfig().to_dict().items():
        print(f"  {k:<28} {v}")
    return 0


def _resume(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m abi train resume")
    p.add_argument("path", help="a checkpoint file, or the --checkpoint-path of a run")
    p.add_argument("--epochs", type=int, help="train run: raise the epoch count")
    p.add_argument("--steps", type=int, help="train llm: raise the step count")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    from .checkpoint import resolve_checkpoint

    kind = resolve_checkpoint(a.path).meta.get("kind")
    if kind == "llm":
        from .llm_trainer import load_llm_checkpoint, train_llm

        ckpt = load_llm_checkpoint(a.path)
        cfg = ckpt.config
        if a.steps:
            cfg.steps = a.steps
        if ckpt.step >= cfg.steps:
            print(f"{ckpt.path}: the run is complete (step {ckpt.step} of {cfg.steps}); "
                  "pass --steps N to train further")
            return 0
        report = train_llm(cfg, resume_from=a.path, progress=not a.no_progress)
        _print_llm_report(report)
        return 0
    from .trainer import load_checkpoint, train

    ckpt = load_checkpoint(a.path)
    cfg = ckpt.config
    if a.epochs:
        cfg.epochs = a.epochs
    if ckpt.epoch >= cfg.epochs:
        print(f"{ckpt.path}: the run is complete (epoch {ckpt.epoch} of {cfg.epochs}, step "
              f"{ckpt.step}); pass --epochs N to train further")
        return 0
    report = train(cfg, resume_from=a.path, progress=not (a.no_progress or a.json))
    print(f"resumed from {report.resumed_from}")
    _print_report(report, a.json)
    return 0


# --- train llm -----------------------------------------------------------------------------

def _llm_parser() -> argparse.ArgumentParser:
    from .llm_trainer import LlmTrainingConfig as C

    p = argparse.ArgumentParser(
        prog="python -m abi train llm",
        description="Train a llama-architecture model in numpy: fine-tune a float copy of a "
                    "GGUF model (--init) or train from scratch (--vocab-from + sizes).")
    p.add_argument("--data", required=True, help="TokenBin dataset (python -m abi convert tokenize)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--init", metavar="MODEL.gguf", help="fine-tune this llama GGUF model")
    src.add_argument("--vocab-from", metavar="MODEL.gguf",
                     help="from scratch, with this GGUF model's tokenizer")
    p.add_argument("--n-layer", type=int, default=C.n_layer)
    p.add_argument("--n-embd", type=int, default=C.n_embd)
    p.add_argument("--n-head", type=int, default=C.n_head)
    p.add_argument("--n-head-kv", type=int, default=None)
    p.add_argument("--n-ff", type=int, default=None)
    p.add_argument("--steps", type=int, default=C.steps)
    p.add_argument("--batch-size", type=int, default=C.batch_size)
    p.add_argument("--seq-len", type=int, default=C.seq_len)
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float,
                   default=C.learning_rate)
    p.add_argument("--optimizer", default=C.optimizer, choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr-schedule", default=C.lr_schedule,
                   choices=["constant", "cosine", "warmup_cosine", "step", "polynomial"])
    p.add_argument("--gradient-accumulation-steps", type=int, default=C.gradient_accumulation_steps)
    p.add_argument("--grad-clip", type=float, default=C.grad_clip)
    p.add_argument("--seed", type=int, default=C.seed)
    p.add_argument("--log-dir")
    p.add_argument("--tensorboard", action="store_true", help="TensorBoard event files in --log-dir")
    p.add_argument("--wandb", action="store_true", help="W&B offline run in --log-dir/wandb/")
    p.add_argument("--log-interval", type=int, default=C.log_interval)
    p.add_argument("--checkpoint-path")
    p.add_argument("--checkpoint-interval", type=int, default=C.checkpoint_interval)
    p.add_argument("--max-checkpoints", type=int, default=C.max_checkpoints)
    _add_save_error_arg(p)
    p.add_argument("--export-gguf", metavar="OUT.gguf")
    p.add_argument("--export-type", default=C.export_type, choices=["f32", "f16", "q8_0"])
    p.add_argument("--no-progress", action="store_true")
    return p


def _print_llm_report(r) -> None:
    print(f"steps: {r.steps}  final loss: {r.final_loss:.4f}  perplexity: {r.perplexity:.2f}")
    print(f"tokens/s: {r.tokens_per_second:.1f}  wall time: {r.wall_time_s:.2f} s")
    _print_checkpoints(r.checkpoints)
    if r.export_path:
        print(f"exported GGUF: {r.export_path}")


def _llm(argv: list[str]) -> int:
    from .llm_trainer import LlmTrainingConfig, train_llm

    a = _llm_parser().parse_args(argv)
    if (a.tensorboard or a.wandb) and not a.log_dir:
        raise ConfigError("--tensorboard/--wandb need --log-dir", field="log_dir")
    cfg = LlmTrainingConfig(
        data_path=a.data, init_gguf=a.init, vocab_from=a.vocab_from, n_layer=a.n_layer,
        n_embd=a.n_embd, n_head=a.n_head, n_head_kv=a.n_head_kv, n_ff=a.n_ff, steps=a.steps,
        batch_size=a.batch_size, seq_len=a.seq_len, learning_rate=a.learning_rate,
        optimizer=a.optimizer, lr_schedule=a.lr_schedule,
        gradient_accumulation_steps=a.gradient_accumulation_steps, grad_clip=a.grad_clip,
        seed=a.seed, log_dir=a.log_dir, enable_tensorboard=a.tensorboard, enable_wandb=a.wandb,
        log_interval=a.log_interval, checkpoint_path=a.checkpoint_path,
        checkpoint_interval=a.checkpoint_interval, max_checkpoints=a.max_checkpoints,
        on_save_error=a.on_save_error, export_gguf_path=a.export_gguf, export_type=a.export_type)
    report = train_llm(cfg, progress=not a.no_progress)
    _print_llm_report(report)
    return 0


def _lora_parser() -> argparse.ArgumentParser:
    from .lora_trainer import LoraConfig as C

    p = argparse.ArgumentParser(
        prog="python -m abi train lora",
        description="LoRA fine-tuning of a GGUF model (llama, qwen2, gemma3, ... any quant type): "
                    "the base stays frozen and quantised; writes an adapter GGUF in llama.cpp's "
                    "format (llama-cli --lora, abi --lora).")
    p.add_argument("--model", required=True, help="base model: a GGUF path or a model name")
    p.add_argument("--data", required=True,
                   help='JSONL: {"messages": [...]}, {"prompt", "completion"} or {"text"} per line')
    p.add_argument("--out", required=True, metavar="ADAPTER.gguf")
    p.add_argument("--steps", type=int, default=C.steps)
    p.add_argument("--rank", type=int, default=C.rank)
    p.add_argument("--alpha", type=float, default=C.alpha)
    p.add_argument("--dropout", type=float, default=C.dropout)
    p.add_argument("--lora-layers", type=int, default=None, help="adapt the last N layers (default: all)")
    p.add_argument("--targets", default=",".join(C.targets),
                   help="comma-separated projections to adapt: q,k,v,o,gate,up,down "
                        f"(default: {','.join(C.targets)})")
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=C.learning_rate)
    p.add_argument("--optimizer", default=C.optimizer, choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr-schedule", default=C.lr_schedule,
                   choices=["constant", "cosine", "warmup_cosine", "step", "polynomial"])
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--weight-decay", type=float, default=C.weight_decay)
    p.add_argument("--grad-clip", type=float, default=C.grad_clip)
    p.add_argument("--batch-size", type=int, default=C.batch_size)
    p.add_argument("--grad-accum", type=int, default=C.grad_accum)
    p.add_argument("--max-seq-len", type=int, default=C.max_seq_len)
    p.add_argument("--val-split", type=float, default=C.val_split, help="fraction held out for validation")
    p.add_argument("--val-every", type=int, default=C.val_every, help="steps between validation losses")
    p.add_argument("--checkpoint-dir", help="checkpoint base path (numbered files beside it)")
    p.add_argument("--checkpoint-interval", type=int, default=C.checkpoint_interval)
    p.add_argument("--max-checkpoints", type=int, default=C.max_checkpoints)
    _add_save_error_arg(p)
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS and dequantising threads (default: the libraries' own)")
    p.add_argument("--no-recompute", action="store_true",
                   help="keep every adapted layer's activations instead of recomputing them in "
                        "the backward: a forward less per step, more memory")
    p.add_argument("--seed", type=int, default=C.seed)
    p.add_argument("--log-dir")
    p.add_argument("--tensorboard", action="store_true", help="TensorBoard event files in --log-dir")
    p.add_argument("--wandb", action="store_true", help="W&B offline run in --log-dir/wandb/")
    p.add_argument("--no-progress", action="store_true")
    return p


def _lora(argv: list[str]) -> int:
    from ..models_hub import resolve_model
    from .lora_trainer import LoraConfig, train_lora

    a = _lora_parser().parse_args(argv)
    cfg = LoraConfig(
        model=str(resolve_model(a.model)), data=a.data, out=a.out, rank=a.rank, alpha=a.alpha,
        dropout=a.dropout, lora_layers=a.lora_layers,
        targets=tuple(t.strip() for t in a.targets.split(",") if t.strip()), steps=a.steps,
        batch_size=a.batch_size, grad_accum=a.grad_accum, max_seq_len=a.max_seq_len,
        learning_rate=a.learning_rate, optimizer=a.optimizer, lr_schedule=a.lr_schedule,
        warmup_steps=a.warmup_steps, weight_decay=a.weight_decay, grad_clip=a.grad_clip,
        val_split=a.val_split, val_every=a.val_every, seed=a.seed, checkpoint_dir=a.checkpoint_dir,
        checkpoint_interval=a.checkpoint_interval, max_checkpoints=a.max_checkpoints,
        on_save_error=a.on_save_error, log_dir=a.log_dir, enable_tensorboard=a.tensorboard,
        enable_wandb=a.wandb, threads=a.threads, recompute=not a.no_recompute)
    r = train_lora(cfg, resume_from=a.resume, progress=not a.no_progress)
    print(f"steps: {r.steps}  final loss: {r.final_loss:.4f}  tokens/s: {r.tokens_per_second:.1f}  "
          f"wall time: {r.wall_time_s:.1f} s")
    print(f"examples: {r.n_train} train, {r.n_val} validation ({r.truncated} cut to --max-seq-len)")
    for at, v in r.val_losses:
        print(f"  validation loss at step {at}: {v:.4f}")
    _print_checkpoints(r.checkpoints)
    print(f"adapter: {r.out} ({r.n_params} parameters)")
    return 0


def main_train(argv: list[str]) -> int:
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(_TRAIN_USAGE)
        if argv and argv[0] == "help":
            print("options of train llm:")
            print(_llm_parser().format_help())
            print("options of train lora:")
            print(_lora_parser().format_help())
        return 0
    command, rest = argv[0], argv[1:]
    handlers = {"run": _run, "info": _info, "resume": _resume, "llm": _llm, "lora": _lora}
    if command not in handlers:
        print(f"abi train: unknown command {command!r}\n\n{_TRAIN_USAGE}", file=sys.stderr)
        return 2
    try:
        return handlers[command](rest)
    except SystemExit as exc:  # argparse: --help exits 0, bad options exit 2
        return int(exc.code or 0)


# --- convert -------------------------------------------------------------------------------

_CONVERT_USAGE = """\
usage: python -m abi convert COMMAND [OPTIONS]

commands:
  dataset     --input A --output B --format to-wdbx|to-tokenbin [--chunk-tokens N]
  tokenize    --model MODEL.gguf --input text.txt --output data.bin [--no-bos]
  hf-to-gguf  convert a Hugging Face model directory to GGUF
"""


def _convert_dataset(argv: list[str]) -> int:
    from . import datasets

    p = argparse.ArgumentParser(prog="python -m abi convert dataset")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--format", required=True, choices=["to-wdbx", "to-tokenbin"])
    p.add_argument("--chunk-tokens", type=int, default=datasets.DEFAULT_CHUNK_TOKENS,
                   help="tokens per WDBX record (to-wdbx)")
    a = p.parse_args(argv)
    if a.format == "to-wdbx":
        out = datasets.tokenbin_to_wdbx(a.input, a.output, a.chunk_tokens)
        w = datasets.read_wdbx(out)
        print(f"wrote {out}: {w.metadata['token_count']} tokens in {len(w)} records "
              f"({w.dtype.name})")
    else:
        out = datasets.wdbx_to_tokenbin(a.input, a.output)
        tb = datasets.read_tokenbin(out)
        print(f"wrote {out}: {tb.count} tokens ({tb.dtype.name})")
    return 0


def _convert_tokenize(argv: list[str]) -> int:
    from . import datasets

    p = argparse.ArgumentParser(prog="python -m abi convert tokenize")
    p.add_argument("--model", required=True, help="GGUF model whose tokenizer to use")
    p.add_argument("--input", required=True, help="UTF-8 text file")
    p.add_argument("--output", required=True, help="TokenBin file to write")
    p.add_argument("--no-bos", action="store_true", help="do not prepend BOS")
    a = p.parse_args(argv)
    tb = datasets.tokenize_text_file(a.model, a.input, a.output,
                                     add_bos=False if a.no_bos else None)
    print(f"wrote {a.output}: {tb.count} tokens ({tb.dtype.name})")
    return 0


def _convert_hf_to_gguf(argv: list[str]) -> int:
    from ..embeddings import convert

    return int(convert.main(argv) or 0)


def main_convert(argv: list[str]) -> int:
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(_CONVERT_USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    handlers = {"dataset": _convert_dataset, "tokenize": _convert_tokenize,
                "hf-to-gguf": _convert_hf_to_gguf}
    if command not in handlers:
        print(f"abi convert: unknown command {command!r}\n\n{_CONVERT_USAGE}", file=sys.stderr)
        return 2
    try:
        return handlers[command](rest)
    except SystemExit as exc:
        return int(exc.code or 0)
