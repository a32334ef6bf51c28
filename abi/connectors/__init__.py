"""Connectors to model providers and platforms (the reference's ``abi.ai.connectors``):
``openai``, ``ollama``, ``huggingface``, ``discord``, over one shared ``http`` layer.
They are a leaf: nothing here knows the runtime, agents or CLI."""
from __future__ import annotations

import importlib

_MODULES = ("http", "openai", "ollama", "huggingface", "discord")
__all__ = list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
