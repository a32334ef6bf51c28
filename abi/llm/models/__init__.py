"""One module per GGUF ``general.architecture``; each exports ``ModelArgs`` and ``Model``."""
from __future__ import annotations

import importlib

from ...errors import UnsupportedModelError

# general.architecture -> module under abi.llm.models
ARCHITECTURES = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen3moe": "qwen3moe",
    "qwen2moe": "qwen2moe",
    "dots1": "dots1",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "olmo2": "olmo2",
    "phi3": "phi3",
    "granite": "granite",
    "granitemoe": "granite",
    "gpt-oss": "gpt_oss",
    "smollm3": "smollm3",
    "bert": "bert",
}


def get_architecture(name: str | None):
    """The module implementing ``name``, or UnsupportedModelError listing what is supported."""
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"architecture {name!r} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}")
    return importlib.import_module(f"{__name__}.{ARCHITECTURES[name]}")
