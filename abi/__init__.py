"""abi: a local-AI toolkit around a from-scratch GGUF runtime.

Importing abi is cheap: subpackages load on first attribute access (``abi.llm``...).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBPACKAGES = (
    "agents", "ai", "batch", "cli", "config", "connectors", "embeddings", "errors", "gguf", "llm",
    "models_hub", "personas", "server", "training",
)
__all__ = list(_SUBPACKAGES) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"abi.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'abi' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))
