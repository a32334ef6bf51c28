"""The HTTP server (``python -m abi serve``): OpenAI- and Ollama-compatible APIs plus
llama.cpp-style extras, over one model with N generation slots.

``create_app(ServeOptions(...))`` builds the FastAPI app; nothing heavy is imported until then.
"""
from __future__ import annotations


def create_app(*args, **kwargs):
    from .app import create_app as _create

    return _create(*args, **kwargs)


def __getattr__(name: str):
    if name in ("ServeOptions", "ServerState"):
        from . import state

        return getattr(state, name)
    raise AttributeError(f"module 'abi.server' has no attribute {name!r}")


__all__ = ["create_app", "ServeOptions", "ServerState"]
