"""Model weights as they sit in the GGUF file: quantised matrices stay quantised and
memory-mapped; products and row look-ups go through the kernels."""
from __future__ import annotations

import numpy as np

from .. import _kernels
from ..errors import InvalidModelError, UnsupportedModelError
from ..gguf import GGMLType, GGUFFile


class Linear:
    """y = x @ W.T (+ b) (+ the LoRA term (x @ A.T) @ B.T) for a stored weight W of shape
    (out, in); ``lora`` is (A (rank, in), B (out, rank)) with the adapters' scales in B
    (``abi.llm.lora``), or None."""

    __slots__ = ("raw", "ggml_type", "shape", "bias", "name", "lora")

    def __init__(self, raw: np.ndarray, ggml_type: GGMLType, shape, bias=None, name=""):
        self.raw, self.ggml_type, self.shape, self.bias, self.name = raw, ggml_type, tuple(shape), bias, name
        self.lora = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = _kernels.qmatmul(self.raw, self.ggml_type, self.shape, x)
        if self.bias is not None:
            y += self.bias
        if self.lora is not None:
            a, b = self.lora
            y += (np.asarray(x, np.float32) @ a.T) @ b.T
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
        self.read: set[str] = set()   # the tensors an architecture asked for

    def unread(self, prefix: str = "blk.") -> list[str]:
        """Tensors under ``prefix`` that nothing read: weights of a step the recipe lacks."""
        return [n for n in self.gguf.tensors if n.startswith(prefix) and n not in self.read]

    def has(self, name: str) -> bool:
        return name in self.gguf.tensors

    def _info(self, name: str, shape: tuple[int, ...]):
        """The tensor's entry, refused unless its shape is the one the hyperparameters imply."""
        info = self.gguf.tensors.get(name)
        self.read.add(name)
        if info is None:
            raise UnsupportedModelError(
                f"{self.gguf.path}: tensor {name!r} is missing for architecture "
                f"{self.gguf.architecture!r}")
        if tuple(info.shape) != tuple(shape):
            raise InvalidModelError(
                f"{self.gguf.path}: tensor {name!r} has shape {tuple(info.shape)}; the metadata's "
                f"hyperparameters imply {tuple(shape)}")
        return info

    def dense(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A tensor of ``shape`` as float32 (a view of the map for F32, dequantised otherwise)."""
        info = self._info(name, shape)
        if info.ggml_type == GGMLType.F32:
            return np.asarray(self.gguf.tensor_array(name))
        raw = self.gguf.tensor_data(name)
        return np.ascontiguousarray(_kernels.dequantize(raw, info.ggml_type, info.shape).reshape(shape),
                                    dtype=np.float32)

    def vector(self, name: str, n: int) -> np.ndarray:
        """A 1-D (norm, bias) tensor of ``n`` values as float32."""
        return self.dense(name, (n,))

    def optional_vector(self, name: str, n: int) -> np.ndarray | None:
        return self.vector(name, n) if self.has(name) else None

    def linear(self, name: str, shape: tuple[int, int], bias: str | None = None) -> Linear:
        """A (out, in) matrix, with an optional (out,) bias."""
        info = self._info(name, shape)
        b = self.vector(bias, shape[0]) if bias else None
        return Linear(self.gguf.tensor_data(name), info.ggml_type, info.shape, b, name)

    def _bias_of(self, weight_name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The ``.bias`` beside a ``.weight`` tensor, where the file has one."""
        name = weight_name.replace(".weight", ".bias")
        return self.dense(name, shape) if self.has(name) else None

    def split(self, name: str, parts: tuple[int, ...], cols: int) -> list[Linear]:
        """A fused matrix (sum(parts), cols) as one ``Linear`` view per block of rows (a fused
        QKV or gate-up tensor), with its bias split the same way where the file has one."""
        info = self._info(name, (sum(parts), cols))
        raw = self.gguf.tensor_data(name).reshape(sum(parts), -1)
        bias = self._bias_of(name, (sum(parts),))
        out, r = [], 0
        for n in parts:
            out.append(Linear(raw[r:r + n].reshape(-1), info.ggml_type, (n, cols),
                              None if bias is None else bias[r:r + n], f"{name}[{r}:{r + n}]"))
            r += n
        return out

    def experts(self, name: str, shape: tuple[int, int, int]) -> list[Linear]:
        """An (n_expert, out, in) stack of matrices, one ``Linear`` view per expert, each with
        its row of the (n_expert, out) bias where the file has one."""
        info = self._info(name, shape)
        raw = self.gguf.tensor_data(name).reshape(shape[0], -1)
        bias = self._bias_of(name, shape[:2])
        return [Linear(raw[e], info.ggml_type, shape[1:], None if bias is None else bias[e], f"{name}[{e}]")
                for e in range(shape[0])]

    def embedding(self, name: str, shape: tuple[int, int]) -> Embedding:
        """A (n_vocab, n_embd) table."""
        info = self._info(name, shape)
        return Embedding(self.gguf.tensor_data(name), info.ggml_type, info.shape, name)
