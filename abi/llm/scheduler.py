"""The runtime's request scheduler: which slots a request gets, a bounded FIFO queue for the
rest, cancellation, and hooks for metrics. Every generation goes through it: an ``Engine``
owns one (``Engine.scheduler``), and ``Engine.generate``/``chat``/``create_streaming_response``
submit to it, so the server, the CLI, agents and batch jobs on one engine share its slots,
queue and hooks. It knows no HTTP (routes translate their API's shapes to
``GenerationRequest`` and from the items a ``Job`` yields).

A ``GenerationRequest`` is one prompt and its ``n`` choices (choice i samples with seed + i).
A job (one or more requests, run one after another) takes ``min(n, slots)`` slots at once,
the first the free slot whose cache shares the longest prefix with its prompt
(``Engine.pick_slot``; a longer prefix another slot holds is copied at the start,
``Slot.hold_prefix``); while they are not free it waits in the queue (FIFO: a job behind it
waits too), past ``max_queue`` waiting jobs ``ServerBusy``. Its choices decode together:
choice 0 prefills the prompt, the others copy its keys and values (``Engine.share_prefix``)
and recompute only the last prompt token, and all of them meet in the engine's batcher's
steps (``abi.llm.batcher``). With fewer slots than choices, the rest follow as the job's
slots come free, reusing the prompt left in their caches.

Items: ``Token(index, event)`` per token, ``Done(index, stats, text, tokens)`` per finished
choice (index counts choices across the job's requests), then the end; a failure raises in
the consumer. Read them with ``for item in job`` (a job submitted without an event loop) or
``async for`` (``submit(..., loop=...)``), or whole with ``Scheduler.run`` / ``Job.results``;
``JobStream`` reads a one-choice job as the reference's ``StreamingResponse``.

A ``CancelScope`` made current (``with scope.entered():``) collects the jobs submitted in its
thread; ``scope.cancel()`` cancels them and any submitted later (a server request whose client
left, whatever layers generate on its behalf: personas, agents).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import dataclasses
import logging
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..errors import ConfigError, ServerBusy
from .threads import computing
from .streaming import StreamingConfig, StreamingState, StreamingStats, TokenEvent

if TYPE_CHECKING:   # at run time only a job with an event loop imports asyncio (Job)
    import asyncio

log = logging.getLogger("abi.llm")

SEED_MASK = (1 << 64) - 1


@dataclass
class GenerationRequest:
    """One prompt (token ids) and ``n`` choices sampled with ``config``; ``slot`` pins a
    one-choice request to that slot (it waits for that one)."""

    prompt_ids: list[int]
    config: StreamingConfig
    n: int = 1
    slot: int | None = None

    def __post_init__(self):
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}", field="n")
        if self.slot is not None and self.n != 1:
            raise ConfigError("a request pinned to a slot has one choice", field="slot")

    def choice_configs(self) -> list[StreamingConfig]:
        """Each choice's configuration: with a seed, choice i samples with seed + i."""
        seed = self.config.seed
        return [self.config if i == 0 or seed is None else
                dataclasses.replace(self.config, seed=(seed + i) & SEED_MASK) for i in range(self.n)]


# -- what a job hands its consumer ----------------------------------------------------------

@dataclass
class Token:
    index: int           # which choice of the job
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


END = object()


@dataclass
class Result:
    """One finished choice, joined."""

    text: str = ""
    events: list[TokenEvent] = field(default_factory=list)
    stats: StreamingStats | None = None
    tokens: list[int] = field(default_factory=list)


