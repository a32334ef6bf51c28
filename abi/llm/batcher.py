"""Continuous batching: the runtime's one step scheduler, shared by every surface that runs
several generations on one model (an ``Engine`` with more than one slot: the server, batch
jobs, agents).

Each generation still runs its own loop (``generation.generate_step``: sampling, penalties,
stop strings, seeds, logprobs, constraints and cancellation stay per sequence), but its
forward calls go through ``Batcher.forward``, which queues them; past its first token, an
unconstrained generation hands the stepping thread its sampling too (``submit``'s ``then``),
so that its next token is queued as its step ends (``generation._chained``). A single stepping thread
takes what is queued and runs ONE compiled forward (``Model.forward_many``) over the next
token of every decoding sequence plus tokens of waiting prompts (below), so the weights are
read once per step for all of them; attention runs per sequence against its own
cache. Sequences join and leave between steps. Prompts go first come first served. A short
prompt (at most ``prefill_chunk`` tokens: a chat turn) goes whole into the next step, beside
every other waiting short prompt, so a burst of users gets its first tokens together, as
from one batched prefill. A longer prompt goes in pieces: ``prefill_chunk`` tokens a step
when nothing decodes; beside decoding streams, the tokens that fit in the time of the
step's decode part or ``prefill_s`` (60 ms), whichever is longer. Both are measured: the
median of the last decode-only steps of that size, and what a token of that prompt's last
piece added to its step (later tokens attend over more of the prompt, so cost more). So a
long prompt arriving adds about that much to the running streams' time per token, whatever
the model's size, and still prefills at half its speed alone or better. A step's prompt
tokens never pass the model's ``n_batch`` (the scratch the engine reserved for them).

The step waits a moment for members that are still sampling their previous token (at least
``gather_s``, at most half the last step's time), so that all decode tokens meet in one step
instead of alternating half-batches. A
token's arithmetic does not depend on the batch (see ``_decode.pyx``), so a request's output
is the same alone or beside others.
"""
from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from contextlib import contextmanager

import numpy as np

log = logging.getLogger("abi.llm")


class _Request:
    """A generation's tokens for the steps: ``taken`` of ``ids`` have been run; ``outs`` the
    outputs of its pieces so far (those its ``output`` keeps); ``short``: goes whole;
    ``token_s``: the seconds a token of its last piece added to that step (0: none yet);
    ``then``: see ``Batcher.submit``."""
    __slots__ = ("ids", "cache", "output", "should_stop", "short", "taken", "token_s", "outs", "done",
                 "result", "error", "then")

    def __init__(self, ids, cache, output, should_stop=None, short=True, then=None):
        self.ids, self.cache, self.output, self.should_stop = ids, cache, output, should_stop
        self.short, self.then = short, then
        self.taken = 0
        self.token_s = 0.0
        self.outs: list = []
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None

    def left(self) -> int:
        return len(self.ids) - self.taken


