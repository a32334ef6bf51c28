"""``run_job``: survey the input, decide which shards remain, and compute them in this process
(the default) or on a Ray cluster (where Ray Data reads the input: the driver sees only its
count and hash)."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import ConfigError
from . import shards
from .inputs import read_items, survey
from .work import JobSpec, Runner, resolved_model, settings_of

DEFAULT_SHARD_SIZE = {"embed": 1024, "generate": 32}


@dataclass
class RayOptions:
    """``address``: None starts a local Ray cluster for the job; ``auto`` or ``host:port``
    (or ``ray://...``) joins an existing one. One actor per worker, each loading the model
    once with ``cpus_per_worker`` CPUs (its thread count). A batch whose actor dies is retried
    ``max_retries`` times (on a restarted actor), then the job fails (``BatchWorkerError``)."""

    address: str | None = None
    workers: int = 2
    cpus_per_worker: int = 1
    max_retries: int = 3

    def __post_init__(self):
        for name, least in (("workers", 1), ("cpus_per_worker", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"{name} must be an integer of at least {least}, got {value!r}", name)


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
    shard_size = shard_size or DEFAULT_SHARD_SIZE[spec.task]
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard size must be a positive integer, got {shard_size!r}", "shard_size")
    fmt = shards.output_format(out, out_format)
    source = {"path": str(input_path), "field": spec.field, "kind": spec.kind, "fmt": input_format,
              "id_field": id_field}
    if ray is None:
        return _run(spec, source, out, fmt, shard_size, resume, progress, None)
    from .on_ray import cluster

    with cluster(ray):
        return _run(spec, source, out, fmt, shard_size, resume, progress, ray)


def _run(spec, source, out, fmt, shard_size, resume, progress, ray) -> JobReport:
    """Survey the input (count and hash it; on Ray the driver receives nothing more), check the
    job against ``out``, then compute the shards still missing."""
    import time

    if ray is None:
        items = read_items(**source)
        rows, digest = survey(items)
    else:
        from .on_ray import survey_on_ray

        rows, digest = survey_on_ray(source)
    if not rows:
        raise ConfigError(f"input {source['path']!r} holds no items", "input")
    manifest = {"task": spec.task, "model": resolved_model(spec), "settings": settings_of(spec),
                "input_rows": rows, "input_sha256": digest, "shard_size": shard_size,
                "format": fmt}
    done = shards.prepare(out, manifest, resume)
    ranges = shards.shard_ranges(rows, shard_size)
    todo = [r for r in ranges if r[0] not in done]
    t0 = time.perf_counter()
    bar = _bar(rows, sum(e - s for k, s, e in ranges if k in done), spec.task, progress)
    try:
        if todo and ray is None:
            runner = Runner(spec)
            for k, s, e in todo:
                shards.write_shard(out, k, fmt, runner.run(items[s:e], on_done=bar.update))
        elif todo:
            from .on_ray import run_on_ray

            run_on_ray(spec, source, rows, shard_size, [k for k, _, _ in todo], str(out), fmt,
                       ray, bar.update)
    finally:
        bar.close()
    return JobReport(str(out), rows, len(ranges), len(ranges) - len(todo), len(todo),
                     sum(e - s for _, s, e in todo), time.perf_counter() - t0)


def _bar(total: int, initial: int, task: str, enabled: bool):
    from tqdm import tqdm

    # items/s and the time left; on stderr so that stdout stays the command's report
    return tqdm(total=total, initial=initial, unit="item", desc=f"batch {task}",
                dynamic_ncols=True, disable=not enabled, file=sys.stderr)
