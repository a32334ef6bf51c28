"""Hyperparameters read from GGUF metadata, each checked for type and range where it is
read, so an edited or hostile header is an ``InvalidModelError`` naming the key and the
value before any kernel sees it (the compiled forward sizes its buffers from them)."""
from __future__ import annotations

import math

from ..errors import InvalidModelError, UnsupportedModelError

INT_MAX = 2**31 - 1  # the compiled forwards hold sizes in C ints
MAX_LAYERS = 512     # llama.cpp's limit too; bounds the per-layer work done before tensors are read
_MISSING = object()


class Metadata:
    """Typed, range-checked access to one architecture's ``{arch}.*`` keys."""

    def __init__(self, metadata: dict, arch: str):
        self.metadata, self.arch = metadata, arch

    def _raw(self, key: str, default):
        full = f"{self.arch}.{key}"
        value = self.metadata.get(full, default)
        if value is _MISSING or value is None:
            raise UnsupportedModelError(f"metadata key '{full}' is missing")
        return full, value

    def int(self, key: str, default=_MISSING, lo: int = 1, hi: int = INT_MAX) -> int:
        """An integer in [lo, hi]; a float, string or bool is a type error, not a cast."""
        full, value = self._raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidModelError(f"metadata key '{full}' must be an integer, found {value!r}")
        if not lo <= value <= hi:
            raise InvalidModelError(f"metadata key '{full}' must lie in [{lo}, {hi}], found {value}")
        return value

    def float(self, key: str, default=_MISSING, lo: float = 0.0, lo_open: bool = True,
              hi: float = math.inf) -> float:
        """A finite number above ``lo`` (or at it when not ``lo_open``) and at most ``hi``."""
        full, value = self._raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidModelError(f"metadata key '{full}' must be a number, found {value!r}")
        value = float(value)
        above = value > lo if lo_open else value >= lo
        if not (math.isfinite(value) and above and value <= hi):
            bound = f"> {lo}" if lo_open else f">= {lo}"
            raise InvalidModelError(f"metadata key '{full}' must be finite and {bound}"
                                    f"{'' if hi == math.inf else f' and <= {hi}'}, found {value}")
        return value

    def flag(self, key: str, default=_MISSING) -> bool:
        """A GGUF bool."""
        full, value = self._raw(key, default)
        if not isinstance(value, bool):
            raise InvalidModelError(f"metadata key '{full}' must be a bool, found {value!r}")
        return value

    def str(self, key: str, default=_MISSING) -> str:
        full, value = self._raw(key, default)
        if not isinstance(value, str):
            raise InvalidModelError(f"metadata key '{full}' must be a string, found {value!r}")
        return value


def require(ok: bool, message: str) -> None:
    """Raise InvalidModelError(message) unless ``ok``: the cross-key consistency checks."""
    if not ok:
        raise InvalidModelError(message)


def vocab_size(metadata: dict, arch: str) -> int:
    """``{arch}.vocab_size`` where the file has it, else the tokenizer's token count."""
    if f"{arch}.vocab_size" in metadata:
        return Metadata(metadata, arch).int("vocab_size")
    tokens = metadata.get("tokenizer.ggml.tokens", ())
    require(isinstance(tokens, list) and len(tokens) > 0,
            "the file has neither a vocab_size key nor a tokenizer.ggml.tokens list")
    return len(tokens)
