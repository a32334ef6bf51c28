"""Local LLM inference on GGUF models: ``load_model``, ``Engine`` and the streaming API.

Names load lazily so that ``import abi.llm`` stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "load_model": "model", "Model": "model",
    "Engine": "engine",
    "StreamingConfig": "streaming", "StreamingStats": "streaming", "StreamingState": "streaming",
    "TokenEvent": "streaming",
    "StreamingResponse": "generation",
    "SSEFormatter": "sse",
    "make_sampler": "sampling", "make_logits_processors": "sampling",
    "ChatTemplate": "chat_template",
    "model_info": "info",
    "Grammar": "constrain",
    "Scheduler": "scheduler", "GenerationRequest": "scheduler",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'abi.llm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