class Job:
    """A submitted request list: iterate for Token and Done items (``async for`` when it
    was submitted with an event loop); ``cancel()`` from any thread."""

    def __init__(self, requests: list[GenerationRequest],
                 loop: asyncio.AbstractEventLoop | None = None):
        if not requests:
            raise ValueError("a job needs at least one request")
        self.requests = requests
        self.n_choices = sum(r.n for r in requests)
        self.loop = loop
        if loop is not None:
            # imported here: asyncio (with ssl) adds ~7 MiB to a process that never runs a loop
            import asyncio

            self._items = asyncio.Queue()
        else:
            self._items = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._running: set = set()       # the StreamingResponses now running
        self._scheduler: Scheduler | None = None
        self._engine = None              # held from submit until it ends (see Scheduler)
        self.width = 1                   # slots it runs on at once
        self.pin: int | None = None      # the one slot it must run on
        self.slots: list[int] = []
        self.enqueued_ns = time.perf_counter_ns()
        self.started_ns: int | None = None
        self.ended = False               # the consumer has seen the end

    @property
    def slot(self) -> int | None:
        """The slot of its first choice (None while queued)."""
        return self.slots[0] if self.slots else None

    # -- any thread ----------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop this job: dropped from the queue, or stopped at its next token."""
        if self._cancel.is_set():
            return
        self._cancel.set()
        with self._lock:
            running = list(self._running)
        for response in running:
            response.cancel()
        if self._scheduler is not None:
            self._scheduler._withdraw(self)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def wait_ns(self) -> int:
        """Time spent waiting for slots (so far, if still waiting)."""
        end = self.started_ns if self.started_ns is not None else time.perf_counter_ns()
        return end - self.enqueued_ns

    def _put(self, item) -> None:
        if self.loop is None:
            self._items.put(item)
            return
        try:
            self.loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening
            self.cancel()

    def _watch(self, response) -> None:
        with self._lock:
            self._running.add(response)
        if self.cancelled:  # cancel() may have run before the response was registered
            response.cancel()

    def _unwatch(self, response) -> None:
        with self._lock:
            self._running.discard(response)

    # -- the consumer --------------------------------------------------------------------
    def _open(self, item):
        if item is END:
            self.ended = True
            return None
        if isinstance(item, Failed):
            self.ended = True
            raise item.error
        return item

    async def next(self):
        """The next Token or Done; None at the end. A failed choice raises its error."""
        return None if self.ended else self._open(await self._items.get())

    def next_sync(self):
        return None if self.ended else self._open(self._items.get())

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self.next()
        if item is None:
            raise StopAsyncIteration
        return item

    def __iter__(self):
        while (item := self.next_sync()) is not None:
            yield item

    def _gather(self, results: list[Result], item) -> None:
        r = results[item.index]
        if isinstance(item, Token):
            r.events.append(item.event)
        else:
            r.text, r.stats, r.tokens = item.text, item.stats, item.tokens

    async def results(self) -> list[Result]:
        """Every choice, joined (an async job)."""
        results = [Result() for _ in range(self.n_choices)]
        async for item in self:
            self._gather(results, item)
        return results

    def results_sync(self) -> list[Result]:
        results = [Result() for _ in range(self.n_choices)]
        for item in self:
            self._gather(results, item)
        return results


