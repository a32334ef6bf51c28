"""Model weights as they sit in the GGUF file: quantised matrices stay quantised and
memory-mapped; products and row look-ups go through the kernels."""
from __future__ import annotations

import numpy as np

from .. import _kernels
from ..errors import UnsupportedModelError
from ..gguf import GGMLType, GGUFFile


class Linear:
    """y = x @ W.T (+ b) for a stored weight W of shape (out, in)."""

    __slots__ = ("raw", "ggml_type", "shape", "bias", "name")

    def __init__(self, raw: np.ndarray, ggml_type: GGMLType, shape, bias=None, name=""):
        self.raw, self.ggml_type, self.shape, self.bias, self.name = raw, ggml_type, tuple(shape), bias, name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = _kernels.qmatmul(self.raw, self.ggml_type, self.shape, x)
        if self.bias is not None:
            y += self.bias
        return y

    @property
    def out_features(self) -> int:
        return self.shape[0]


class Embedding:
    """Token embedding table; looks rows up without dequantising the whole table."""

    def __init__(self, raw: np.ndarray, ggml_type: GGMLType, shape, name: str = ""):
        self.raw, self.ggml_type, self.shape, self.name = raw, ggml_type, tuple(shape), name
        self._rows = raw.reshape(self.shape[0], -1)

    def __call__(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return _kernels.dequantize(self._rows[ids], self.ggml_type, (len(ids), self.shape[1]))

    def as_linear(self) -> Linear:
        return Linear(self.raw, self.ggml_type, self.shape, name=f"{self.name or 'token_embd'} (tied output)")


class WeightLoader:
    """Named access to a GGUF file's tensors, with clear errors for missing ones."""

    def __init__(self, gguf: GGUFFile):
        self.gguf = gguf

    def has(self, name: str) -> bool:
        return name in self.gguf.tensors

    def _info(self, name: str):
        info = self.gguf.tensors.get(name)
        if info is None:
            raise UnsupportedModelError(
                f"{self.gguf.path}: tensor {name!r} is missing for architecture "
                f"{self.gguf.architecture!r}")
        return info

    def vector(self, name: str) -> np.ndarray:
        """A 1-D (norm, bias) tensor as float32."""
        info = self._info(name)
        if info.ggml_type == GGMLType.F32:
            return self.gguf.tensor_array(name)
        return _kernels.dequantize(self.gguf.tensor_data(name), info.ggml_type, info.shape).reshape(info.shape)

    def optional_vector(self, name: str) -> np.ndarray | None:
        return self.vector(name) if self.has(name) else None

    def linear(self, name: str, bias: str | None = None) -> Linear:
        info = self._info(name)
        if len(info.shape) != 2:
            raise UnsupportedModelError(f"tensor {name!r} has shape {info.shape}; expected a matrix")
        b = self.optional_vector(bias) if bias else None
        return Linear(self.gguf.tensor_data(name), info.ggml_type, info.shape, b, name)

    def embedding(self, name: str) -> Embedding:
        info = self._info(name)
        return Embedding(self.gguf.tensor_data(name), info.ggml_type, info.shape, name)
