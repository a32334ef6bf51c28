"""Crash-safe checkpoint files: named arrays plus a JSON header, sealed by a SHA-256.

File layout (little-endian)::

    0   8   magic b"ABICKPT\\0"
    8   4   u32 format version (1)
    12  4   u32 reserved (0)
    16  8   u64 header length H
    24  H   header: UTF-8 JSON {"meta": {...}, "tensors": [{name, dtype, shape, offset, nbytes}]}
        ..  zero padding to a multiple of 64
    D   ..  tensor data; each tensor starts at D + offset, offsets are multiples of 64
    end-40  8   b"ABIEND\\0\\0"
    end-32 32   SHA-256 of every byte before the trailer

A save goes through ``abi.fileio.atomic_write``, so a reader sees either the old file or the
complete new one; a process killed mid-save leaves only a ``.tmp`` file, which is ignored and
removed by the manager's next save.
A load recomputes the digest before trusting any byte, so a truncated or corrupted file is
a ``CheckpointError``, never garbage weights.

``CheckpointManager`` numbers the files ``<stem>-<step:08d><suffix>`` beside the configured
path and keeps the newest ``max_checkpoints``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..fileio import atomic_write, remove_stale_temps

log = logging.getLogger(__name__)
ON_SAVE_ERROR = ("abort", "retry")  # what a trainer does when a checkpoint cannot be written
MAGIC = b"ABICKPT\0"
TRAILER_MAGIC = b"ABIEND\0\0"
VERSION = 1
ALIGN = 64
_PREFIX = struct.Struct("<8sIIQ")
_TRAILER_SIZE = len(TRAILER_MAGIC) + 32
_CHUNK = 1 << 22
_DTYPES = {"float32", "float16", "float64", "int64", "int32", "uint32", "uint16", "uint8", "bool"}


def _pad(n: int) -> int:
    return -n % ALIGN


def _write_all(fh, hasher, data) -> None:
    """Write and hash ``data`` in chunks (bounded memory for large tensors)."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), _CHUNK):
        chunk = view[start:start + _CHUNK]
        hasher.update(chunk)
        fh.write(chunk)


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``tensors`` and the JSON-able ``meta`` atomically to ``path``."""
    path = Path(path)
    entries, arrays, offset = [], [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype.name not in _DTYPES:
            raise CheckpointError(f"cannot store tensor {name!r} of dtype {arr.dtype}", str(path))
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        entries.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape),
                        "offset": offset, "nbytes": arr.nbytes})
        arrays.append(arr)
        offset += arr.nbytes + _pad(arr.nbytes)
    header = json.dumps({"meta": meta, "tensors": entries}, separators=(",", ":")).encode()
    head = _PREFIX.pack(MAGIC, VERSION, 0, len(header)) + header
    head += bytes(_pad(len(head)))

    hasher = hashlib.sha256()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            _write_all(fh, hasher, head)
            for arr in arrays:
                _write_all(fh, hasher, arr.reshape(-1).view(np.uint8))
                _write_all(fh, hasher, bytes(_pad(arr.nbytes)))
            fh.write(TRAILER_MAGIC + hasher.digest())
    except OSError as exc:  # full disk, read-only or missing directory, ...
        raise CheckpointError(f"could not save checkpoint {str(path)!r}: "
                              f"{exc.strerror or exc}", str(path)) from exc
    return path


def check_writable(path: str | os.PathLike) -> None:
    """Fail before training, not at the first save: create ``path``'s directory and write,
    fsync and remove a probe file there."""
    path = Path(path)
    probe = path.with_name(f".{path.name}.probe{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"abi")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(f"checkpoint directory {str(path.parent)!r} is not writable: "
                              f"{exc.strerror or exc}", str(path)) from exc


@dataclass
class CheckpointFile:
    """A verified checkpoint: its ``meta`` dict and its named arrays (read-only views)."""

    path: str
    meta: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(repr=False)


def read_checkpoint(path: str | os.PathLike) -> CheckpointFile:
    """Read and verify a checkpoint file; any damage raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {str(path)!r}", str(path))
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {exc}", str(path)) from exc

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated: {why}; "
                               "use an earlier checkpoint", str(path))

    if len(blob) < _PREFIX.size + _TRAILER_SIZE:
        raise bad(f"only {len(blob)} bytes")
    magic, version, _, header_len = _PREFIX.unpack_from(blob, 0)
    if magic != MAGIC:
        raise CheckpointError(f"{str(path)!r} is not an abi checkpoint (magic {magic!r})", str(path))
    if version != VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {version}; "
                              f"this abi reads version {VERSION}", str(path))
    body_end = len(blob) - _TRAILER_SIZE
    if blob[body_end:body_end + len(TRAILER_MAGIC)] != TRAILER_MAGIC:
        raise bad("the end-of-file marker is missing")
    view = memoryview(blob)
    if hashlib.sha256(view[:body_end]).digest() != blob[body_end + len(TRAILER_MAGIC):]:
        raise bad("SHA-256 checksum mismatch")
    # the digest matched, so the rest was written by save_checkpoint; check it anyway
    if _PREFIX.size + header_len > body_end:
        raise bad("header runs past the end")
    try:
        header = json.loads(bytes(view[_PREFIX.size:_PREFIX.size + header_len]))
    except ValueError as exc:
        raise bad(f"header is not JSON ({exc})") from None
    data_start = _PREFIX.size + header_len
    data_start += _pad(data_start)
    tensors = {}
    for e in header.get("tensors", []):
        if e.get("dtype") not in _DTYPES:
            raise bad(f"tensor {e.get('name')!r} has unknown dtype {e.get('dtype')!r}")
        dtype = np.dtype(e["dtype"]).newbyteorder("<")
        shape = tuple(int(d) for d in e["shape"])
        start = data_start + int(e["offset"])
        count = int(np.prod(shape)) if shape else 1
        if count * dtype.itemsize != e["nbytes"] or start + e["nbytes"] > body_end:
            raise bad(f"tensor {e['name']!r} does not fit the file")
        tensors[e["name"]] = np.frombuffer(blob, dtype, count, start).reshape(shape)
    return CheckpointFile(str(path), header.get("meta", {}), tensors)


