"""Dataset files: TokenBin (token ids for LLM training) and WDBX (records with vectors).

TokenBin, version 1 (little-endian)::

    offset size
    0      4    magic b"TKBN"
    4      2    u16 version (1)
    6      2    u16 token width in bytes: 2 (uint16 ids) or 4 (uint32 ids)
    8      8    u64 token count N
    16     N*w  the token ids

The file is exactly 16 + N*w bytes; anything else is truncation or trailing garbage.

WDBX, version 1 (little-endian) -- abi's record and vector store::

    header
    0      4    magic b"WDBX"
    4      2    u16 version (1)
    6      2    u16 vector dtype: 0 float32, 1 float16, 2 uint16, 3 uint32, 4 int32
    8      4    u32 dim: the length of every vector, or 0 when lengths vary per record
    12     4    u32 flags (0)
    16     8    u64 record count R
    24     4    u32 length M of the file metadata
    28     4    u32 CRC-32 of bytes 0..27 followed by the metadata
    32     M    file metadata, UTF-8 JSON object
    R records, each
           8    u64 id (unique within the file)
           4    u32 vector length n
           4    u32 length L of the record metadata
           n*s  the vector (s = the dtype's size)
           L    record metadata, UTF-8 JSON object (L = 0: none)
           4    u32 CRC-32 of the record's bytes above
    footer
           4    magic b"XBDW"
           8    u64 record count R (again)
           4    u32 CRC-32 of every byte before the footer

Token datasets stored as WDBX carry ``{"kind": "tokens", "token_dtype", "token_count",
"chunk_tokens"}`` as file metadata and one record per chunk of ``chunk_tokens`` ids (id =
chunk index, metadata ``{"offset": first token index}``), so TokenBin -> WDBX -> TokenBin
reproduces the file byte for byte, and WDBX -> TokenBin -> WDBX likewise.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DatasetError
from ..fileio import atomic_write

# --- TokenBin -----------------------------------------------------------------------------

TOKENBIN_MAGIC = b"TKBN"
TOKENBIN_VERSION = 1
_TB_HEADER = struct.Struct("<4sHHQ")
_TB_WIDTHS = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


@dataclass
class TokenBin:
    path: str
    version: int
    tokens: np.ndarray  # read-only memory-mapped uint16 or uint32 view

    @property
    def dtype(self) -> np.dtype:
        return self.tokens.dtype

    @property
    def count(self) -> int:
        return int(self.tokens.size)

    def __len__(self) -> int:
        return self.count


def _atomic_write(path: Path, chunks: Iterable[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        for c in chunks:
            fh.write(c)


def token_dtype_for(max_id: int) -> np.dtype:
    return _TB_WIDTHS[2] if max_id < 1 << 16 else _TB_WIDTHS[4]


def write_tokenbin(path: str | os.PathLike, tokens, dtype: str | None = None) -> Path:
    """Write token ids; ``dtype`` "uint16"/"uint32" or None for the narrowest that fits."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DatasetError(f"token ids must be integers, got dtype {arr.dtype}")
    lo = int(arr.min()) if arr.size else 0
    hi = int(arr.max()) if arr.size else 0
    if lo < 0 or hi >= 1 << 32:
        raise DatasetError(f"token ids must lie in [0, 2**32), got range [{lo}, {hi}]")
    out = np.dtype(dtype).newbyteorder("<") if dtype else token_dtype_for(hi)
    if out not in (_TB_WIDTHS[2], _TB_WIDTHS[4]):
        raise DatasetError(f"TokenBin stores uint16 or uint32 ids, not {dtype}")
    if hi >= 1 << (8 * out.itemsize):
        raise DatasetError(f"token id {hi} does not fit {out.name}")
    data = np.ascontiguousarray(arr, dtype=out)
    path = Path(path)
    _atomic_write(path, [_TB_HEADER.pack(TOKENBIN_MAGIC, TOKENBIN_VERSION, out.itemsize, data.size),
                         data.tobytes()])
    return path


