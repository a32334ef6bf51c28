"""``python -m abi llm info|generate|chat|bench``."""
from __future__ import annotations

import argparse
import json
import sys
import time


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=None, help="GGUF path or model name (default model if omitted)")
    p.add_argument("--ctx", type=int, default=None, help="context length (default: the model's)")
    p.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--kv-dtype", choices=("f32", "f16", "q8_0"), default="f32",
                   help="KV cache precision (q8_0: blocks of 32 with an f16 scale, as llama.cpp)")
    p.add_argument("--no-check", action="store_true", help="skip the load-time scan of the weights for NaN/Inf scales")
    add_lora_arg(p)


def add_lora_arg(p: argparse.ArgumentParser) -> None:
    """``--lora PATH[:SCALE]`` (repeatable), as llama.cpp's --lora / --lora-scaled."""
    from .lora import parse_lora

    p.add_argument("--lora", action="append", default=[], type=parse_lora, metavar="PATH[:SCALE]",
                   help="LoRA adapter (llama.cpp's GGUF format) run unmerged, with an optional "
                        "scale (default 1); repeatable, the adapters' terms add up")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--max-tokens", "-n", type=int, default=256)
    g.add_argument("--temperature", "--temp", type=float, default=0.7, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=40, help="0 = off")
    g.add_argument("--top-p", type=float, default=0.9)
    g.add_argument("--min-p", type=float, default=0.0)
    g.add_argument("--repeat-penalty", type=float, default=1.1)
    g.add_argument("--repeat-last-n", type=int, default=64, help="penalty window")
    g.add_argument("--presence-penalty", type=float, default=0.0)
    g.add_argument("--frequency-penalty", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--logit-bias", action="append", default=[], metavar="TOKEN=BIAS",
                   help="add BIAS to token id TOKEN's logit (repeatable)")
    g.add_argument("--timeout", type=float, default=0.0, help="generation timeout in seconds")


def _add_structured_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("structured output (one of)").add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="the output is one JSON object")
    g.add_argument("--json-schema", metavar="SCHEMA",
                   help="the output validates against this JSON schema (JSON text, or a file)")
    g.add_argument("--regex", metavar="PATTERN", help="the output matches this regular expression")
    g.add_argument("--grammar", metavar="GRAMMAR",
                   help="the output follows this GBNF or Lark grammar (text, or a file)")


def _text_or_file(value: str) -> str:
    from pathlib import Path

    try:
        path = Path(value)
        if len(value) < 4096 and "\n" not in value and path.is_file():
            return path.read_text(encoding="utf-8")
    except OSError:
        pass
    return value


def _structured_options(args) -> dict:
    """``{"grammar": Grammar}`` for the structured-output flag given, else ``{}``."""
    from .constrain import Grammar, as_grammar

    if getattr(args, "json", False):
        return {"grammar": Grammar.json_object(field="json")}
    if getattr(args, "json_schema", None):
        return {"grammar": Grammar.json_schema(_text_or_file(args.json_schema), field="json_schema")}
    if getattr(args, "regex", None):
        return {"grammar": Grammar.regex(args.regex, field="regex")}
    if getattr(args, "grammar", None):
        return {"grammar": as_grammar(_text_or_file(args.grammar), field="grammar")}
    return {}


def _sampling_options(args) -> dict:
    from ..errors import ConfigError

    bias = {}
    for item in args.logit_bias:
        try:
            tok, val = item.split("=", 1)
            bias[int(tok)] = float(val)
        except ValueError:
            raise ConfigError(f"--logit-bias expects TOKEN=BIAS, got {item!r}", "logit_bias") from None
    return dict(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repeat_penalty,
                repetition_window=args.repeat_last_n, presence_penalty=args.presence_penalty,
                frequency_penalty=args.frequency_penalty, seed=args.seed, stop=args.stop,
                logit_bias=bias or None, generation_timeout_ns=int(args.timeout * 1e9))


def _engine(args):
    from .engine import Engine

    return Engine(backend=args.backend, n_ctx=args.ctx, kv_dtype=args.kv_dtype,
                  check_finite=not args.no_check, lora=args.lora).load_model(args.model)


def _print_stats(stats, out=sys.stderr) -> None:
    print(f"\n[prompt {stats.prompt_tokens} tokens ({stats.cached_tokens} cached), "
          f"{stats.prefill_tokens_per_second():.1f} tok/s | generated {stats.tokens_generated} tokens, "
          f"{stats.tokens_per_second():.1f} tok/s | first token {stats.time_to_first_token_ns / 1e6:.0f} ms"
          f" | finish: {stats.finish_reason}]", file=out)


def _stream(response) -> None:
    try:
        for event in response:
            if event.text:
                sys.stdout.write(event.text)
                sys.stdout.flush()
    except KeyboardInterrupt:
        response.close()
        sys.stdout.write(" [cancelled]")
    sys.stdout.write("\n")
    sys.stdout.flush()


