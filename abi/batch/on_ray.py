"""The Ray path. Ray Data reads the input: ``InputDatasource``'s read task runs the local
path's own reader (``iter_items``) on a worker, so rows are numbered, checked and hashed alike,
and the driver receives only the item count and hash, never the items. The rows are
partitioned by shard (a hash exchange, which keeps a shard's rows in one block, as Ray's
``map_groups`` relies on) and materialized in the object store before the actors start, so
that the actors' CPUs never starve the read and the exchange; then ``map_batches`` hands each
block, whole shards, to a pool of actors, each loading the model once and writing the shards
it computes.

Exactly once, under retries: a row's shard is a function of its row alone (``row //
shard_size``), never of Ray's blocks; a call sees whole shards (checked: a partial one fails
the job, never writes), and a shard is written whole through a rename under its own name. So
a call retried after its actor died, or run twice, rewrites the same complete file, and the
output holds every input exactly once whichever attempts finish. A dead actor is restarted and
its batch retried ``max_retries`` times (``max_task_retries``; restarts are not capped, so
deaths spread over many shards do not end a long job); a shard that kills its worker every
time ends the job with a ``BatchWorkerError`` naming it, and the shards written stay for
``--resume``. Scheduling, retries and placement are Ray's, not ours."""
from __future__ import annotations

import json
import logging
import os
import warnings
from contextlib import contextmanager
from typing import Callable

from ..errors import AbiError, BackendUnavailable, BatchWorkerError, ConfigError
from . import shards
from .inputs import iter_items, survey
from .work import JobSpec, Runner

try:
    import ray
    import ray.data  # Ray Data is the 'data' extra of ray
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask
except ImportError:  # cluster() says so, typed
    ray = None
    Datasource = object


class InputDatasource(Datasource):
    """The input as Ray Data reads it. One read task reads the file in order (as Ray's own
    file readers read a file in one task), so that it can number the rows and see a repeated
    id. With ``todo`` (shard indices) it yields one block per shard in ``todo``, rows
    ``{"shard", "item"}`` (the item as JSON); without, one row: the items' count and hash."""

    def __init__(self, source: dict, shard_size: int = 1, todo: frozenset[int] | None = None):
        super().__init__()
        self.source, self.shard_size, self.todo = source, shard_size, todo

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None,
                             input_files=[self.source["path"]])
        return [ReadTask(self._read, meta)]

    def _read(self):
        import pyarrow as pa

        items = iter_items(**self.source)
        if self.todo is None:
            rows, digest = survey(items)
            yield pa.table({"rows": [rows], "digest": [digest]})
            return
        shard, block = None, []
        for item in items:
            k = item["row"] // self.shard_size
            if k != shard:
                if block:
                    yield pa.table({"shard": [shard] * len(block), "item": block})
                shard, block = k, []
            if k in self.todo:
                block.append(json.dumps(item, ensure_ascii=False))
        if block:
            yield pa.table({"shard": [shard] * len(block), "item": block})


class ShardWorker:
    """One Ray actor: the model, loaded once, and the shards given to it (a block holds whole
    shards). Each attempt at a shard is noted beside it, so a job that fails can name the shard
    that kept killing its worker."""

    def __init__(self, spec: JobSpec, out: str, fmt: str, rows: int, shard_size: int):
        self.runner = Runner(spec)
        self.out, self.fmt, self.rows, self.shard_size = out, fmt, rows, shard_size

    def __call__(self, block: dict) -> dict:
        import numpy as np

        groups: dict[int, list[str]] = {}
        for k, payload in zip(block["shard"], block["item"]):
            groups.setdefault(int(k), []).append(payload)
        done = [self._shard(k, groups[k]) for k in sorted(groups)]
        return {"shard": np.array(sorted(groups)), "rows": np.array(done)}

    def _shard(self, k: int, payloads: list[str]) -> int:
        items = sorted((json.loads(s) for s in payloads), key=lambda it: it["row"])
        lo, hi = k * self.shard_size, min((k + 1) * self.shard_size, self.rows)
        if [it["row"] for it in items] != list(range(lo, hi)):  # fail closed: never a partial shard
            raise BatchWorkerError(f"shard {k} reached its worker with rows other than {lo}..{hi - 1}",
                                   [k])
        shards.note_attempt(self.out, k, f"pid {os.getpid()}: rows {lo}..{hi - 1}, ids "
                                         f"{items[0]['id']}..{items[-1]['id']}")
        shards.write_shard(self.out, k, self.fmt, self.run(items))
        shards.clear_attempts(self.out, k)
        return len(items)

    def run(self, items: list[dict]) -> list[dict]:
        """One shard's items through the model."""
        return self.runner.run(items)


