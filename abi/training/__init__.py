"""Training: the reference's ``train`` loop, optimisers, schedules, crash-safe checkpoints,
LLM training with GGUF export, LoRA fine-tuning of GGUF models, federated averaging and
datasets.

Names load on first use, so ``import abi.training`` pulls in none of the heavy optional
libraries (tensorboardX, wandb, flwr).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "train": "trainer", "TrainingConfig": "trainer", "TrainingReport": "trainer",
    "load_checkpoint": "trainer", "Checkpoint": "trainer",
    "LlmTrainingConfig": "llm_trainer", "LlmTrainingReport": "llm_trainer",
    "train_llm": "llm_trainer", "load_llm_checkpoint": "llm_trainer",
    "LlmCheckpoint": "llm_trainer",
    "LoraConfig": "lora_trainer", "LoraReport": "lora_trainer", "train_lora": "lora_trainer",
    "make_optimizer": "optim", "make_schedule": "schedules",
    "TokenBin": "datasets", "read_tokenbin": "datasets", "write_tokenbin": "datasets",
    "read_wdbx": "datasets", "write_wdbx": "datasets",
    "Coordinator": "federated", "FederatedConfig": "federated",
}
_SUBMODULES = ("trainer", "llm_trainer", "optim", "schedules", "checkpoint", "llm_checkpoint",
               "logging", "federated", "datasets", "precision", "mlp", "llama", "gguf_export",
               "flower", "cli", "lora", "lora_data", "lora_trainer")

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
