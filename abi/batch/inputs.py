"""A batch job's input: JSONL, Parquet or plain text (one item per line), read into items
``{"row", "id", <field>}``. Every defect is a ``BatchInputError`` naming the line (or Parquet
row) before any model work starts, so a job never fails half-way on its input. The local path
and the Ray path (whose read task runs ``iter_items`` on a worker) read through this one code,
so they number, check and hash the items alike."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import BatchInputError, ConfigError

FORMATS = ("jsonl", "parquet", "text")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
             ".pq": "parquet"}


def input_format(path, fmt: str | None = None) -> str:
    """``fmt`` if given, else the format the file name says (anything unknown: text)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"input format {fmt!r} is not one of {', '.join(FORMATS)}", "input_format")
        return fmt
    return _SUFFIXES.get(Path(path).suffix.lower(), "text")


def read_items(path, field: str, kind: str = "text", *, fmt: str | None = None,
               id_field: str | None = None) -> list[dict]:
    """The items of ``path`` in order: ``{"row": i, "id": str, field: value}``. ``kind`` is
    what the value must be: ``text`` (a string) or ``messages`` (a chat: a list of
    ``{"role", "content"}``). Blank lines of text and JSONL files are skipped; ``row`` counts
    items, ``id`` is the ``id_field`` value or, without one, the row."""
    return list(iter_items(path, field, kind, fmt=fmt, id_field=id_field))


def survey(items: Iterable[dict]) -> tuple[int, str]:
    """How many items there are and a SHA-256 of them in order (a resumed job must see the
    same input), reading them once without holding them."""
    digest, n = hashlib.sha256(), 0
    for item in items:
        digest.update(json.dumps(item, ensure_ascii=False).encode() + b"\n")
        n += 1
    return n, digest.hexdigest()


def iter_items(path, field: str, kind: str = "text", *, fmt: str | None = None,
               id_field: str | None = None) -> Iterator[dict]:
    """``read_items``, one item at a time (the file is streamed, never held whole)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"input {str(path)!r} is not a file", "input")
    fmt = input_format(path, fmt)
    if fmt == "text":
        if kind != "text" or id_field is not None:
            raise ConfigError("a plain-text input holds one text per line: use JSONL or Parquet "
                              "for chat messages or ids", "input")
        records = ((n, {field: line}) for n, line in _lines(path) if line.strip())
    elif fmt == "jsonl":
        records = _jsonl(path)
    else:
        records = _parquet(path, [f for f in (field, id_field) if f])
    seen, row = {}, 0
    for line, record in records:
        if field not in record or record[field] is None:
            raise BatchInputError(f"{path}:{line}: no {field!r} field", line)
        value = record[field]
        if kind == "text" and not isinstance(value, str):
            raise BatchInputError(f"{path}:{line}: {field!r} must be a string, got "
                                  f"{type(value).__name__}", line)
        if kind == "messages":
            value = _messages(value, path, line, field)
        if id_field is None:
            ident = str(row)
        else:
            ident = record.get(id_field)
            if ident is None or isinstance(ident, (dict, list)):
                raise BatchInputError(f"{path}:{line}: {id_field!r} must be a string or number",
                                      line)
            ident = str(ident)
            if ident in seen:
                raise BatchInputError(f"{path}:{line}: id {ident!r} repeats line {seen[ident]}",
                                      line)
            seen[ident] = line
        yield {"row": row, "id": ident, field: value}
        row += 1


def _lines(path: Path):
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            for n, line in enumerate(fh, 1):
                yield n, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise BatchInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _jsonl(path: Path):
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise BatchInputError(f"{path}:{n}: not valid JSON: {exc}", n) from None
        if not isinstance(record, dict):
            raise BatchInputError(f"{path}:{n}: a line must be a JSON object, got "
                                  f"{type(record).__name__}", n)
        yield n, record


def _parquet(path: Path, columns: list[str]):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError for a bad file
        raise BatchInputError(f"{path}: not a readable Parquet file: {exc}") from None
    names = pf.schema_arrow.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise BatchInputError(f"{path}: no column {missing[0]!r} (columns: {', '.join(names)})")
    n, batches = 0, pf.iter_batches(batch_size=4096, columns=columns)
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:  # a corrupt page shows only when it is read
            raise BatchInputError(f"{path}: unreadable Parquet after row {n}: {exc}", n + 1) from None
        if batch is None:
            return
        for record in batch.to_pylist():
            n += 1
            yield n, record


def _messages(value, path, line, field):
    if not isinstance(value, list) or not value:
        raise BatchInputError(f"{path}:{line}: {field!r} must be a non-empty list of messages", line)
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):
            raise BatchInputError(f"{path}:{line}: {field}[{i}] must be an object with string "
                                  "'role' and 'content'", line)
    return [{"role": m["role"], "content": m["content"]} for m in value]
