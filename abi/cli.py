"""``python -m abi``: a thin dispatcher. Each command lives in the module that owns it,
which exposes ``main(argv) -> int``; nothing is imported until its command runs."""
from __future__ import annotations

import importlib
import sys

# command -> (module with main(argv), one-line help)
COMMANDS = {
    "llm": ("abi.llm.cli", "inspect and run GGUF language models (info, generate, chat, bench)"),
    "pull": ("abi.models_hub", "fetch a model into the model cache"),
    "list": ("abi.models_hub", "list the models in the model cache"),
    "agent": ("abi.agents.cli", "chat with an agent (local model, OpenAI, Ollama, HuggingFace)"),
    "train": ("abi.training.cli", "train models (run, info, resume, llm) with checkpoints"),
    "convert": ("abi.training.cli", "convert datasets (TokenBin <-> WDBX), tokenize text, hf-to-gguf"),
    "quantize": ("abi.quantize", "quantise a GGUF model (Q4_K_M, Q8_0, ...) with llama.cpp's rules"),
    "lora": ("abi.lora_fuse", "merge LoRA adapters into a GGUF model (fuse)"),
    "batch": ("abi.batch.cli", "embed or generate over a corpus, locally or on a Ray cluster (--ray)"),
    "serve": ("abi.server.cli", "OpenAI- and Ollama-compatible HTTP server (streaming, slots, metrics)"),
}


def _usage() -> str:
    lines = ["usage: python -m abi [--debug] COMMAND [ARGS...]", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:<10} {text}")
    lines += ["", "Run 'python -m abi COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from abi import __version__
        print(f"abi {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"abi: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from abi.errors import AbiError

    try:
        module = importlib.import_module(COMMANDS[command][0])
        entry = getattr(module, "main_" + command, None) or module.main
        return int(entry(rest) or 0)
    except AbiError as exc:
        if debug:
            raise
        print(f"abi: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("abi: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if debug:
            raise
        # a defect of abi, not of the input: one line, the traceback only on request
        print(f"abi: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
              f"traceback, and please report it)", file=sys.stderr)
        return 70
