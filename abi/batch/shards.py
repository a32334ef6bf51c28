"""A batch job's output: a folder of shards ``part-NNNNNN.parquet`` (or ``.jsonl``), shard k
holding rows ``[k * shard_size, (k + 1) * shard_size)`` of the input, plus ``_job.json`` that
says what made them. Each shard is written whole through ``atomic_write``, so a shard file
that exists is complete: resuming skips the shards present and repeats none, and a shard
written twice (a retried batch) is replaced, never duplicated."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ConfigError, DatasetError
from ..fileio import atomic_write, write_text

OUT_FORMATS = ("parquet", "jsonl")
MANIFEST = "_job.json"
_SHARD = re.compile(r"part-(\d{6})\.(parquet|jsonl)")


def output_format(out, fmt: str | None = None) -> str:
    if fmt is not None:
        if fmt not in OUT_FORMATS:
            raise ConfigError(f"output format {fmt!r} is not one of {', '.join(OUT_FORMATS)}", "format")
        return fmt
    suffix = Path(out).suffix.lower().lstrip(".")
    return suffix if suffix in OUT_FORMATS else "parquet"


def shard_path(out, index: int, fmt: str) -> Path:
    return Path(out) / f"part-{index:06d}.{fmt}"


def shard_ranges(n_rows: int, shard_size: int) -> list[tuple[int, int, int]]:
    """``(index, start, stop)`` of every shard."""
    return [(k, s, min(s + shard_size, n_rows)) for k, s in enumerate(range(0, n_rows, shard_size))]


def done_shards(out, fmt: str) -> set[int]:
    """The indices of the shards already written (complete by construction)."""
    out = Path(out)
    if not out.is_dir():
        return set()
    return {int(m.group(1)) for p in out.iterdir()
            if (m := _SHARD.fullmatch(p.name)) and m.group(2) == fmt}


def prepare(out, manifest: dict, resume: bool) -> set[int]:
    """Create ``out`` (or check it, with ``resume``) and return the shards already done. A
    resumed job must be the same job: same input size, model, settings and shard size."""
    out = Path(out)
    path = out / MANIFEST
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {str(out)!r} is a file: a batch job writes a folder of shards", "out")
    if path.is_file():
        if not resume:
            raise ConfigError(f"{str(out)!r} holds a batch job's output already: pass --resume to "
                              "finish it, or choose another --out", "out")
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DatasetError(f"{path}: unreadable job manifest ({exc})") from None
        for key, value in json.loads(json.dumps(manifest)).items():  # as JSON keeps them
            if old.get(key) != value:
                raise ConfigError(f"cannot resume {str(out)!r}: its {key} was {old.get(key)!r}, this "
                                  f"job's is {value!r}; run with the same options or another --out", key)
        return done_shards(out, manifest["format"])
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"output folder {str(out)!r} is not empty and holds no batch job", "out")
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(manifest, indent=2) + "\n")
    return set()


def write_shard(out, index: int, fmt: str, rows: list[dict]) -> Path:
    """Write one shard's result rows at once (atomically)."""
    path = shard_path(out, index, fmt)
    if fmt == "jsonl":
        with atomic_write(path, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=_schema(rows))
        with atomic_write(path, "wb") as fh:
            pq.write_table(table, fh)
    return path


def _attempts_path(out, index: int) -> Path:
    return Path(out) / f"part-{index:06d}.attempts"


def note_attempt(out, index: int, note: str) -> None:
    """Note one try at shard ``index`` (a line), before its work starts."""
    with open(_attempts_path(out, index), "a", encoding="utf-8") as fh:
        fh.write(note + "\n")


def attempts(out, index: int) -> list[str]:
    """The tries at shard ``index`` not followed by its shard being written."""
    try:
        return _attempts_path(out, index).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def clear_attempts(out, index: int) -> None:
    _attempts_path(out, index).unlink(missing_ok=True)


def _schema(rows: list[dict]):
    import pyarrow as pa

    types = {"row": pa.int64(), "id": pa.string(), "embedding": pa.list_(pa.float32()),
             "text": pa.string(), "finish_reason": pa.string(), "prompt_tokens": pa.int64(),
             "completion_tokens": pa.int64(), "model": pa.string(), "settings": pa.string()}
    return pa.schema([(name, types[name]) for name in rows[0]])


def read_results(out) -> list[dict]:
    """Every result row of a job's output folder, ordered by input row."""
    out = Path(out)
    if not (out / MANIFEST).is_file():
        raise DatasetError(f"{str(out)!r} is not a batch job's output (no {MANIFEST})")
    fmt = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["format"]
    rows: list[dict] = []
    for k in sorted(done_shards(out, fmt)):
        path = shard_path(out, k, fmt)
        if fmt == "jsonl":
            with open(path, encoding="utf-8") as fh:
                rows += [json.loads(line) for line in fh if line.strip()]
        else:
            import pyarrow.parquet as pq

            rows += pq.read_table(path).to_pylist()
    return sorted(rows, key=lambda r: r["row"])