@contextmanager
def cluster(opts):
    """Ray for the job: a local cluster started for it (and stopped after), or the cluster
    at ``opts.address``, or the one this process already joined."""
    if ray is None:
        raise BackendUnavailable("batch jobs on Ray need Ray Data: pip install 'abi[ray]'")
    started = False
    if not ray.is_initialized():
        common = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                      configure_logging=True)
        if opts.address is None:
            # a cluster for this job alone: as many CPUs as the workers ask for (at least this
            # machine's), so that the pool is never left waiting for resources
            ray.init(num_cpus=max(opts.workers * opts.cpus_per_worker, os.cpu_count() or 1),
                     **common)
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
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts items; Ray's would count blocks
        ctx.print_on_execution_start = False
        yield
    finally:
        logging.getLogger("ray.data").setLevel(level)
        if started:
            ray.shutdown()


def survey_on_ray(source: dict) -> tuple[int, str]:
    """The input's item count and hash, read and checked by a Ray task."""
    source = dict(source, path=os.path.abspath(source["path"]))  # the workers' folder is not ours
    try:
        [row] = ray.data.read_datasource(InputDatasource(source)).take_all()
    except Exception as exc:
        _reraise_ours(exc)
        raise
    return int(row["rows"]), str(row["digest"])


def run_on_ray(spec: JobSpec, source: dict, rows: int, shard_size: int, todo: list[int],
               out: str, fmt: str, opts, on_done: Callable[[int], None]) -> None:
    out = os.path.abspath(out)  # the workers' folder is not ours
    source = dict(source, path=os.path.abspath(source["path"]))
    for k in todo:
        shards.clear_attempts(out, k)
    try:
        ds = ray.data.read_datasource(InputDatasource(source, shard_size, frozenset(todo)))
        ds = ds.repartition(len(todo), keys=["shard"]).materialize()
    except Exception as exc:
        _reraise_ours(exc)
        raise
    with warnings.catch_warnings():
        # Ray 2.60 names no parameter for an actor's restarts and retries, only **ray_remote_args
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            ShardWorker, fn_constructor_args=(spec, out, fmt, rows, shard_size), batch_size=None,
            # one batch at a time per actor: an actor's death costs a retry to that batch alone
            compute=ray.data.ActorPoolStrategy(size=min(opts.workers, len(todo)),
                                               max_tasks_in_flight_per_actor=1),
            num_cpus=opts.cpus_per_worker, max_restarts=-1, max_task_retries=opts.max_retries)
    try:
        for row in ds.iter_rows():
            on_done(int(row["rows"]))
    except Exception as exc:
        _reraise_ours(exc)
        if not any(isinstance(e, ray.exceptions.RayActorError) for e in _causes(exc)):
            raise
        raise _worker_error(out, fmt, todo, opts.max_retries) from None


def _causes(exc: BaseException):
    """``exc``, its causes (Ray's ``cause`` included) and contexts."""
    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if e is not None and id(e) not in seen:
            seen.add(id(e))
            yield e
            stack += [getattr(e, "cause", None), e.__cause__, e.__context__]


def _reraise_ours(exc: Exception) -> None:
    """An abi error raised in a Ray task (a bad input line, ...) reaches the caller as itself,
    not as Ray's wrapper of it (a ``RayTaskError`` subclassing it, its message a traceback)."""
    for e in _causes(exc):
        if isinstance(e, AbiError) and not isinstance(e, ray.exceptions.RayError):
            # Ray Data appends its advice on transient errors to the message; ours is not one
            if e.args and isinstance(e.args[0], str) and "\nFailed to " in e.args[0]:
                e.args = (e.args[0][:e.args[0].index("\nFailed to ")],) + e.args[1:]
            raise e from None


def _worker_error(out: str, fmt: str, todo: list[int], max_retries: int) -> BatchWorkerError:
    """Name the shards tried most often (each try is noted beside its shard): those that kept
    killing their worker."""
    attempts = {k: shards.attempts(out, k) for k in todo}
    most = max(len(a) for a in attempts.values())
    written = shards.done_shards(out, fmt)
    missing = [k for k in todo if k not in written]
    blamed = sorted(k for k, a in attempts.items() if most and len(a) == most)
    what = ("; ".join(f"shard {k} ({attempts[k][-1].split(': ', 1)[1]})" for k in blamed)
            + f" killed its worker on each of {most} tries") if blamed else \
        f"a worker died more than {max_retries} times on shards {missing}"
    return BatchWorkerError(
        f"{what} (--max-retries {max_retries}); {len(todo) - len(missing)} of the {len(todo)} "
        f"shards to do were written, {len(missing)} were not: fix the input or raise "
        "--max-retries, then rerun with --resume", blamed or missing)