def read_tokenbin(path: str | os.PathLike) -> TokenBin:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no TokenBin file at {str(path)!r}")
    size = path.stat().st_size
    if size < _TB_HEADER.size:
        raise DatasetError(f"{str(path)!r} is not a TokenBin file: only {size} bytes")
    with open(path, "rb") as fh:
        magic, version, width, count = _TB_HEADER.unpack(fh.read(_TB_HEADER.size))
    if magic != TOKENBIN_MAGIC:
        raise DatasetError(f"{str(path)!r} is not a TokenBin file (magic {magic!r}, expected "
                           f"{TOKENBIN_MAGIC!r})")
    if version != TOKENBIN_VERSION:
        raise DatasetError(f"{str(path)!r}: TokenBin version {version} is not supported "
                           f"(this abi reads version {TOKENBIN_VERSION})")
    if width not in _TB_WIDTHS:
        raise DatasetError(f"{str(path)!r}: token width {width} bytes; expected 2 or 4")
    expected = _TB_HEADER.size + count * width
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise DatasetError(f"{str(path)!r} is {what}: header announces {count} tokens "
                           f"({expected} bytes), the file has {size} bytes")
    if count == 0:
        tokens = np.zeros(0, _TB_WIDTHS[width])
    else:
        tokens = np.memmap(path, dtype=_TB_WIDTHS[width], mode="r", offset=_TB_HEADER.size,
                           shape=(count,))
    return TokenBin(str(path), version, tokens)


# --- WDBX ---------------------------------------------------------------------------------

WDBX_MAGIC = b"WDBX"
WDBX_FOOTER_MAGIC = b"XBDW"
WDBX_VERSION = 1
_WDBX_DTYPES = [np.dtype("<f4"), np.dtype("<f2"), np.dtype("<u2"), np.dtype("<u4"), np.dtype("<i4")]
_W_HEADER = struct.Struct("<4sHHIIQI")      # then u32 crc
_W_RECORD = struct.Struct("<QII")
_W_FOOTER = struct.Struct("<4sQI")
_MAX_META = 1 << 24


@dataclass
class WdbxRecord:
    id: int
    vector: np.ndarray
    metadata: dict = field(default_factory=dict)


