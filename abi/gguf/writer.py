"""GGUF writer (version 3): metadata of every value type, float or raw-quantised tensors,
aligned and padded as the specification requires. The file appears atomically
(``abi.fileio.atomic_write``): a reader never sees part of it."""
from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..fileio import atomic_write
from .constants import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, SCALAR_FORMATS, GGMLType, GGUFValueType

_FLOAT_TYPES = {
    np.dtype(np.float32): GGMLType.F32, np.dtype(np.float16): GGMLType.F16,
    np.dtype(np.float64): GGMLType.F64, np.dtype(np.int8): GGMLType.I8,
    np.dtype(np.int16): GGMLType.I16, np.dtype(np.int32): GGMLType.I32,
    np.dtype(np.int64): GGMLType.I64,
}
_TYPE_DTYPES = {v: k for k, v in _FLOAT_TYPES.items()}
_TYPE_DTYPES[GGMLType.BF16] = np.dtype(np.uint16)  # bf16 values travel as their raw bits
_NUMPY_VALUE_TYPES = {
    "u1": GGUFValueType.UINT8, "i1": GGUFValueType.INT8, "u2": GGUFValueType.UINT16,
    "i2": GGUFValueType.INT16, "u4": GGUFValueType.UINT32, "i4": GGUFValueType.INT32,
    "f4": GGUFValueType.FLOAT32, "u8": GGUFValueType.UINT64, "i8": GGUFValueType.INT64,
    "f8": GGUFValueType.FLOAT64, "b1": GGUFValueType.BOOL,
}


def _infer_scalar_type(value: Any) -> GGUFValueType:
    if isinstance(value, (bool, np.bool_)):
        return GGUFValueType.BOOL
    if isinstance(value, np.generic):
        return _NUMPY_VALUE_TYPES[value.dtype.str[1:]]
    if isinstance(value, int):
        if 0 <= value < 1 << 32:
            return GGUFValueType.UINT32
        if -(1 << 31) <= value < 0:
            return GGUFValueType.INT32
        return GGUFValueType.INT64 if value < 0 or value < 1 << 63 else GGUFValueType.UINT64
    if isinstance(value, float):
        return GGUFValueType.FLOAT32
    if isinstance(value, (str, bytes)):
        return GGUFValueType.STRING
    if isinstance(value, (list, tuple, np.ndarray)):
        return GGUFValueType.ARRAY
    raise ConfigError(f"cannot store a {type(value).__name__} in GGUF metadata", field="value")


def _infer_element_type(values) -> GGUFValueType:
    if isinstance(values, np.ndarray):
        return _NUMPY_VALUE_TYPES[values.dtype.str[1:]]
    if len(values) == 0:
        return GGUFValueType.UINT32
    types = {_infer_scalar_type(v) for v in values}
    if types <= {GGUFValueType.UINT32, GGUFValueType.INT32}:
        return GGUFValueType.INT32 if GGUFValueType.INT32 in types else GGUFValueType.UINT32
    if len(types) != 1:
        raise ConfigError(f"array elements have mixed types {sorted(t.name for t in types)}",
                          field="value")
    return types.pop()


