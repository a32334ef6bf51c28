"""``python -m abi batch embed|generate INPUT --out OUT [--ray [ADDRESS]]``."""
from __future__ import annotations

import argparse
import sys

from ..llm.cli import _add_sampling_args, _add_structured_args, _sampling_options, _structured_options


def _add_job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="JSONL, Parquet or plain text (one item per line)")
    p.add_argument("--out", "-o", required=True,
                   help="output folder of shards; OUT.parquet or OUT.jsonl picks the format")
    p.add_argument("--format", choices=("parquet", "jsonl"), default=None,
                   help="output format (default: from OUT's suffix, else parquet)")
    p.add_argument("--input-format", choices=("jsonl", "parquet", "text"), default=None,
                   help="input format (default: from INPUT's suffix; anything else is text)")
    p.add_argument("--id-field", default=None, help="field holding each item's id (default: its row)")
    p.add_argument("--shard-size", type=int, default=None,
                   help="items per output shard (default: 1024 to embed, 32 to generate)")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted job: skip the shards already written")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("Ray")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray: alone, a local cluster started for the job; 'auto' or an "
                        "address, an existing cluster")
    g.add_argument("--workers", type=int, default=None,
                   help="actors, each loading the model once (default 2)")
    g.add_argument("--cpus-per-worker", type=int, default=None,
                   help="CPUs (threads) per actor (default 1)")
    g.add_argument("--max-retries", type=int, default=None,
                   help="times a batch is retried after its actor died (default 3); then the "
                        "job fails, keeping the shards written")


def _ray_options(args):
    from .job import RayOptions

    if args.ray is None:
        if (args.workers, args.cpus_per_worker, args.max_retries) != (None, None, None):
            from ..errors import ConfigError

            raise ConfigError("--workers, --cpus-per-worker and --max-retries shape a Ray job: "
                              "add --ray", "ray")
        return None
    given = {k: v for k, v in (("workers", args.workers), ("cpus_per_worker", args.cpus_per_worker),
                               ("max_retries", args.max_retries)) if v is not None}
    return RayOptions(address=None if args.ray == "local" else args.ray, **given)


def _threads(args) -> int | None:
    """An actor uses the CPUs Ray gives it; the local process, every core."""
    return _ray_options(args).cpus_per_worker if args.ray is not None else None


def _run(spec, args) -> int:
    from .job import run_job

    report = run_job(spec, args.input, args.out, input_format=args.input_format,
                     id_field=args.id_field, out_format=args.format, shard_size=args.shard_size,
                     resume=args.resume, ray=_ray_options(args), progress=not args.no_progress)
    print(f"{report.out}: {report.rows} items in {report.shards} shards ({report.written} written"
          f", {report.skipped} already there); {report.processed} items in {report.seconds:.1f} s"
          f" ({report.items_per_second:.1f} items/s)")
    return 0


def _embed(argv: list[str]) -> int:
    from .work import JobSpec

    p = argparse.ArgumentParser(prog="python -m abi batch embed",
                                description="Embed every text of INPUT into a folder of shards.")
    _add_job_args(p)
    p.add_argument("--text-field", default="text", help="field holding the text (JSONL, Parquet)")
    p.add_argument("--model", "-m", default=None, help="embedding GGUF path or name (default: all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per encoder pass")
    p.add_argument("--pooling", choices=("mean", "cls", "last"), default=None)
    p.add_argument("--no-normalize", action="store_true", help="keep the vectors' length")
    p.add_argument("--truncate", action="store_true", help="cut texts longer than the context")
    p.add_argument("--max-tokens", type=int, default=None, help="token limit per text")
    args = p.parse_args(argv)
    opts = {"normalize": not args.no_normalize, "batch_size": args.batch_size,
            "pooling": args.pooling, "truncate": args.truncate, "max_tokens": args.max_tokens}
    spec = JobSpec("embed", args.text_field, "text", args.model, opts,
                   n_threads=_threads(args))
    return _run(spec, args)


def _generate(argv: list[str]) -> int:
    from ..llm.cli import _add_model_args
    from .work import JobSpec

    p = argparse.ArgumentParser(prog="python -m abi batch generate",
                                description="Generate for every prompt (or chat) of INPUT into a "
                                            "folder of shards. With --seed, item i samples with "
                                            "seed + i, wherever it runs.")
    _add_job_args(p)
    fields = p.add_mutually_exclusive_group()
    fields.add_argument("--prompt-field", default=None, help="field holding the prompt (default: prompt)")
    fields.add_argument("--messages-field", default=None,
                        help="field holding a chat: a list of {role, content}")
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the chat template")
    p.add_argument("--system", default=None, help="system message (with --chat)")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="items decoded together in batched steps, per worker (default 1; the "
                        "results do not depend on it)")
    _add_model_args(p)
    _add_sampling_args(p)
    _add_structured_args(p)
    args = p.parse_args(argv)
    if args.messages_field and (args.chat or args.system):
        from ..errors import ConfigError

        raise ConfigError("--chat and --system wrap prompts; a chat from --messages-field holds "
                          "its own system message", "system")
    options = {**_sampling_options(args), **_structured_options(args)}
    if args.chat or args.system:
        options.update(chat=True, system=args.system)
    kind, field = ("messages", args.messages_field) if args.messages_field else \
        ("text", args.prompt_field or "prompt")
    model_opts = {"backend": args.backend, "n_ctx": args.ctx, "kv_dtype": args.kv_dtype,
                  "check_finite": not args.no_check, "n_slots": args.parallel}
    spec = JobSpec("generate", field, kind, args.model, model_opts, options,
                   n_threads=_threads(args))
    return _run(spec, args)


SUBCOMMANDS = {"embed": _embed, "generate": _generate}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        asked = not argv or argv[0] in ("-h", "--help")
        if not asked:
            print(f"abi batch: unknown subcommand {argv[0]!r}\n", file=sys.stderr)
        print("usage: python -m abi batch {embed,generate} INPUT --out OUT [--ray [ADDRESS]] ...\n\n"
              "  embed     embed every text of INPUT\n"
              "  generate  generate for every prompt or chat of INPUT",
              file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    return SUBCOMMANDS[argv[0]](argv[1:])
