"""The reference's namespace: ``abi.ai.<name>`` is the very same module as ``abi.<name>``.

A meta-path finder maps every ``abi.ai.X[.Y...]`` import onto ``abi.X[.Y...]``, so
``from abi.ai.agents import Agent`` and ``from abi.agents import Agent`` give one object,
and nothing is imported before it is used.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

_PREFIX = __name__ + "."
_ALIASED = (
    "agents", "connectors", "embeddings", "gguf", "llm", "personas", "training", "errors",
    "models_hub", "config", "server",
)


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, module):
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        module.__spec__ = self.spec  # the import machinery stamped the alias spec on it


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(_PREFIX):
            return None
        real = importlib.import_module("abi." + fullname[len(_PREFIX):])
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real))


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())

_SHORTCUTS = {
    "GpuAgent": "abi.agents",
    "GpuRequest": "abi.agents",
    "GpuResponse": "abi.agents",
    "WorkloadType": "abi.agents",
    "Priority": "abi.agents",
    "Agent": "abi.agents",
    "AgentConfig": "abi.agents",
}


def __getattr__(name: str):
    if name in _ALIASED:
        return importlib.import_module(_PREFIX + name)
    if name in _SHORTCUTS:
        return getattr(importlib.import_module(_SHORTCUTS[name]), name)
    raise AttributeError(f"module 'abi.ai' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ALIASED) | set(_SHORTCUTS))
