"""Generation slots and a bounded waiting queue.

One worker thread per engine slot (each slot is one KV cache; every slot shares the one
loaded model). The workers run each sequence's own loop (sampling, stops, events); their
forward passes meet in the engine's ``abi.llm.batcher.Batcher``, which runs one compiled
step over the next token of every running sequence. A request becomes a ``Job``: it goes to a free slot (``Engine.pick_slot``: the
one whose cache shares the longest prefix with its prompt) or waits in a FIFO queue of bounded length;
past that, ``ServerBusy``. The worker runs the job's generations and hands each event to
the asyncio consumer through ``loop.call_soon_threadsafe``; ``Job.cancel()`` (a client that
went away) stops the generation at the next token, or drops the job from the queue.

Nothing here knows HTTP: the server's routes submit jobs and read their events.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ServerBusy
from ..llm.streaming import StreamingConfig, StreamingStats, TokenEvent

log = logging.getLogger("abi.server")


@dataclass
class Task:
    """One generation: prompt token ids and the sampling configuration."""

    prompt_ids: list[int]
    config: StreamingConfig


# -- what a job hands its consumer ----------------------------------------------------------

@dataclass
class Token:
    index: int           # which task of the job
    event: TokenEvent


@dataclass
class Done:
    index: int
    stats: StreamingStats
    text: str
    tokens: list[int] = field(default_factory=list)


@dataclass
class Failed:
    error: BaseException


class _End:
    pass


END = _End()


class Job:
    """A request's generations, run one after another on one slot. Iterate with
    ``async for item in job`` (Token and Done items; a failure is raised)."""

    def __init__(self, tasks: list[Task], loop: asyncio.AbstractEventLoop):
        if not tasks:
            raise ValueError("a job needs at least one task")
        self.tasks = tasks
        self.loop = loop
        self._items: asyncio.Queue = asyncio.Queue()
        self._cancel = threading.Event()
        self._response = None            # the StreamingResponse now running, if any
        self._scheduler: "Scheduler | None" = None
        self.slot: int | None = None
        self.enqueued_ns = time.perf_counter_ns()
        self.started_ns: int | None = None
        self.ended = False               # the consumer has seen the end

    # -- any thread ----------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop this job: dropped from the queue, or stopped at its next token."""
        if self._cancel.is_set():
            return
        self._cancel.set()
        response = self._response
        if response is not None:
            response.cancel()
        if self._scheduler is not None:
            self._scheduler._withdraw(self)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def wait_ns(self) -> int:
        """Time spent waiting for a slot (so far, if still waiting)."""
        end = self.started_ns if self.started_ns is not None else time.perf_counter_ns()
        return end - self.enqueued_ns

    def _put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening
            self._cancel.set()
            response = self._response
            if response is not None:
                response.cancel()

    # -- the event loop ----------------------------------------------------------------------
    async def next(self):
        """The next Token or Done; None at the end. A failed generation raises its error."""
        if self.ended:
            return None
        item = await self._items.get()
        if item is END:
            self.ended = True
            return None
        if isinstance(item, Failed):
            self.ended = True
            raise item.error
        return item

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self.next()
        if item is None:
            raise StopAsyncIteration
        return item


class Scheduler:
    """``n`` worker threads over ``engine.slots`` and a waiting queue of ``max_queue`` jobs.

    ``on_generation(stats)`` is called (in a worker thread) after every generation,
    ``on_rejected()`` for every job turned away; metrics hang on them.
    """

    def __init__(self, engine, max_queue: int = 64,
                 on_generation: Callable[[StreamingStats], None] | None = None,
                 on_rejected: Callable[[], None] | None = None):
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        self.engine = engine
        self.max_queue = max_queue
        self.on_generation = on_generation
        self.on_rejected = on_rejected
        n = len(engine.slots)
        self._lock = threading.Lock()
        self._running: list[Job | None] = [None] * n
        self._pending: deque[Job] = deque()
        self._inboxes = [queue.SimpleQueue() for _ in range(n)]
        self._closed = False
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True,
                                          name=f"abi-slot-{i}") for i in range(n)]
        for t in self._threads:
            t.start()

    # -- state -------------------------------------------------------------------------------
    @property
    def n_slots(self) -> int:
        return len(self._running)

    @property
    def busy_slots(self) -> int:
        with self._lock:
            return sum(job is not None for job in self._running)

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- the event loop ----------------------------------------------------------------------
    def submit(self, tasks: list[Task]) -> Job:
        """Start or queue a job (call from the event loop that will read its events).
        Raises ServerBusy when every slot is busy and the queue is full."""
        job = Job(tasks, asyncio.get_running_loop())
        job._scheduler = self
        with self._lock:
            if self._closed:
                raise ServerBusy("the server is shutting down")
            free = [i for i, running in enumerate(self._running) if running is None]
            if free:
                ids = tasks[0].prompt_ids
                self._assign(self.engine.pick_slot(ids, free), job)
                return job
            if len(self._pending) < self.max_queue:
                self._pending.append(job)
                return job
        if self.on_rejected is not None:
            self.on_rejected()
        raise ServerBusy(f"all {self.n_slots} generation slot(s) are busy and {self.max_queue} "
                         "request(s) are already waiting; retry later")

    def close(self, timeout: float = 5.0) -> None:
        """Cancel everything and stop the workers."""
        with self._lock:
            self._closed = True
            jobs = list(self._pending) + [j for j in self._running if j is not None]
        for job in jobs:
            job.cancel()
        for inbox in self._inboxes:
            inbox.put(None)
        for t in self._threads:
            t.join(timeout)

    # -- internals (under self._lock where noted) -----------------------------------------------
    def _assign(self, slot: int, job: Job) -> None:  # under lock
        self._running[slot] = job
        job.slot = slot
        self._inboxes[slot].put(job)

    def _withdraw(self, job: Job) -> None:
        """A cancelled job leaves the queue (a running one stops by itself)."""
        with self._lock:
            try:
                self._pending.remove(job)
            except ValueError:
                return
        job._put(END)

    def _release(self, slot: int) -> None:
        with self._lock:
            self._running[slot] = None
            if self._pending and not self._closed:
                self._assign(slot, self._pending.popleft())

    def _work(self, slot: int) -> None:
        inbox = self._inboxes[slot]
        while True:
            job = inbox.get()
            if job is None:
                return
            try:
                self._run(slot, job)
            except BaseException:  # never lose the worker
                log.exception("slot %d: job failed outside its generation", slot)
            finally:
                self._release(slot)

    def _run(self, slot: int, job: Job) -> None:
        job.started_ns = time.perf_counter_ns()
        try:
            for index, task in enumerate(job.tasks):
                if job.cancelled:
                    # cancelled between taking the slot and starting: still a cancelled
                    # generation for the metrics (a client that left at once)
                    if index == 0 and self.on_generation is not None:
                        self.on_generation(StreamingStats(finish_reason="cancelled"))
                    break
                response = self.engine.create_streaming_response(task.prompt_ids, task.config,
                                                                  slot=slot)
                job._response = response
                if job.cancelled:  # cancel() may have run before _response was set
                    response.cancel()
                try:
                    for event in response:
                        job._put(Token(index, event))
                finally:
                    response.close()
                    job._response = None
                stats = response.get_stats()
                if self.on_generation is not None:
                    self.on_generation(stats)
                job._put(Done(index, stats, response.text, list(response.tokens)))
                if stats.finish_reason == "cancelled":
                    break
        except Exception as exc:
            job._put(Failed(exc))
        finally:
            job._put(END)