def _encode_string(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return struct.pack("<Q", len(raw)) + raw


def _encode_value(value: Any, vtype: GGUFValueType, element_type: GGUFValueType | None) -> bytes:
    if vtype == GGUFValueType.STRING:
        return _encode_string(value)
    if vtype == GGUFValueType.ARRAY:
        etype = element_type if element_type is not None else _infer_element_type(value)
        head = struct.pack("<IQ", etype, len(value))
        if etype in SCALAR_FORMATS:
            fmt, _ = SCALAR_FORMATS[etype]
            return head + np.asarray(value, dtype="<" + fmt if fmt != "?" else "u1").tobytes()
        if etype == GGUFValueType.STRING:
            return head + b"".join(_encode_string(v) for v in value)
        return head + b"".join(_encode_value(v, GGUFValueType.ARRAY, None) for v in value)
    fmt, _ = SCALAR_FORMATS[vtype]
    return struct.pack("<" + fmt, value)


class GGUFWriter:
    """Collects metadata and tensors, then ``write()`` produces the file.

    >>> w = GGUFWriter("model.gguf")
    >>> w.add_metadata("general.architecture", "llama")
    >>> w.add_tensor("token_embd.weight", np.zeros((10, 32), np.float32))
    >>> w.write()
    """

    def __init__(self, path: str | os.PathLike, alignment: int = GGUF_DEFAULT_ALIGNMENT):
        if alignment <= 0 or alignment & (alignment - 1):
            raise ConfigError(f"alignment must be a power of two, got {alignment}", "alignment")
        self.path = os.fspath(path)
        self.alignment = alignment
        self._kv: dict[str, bytes] = {}
        self._tensors: list[tuple[str, tuple[int, ...], GGMLType, np.ndarray]] = []
        if alignment != GGUF_DEFAULT_ALIGNMENT:
            self.add_metadata("general.alignment", alignment, GGUFValueType.UINT32)

    def add_metadata(self, key: str, value: Any, type: GGUFValueType | None = None,
                     element_type: GGUFValueType | None = None) -> None:
        """Add one key. The value type is inferred unless given; for an array, ``type`` may
        be ARRAY (with ``element_type``) or directly the element type, or
        ``(ARRAY, element_type)`` as ``GGUFFile.metadata_types`` reports it."""
        if key in self._kv:
            raise ConfigError(f"duplicate metadata key {key!r}", field=key)
        if isinstance(type, tuple):
            type, element_type = type
        is_array = isinstance(value, (list, tuple, np.ndarray))
        if is_array and type not in (None, GGUFValueType.ARRAY):
            type, element_type = GGUFValueType.ARRAY, type
        vtype = GGUFValueType(type) if type is not None else _infer_scalar_type(value)
        try:
            encoded = _encode_value(value, vtype, element_type)
        except (struct.error, TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"metadata {key!r}: {value!r:.80} cannot be written as "
                              f"{vtype.name}: {exc}", field=key) from None
        self._kv[key] = struct.pack("<I", vtype) + encoded

    def add_tensor(self, name: str, data: np.ndarray, ggml_type: GGMLType | None = None,
                   shape: tuple[int, ...] | None = None) -> None:
        """Add a tensor: a float/int array (its dtype gives the type unless ``ggml_type`` says
        otherwise) or raw uint8 blocks of a quantised type, with ``shape`` in numpy order
        (inferred from a 2-D ``(rows, bytes_per_row)`` block array when not given)."""
        if any(t[0] == name for t in self._tensors):
            raise ConfigError(f"duplicate tensor name {name!r}", field=name)
        data = np.asarray(data)
        if ggml_type is None:
            if data.dtype not in _FLOAT_TYPES:
                raise ConfigError(f"tensor {name!r}: give ggml_type for dtype {data.dtype}", name)
            ggml_type = _FLOAT_TYPES[data.dtype]
        ggml_type = GGMLType(ggml_type)
        if ggml_type in _TYPE_DTYPES and data.dtype != np.uint8:
            data = np.ascontiguousarray(data, dtype=_TYPE_DTYPES[ggml_type])
            shape = tuple(data.shape) if shape is None else tuple(shape)
        else:
            data = np.ascontiguousarray(data).view(np.uint8)
            if shape is None:
                if data.ndim < 2:
                    raise ConfigError(f"tensor {name!r}: give the shape of raw {ggml_type.name} data", name)
                row_bytes = data.shape[-1]
                shape = tuple(data.shape[:-1]) + (row_bytes // ggml_type.type_size * ggml_type.block_size,)
        shape = tuple(int(d) for d in shape)
        n = int(np.prod(shape)) if shape else 1
        if shape and shape[-1] % ggml_type.block_size:
            raise ConfigError(f"tensor {name!r}: row length {shape[-1]} is not a multiple of "
                              f"{ggml_type.name}'s block size {ggml_type.block_size}", name)
        if ggml_type.nbytes(n) != data.nbytes:
            raise ConfigError(f"tensor {name!r}: {data.nbytes} bytes given, {ggml_type.name} "
                              f"{shape} needs {ggml_type.nbytes(n)}", name)
        self._tensors.append((name, shape, ggml_type, data))

    def add_tensor_source(self, name: str, shape: tuple[int, ...], ggml_type: GGMLType,
                          source) -> None:
        """Add a tensor whose bytes are produced only while ``write()`` runs: ``source()``
        returns an iterable of uint8 chunks totalling the tensor's size. Keeps memory to one
        chunk at a time (abi.quantize streams a whole model through this)."""
        if any(t[0] == name for t in self._tensors):
            raise ConfigError(f"duplicate tensor name {name!r}", field=name)
        ggml_type = GGMLType(ggml_type)
        shape = tuple(int(d) for d in shape)
        if shape and shape[-1] % ggml_type.block_size:
            raise ConfigError(f"tensor {name!r}: row length {shape[-1]} is not a multiple of "
                              f"{ggml_type.name}'s block size {ggml_type.block_size}", name)
        n = int(np.prod(shape)) if shape else 1
        self._tensors.append((name, shape, ggml_type, _Source(ggml_type.nbytes(n), source)))

    def _pad(self, n: int) -> int:
        return -n % self.alignment

    def write(self) -> None:
        header = bytearray(GGUF_MAGIC)
        header += struct.pack("<IQQ", 3, len(self._tensors), len(self._kv))
        for key, encoded in self._kv.items():
            header += _encode_string(key) + encoded
        offset = 0
        for name, shape, ggml_type, data in self._tensors:
            header += _encode_string(name) + struct.pack("<I", len(shape))
            header += struct.pack(f"<{len(shape)}Q", *reversed(shape))
            header += struct.pack("<IQ", ggml_type, offset)
            offset += data.nbytes + self._pad(data.nbytes)
        header += bytes(self._pad(len(header)))
        with atomic_write(self.path) as fh:
            fh.write(header)
            for name, _, _, data in self._tensors:
                if isinstance(data, _Source):
                    data.write_to(fh, name)
                else:
                    fh.write(memoryview(data.reshape(-1)))
                fh.write(bytes(self._pad(data.nbytes)))


class _Source:
    """A lazily produced tensor: its size is known up front (the header needs it)."""

    def __init__(self, nbytes: int, produce):
        self.nbytes = nbytes
        self._produce = produce

    def write_to(self, fh, name: str) -> None:
        done = 0
        for chunk in self._produce():
            chunk = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
            fh.write(memoryview(chunk))
            done += chunk.nbytes
        if done != self.nbytes:
            raise ConfigError(f"tensor {name!r}: its source gave {done} bytes, expected {self.nbytes}", name)