class Batcher:
    def __init__(self, model, prefill_chunk: int = 64, gather_s: float = 0.004,
                 prefill_s: float = 0.06):
        if prefill_chunk < 1:
            raise ValueError("prefill_chunk must be >= 1")
        self.model = model
        self.prefill_chunk = min(prefill_chunk, model.n_batch)
        self.prefill_s = prefill_s
        self.gather_s = gather_s
        # n decode tokens -> the seconds of the last decode-only steps of that many: their
        # median, since a step the machine stalled once must not distort every prompt piece
        # sized against it while no decode-only step runs to correct it
        self._decode_step_s: dict[int, deque] = {}
        self._prompt_token_s = 0.0     # seconds a prompt token adds to a step: a moving
        # average over all prompts (0 until measured), for a prompt's first piece
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
        """``Model.forward``'s contract, run inside the shared steps: a prompt in pieces, as
        the steps have room; ``should_stop()`` polled between pieces (None when stopped)."""
        if output == "hidden":   # not a generation: run alone
            model = self.model
            return model.forward(model.check_request(ids, cache, output), cache, output, should_stop)
        return self.collect(self.submit(ids, cache, output, should_stop))

    def submit(self, ids, cache, output: str = "last", should_stop=None, then=None) -> _Request:
        """Queue ``forward``'s work for the next steps and return at once; ``collect`` waits
        for its result. Until ``done`` is set the steps own ``cache``. ``then(result,
        error)``, if given, runs in the stepping thread when the ids have run (or their step
        failed: result None) and takes the result instead of ``collect``. It returns
        ``(ids, deliver)``: the ids to run next for this cache (queued at once, ahead of later
        arrivals; their result goes to ``then`` again), or None to end (``done``); and a
        callable or None, called once every sequence of the step has been through its
        ``then`` (so that no thread it wakes competes with those for Python's lock). It
        must not raise."""
        ids = self.model.check_request(ids, cache, output)
        if output == "hidden":
            raise ValueError("hidden states run alone: use forward")
        req = _Request(ids, cache, output, should_stop, short=len(ids) <= self.prefill_chunk, then=then)
        with self._cv:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append(req)
            self._cv.notify_all()
        return req

    def collect(self, req: _Request):
        """A submitted forward's output, once its steps have run (its error, if one failed)."""
        req.done.wait()
        if req.error is not None:
            raise req.error
        return self.model.check_finite(req.result, req.output, req.cache)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(5)

    # -- the stepping thread -----------------------------------------------------------------
    def _decode_s(self, decode: int) -> float:
        """The median seconds of the last decode-only steps of ``decode`` tokens; else of the
        most tokens measured below it (an underestimate: a smaller prompt piece); 0 if none."""
        below = [n for n in self._decode_step_s if n <= decode]
        return statistics.median(self._decode_step_s[max(below)]) if below else 0.0

    def _prompt_budget(self, decode: int, token_s: float = 0.0) -> int:
        """Tokens of long prompts for a step that holds ``decode`` decode tokens, each taking
        ``token_s`` seconds (0: the average measured over all prompts)."""
        decode_s, token_s = self._decode_s(decode), token_s or self._prompt_token_s
        if decode == 0 or decode_s <= 0 or token_s <= 0:
            return self.prefill_chunk
        fit = int(max(decode_s, self.prefill_s) / token_s)
        return max(1, min(self.prefill_chunk, fit))

    def _take(self) -> list[tuple[_Request, int]] | None:
        """The next step (under the lock): every decode token, then the waiting prompts in
        their order of arrival: short ones whole, long ones in pieces within the budget, all
        within ``n_batch`` tokens; what does not fit waits for the next steps, first.
        Returns (request, tokens) pairs."""
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
        decode = [r for r in self._pending if r.left() == 1]
        first_long = next((r for r in self._pending if not r.short and r.left() > 1), None)
        room = self.model.n_batch
        pieces = self._prompt_budget(len(decode), first_long.token_s if first_long else 0.0)
        take, rest = [(r, 1) for r in decode], []
        for req in self._pending:
            n = req.left()
            if n == 1:
                continue
            if req.short:
                k = n if n <= room else 0
            else:
                k = min(n, room, pieces)
                pieces -= k
            if k:
                take.append((req, k))
                room -= k
            else:
                rest.append(req)
        self._pending = rest
        return take

    def _learn(self, seconds: float, decode: int, batch) -> None:
        """Update what a step of ``decode`` tokens takes, or a prompt token adds to one (on
        average, and for each prompt with a piece in ``batch``, its (request, tokens) pairs)."""
        prompt = sum(n for _, n in batch if n > 1)
        if prompt == 0:
            self._decode_step_s.setdefault(decode, deque(maxlen=9)).append(seconds)
        elif decode == 0 or decode in self._decode_step_s:
            token_s = max(seconds - (self._decode_s(decode) if decode else 0.0), 0.0) / prompt
            self._prompt_token_s = _average(self._prompt_token_s, token_s)
            for req, n in batch:
                if n > 1:
                    req.token_s = token_s

    def _loop(self) -> None:
        while True:
            with self._cv:
                batch = self._take()
            if batch is None:
                return
            parts = []
            for req, n in batch:
                last = req.taken + n == len(req.ids)
                want = req.output if req.output != "last" or last else "none"
                parts.append((req.ids[req.taken:req.taken + n], req.cache, want))
            t0 = time.perf_counter()
            try:
                results = self.model.forward_many(parts)
            except BaseException as exc:   # every generation in the step gets the error
                for req, _ in batch:
                    req.error = exc
                    if req.then is not None:
                        _, deliver = req.then(None, exc)
                        if deliver is not None:
                            deliver()
                    req.done.set()
                continue
            self._last_step_s = time.perf_counter() - t0
            self._learn(self._last_step_s, sum(1 for _, n in batch if n == 1), batch)
            self.steps += 1
            self.step_tokens += sum(n for _, n in batch)
            self.max_sequences = max(self.max_sequences, len(batch))
            again, delivers = [], []
            for (req, n), out in zip(batch, results):
                req.taken += n
                if req.output != "none" and (req.output == "all" or req.taken == len(req.ids)):
                    req.outs.append(out)
                if req.taken < len(req.ids):
                    try:
                        stop = req.should_stop is not None and req.should_stop()
                    except BaseException as exc:   # the generation's error, not the stepper's
                        req.error, stop = exc, True
                    if stop:
                        req.done.set()   # result None: stopped between pieces
                    else:
                        again.append(req)
                    continue
                req.result = req.outs[0] if len(req.outs) == 1 else (
                    np.concatenate(req.outs) if req.outs else None)
                more, deliver = req.then(req.result, None) if req.then is not None else (None, None)
                if more:   # the same sequence's next ids, as if submitted now
                    try:
                        req.ids = self.model.check_request(more, req.cache, req.output)
                        req.taken, req.outs, req.result = 0, [], None
                        again.append(req)
                    except BaseException as exc:
                        req.error = exc
                        _, deliver = req.then(None, exc)   # replaces the token's delivery
                        req.done.set()
                else:
                    req.done.set()
                if deliver is not None:
                    delivers.append(deliver)
            for deliver in delivers:
                deliver()
            if again:   # a prompt's rest keeps its place ahead of later arrivals
                with self._cv:
                    self._pending[:0] = again


def _average(old: float, new: float, weight: float = 0.3) -> float:
    return new if old <= 0 else old + weight * (new - old)