_STEP_RE = r"-(\d{8,})"


class CheckpointManager:
    """Numbered checkpoints beside ``base`` (``model.ckpt`` -> ``model-00000100.ckpt``)."""

    def __init__(self, base: str | os.PathLike, max_checkpoints: int = 3):
        if max_checkpoints < 1:
            raise CheckpointError(f"max_checkpoints must be >= 1, got {max_checkpoints}")
        self.base = Path(base)
        self.max_checkpoints = int(max_checkpoints)
        suffix = self.base.suffix
        self._pattern = re.compile(re.escape(self.base.stem) + _STEP_RE + re.escape(suffix) + "$")

    def path_for(self, step: int) -> Path:
        return self.base.with_name(f"{self.base.stem}-{step:08d}{self.base.suffix}")

    def list(self) -> list[tuple[int, Path]]:
        """Completed checkpoints (temporary files excluded), oldest first."""
        if not self.base.parent.is_dir():
            return []
        found = []
        for p in self.base.parent.iterdir():
            m = self._pattern.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def save(self, step: int, tensors: dict[str, np.ndarray], meta: dict) -> Path:
        self._remove_stale_temps()
        path = save_checkpoint(self.path_for(step), tensors, meta)
        for _, old in self.list()[:-self.max_checkpoints]:
            try:
                old.unlink()
            except OSError:
                pass
        return path

    def save_or_keep(self, step: int, tensors: dict[str, np.ndarray], meta: dict, *,
                     final: bool, on_error: str = "abort", retries: int = 3,
                     retry_delay: float = 10.0) -> Path | None:
        """``save`` under a trainer's ``on_save_error`` policy. abort: a failed save raises.
        retry: the run keeps its in-memory state; a failed interval save is logged and the
        next one tries again, the final save is tried ``retries`` more times ``retry_delay``
        seconds apart (time to free space) before the error is raised."""
        if on_error not in ON_SAVE_ERROR:
            raise CheckpointError(f"on_save_error must be one of {', '.join(ON_SAVE_ERROR)}, "
                                  f"got {on_error!r}", str(self.base))
        attempts = 1 + (retries if final and on_error == "retry" else 0)
        for attempt in range(1, attempts + 1):
            try:
                return self.save(step, tensors, meta)
            except CheckpointError as exc:
                if on_error == "abort" or (final and attempt == attempts):
                    raise
                when = (f"retrying in {retry_delay:g} s ({attempt}/{attempts - 1})" if final
                        else "training goes on; the next checkpoint tries again")
                log.warning("%s; %s", exc, when)
                if final:
                    time.sleep(retry_delay)
        return None

    def latest_valid(self) -> CheckpointFile:
        """The newest checkpoint that verifies; damaged newer ones are skipped (with a
        warning), so one bad write never costs the run."""
        import warnings

        errors = []
        for _, p in reversed(self.list()):
            try:
                return read_checkpoint(p)
            except CheckpointError as exc:
                errors.append(str(exc))
                warnings.warn(f"skipping damaged checkpoint: {exc}", RuntimeWarning, stacklevel=2)
        detail = f" ({'; '.join(errors)})" if errors else ""
        raise CheckpointError(f"no usable checkpoint for {str(self.base)!r}{detail}", str(self.base))

    def _remove_stale_temps(self) -> None:
        remove_stale_temps(self.base.parent, self._pattern.pattern[:-1])  # less its "$"


def resolve_checkpoint(path: str | os.PathLike, max_checkpoints: int = 3) -> CheckpointFile:
    """``path`` is a checkpoint file (verified, errors raised) or the configured base path
    of a run (its newest valid numbered checkpoint)."""
    p = Path(path)
    if p.is_file():
        return read_checkpoint(p)
    manager = CheckpointManager(p, max_checkpoints)
    if manager.list():
        return manager.latest_valid()
    raise CheckpointError(f"no checkpoint at {str(p)!r} (neither a file nor the base path of "
                          "numbered checkpoints)", str(p))
