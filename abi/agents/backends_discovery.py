"""What the GPU-aware agent can schedule on: the backends and configurations this machine
has, found at start, each with its memory limit, plus live readings of load and free memory.

Configurations ("arms"):
- engine workloads (inference, batch_inference): CPU with each thread count in {1, 2, all
  cores} x prefill batch sizes; CUDA x prefill batch sizes when a CUDA device is usable.
- training, fine_tuning, embedding: CPU with each thread count (the Encoder's threads; the
  trainers' maths runs in BLAS, whose pool is held to the count). No CUDA path, no CUDA arm.
Memory limits: device memory for CUDA, host memory (the cgroup limit when lower) for CPU.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger("abi.agents")

ENGINE_WORKLOADS = ("inference", "batch_inference")
BLAS_WORKLOADS = ("training", "fine_tuning", "embedding")
PREFILL_BATCHES = (32, 512)


@dataclass(frozen=True)
class BackendSpec:
    """One schedulable configuration. ``name`` is what GpuResponse.gpu_backend_used shows."""

    name: str
    device: str                    # "cpu" or "cuda"
    n_threads: int | None          # CPU threads (None on CUDA)
    n_batch: int | None            # engine prefill batch (None outside engine workloads)
    memory_limit_mb: int
    workloads: tuple[str, ...]

    def serves(self, workload: str) -> bool:
        return workload in self.workloads


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    total_mb: int


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _meminfo() -> dict[str, int]:
    """/proc/meminfo in kB (empty where there is none)."""
    out = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0])
    except OSError:
        pass
    return out


def _cgroup_limit_mb() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            return int(text) // (1 << 20)
    return None


def host_memory_mb() -> int:
    total = _meminfo().get("MemTotal")
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
        except (ValueError, OSError, AttributeError):
            total = 0
    mb = total // 1024
    limit = _cgroup_limit_mb()
    return min(mb, limit) if limit else mb


def host_free_mb() -> int:
    info = _meminfo()
    free = info.get("MemAvailable", info.get("MemFree", 0)) // 1024
    return min(free, host_memory_mb())


def cuda_devices() -> list[CudaDevice]:
    """Usable CUDA devices with their memory; [] (cheaply) on a machine without a driver."""
    from ..llm.backend import cuda_problem

    problem = cuda_problem()
    if problem is not None:
        log.info("GPU agent: no CUDA backend (%s)", problem)
        return []
    try:
        from numba import cuda

        devices = []
        for dev in cuda.list_devices():
            with dev:
                free, total = cuda.current_context().get_memory_info()
                devices.append(CudaDevice(int(dev.id), str(dev.name), int(total) // (1 << 20)))
        return devices
    except Exception as exc:  # a driver that lists devices it cannot open
        log.warning("GPU agent: CUDA devices could not be queried: %s", exc)
        return []


def cuda_free_mb(index: int = 0) -> int | None:
    try:
        from numba import cuda

        with cuda.gpus[index]:
            free, _ = cuda.current_context().get_memory_info()
        return int(free) // (1 << 20)
    except Exception:
        return None


def thread_options(n_cpus: int) -> list[int]:
    return sorted({t for t in (1, 2, n_cpus) if 1 <= t <= n_cpus})


def discover_backends(*, n_cpus: int | None = None, host_mb: int | None = None,
                      cuda: list[CudaDevice] | None = None,
                      prefill_batches: tuple[int, ...] = PREFILL_BATCHES,
                      embedding_available: bool = True) -> list[BackendSpec]:
    """Every configuration this machine offers. Arguments override what is measured
    (tests describe other machines with them)."""
    n_cpus = cpu_count() if n_cpus is None else n_cpus
    host_mb = host_memory_mb() if host_mb is None else host_mb
    cuda = cuda_devices() if cuda is None else cuda
    blas = tuple(w for w in BLAS_WORKLOADS if w != "embedding" or embedding_available)
    specs = []
    for t in thread_options(n_cpus):
        for nb in prefill_batches:
            specs.append(BackendSpec(f"cpu:{t}t:b{nb}", "cpu", t, nb, host_mb, ENGINE_WORKLOADS))
        if blas:
            specs.append(BackendSpec(f"cpu:{t}t", "cpu", t, None, host_mb, blas))
    for dev in cuda[:1]:  # the engine runs on the current CUDA device: the first
        for nb in prefill_batches:
            specs.append(BackendSpec(f"cuda:{dev.index}:b{nb}", "cuda", None, nb, dev.total_mb,
                                     ENGINE_WORKLOADS))
    return specs


class CpuLoadMeter:
    """How busy the CPUs are with work other than this process: the other processes' share
    of all cores over a recent window (/proc/stat busy time minus this process's CPU time).
    Windows shorter than ``min_window_s`` are widened by waiting; older snapshots than
    ``max_window_s`` are not used (they would describe a machine that has moved on)."""

    def __init__(self, min_window_s: float = 0.1, max_window_s: float = 10.0):
        self.min_window_s = min_window_s
        self.max_window_s = max_window_s
        self._snapshots: deque = deque(maxlen=8)

    @staticmethod
    def _proc_stat() -> tuple[float, float] | None:
        """(busy, total) seconds over all CPUs since boot."""
        try:
            with open("/proc/stat") as fh:
                fields = fh.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        ticks = [int(v) for v in fields[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        total = sum(ticks[:8])  # guest time is already counted in user
        return (total - idle) / hz, total / hz

    def snapshot(self) -> None:
        stat = self._proc_stat()
        if stat is not None:
            t = os.times()
            self._snapshots.append((time.monotonic(), stat[0], stat[1], t.user + t.system))

    def load(self) -> float:
        if self._proc_stat() is None:  # not Linux: the load average, our part included
            try:
                return os.getloadavg()[0] / (os.cpu_count() or 1)
            except (AttributeError, OSError):
                return 0.0
        now = time.monotonic()
        usable = [s for s in self._snapshots
                  if self.min_window_s <= now - s[0] <= self.max_window_s]
        if not usable:
            self.snapshot()
            time.sleep(self.min_window_s)
            usable = [self._snapshots[-1]]
        _, busy0, total0, own0 = usable[-1]  # the most recent one that is old enough
        self.snapshot()
        _, busy1, total1, own1 = self._snapshots[-1]
        if total1 <= total0:
            return 0.0
        others = (busy1 - busy0) - (own1 - own0)
        return min(1.0, max(0.0, others / (total1 - total0)))
