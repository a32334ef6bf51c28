"""How many threads a decode step should use.

A step splits every matrix product over the threads and meets at barriers between stages.
When other processes keep a core busy, a thread can be descheduled while its partner
waits at the barrier, and a 2-thread step becomes many times slower than a 1-thread one.
So decode steps time both choices now and then and keep the faster, re-checking less
often while the answer stays the same (under 1% of steps once settled). A model keeps one
chooser for single-sequence decode steps and one for the batcher's decode steps (several
sequences' next tokens: judged per token, as their number varies)."""
from __future__ import annotations

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
