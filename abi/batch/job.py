"""``run_job``: read the input, decide which shards remain, and compute them in this process
(the default) or on a Ray cluster."""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass

from ..errors import ConfigError
from . import shards
from .inputs import read_items
from .work import JobSpec, Runner, resolved_model, settings_of

DEFAULT_SHARD_SIZE = {"embed": 1024, "generate": 32}


@dataclass
class RayOptions:
    """``address``: None starts a local Ray cluster for the job; ``auto`` or ``host:port``
    (or ``ray://...``) joins an existing one. One actor per worker, each loading the model
    once with ``cpus_per_worker`` CPUs (its thread count)."""

    address: str | None = None
    workers: int = 2
    cpus_per_worker: int = 1

    def __post_init__(self):
        for name in ("workers", "cpus_per_worker"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}", name)


@dataclass
class JobReport:
    out: str
    rows: int           # the input's items
    shards: int         # shards in all
    skipped: int        # shards found already written (resume)
    written: int        # shards written by this run
    processed: int      # items computed by this run
    seconds: float

    @property
    def items_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def run_job(spec: JobSpec, input_path, out, *, input_format: str | None = None,
            id_field: str | None = None, out_format: str | None = None,
            shard_size: int | None = None, resume: bool = False, ray: RayOptions | None = None,
            progress: bool = True) -> JobReport:
    """Compute ``spec`` for every item of ``input_path`` into the shard folder ``out``."""
    import time

    shard_size = shard_size or DEFAULT_SHARD_SIZE[spec.task]
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard size must be a positive integer, got {shard_size!r}", "shard_size")
    fmt = shards.output_format(out, out_format)
    items = read_items(input_path, spec.field, spec.kind, fmt=input_format, id_field=id_field)
    if not items:
        raise ConfigError(f"input {str(input_path)!r} holds no items", "input")
    digest = hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()
    manifest = {"task": spec.task, "model": resolved_model(spec), "settings": settings_of(spec),
                "input_rows": len(items), "input_sha256": digest, "shard_size": shard_size,
                "format": fmt}
    done = shards.prepare(out, manifest, resume)
    ranges = shards.shard_ranges(len(items), shard_size)
    todo = [r for r in ranges if r[0] not in done]
    t0 = time.perf_counter()
    bar = _bar(len(items), sum(e - s for k, s, e in ranges if k in done), spec.task, progress)
    try:
        if todo and ray is None:
            runner = Runner(spec)
            for k, s, e in todo:
                shards.write_shard(out, k, fmt, runner.run(items[s:e], on_done=bar.update))
        elif todo:
            from .on_ray import run_on_ray

            run_on_ray(spec, items, todo, str(out), fmt, ray, bar.update)
    finally:
        bar.close()
    return JobReport(str(out), len(items), len(ranges), len(ranges) - len(todo), len(todo),
                     sum(e - s for _, s, e in todo), time.perf_counter() - t0)


def _bar(total: int, initial: int, task: str, enabled: bool):
    from tqdm import tqdm

    # items/s and the time left; on stderr so that stdout stays the command's report
    return tqdm(total=total, initial=initial, unit="item", desc=f"batch {task}",
                dynamic_ncols=True, disable=not enabled, file=sys.stderr)
