"""Continuous batching: the runtime's one step scheduler, shared by every surface that runs
several generations on one model (an ``Engine`` with more than one slot: the server, batch
jobs, agents).

Each generation still runs its own loop (``generation.generate_step``: sampling, penalties,
stop strings, seeds, logprobs, constraints and cancellation stay per sequence), but its
forward calls go through ``Batcher.forward``, which queues them. A single stepping thread
takes what is queued and runs ONE compiled forward (``Model.forward_many``) over the next
token of every decoding sequence plus at most ``prefill_chunk`` tokens of prompts, so the
weights are read once per step for all of them; attention runs per sequence against its own
cache. Sequences join and leave between steps. A long prompt goes in chunks of
``prefill_chunk`` tokens, one chunk per step beside the decode tokens, so it does not stall
the streams already running (each of their tokens waits at most one chunk's time more).

The step waits a moment for members that are still sampling their previous token (at least
``gather_s``, at most half the last step's time), so that all decode tokens meet in one step
instead of alternating half-batches. A
token's arithmetic does not depend on the batch (see ``_decode.pyx``), so a request's output
is the same alone or beside others.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

import numpy as np

log = logging.getLogger("abi.llm")


class _Request:
    __slots__ = ("ids", "cache", "output", "done", "result", "error")

    def __init__(self, ids, cache, output):
        self.ids, self.cache, self.output = ids, cache, output
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None


class Batcher:
    def __init__(self, model, prefill_chunk: int = 64, gather_s: float = 0.004):
        if prefill_chunk < 1:
            raise ValueError("prefill_chunk must be >= 1")
        self.model = model
        self.prefill_chunk = min(prefill_chunk, model.n_batch)
        self.gather_s = gather_s
        self._cv = threading.Condition()
        self._pending: list[_Request] = []
        self._members = 0
        self._closed = False
        self.steps = 0                 # forward steps run, and the tokens they held
        self.step_tokens = 0
        self.max_sequences = 0         # the most sequences seen in one step
        self._last_step_s = 0.0
        self._thread = threading.Thread(target=self._loop, name="abi-batcher", daemon=True)
        self._thread.start()

    # -- a generation's side ---------------------------------------------------------------
    @contextmanager
    def member(self):
        """Hold this while a generation runs: steps wait briefly for members to queue."""
        with self._cv:
            self._members += 1
        try:
            yield self
        finally:
            with self._cv:
                self._members -= 1
                self._cv.notify_all()

    def forward(self, ids, cache, output: str = "last", should_stop=None):
        """``Model.forward``'s contract, run inside the shared steps: prompts in chunks of
        ``prefill_chunk``; ``should_stop()`` polled between chunks (None when stopped)."""
        model = self.model
        ids = model.check_request(ids, cache, output)
        if output == "hidden":   # not a generation: run alone
            return model.forward(ids, cache, output, should_stop)
        outs = []
        for s in range(0, len(ids), self.prefill_chunk):
            if should_stop is not None and s and should_stop():
                return None
            last = s + self.prefill_chunk >= len(ids)
            want = output if output != "last" or last else "none"
            out = self._submit(_Request(ids[s:s + self.prefill_chunk], cache, want))
            if output != "last" or last:
                outs.append(out)
        return model.check_finite(outs[0] if len(outs) == 1 else np.concatenate(outs), output, cache)

    def _submit(self, req: _Request):
        with self._cv:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append(req)
            self._cv.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        return req.result

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(5)

    # -- the stepping thread -----------------------------------------------------------------
    def _take(self) -> list[_Request] | None:
        """The next step's requests (under the lock): every decode token, prompt chunks up
        to ``prefill_chunk`` tokens (at least one), the rest left for the next step."""
        while not self._pending and not self._closed:
            self._cv.wait()
        if self._closed and not self._pending:
            return None
        deadline = time.monotonic() + max(self.gather_s, self._last_step_s / 2)
        while len(self._pending) < self._members and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cv.wait(left)
        take, rest, budget = [], [], self.prefill_chunk
        for req in self._pending:
            n = len(req.ids)
            if n == 1 or n <= budget:   # a chunk is never longer than the whole budget
                take.append(req)
                if n > 1:
                    budget -= n
            else:
                rest.append(req)
        self._pending = rest
        return take

    def _loop(self) -> None:
        while True:
            with self._cv:
                batch = self._take()
            if batch is None:
                return
            t0 = time.perf_counter()
            try:
                results = self.model.forward_many([(r.ids, r.cache, r.output) for r in batch])
            except BaseException as exc:   # every waiting generation gets the error
                for r in batch:
                    r.error = exc
                    r.done.set()
                continue
            self._last_step_s = time.perf_counter() - t0
            self.steps += 1
            self.step_tokens += sum(len(r.ids) for r in batch)
            self.max_sequences = max(self.max_sequences, len(batch))
            for r, out in zip(batch, results):
                r.result = out
                r.done.set()