def _info(argv: list[str]) -> int:
    from .info import format_info, model_info

    parser = argparse.ArgumentParser(prog="python -m abi llm info",
                                     description="Show what a GGUF model is.")
    parser.add_argument("model", nargs="?", default=None,
                        help="path or model name (default: the default model)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_lora_arg(parser)
    parser.add_argument("--ctx", type=int, default=None,
                        help="context length for the memory plan (default: the model's)")
    parser.add_argument("--parallel", type=int, default=1, help="KV cache slots for the memory plan")
    args = parser.parse_args(argv)
    info = model_info(args.model, args.lora, n_ctx=args.ctx, n_slots=args.parallel)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _generate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m abi llm generate",
                                description="Generate text from a prompt, streamed to stdout.")
    p.add_argument("prompt")
    _add_model_args(p)
    _add_sampling_args(p)
    _add_structured_args(p)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--system", default=None, help="system message (with --chat)")
    p.add_argument("--verbose", "-v", action="store_true", help="statistics on stderr")
    args = p.parse_args(argv)
    opts = {**_sampling_options(args), **_structured_options(args)}
    engine = _engine(args)
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                   [{"role": "user", "content": args.prompt}]
        response = engine.chat(messages, stream=True, **opts)
    else:
        response = engine.create_streaming_response(args.prompt, **opts)
    _stream(response)
    if args.verbose:
        _print_stats(response.get_stats())
    return 0


def _chat(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m abi llm chat",
                                description="Interactive chat. Commands: /reset, /system TEXT, "
                                            "/exit. Ctrl-C stops the current answer.")
    _add_model_args(p)
    _add_sampling_args(p)
    p.add_argument("--system", default=None, help="initial system message")
    p.add_argument("--verbose", "-v", action="store_true")
    args = p.parse_args(argv)
    engine = _engine(args)
    opts = _sampling_options(args)
    system = args.system
    history: list[dict] = []
    print(f"abi chat with {engine.model.path} (/reset, /system TEXT, /exit)", file=sys.stderr)
    while True:
        try:
            line = input(">>> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not line.strip():
            continue
        if line.strip() in ("/exit", "/quit", "/bye"):
            return 0
        if line.strip() == "/reset":
            history.clear()
            print("(history cleared)", file=sys.stderr)
            continue
        if line.startswith("/system"):
            system = line[len("/system"):].strip() or None
            history.clear()
            print(f"(system message {'set' if system else 'cleared'}; history cleared)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        response = engine.chat(messages, stream=True, **opts)
        _stream(response)
        history.append({"role": "assistant", "content": response.text})
        if args.verbose:
            _print_stats(response.get_stats())


def _bench(argv: list[str]) -> int:
    import numpy as np

    p = argparse.ArgumentParser(prog="python -m abi llm bench",
                                description="Prefill and decode speed, like llama-bench.")
    _add_model_args(p)
    p.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens")
    p.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens")
    p.add_argument("-r", "--repetitions", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from ..errors import ConfigError

    for flag, name in (("-p", "n_prompt"), ("-n", "n_gen"), ("-r", "repetitions")):
        if getattr(args, name) < 1:
            raise ConfigError(f"{flag} must be >= 1, got {getattr(args, name)}", field=name)
    t0 = time.perf_counter()
    from .model import load_model

    need = args.n_prompt + args.n_gen + 8
    model = load_model(args.model, n_ctx=max(need, 256) if args.ctx is None else args.ctx,
                       kv_dtype=args.kv_dtype, check_finite=not args.no_check, lora=args.lora)
    load_s = time.perf_counter() - t0
    model.check_context(args.n_prompt + args.n_gen)
    rng = np.random.default_rng(0)
    normal = [i for i, t in enumerate(model.tokenizer.token_types) if t == 1] or list(range(model.n_vocab))
    prefill, decode = [], []
    for _ in range(args.repetitions):
        ids = [int(i) for i in rng.choice(normal, size=args.n_prompt)]
        cache = model.new_cache()
        t = time.perf_counter()
        model.forward(ids, cache, "last")
        prefill.append(args.n_prompt / (time.perf_counter() - t))
        cache = model.new_cache()
        logits = model.forward(ids[:1], cache, "last")
        t = time.perf_counter()
        for _ in range(args.n_gen):
            logits = model.forward([int(np.argmax(logits[0]))], cache, "last")
        decode.append(args.n_gen / (time.perf_counter() - t))
    result = {"model": model.path, "n_prompt": args.n_prompt, "n_gen": args.n_gen,
              "repetitions": args.repetitions, "load_s": load_s,
              "prefill_tps": float(np.mean(prefill)), "prefill_tps_std": float(np.std(prefill)),
              "decode_tps": float(np.mean(decode)), "decode_tps_std": float(np.std(decode))}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model      {model.path}\nload       {load_s:.2f} s\n"
              f"pp{args.n_prompt:<7} {result['prefill_tps']:8.1f} ± {result['prefill_tps_std']:.1f} tok/s\n"
              f"tg{args.n_gen:<7} {result['decode_tps']:8.1f} ± {result['decode_tps_std']:.1f} tok/s")
    return 0


SUBCOMMANDS = {"info": _info, "generate": _generate, "chat": _chat, "bench": _bench}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        asked = not argv or argv[0] in ("-h", "--help")
        if not asked:
            print(f"abi llm: unknown subcommand {argv[0]!r}\n", file=sys.stderr)
        print("usage: python -m abi llm {" + ",".join(SUBCOMMANDS) + "} [ARGS...]\n\n"
              "  info      what a GGUF model is\n  generate  generate text from a prompt\n"
              "  chat      interactive chat\n  bench     prefill and decode speed",
              file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    return SUBCOMMANDS[argv[0]](argv[1:])