@dataclass
class WdbxFile:
    path: str
    version: int
    dtype: np.dtype
    dim: int
    metadata: dict
    records: list[WdbxRecord]

    def __len__(self) -> int:
        return len(self.records)

    def get(self, record_id: int) -> WdbxRecord:
        for r in self.records:
            if r.id == record_id:
                return r
        raise KeyError(record_id)

    def nearest(self, query, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` records most cosine-similar to ``query``: [(id, similarity)]."""
        if not self.dim:
            raise DatasetError("nearest() needs a fixed-dimension WDBX file")
        q = np.asarray(query, np.float64).reshape(-1)
        if q.size != self.dim:
            raise DatasetError(f"query has {q.size} values, the store's vectors {self.dim}")
        if not self.records:
            return []
        m = np.stack([r.vector.astype(np.float64) for r in self.records])
        sims = m @ q / np.maximum(np.linalg.norm(m, axis=1) * np.linalg.norm(q), 1e-30)
        order = np.argsort(-sims, kind="stable")[:k]
        return [(self.records[i].id, float(sims[i])) for i in order]


def _json_bytes(obj: dict, what: str) -> bytes:
    if not isinstance(obj, dict):
        raise DatasetError(f"{what} must be a dict, got {type(obj).__name__}")
    raw = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode() if obj else b""
    if len(raw) > _MAX_META:
        raise DatasetError(f"{what} is {len(raw)} bytes; at most {_MAX_META}")
    return raw


def write_wdbx(path: str | os.PathLike, records: Iterable, *, dtype="float32", dim: int = 0,
               metadata: dict | None = None) -> Path:
    """Write records (``WdbxRecord`` or ``(id, vector, metadata)`` tuples) atomically."""
    dt = np.dtype(dtype).newbyteorder("<")
    if dt not in _WDBX_DTYPES:
        raise DatasetError(f"WDBX vectors are one of {[d.name for d in _WDBX_DTYPES]}, not {dt}")
    body, seen = [], set()
    for rec in records:
        if not isinstance(rec, WdbxRecord):
            rec = WdbxRecord(*rec)
        rid = int(rec.id)
        if not 0 <= rid < 1 << 64:
            raise DatasetError(f"record id {rid} is not a u64")
        if rid in seen:
            raise DatasetError(f"duplicate record id {rid}")
        seen.add(rid)
        vec = np.asarray(rec.vector).reshape(-1)
        if dim and vec.size != dim:
            raise DatasetError(f"record {rid} has {vec.size} values; the file's dim is {dim}")
        cast = vec.astype(dt)
        if vec.size and not np.array_equal(cast.astype(vec.dtype), vec, equal_nan=vec.dtype.kind == "f"):
            raise DatasetError(f"record {rid}'s values do not fit {dt.name} exactly")
        meta = _json_bytes(rec.metadata or {}, f"metadata of record {rid}")
        raw = _W_RECORD.pack(rid, vec.size, len(meta)) + cast.tobytes() + meta
        raw += struct.pack("<I", zlib.crc32(raw))
        body.append(raw)
    file_meta = _json_bytes(metadata or {}, "file metadata")
    head = _W_HEADER.pack(WDBX_MAGIC, WDBX_VERSION, _WDBX_DTYPES.index(dt), dim, 0, len(body),
                          len(file_meta))
    head += struct.pack("<I", zlib.crc32(file_meta, zlib.crc32(head))) + file_meta
    crc = zlib.crc32(head)
    for raw in body:
        crc = zlib.crc32(raw, crc)
    footer = _W_FOOTER.pack(WDBX_FOOTER_MAGIC, len(body), crc)
    path = Path(path)
    _atomic_write(path, [head, *body, footer])
    return path


def read_wdbx(path: str | os.PathLike) -> WdbxFile:
    """Read and verify a WDBX file (every CRC); damage raises ``DatasetError``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no WDBX file at {str(path)!r}")
    blob = path.read_bytes()
    name = str(path)

    def bad(why: str, offset: int | None = None) -> DatasetError:
        at = f" at byte {offset}" if offset is not None else ""
        return DatasetError(f"{name!r} is not a valid WDBX file: {why}{at}")

    if len(blob) < _W_HEADER.size + 4 + _W_FOOTER.size:
        if blob[:4] != WDBX_MAGIC:
            raise bad(f"magic {blob[:4]!r}, expected {WDBX_MAGIC!r}", 0)
        raise bad(f"only {len(blob)} bytes (truncated)")
    magic, version, code, dim, flags, count, meta_len = _W_HEADER.unpack_from(blob, 0)
    if magic != WDBX_MAGIC:
        raise bad(f"magic {magic!r}, expected {WDBX_MAGIC!r}", 0)
    if version != WDBX_VERSION:
        raise DatasetError(f"{name!r}: WDBX version {version} is not supported (this abi reads "
                           f"version {WDBX_VERSION})")
    if code >= len(_WDBX_DTYPES):
        raise bad(f"unknown vector dtype code {code}", 6)
    dt = _WDBX_DTYPES[code]
    pos = _W_HEADER.size + 4
    if meta_len > len(blob) - pos - _W_FOOTER.size:
        raise bad(f"file metadata of {meta_len} bytes runs past the end", 24)
    (head_crc,) = struct.unpack_from("<I", blob, _W_HEADER.size)
    file_meta = blob[pos:pos + meta_len]
    if zlib.crc32(file_meta, zlib.crc32(blob[:_W_HEADER.size])) != head_crc:
        raise bad("header checksum mismatch", 28)
    pos += meta_len
    footer_at = len(blob) - _W_FOOTER.size
    fmagic, fcount, fcrc = _W_FOOTER.unpack_from(blob, footer_at)
    if fmagic != WDBX_FOOTER_MAGIC:
        raise bad("footer missing (truncated file?)", footer_at)
    if fcount != count:
        raise bad(f"footer counts {fcount} records, header {count}", footer_at)
    if zlib.crc32(blob[:footer_at]) != fcrc:
        raise bad("file checksum mismatch", footer_at)
    # the file checksum held; still bound every length before slicing
    records, seen = [], set()
    min_record = _W_RECORD.size + 4
    if count > (footer_at - pos) // min_record:
        raise bad(f"{count} records cannot fit in {footer_at - pos} bytes", 16)
    for i in range(count):
        start = pos
        if pos + _W_RECORD.size > footer_at:
            raise bad(f"record {i} runs past the end", pos)
        rid, n, mlen = _W_RECORD.unpack_from(blob, pos)
        pos += _W_RECORD.size
        end = pos + n * dt.itemsize + mlen
        if end + 4 > footer_at:
            raise bad(f"record {i} (id {rid}) runs past the end", start)
        (rcrc,) = struct.unpack_from("<I", blob, end)
        if zlib.crc32(blob[start:end]) != rcrc:
            raise bad(f"record {i} (id {rid}) checksum mismatch", start)
        if dim and n != dim:
            raise bad(f"record {rid} has {n} values; the file's dim is {dim}", start)
        if rid in seen:
            raise bad(f"duplicate record id {rid}", start)
        seen.add(rid)
        vec = np.frombuffer(blob, dt, n, pos).copy()
        pos += n * dt.itemsize
        try:
            meta = json.loads(blob[pos:pos + mlen]) if mlen else {}
        except ValueError:
            raise bad(f"record {rid} metadata is not JSON", pos) from None
        records.append(WdbxRecord(rid, vec, meta))
        pos = end + 4
    if pos != footer_at:
        raise bad(f"{footer_at - pos} unexpected bytes after the last record", pos)
    try:
        meta = json.loads(file_meta) if meta_len else {}
    except ValueError:
        raise bad("file metadata is not JSON", _W_HEADER.size + 4) from None
    return WdbxFile(name, version, dt, dim, meta, records)


# --- conversions --------------------------------------------------------------------------

DEFAULT_CHUNK_TOKENS = 1024


def tokenbin_to_wdbx(src, dst, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> Path:
    if chunk_tokens < 1:
        raise DatasetError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    tb = read_tokenbin(src)
    toks = np.asarray(tb.tokens)
    records = ((i, toks[s:s + chunk_tokens], {"offset": int(s)})
               for i, s in enumerate(range(0, toks.size, chunk_tokens)))
    meta = {"kind": "tokens", "token_dtype": tb.dtype.name, "token_count": tb.count,
            "chunk_tokens": chunk_tokens}
    return write_wdbx(dst, records, dtype=tb.dtype, dim=0, metadata=meta)


def wdbx_to_tokenbin(src, dst) -> Path:
    w = read_wdbx(src)
    if w.metadata.get("kind") != "tokens":
        raise DatasetError(f"{w.path!r} holds {w.dtype.name} vectors, not a token dataset "
                           "(its metadata lacks kind=tokens); only token datasets convert to TokenBin")
    if w.dtype.name not in ("uint16", "uint32") or w.metadata.get("token_dtype") != w.dtype.name:
        raise DatasetError(f"{w.path!r}: token records must be uint16/uint32, got {w.dtype.name}")
    ordered = sorted(w.records, key=lambda r: r.id)
    pos = 0
    for r in ordered:
        if r.metadata.get("offset", pos) != pos:
            raise DatasetError(f"{w.path!r}: record {r.id} starts at token {r.metadata['offset']}, "
                               f"expected {pos} (chunks missing or out of order)")
        pos += r.vector.size
    if pos != w.metadata.get("token_count", pos):
        raise DatasetError(f"{w.path!r}: records hold {pos} tokens, metadata says "
                           f"{w.metadata['token_count']}")
    tokens = np.concatenate([r.vector for r in ordered]) if ordered else np.zeros(0, w.dtype)
    return write_tokenbin(dst, tokens, dtype=w.dtype.name)


def tokenize_text_file(model_path, text_path, out_path, add_bos: bool | None = None) -> TokenBin:
    """Tokenise a UTF-8 text file with a GGUF model's tokenizer into a TokenBin."""
    from .. import gguf
    from ..llm.tokenizer import Tokenizer

    text_path = Path(text_path)
    if not text_path.is_file():
        raise DatasetError(f"no text file at {str(text_path)!r}")
    try:
        text = text_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{str(text_path)!r} is not UTF-8 text: {exc}") from None
    tok = Tokenizer.from_gguf(gguf.load(model_path))
    ids = tok.encode(text, add_bos=add_bos)
    dtype = "uint16" if tok.n_vocab <= 1 << 16 else "uint32"
    write_tokenbin(out_path, np.asarray(ids, np.int64), dtype=dtype)
    return read_tokenbin(out_path)