class JobStream:
    """A one-choice request read as the reference's ``StreamingResponse`` (what
    ``Engine.create_streaming_response`` returns): iterate for TokenEvents; ``cancel()`` from
    any thread; ``close()`` stops the job and waits for its end (its slot is free after);
    ``get_stats()``, ``text``, ``tokens``, ``state``. The request is submitted on the first
    ``next()``: like a StreamingResponse, a stream nobody reads does no work."""

    def __init__(self, scheduler: "Scheduler", request: GenerationRequest):
        self.scheduler, self.request = scheduler, request
        # the scheduler holds its engine weakly: a stream of a temporary engine
        # (``Engine(...).chat(..., stream=True)``) keeps it until the stream is dropped
        self._engine = scheduler.engine
        self.prompt_ids, self.config = request.prompt_ids, request.config
        self.job: Job | None = None
        self.stats = StreamingStats(prompt_tokens=len(request.prompt_ids))
        self.text = ""   # everything emitted so far
        self.tokens: list[int] = []
        self._cancel = threading.Event()
        self._read_count = 0  # TokenEvents read
        self._final = False   # the last one has been read
        self._ended = False

    # -- the reference's API ---------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()
        if self.job is not None:
            self.job.cancel()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def get_stats(self) -> StreamingStats:
        if self._final and not self._ended:   # the job's Done follows its last token at once
            self._drain()
        return self.stats

    @property
    def state(self) -> StreamingState:
        if self._final or (self._ended and self.stats.finish_reason in ("stop", "length")):
            return StreamingState.COMPLETED
        if self._ended:
            return StreamingState.CANCELLED
        if self.job is None:
            return StreamingState.IDLE
        return StreamingState.GENERATING if self._read_count else StreamingState.PREFILLING

    def __iter__(self):
        return self

    def __next__(self) -> TokenEvent:
        if self.job is None and not self._ended:
            if self._cancel.is_set():
                self._ended = True
                self.stats.finish_reason = "cancelled"
                raise StopIteration
            self.job = self.scheduler.submit(self.request)
            if self._cancel.is_set():   # cancel() ran while it was being submitted
                self.job.cancel()
        while not self._ended:
            if self._cancel.is_set():
                self._drain()
                break
            item = self._read()
            if isinstance(item, Token):
                self._read_count += 1
                if item.event.text:
                    self.text += item.event.text
                self._final = item.event.is_final
                return item.event
        raise StopIteration

    def close(self) -> None:
        """Stop early and wait until the job has ended (also asked, without waiting, when
        the stream is garbage-collected)."""
        if self.job is None:
            self._ended = True
            return
        if not self._ended:
            self.cancel()
            try:
                self._drain()
            except Exception:   # a generation failing as it stops: its reader has left
                log.debug("a closed stream's job failed", exc_info=True)

    def __del__(self):
        job = getattr(self, "job", None)
        if job is not None and not self._ended:
            job.cancel()

    # -- reading the job -------------------------------------------------------------------
    def _read(self):
        try:
            item = self.job.next_sync()
        except BaseException:
            self._ended = True
            raise
        if item is None:
            self._ended = True
            if self.stats.finish_reason is None:   # cancelled before it started
                self.stats.finish_reason = "cancelled"
        elif isinstance(item, Done):
            self.stats = item.stats
            if not self._cancel.is_set():
                self.text, self.tokens = item.text, item.tokens
            else:   # what the reader took before cancelling, not what the job ran on to
                self.tokens = item.tokens[:self._read_count]
        return item

    def _drain(self) -> None:
        while not self._ended:
            self._read()


