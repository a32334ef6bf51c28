"""The Ray path: Ray Data holds the remaining shards as a dataset (one row per shard) and
``map_batches`` runs them through a pool of actors, each loading the model once and writing
the shards it computes. Ray Data's actor pool restarts an actor that dies and retries the
batch it held (its default fault tolerance); as a shard is written whole under its own name, a
retried batch replaces its shard and the output holds every input exactly once. Scheduling,
retries and placement are Ray's, not ours."""
from __future__ import annotations

import json
import logging
import os
from typing import Callable

from ..errors import BackendUnavailable, ConfigError
from . import shards
from .work import JobSpec, Runner


class ShardWorker:
    """One Ray actor: the model, loaded once, and the shards given to it."""

    def __init__(self, spec: JobSpec, out: str, fmt: str):
        self.runner = Runner(spec)
        self.out, self.fmt = out, fmt

    def __call__(self, batch: dict) -> dict:
        done = []
        for k, payload in zip(batch["shard"], batch["items"]):
            items = json.loads(payload)
            shards.write_shard(self.out, int(k), self.fmt, self.runner.run(items))
            done.append(len(items))
        return {"shard": batch["shard"], "rows": done}


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the 'data' extra of ray)
    except ImportError:
        raise BackendUnavailable("batch jobs on Ray need Ray Data: pip install 'abi[ray]'") from None
    return ray


def run_on_ray(spec: JobSpec, items: list[dict], todo: list[tuple[int, int, int]], out: str,
               fmt: str, opts, on_done: Callable[[int], None]) -> None:
    ray = _ray()
    need = opts.workers * opts.cpus_per_worker
    started = False
    if not ray.is_initialized():
        common = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                      configure_logging=True)
        if opts.address is None:
            # a cluster for this job alone: as many CPUs as the workers ask for (at least this
            # machine's), so that the pool is never left waiting for resources
            ray.init(num_cpus=max(need, os.cpu_count() or 1), **common)
        else:
            ray.init(address=opts.address, **common)
        started = True
    level = logging.getLogger("ray.data").level
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # our bar reports progress
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < opts.cpus_per_worker:
            raise ConfigError(f"the Ray cluster has {cpus:g} CPUs; a worker asks for "
                              f"{opts.cpus_per_worker}", "cpus_per_worker")
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts items; Ray's would count blocks
        ctx.print_on_execution_start = False
        records = [{"shard": k, "items": json.dumps(items[s:e], ensure_ascii=False)}
                   for k, s, e in todo]
        ds = ray.data.from_items(records, override_num_blocks=len(records))
        ds = ds.map_batches(ShardWorker, fn_constructor_args=(spec, out, fmt), batch_size=1,
                            compute=ActorPoolStrategy(size=min(opts.workers, len(records))),
                            num_cpus=opts.cpus_per_worker)
        for row in ds.iter_rows():
            on_done(int(row["rows"]))
    finally:
        logging.getLogger("ray.data").setLevel(level)
        if started:
            ray.shutdown()
