"""``python -m abi llm info|generate|chat|bench``."""
from __future__ import annotations

import argparse
import json


def _info(argv: list[str]) -> int:
    from .info import format_info, model_info

    parser = argparse.ArgumentParser(prog="python -m abi llm info",
                                     description="Show what a GGUF model is.")
    parser.add_argument("model", nargs="?", default=None,
                        help="path or model name (default: the default model)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    info = model_info(args.model)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


SUBCOMMANDS = {"info": _info}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        print("usage: python -m abi llm {" + ",".join(SUBCOMMANDS) + "} [ARGS...]")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return SUBCOMMANDS[argv[0]](argv[1:])
