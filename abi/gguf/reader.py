"""GGUF reader, written from the format specification (versions 2 and 3).

Layout (little-endian):
    magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x  (string key, u32 value_type, value)
    tensor_count x  (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
    padding to general.alignment (default 32)
    tensor data; each tensor's offset is relative to the start of this section
A string is a u64 byte length followed by UTF-8 bytes; an array is a u32 element type,
a u64 count and the elements.

The file is memory-mapped once; tensor data are numpy views of the map, never copies.
Every count and length is checked against the bytes left before anything is allocated,
so no input can make the reader allocate much more than the file's own size.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import (GGUFError, GGUFMagicError, GGUFTensorError, GGUFTruncatedError,
                      GGUFValueError, GGUFVersionError, ModelNotFoundError)
from .constants import (GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_SUPPORTED_VERSIONS,
                        SCALAR_FORMATS, GGMLType, GGUFValueType)

_MAX_DIMS = 4            # GGML_MAX_DIMS
_MAX_NESTING = 8         # arrays of arrays deeper than this are refused, not recursed into
_MIN_KV_BYTES = 8 + 4 + 1    # empty key, type, smallest value
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8  # empty name, n_dims=0, type, offset
_MIN_ELEMENT_BYTES = {GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12}
_NUMPY_DTYPES = {
    GGUFValueType.UINT8: "<u1", GGUFValueType.INT8: "<i1", GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2", GGUFValueType.UINT32: "<u4", GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4", GGUFValueType.UINT64: "<u8", GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8", GGUFValueType.BOOL: "<u1",
}


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's entry. ``shape`` is numpy order (outermost first, the reverse of GGUF's
    ne[]); ``offset`` is the absolute byte offset of its data in the file."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLType
    offset: int
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class _Cursor:
    """Bounds-checked little-endian reads over a buffer."""

    def __init__(self, buf: memoryview, size: int):
        self.buf = buf
        self.size = size
        self.pos = 0

    def remaining(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise GGUFTruncatedError(
                f"file ends while reading {what}: need {n} bytes, {self.size - self.pos} left",
                self.pos)

    def unpack(self, fmt: str, size: int, what: str):
        self.need(size, what)
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return self.unpack("I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("Q", 8, what)

    def string(self, what: str) -> str | bytes:
        start = self.pos
        n = self.u64(f"length of {what}")
        if n > self.remaining():
            raise GGUFValueError(
                f"{what} claims {n} bytes but only {self.remaining()} remain in the file: "
                "the file is truncated or corrupt", start)
        raw = self.buf[self.pos:self.pos + n].tobytes()
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw  # kept as bytes rather than lost or replaced

    def count(self, what: str, min_element_bytes: int) -> int:
        start = self.pos
        n = self.u64(what)
        if n * min_element_bytes > self.remaining():
            raise GGUFValueError(
                f"{what} is {n}, more than the {self.remaining()} bytes left can hold: the "
                "file is truncated or corrupt", start)
        return n


def _value_type(cur: _Cursor, what: str) -> GGUFValueType:
    start = cur.pos
    raw = cur.u32(what)
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise GGUFValueError(f"unknown metadata value type {raw} for {what}", start) from None


_U64 = struct.Struct("<Q").unpack_from


def _read_strings(cur: _Cursor, n: int, key: str) -> list:
    """A string array (vocabularies hold 10^5 of them): one compiled loop, same checks."""
    from ._strings import read_strings

    out, cur.pos, status = read_strings(cur.buf, cur.pos, cur.size, n)
    if status == 1:
        cur.need(8, f"length of string in {key!r}")
    if status == 2:
        length = _U64(cur.buf, cur.pos)[0]
        raise GGUFValueError(f"string in {key!r} claims {length} bytes but only "
                             f"{cur.size - cur.pos - 8} remain in the file", cur.pos)
    return out


def _read_value(cur: _Cursor, vtype: GGUFValueType, key: str, depth: int = 0) -> Any:
    if vtype == GGUFValueType.STRING:
        return cur.string(f"string value of {key!r}")
    if vtype == GGUFValueType.ARRAY:
        if depth >= _MAX_NESTING:
            raise GGUFValueError(f"arrays nested deeper than {_MAX_NESTING} in {key!r}", cur.pos)
        etype = _value_type(cur, f"array element type of {key!r}")
        min_bytes = _MIN_ELEMENT_BYTES.get(etype) or SCALAR_FORMATS[etype][1]
        n = cur.count(f"array length of {key!r}", min_bytes)
        if etype in _NUMPY_DTYPES:
            width = SCALAR_FORMATS[etype][1]
            arr = np.frombuffer(cur.buf, dtype=_NUMPY_DTYPES[etype], count=n, offset=cur.pos)
            cur.pos += n * width
            values = arr.tolist()
            return [bool(v) for v in values] if etype == GGUFValueType.BOOL else values
        if etype == GGUFValueType.STRING:
            return _read_strings(cur, n, key)
        return [_read_value(cur, etype, key, depth + 1) for _ in range(n)]
    fmt, width = SCALAR_FORMATS[vtype]
    return cur.unpack(fmt, width, f"value of {key!r}")


class GGUFFile:
    """A parsed, memory-mapped GGUF file.

    ``metadata`` maps keys to Python values in file order; ``metadata_types`` maps each key
    to its GGUFValueType (and for arrays, ``(ARRAY, element_type)``) so a file can be
    rewritten with the same types. ``tensors`` maps names to TensorInfo in file order.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ModelNotFoundError(f"no GGUF file at {self.path!r}")
        self.file_size = os.path.getsize(self.path)
        if self.file_size == 0:
            raise GGUFTruncatedError("file is empty", 0)
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        self._parse(_Cursor(memoryview(self._map), self.file_size))

    # -- parsing -------------------------------------------------------------------------
    def _parse(self, cur: _Cursor) -> None:
        cur.need(4, "magic")
        magic = cur.buf[0:4].tobytes()
        if magic != GGUF_MAGIC:
            raise GGUFMagicError(f"not a GGUF file: magic is {magic!r}, expected {GGUF_MAGIC!r}", 0)
        cur.pos = 4
        self.version = cur.u32("version")
        if self.version not in GGUF_SUPPORTED_VERSIONS:
            swapped = int.from_bytes(self.version.to_bytes(4, "little"), "big")
            hint = " (a big-endian file, which abi does not read)" \
                if swapped in GGUF_SUPPORTED_VERSIONS else ""
            raise GGUFVersionError(
                f"unsupported GGUF version {self.version}{hint}; supported: "
                f"{', '.join(map(str, GGUF_SUPPORTED_VERSIONS))}", 4)
        n_tensors = cur.count("tensor count", _MIN_TENSOR_BYTES)
        n_kv = cur.count("metadata count", _MIN_KV_BYTES)

        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, Any] = {}
        for _ in range(n_kv):
            key_pos = cur.pos
            key = cur.string("metadata key")
            if isinstance(key, bytes):
                raise GGUFValueError(f"metadata key {key!r} is not valid UTF-8", key_pos)
            if key in self.metadata:
                raise GGUFValueError(f"duplicate metadata key {key!r}", key_pos)
            vtype = _value_type(cur, f"type of {key!r}")
            value_pos = cur.pos
            self.metadata[key] = _read_value(cur, vtype, key)
            if vtype == GGUFValueType.ARRAY:  # read succeeded, so the element type is valid
                etype = GGUFValueType(struct.unpack_from("<I", cur.buf, value_pos)[0])
                self.metadata_types[key] = (vtype, etype)
            else:
                self.metadata_types[key] = vtype

        self.alignment = GGUF_DEFAULT_ALIGNMENT
        if "general.alignment" in self.metadata:
            align = self.metadata["general.alignment"]
            if self.metadata_types["general.alignment"] != GGUFValueType.UINT32 \
                    or align <= 0 or align & (align - 1):
                raise GGUFValueError(
                    f"general.alignment must be a power-of-two uint32, got {align!r}", None)
            self.alignment = align

        infos = []
        names = set()
        for _ in range(n_tensors):
            start = cur.pos
            name = cur.string("tensor name")
            if isinstance(name, bytes):
                raise GGUFTensorError(f"tensor name {name!r} is not valid UTF-8", start)
            if name in names:
                raise GGUFTensorError(f"duplicate tensor name {name!r}", start)
            names.add(name)
            n_dims = cur.u32(f"dimension count of {name!r}")
            if n_dims > _MAX_DIMS:
                raise GGUFTensorError(
                    f"tensor {name!r} has {n_dims} dimensions; at most {_MAX_DIMS} allowed", start)
            ne = [cur.u64(f"dimension {i} of {name!r}") for i in range(n_dims)]
            type_pos = cur.pos
            raw_type = cur.u32(f"type of {name!r}")
            try:
                ggml_type = GGMLType(raw_type)
            except ValueError:
                raise GGUFTensorError(f"tensor {name!r} has unknown type id {raw_type}",
                                      type_pos) from None
            offset = cur.u64(f"data offset of {name!r}")
            n_elements = 1
            for d in ne:
                n_elements *= d
            if n_elements >= 1 << 62:
                raise GGUFTensorError(f"tensor {name!r} shape {ne} is too large", start)
            if ne and ne[0] % ggml_type.block_size:
                raise GGUFTensorError(
                    f"tensor {name!r}: row length {ne[0]} is not a multiple of "
                    f"{ggml_type.name}'s block size {ggml_type.block_size}", start)
            if offset % self.alignment:
                raise GGUFTensorError(
                    f"tensor {name!r} data offset {offset} is not a multiple of the "
                    f"alignment {self.alignment}", start)
            infos.append((name, tuple(reversed(ne)), ggml_type, offset,
                          ggml_type.nbytes(n_elements), start))

        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        data_size = self.file_size - self.data_offset
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, ggml_type, offset, nbytes, start in infos:
            if offset + nbytes > data_size:
                raise GGUFTensorError(
                    f"tensor {name!r} data [{offset}, {offset + nbytes}) runs past the end of the "
                    f"data section ({max(data_size, 0)} bytes)", start)
            self.tensors[name] = TensorInfo(name, shape, ggml_type, self.data_offset + offset, nbytes)
        ordered = sorted(self.tensors.values(), key=lambda t: t.offset)
        for a, b in zip(ordered, ordered[1:]):
            if a.offset + a.nbytes > b.offset:
                raise GGUFTensorError(f"tensor data of {a.name!r} and {b.name!r} overlap", None)

    # -- access --------------------------------------------------------------------------
    def tensor_data(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the memory map."""
        info = self._info(name)
        return self._map[info.offset:info.offset + info.nbytes]

    def release(self, name: str) -> None:
        """Drop the tensor's pages from this process's resident memory: they stay in the OS's
        page cache, and reading the tensor again maps them back (a read-only shared map)."""
        info = self._info(name)
        start = -(-info.offset // mmap.PAGESIZE) * mmap.PAGESIZE   # whole pages inside it only
        end = (info.offset + info.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start and hasattr(mmap, "MADV_DONTNEED"):
            self._map._mmap.madvise(mmap.MADV_DONTNEED, start, end - start)

    def tensor_array(self, name: str) -> np.ndarray:
        """A float/int tensor as a typed view with its shape (no copy)."""
        info = self._info(name)
        dtype = _TENSOR_DTYPES.get(info.ggml_type)
        if dtype is None:
            raise GGUFTensorError(
                f"tensor {name!r} is {info.ggml_type.name}; use abi._kernels.dequantize", None)
        return self.tensor_data(name).view(dtype).reshape(info.shape)

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFTensorError(f"no tensor named {name!r} in {self.path}", None) from None

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    def arch_get(self, suffix: str, default: Any = None) -> Any:
        """``{arch}.<suffix>``, e.g. ``arch_get("context_length")``."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)

    def __repr__(self) -> str:
        return (f"GGUFFile({self.path!r}, version={self.version}, "
                f"{len(self.metadata)} keys, {len(self.tensors)} tensors)")


_TENSOR_DTYPES = {
    GGMLType.F32: np.float32, GGMLType.F16: np.float16, GGMLType.F64: np.float64,
    GGMLType.I8: np.int8, GGMLType.I16: np.int16, GGMLType.I32: np.int32, GGMLType.I64: np.int64,
}


def load(path: str | os.PathLike) -> GGUFFile:
    """Parse a GGUF file. Malformed input raises a subclass of GGUFError."""
    try:
        return GGUFFile(path)
    except GGUFError:
        raise
    except (OverflowError, struct.error, ValueError) as exc:  # defensive: report, never crash
        raise GGUFError(f"malformed GGUF file {os.fspath(path)!r}: {exc}") from exc
