"""A small reader for the safetensors format (Hugging Face weights), without torch.

Layout: u64 little-endian header length N | N bytes of JSON | tensor data.
The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
relative to the end of the header) and may hold a "__metadata__" dict of strings.
The file is memory-mapped; tensors are numpy views (BF16 is widened to float32 on read).
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

from ..errors import ConversionError, ModelNotFoundError

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": np.uint16,
}
_MAX_HEADER = 100 << 20  # the format's own limit on the JSON header


class SafetensorsFile:
    """``tensors``: name -> (dtype string, shape tuple); ``get(name)`` -> numpy array."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ModelNotFoundError(f"no safetensors file at {self.path!r}")
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ConversionError(f"{self.path}: too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise ConversionError(f"{self.path}: header length {n} exceeds the file ({size} bytes)")
            try:
                header = json.loads(fh.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ConversionError(f"{self.path}: header is not valid JSON ({exc})") from None
        if not isinstance(header, dict):
            raise ConversionError(f"{self.path}: header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        data_size = size - self.data_start
        self.tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        for name, entry in header.items():
            try:
                dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ConversionError(f"{self.path}: bad entry for tensor {name!r}") from None
            if dtype not in _DTYPES:
                raise ConversionError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype!r}")
            if not all(isinstance(d, int) and d >= 0 for d in shape):
                raise ConversionError(f"{self.path}: tensor {name!r} has bad shape {shape!r}")
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            nbytes = count * np.dtype(_DTYPES[dtype]).itemsize
            if not (isinstance(begin, int) and isinstance(end, int)) or not 0 <= begin <= end <= data_size \
                    or end - begin != nbytes:
                raise ConversionError(
                    f"{self.path}: tensor {name!r} data [{begin}, {end}) does not fit its shape "
                    f"{shape} {dtype} or the file's {data_size} data bytes")
            self.tensors[name] = (dtype, shape)
            self._offsets[name] = (begin, end)
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size else None

    def get(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise ConversionError(f"{self.path}: no tensor named {name!r}")
        dtype, shape = self.tensors[name]
        begin, end = self._offsets[name]
        raw = self._map[self.data_start + begin:self.data_start + end]
        arr = raw.view(_DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr


def load(path: str | os.PathLike) -> SafetensorsFile:
    return SafetensorsFile(path)
