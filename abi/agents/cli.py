"""``python -m abi agent``: chat with an agent, interactively or with one ``--message``."""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

from abi import config
from abi.agents import gpu_cli
from abi.agents.agent import Agent
from abi.agents.config import BACKENDS, AgentConfig
from abi.errors import AbiError
from abi.llm.cli import add_lora_arg

HELP = """commands: /clear (forget the conversation), /history (show it), /help, /exit"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m abi agent",
        description="Chat with an AI agent. Without --message, reads one message a line "
                    "from stdin and answers each, keeping the conversation.")
    p.add_argument("-m", "--message", help="send this one message, print the reply, exit "
                                           "('-' reads it from stdin)")
    p.add_argument("--backend", choices=BACKENDS,
                   default=config.env("ABI_AGENT_BACKEND", "local"),
                   help="where replies come from (default: $ABI_AGENT_BACKEND or local)")
    p.add_argument("--model", help="the backend's model (a GGUF path or name for local)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--temperature", type=float, default=0.7, help="0 to 2 (default 0.7)")
    p.add_argument("--top-p", type=float, default=0.9, help="0 to 1 (default 0.9)")
    p.add_argument("--max-tokens", type=int, default=1024, help="reply length limit")
    p.add_argument("--base-url", help="server URL for the openai, ollama or huggingface backend")
    p.add_argument("--name", default="cli-agent", help="the agent's name")
    p.add_argument("--no-stream", action="store_true", help="print each reply when complete")
    p.add_argument("--tool", action="append", default=[], metavar="MODULE:FUNCTION",
                   help="a Python function the model may call (repeatable; replies then "
                        "come whole)")
    p.add_argument("--no-history", action="store_true",
                   help="answer each message on its own")
    add_lora_arg(p)
    gpu_cli.add_arguments(p)
    return p


def _reply(agent: Agent, text: str, stream: bool, out: TextIO) -> None:
    if not stream:
        out.write(agent.chat(text) + "\n")
        out.flush()
        return
    pieces = agent.chat_stream(text)
    try:
        for piece in pieces:
            out.write(piece)
            out.flush()
    finally:
        pieces.close()
        out.write("\n")
        out.flush()


def _interactive(agent: Agent, stream: bool, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    tty = stdin.isatty()
    if tty:
        err.write(f"abi agent '{agent.name}' (backend={agent.config.backend}, "
                  f"model={agent.model or 'default'}). {HELP}. Ctrl-D ends.\n")
    while True:
        if tty:
            err.write("you> ")
            err.flush()
        line = stdin.readline()
        if not line:
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/help":
            err.write(HELP + "\n")
            continue
        if text == "/clear":
            agent.clear_history()
            err.write("(history cleared)\n")
            continue
        if text == "/history":
            for m in agent.history():
                out.write(f"{m.role}: {m.content}\n")
            out.write(f"({agent.history_count()} messages)\n")
            continue
        try:
            _reply(agent, text, stream, out)
        except KeyboardInterrupt:
            err.write("(interrupted)\n")
        except AbiError as exc:  # say what failed and keep the conversation going
            err.write(f"abi: error: {exc}\n")


def _load_tool(spec: str):
    """``module:function`` imported; anything else is a ConfigError naming it."""
    import importlib

    from abi.errors import ConfigError

    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name) if module and name else None
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--tool {spec!r}: {exc}", field="tool") from None
    if not callable(fn):
        raise ConfigError(f"--tool {spec!r} must name a function as module:function", field="tool")
    return fn


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.gpu_aware or args.gpu_stats:
        return gpu_cli.main(args)
    agent = Agent(AgentConfig(
        name=args.name, backend=args.backend, model=args.model, system_prompt=args.system,
        temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
        enable_history=not args.no_history, base_url=args.base_url,
        tools=[_load_tool(t) for t in args.tool] or None, lora=tuple(args.lora)))
    stream = not args.no_stream and not args.tool
    if args.message is not None:
        text = sys.stdin.read() if args.message == "-" else args.message
        _reply(agent, text, stream, sys.stdout)
        return 0
    return _interactive(agent, stream, sys.stdin, sys.stdout, sys.stderr)
