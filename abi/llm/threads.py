"""How many threads a decode step should use.

A step splits every matrix product over the threads and meets at barriers between stages.
When other processes keep a core busy, a thread can be descheduled while its partner
waits at the barrier, and a 2-thread step becomes many times slower than a 1-thread one.
So decode steps time both choices now and then and keep the faster, re-checking less
often while the answer stays the same (under 1% of steps once settled). A model keeps one
chooser for single-sequence decode steps and one for the batcher's decode steps (several
sequences' next tokens: judged per token, as their number varies)."""
from __future__ import annotations

import contextlib
import threading
import time


class ThreadChooser:
    def __init__(self, n_threads: int, probe_steps: int = 2, first_period: int = 32,
                 max_period: int = 1024):
        self.choices = [n_threads, 1] if n_threads > 1 else [1]
        self.current = n_threads
        self.mean = {n: None for n in self.choices}   # exponential moving average, seconds
        self.probe_steps, self.period, self.max_period = probe_steps, first_period, max_period
        self._first_period = first_period
        self._until_probe = first_period
        self._probing = 0

    def pick(self) -> int:
        if len(self.choices) == 1:
            return self.current
        if self._probing:
            return self._other()
        self._until_probe -= 1
        if self._until_probe < 0:
            self._probing = self.probe_steps
            self.mean[self._other()] = None  # judge the alternative on fresh steps only
            return self._other()
        return self.current

    def _other(self) -> int:
        return self.choices[1] if self.current == self.choices[0] else self.choices[0]

    def record(self, n: int, seconds: float) -> None:
        if len(self.choices) == 1:
            return
        prev = self.mean.get(n)
        self.mean[n] = seconds if prev is None else 0.7 * prev + 0.3 * seconds
        if self._probing and n != self.current:
            self._probing -= 1
            if not self._probing:
                self._decide()
        elif n == self.current and not self._probing:
            other = self.mean.get(self._other())
            if other is not None and self.mean[n] > 2 * other:
                self._until_probe = 0  # much slower than the alternative was: look again now

    def _decide(self) -> None:
        best = min(self.choices, key=lambda n: self.mean[n] if self.mean[n] is not None else float("inf"))
        if best == self.current:
            self.period = min(self.period * 2, self.max_period)  # settled: check less often
        else:
            self.current, self.period = best, self._first_period
        self._until_probe = self.period

    def timed(self, run, tokens: int = 1):
        """Run ``run(n_threads)`` with the chosen count, learning from its duration per token
        (a batched step of ``tokens`` sequences' next tokens: its size varies between steps)."""
        n = self.pick()
        t = time.perf_counter()
        out = run(n)
        self.record(n, (time.perf_counter() - t) / tokens)
        return out


# -- OpenMP thread pools ---------------------------------------------------------------------
# libgomp keeps a pool of idle threads for every thread that has started a parallel region,
# and once it manages more threads than the process has CPUs it stops spinning at barriers
# and sleeps in the kernel instead: a 2-thread decode step on 2 cores then takes ~2x as long
# (measured: 3.8 -> 8.7 ms on the default model). So a thread that is done with parallel work
# for a while (the loading thread after its scan, a scheduler thread after its job) lets its
# pool go, leaving the pools of the threads that compute now. A scheduler's job threads
# keep theirs while a job runs (``computing``); a forward called from any other thread (an
# application's own ``Model.forward``, ``logits``, ``hidden_states``) lets go of it after.

_gomp = None
_local = threading.local()


@contextlib.contextmanager
def computing():
    """The calling thread runs one forward after another (a generation): its OpenMP pool
    stays until the block ends, and is let go then."""
    _local.computing = True
    try:
        yield
    finally:
        _local.computing = False
        release_openmp_pool()


def release_unless_computing() -> None:
    """After a forward: let the pool go unless the thread is inside ``computing()``."""
    if not getattr(_local, "computing", False):
        release_openmp_pool()


def release_openmp_pool() -> None:
    """Free the idle OpenMP threads of the calling thread (no-op without libgomp)."""
    global _gomp
    if _gomp is None:
        import ctypes

        try:
            _gomp = ctypes.CDLL("libgomp.so.1").omp_pause_resource_all   # OpenMP 5.0
            _gomp.argtypes, _gomp.restype = [ctypes.c_int], ctypes.c_int
        except (OSError, AttributeError):
            _gomp = False
    if _gomp:
        _gomp(1)   # omp_pause_soft
