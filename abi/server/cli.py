"""``python -m abi serve``: the OpenAI- and Ollama-compatible HTTP server."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

from .. import config
from ..errors import ConfigError
from ..llm.cli import add_lora_arg


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m abi serve",
        description="Serve a GGUF model over OpenAI- and Ollama-compatible HTTP APIs.")
    p.add_argument("--model", "-m", default=None,
                   help="GGUF path or model-cache name (default: the default model)")
    p.add_argument("--embedding-model", default=None, metavar="E",
                   help="serve /v1/embeddings and /api/embed with this model ('default': "
                        "all-minilm-l6-v2); without it, embeddings are off")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health "
                        "(default: $ABI_API_KEY; none: open)")
    p.add_argument("--parallel", "-np", type=int, default=1, metavar="N",
                   help="generation slots: requests generated at once, sharing one model (default 1)")
    p.add_argument("--ctx", type=int, default=None, metavar="N",
                   help="context length of each slot (default: the model's)")
    p.add_argument("--queue", type=int, default=64, metavar="N",
                   help="requests that may wait for a slot; more get 429 (default 64)")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="cap on tokens generated per request (default: the context's room)")
    p.add_argument("--backend", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--kv-dtype", choices=("f32", "f16", "q8_0"), default="f32",
                   help="KV cache precision (q8_0: blocks of 32 with an f16 scale, as llama.cpp)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="refuse to start when weights + KV caches (ctx x parallel) + scratch "
                        "exceed SIZE, e.g. 4GiB (always: when they exceed the available memory)")
    p.add_argument("--prefill-chunk", type=int, default=64, metavar="N",
                   help="prompts of at most N tokens go whole into the next batched step "
                        "(default 64); longer ones in pieces of N, or beside running streams "
                        "of what fits in the time of the step's decode part or 60 ms, "
                        "whichever is longer")
    p.add_argument("--fit", action="store_true",
                   help="shrink the context to fit the memory instead of refusing")
    p.add_argument("--no-check", action="store_true", help="skip the load-time scan of the weights for NaN/Inf scales")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per forward pass")
    add_lora_arg(p)
    p.add_argument("--max-body-bytes", type=int, default=None, metavar="N",
                   help="largest request body accepted; larger ones get 413 (default: "
                        "$ABI_MAX_BODY_BYTES, else what the model's context can hold, a few "
                        "hundred KB for the default model)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    return p


def options_from_args(args):
    from ..llm.memory import parse_size
    from .state import ServeOptions

    for name in ("parallel", "ctx", "threads", "prefill_chunk"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be >= 1, got {value}", field=name)
    if args.queue < 0:
        raise ConfigError(f"--queue must be >= 0, got {args.queue}", field="queue")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise ConfigError(f"--max-tokens must be >= 1, got {args.max_tokens}", field="max_tokens")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], got {args.port}", field="port")
    api_key = args.api_key or config.env("ABI_API_KEY", secret=True)
    max_body = args.max_body_bytes
    if max_body is None:
        max_body = config.env("ABI_MAX_BODY_BYTES", cast=int)
    if max_body is not None and max_body < 1:
        raise ConfigError(f"--max-body-bytes must be >= 1, got {max_body}", field="max_body_bytes")
    return ServeOptions(model=args.model, embedding_model=args.embedding_model, host=args.host,
                        port=args.port, api_key=api_key, parallel=args.parallel, ctx=args.ctx,
                        queue=args.queue, max_tokens=args.max_tokens, backend=args.backend,
                        kv_dtype=args.kv_dtype, threads=args.threads, max_body=max_body,
                        check_finite=not args.no_check, lora=tuple(args.lora), fit=args.fit,
                        prefill_chunk=args.prefill_chunk,
                        max_memory=None if args.max_memory is None else parse_size(args.max_memory))


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from .app import create_app
    from .state import ServerState

    args = build_parser().parse_args(argv)
    options = options_from_args(args)
    from ..models_hub import KNOWN_MODELS, resolve_model

    # a model file that does not exist is refused before the server starts (a known name
    # not yet cached is fetched while /health answers 503)
    if options.model is not None and options.model not in KNOWN_MODELS:
        resolve_model(options.model, download=False)
    # tokenise in the server's one text thread: the tokenizers library's worker threads
    # would each keep a malloc arena of their own, swollen after a long prompt
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    state = ServerState(options)
    app = create_app(state=state)
    server = uvicorn.Server(uvicorn.Config(app, host=options.host, port=options.port,
                                           log_level="info", access_log=args.access_log,
                                           timeout_graceful_shutdown=5))

    def stop_if_loading_fails():
        state.ready_event.wait()
        if state.status == "error":
            server.should_exit = True

    def announce():  # once bound, so that --port 0 shows the port it got
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        sockets = [s for srv in (getattr(server, "servers", None) or []) for s in srv.sockets]
        port = sockets[0].getsockname()[1] if sockets else options.port
        auth = "API key required" if options.api_key else "no API key"
        if server.started:
            print(f"abi serve: http://{options.host}:{port} ({auth}; loading "
                  f"{options.model or 'the default model'})", file=sys.stderr, flush=True)

    threading.Thread(target=stop_if_loading_fails, daemon=True).start()
    threading.Thread(target=announce, daemon=True).start()
    server.run()
    if state.status == "error":
        raise state.error
    return 0