class CancelScope:
    """The jobs submitted while it is current (``with scope.entered():``, in that thread);
    ``cancel()`` cancels them and every job submitted in it later."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self.cancelled = False

    @contextlib.contextmanager
    def entered(self):
        token = _SCOPE.set(self)
        try:
            yield self
        finally:
            _SCOPE.reset(token)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            job.cancel()

    def _add(self, job: Job) -> None:
        with self._lock:
            if not self.cancelled:
                self._jobs.append(job)
                return
        job.cancel()


# Schedulers whose jobs are cancelled when the interpreter exits: their worker threads are
# joined at exit (concurrent.futures), so a stream left open would otherwise run on to its
# max_tokens before the process could end. threading runs its exit hooks last registered
# first, so the hook goes in after concurrent.futures' join (once its executors exist).
_LIVE: "weakref.WeakSet[Scheduler]" = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_exit_hooked = False


def _cancel_all_at_exit() -> None:
    for scheduler in list(_LIVE):
        scheduler.close(timeout=0)

_SCOPE: contextvars.ContextVar[CancelScope | None] = contextvars.ContextVar("abi_cancel_scope",
                                                                            default=None)


class Scheduler:
    """Jobs over ``engine.slots`` and a waiting queue of ``max_queue`` jobs.

    It holds its engine weakly (the engine holds it): an engine nobody refers to is freed at
    once, its KV caches and model with it, and this scheduler's threads then exit. Each job
    holds the engine from submit until it ends, so work in flight keeps what it runs on.

    ``on_generation(stats)`` is called (in a worker thread) after every choice,
    ``on_rejected()`` for every job turned away; metrics hang on them.
    """

    def __init__(self, engine, max_queue: int = 64,
                 on_generation: Callable[[StreamingStats], None] | None = None,
                 on_rejected: Callable[[], None] | None = None):
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        self._engine_ref = weakref.ref(engine)
        self.max_queue = max_queue
        self.on_generation = on_generation
        self.on_rejected = on_rejected
        n = len(engine.slots)
        self._lock = threading.Lock()
        self._owner: list[Job | None] = [None] * n
        self._pending: deque[Job] = deque()
        self._closed = False
        # a running job's thread runs its first slot's choices, the pool its other slots'
        self._jobs = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="abi-job")
        self._choices = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="abi-choice")
        self._futures: set = set()
        global _exit_hooked
        with _LIVE_LOCK:
            if not _exit_hooked:
                threading._register_atexit(_cancel_all_at_exit)
                _exit_hooked = True
            _LIVE.add(self)

    # -- state -------------------------------------------------------------------------------
    @property
    def engine(self):
        engine = self._engine_ref()
        if engine is None:
            raise ReferenceError("this scheduler's engine has been freed: keep a reference to it")
        return engine

    @property
    def n_slots(self) -> int:
        return len(self._owner)

    @property
    def busy_slots(self) -> int:
        with self._lock:
            return sum(job is not None for job in self._owner)

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, requests: list[GenerationRequest] | GenerationRequest,
               loop: asyncio.AbstractEventLoop | None = None) -> Job:
        """Start or queue a job. ``loop``: the event loop that will read its items (then
        ``async for``); None: read them from any thread with ``for``. Raises ServerBusy when
        it cannot start and the queue is full."""
        job = Job([requests] if isinstance(requests, GenerationRequest) else list(requests), loop)
        job._scheduler, job._engine = self, self.engine
        job.width = min(max(r.n for r in job.requests), self.n_slots)
        job.pin = job.requests[0].slot
        if job.pin is not None and (len(job.requests) > 1 or not 0 <= job.pin < self.n_slots):
            raise ConfigError(f"slot {job.pin} is not one of this engine's {self.n_slots} slot(s) "
                              "(or pins a job of several requests)", field="slot")
        with self._lock:
            if self._closed:
                raise ServerBusy("the scheduler is shutting down")
            if not self._pending and self._fits(job):
                self._start(job)
            elif len(self._pending) < self.max_queue:
                self._pending.append(job)
            else:
                job = None
        if job is not None:
            scope = _SCOPE.get()
            if scope is not None:
                scope._add(job)
            return job
        if self.on_rejected is not None:
            self.on_rejected()
        raise ServerBusy(f"all {self.n_slots} generation slot(s) are busy and {self.max_queue} "
                         "request(s) are already waiting; retry later")

    def run(self, requests: list[GenerationRequest] | GenerationRequest) -> list[Result]:
        """Submit and wait: every choice joined (a blocking caller: the CLI, a batch job)."""
        job = self.submit(requests)
        try:
            return job.results_sync()
        finally:
            job.cancel()

    def close(self, timeout: float = 5.0) -> None:
        """Cancel everything and stop the threads."""
        with self._lock:
            self._closed = True
            jobs = list(self._pending) + [j for j in self._owner if j is not None]
            futures = list(self._futures)
        for job in jobs:
            job.cancel()
        concurrent.futures.wait(futures, timeout)
        self._jobs.shutdown(wait=False, cancel_futures=True)
        self._choices.shutdown(wait=False, cancel_futures=True)

    # -- slots (under self._lock) -----------------------------------------------------------------
    def _free_count(self) -> int:
        return sum(job is None for job in self._owner)

    def _fits(self, job: Job) -> bool:
        if job.pin is not None:
            return self._owner[job.pin] is None
        return self._free_count() >= job.width

    def _start(self, job: Job) -> None:
        free = [i for i, owner in enumerate(self._owner) if owner is None]
        ids = job.requests[0].prompt_ids
        for _ in range(job.width):  # each the free slot sharing the longest prefix
            slot = job.pin if job.pin is not None else job._engine.pick_slot(ids, free)
            free.remove(slot)
            job.slots.append(slot)
            self._owner[slot] = job
        future = self._jobs.submit(self._run, job)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    def _withdraw(self, job: Job) -> None:
        """A cancelled job leaves the queue (a running one stops by itself)."""
        with self._lock:
            try:
                self._pending.remove(job)
            except ValueError:
                return
        job._engine = None
        job._put(END)

    def _release(self, job: Job) -> None:
        with self._lock:
            for slot in job.slots:
                self._owner[slot] = None
            while self._pending and not self._closed and self._fits(self._pending[0]):
                self._start(self._pending.popleft())

    # -- running (a job's thread) ------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        with computing():   # the next job may run on another thread (see threads.py)
            self._run_job(job)

    def _run_job(self, job: Job) -> None:
        job.started_ns = time.perf_counter_ns()
        try:
            if job.cancelled:
                # cancelled between taking its slots and starting: still a cancelled
                # generation for the metrics (a client that left at once)
                if self.on_generation is not None:
                    self.on_generation(StreamingStats(finish_reason="cancelled"))
                return
            index = 0
            for request in job.requests:
                if job.cancelled:
                    break
                self._run_request(job, request, index)
                index += request.n
        except Exception as exc:
            job._put(Failed(exc))
        except BaseException:
            log.exception("a job failed outside its generation")
        finally:   # its slots are free before its reader sees the end
            self._release(job)
            job._engine = None
            job._put(END)

    def _run_request(self, job: Job, request: GenerationRequest, index: int) -> None:
        configs = request.choice_configs()
        slots = job.slots[:request.n]
        if len(slots) == 1:
            for i, config in enumerate(configs):
                if job.cancelled:
                    break
                self._run_choice(job, slots[0], index + i, request.prompt_ids, config)
            return
        # choice 0 prefills on the first slot; the others wait for that, copy its rows, and
        # decode beside it; slots that finish take the choices left
        prefilled = threading.Event()
        todo = deque(range(len(slots), request.n))
        lock = threading.Lock()
        errors: list[BaseException] = []

        def work(slot: int, choice: int) -> None:
            try:
                with computing():
                    while choice is not None and not job.cancelled:
                        if choice:
                            prefilled.wait()
                            job._engine.share_prefix(slots[0], slot, request.prompt_ids)
                        self._run_choice(job, slot, index + choice, request.prompt_ids,
                                         configs[choice], prefilled.set if choice == 0 else None)
                        with lock:
                            choice = todo.popleft() if todo else None
            except BaseException as exc:
                errors.append(exc)
                job.cancel()   # the job fails: its other choices stop
            finally:
                prefilled.set()

        others = [self._choices.submit(work, slot, k) for k, slot in enumerate(slots) if k]
        work(slots[0], 0)
        concurrent.futures.wait(others)
        if errors:
            raise errors[0]

    def _run_choice(self, job: Job, slot: int, index: int, ids: list[int],
                    config: StreamingConfig, on_first: Callable[[], None] | None = None) -> None:
        response = job._engine.slot_response(ids, config, slot)
        job._watch(response)
        try:
            for event in response:
                if on_first is not None:   # the prompt is in the cache now
                    on_first()
                    on_first = None
                job._put(Token(index, event))
        finally:
            response.close()
            job._unwatch(response)
        stats = response.get_stats()
        if self.on_generation is not None:
            self.on_generation(stats)
        job._put(Done(index, stats, response.text, list(response.tokens)))
