"""The runtime's scheduler on a fake engine whose generations advance only when the test says:
slot choice by prompt prefix, FIFO queueing, 429 past the queue, cancelling queued and running
jobs, failures reaching the consumer, slots always released; the reference's stream over a job,
cancel scopes; and, on a tiny model, every surface of an engine (generate, chat, agents, the
CLI) going through the engine's one scheduler."""
from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

from abi.errors import ConfigError, ServerBusy
from abi.llm.engine import Engine
from abi.llm.streaming import StreamingConfig, StreamingState, StreamingStats, TokenEvent
from abi.llm.scheduler import CancelScope, Done, GenerationRequest, JobStream, Scheduler, Token


class FakeCache:
    def __init__(self, tokens=()):
        self.tokens = list(tokens)


class FakeSlot:
    def __init__(self, tokens=()):
        self.cache = FakeCache(tokens)


class FakeResponse:
    """Yields one event per ``step.release()``; ``fail`` raises on the first step."""

    def __init__(self, engine, ids, slot, n_tokens, fail):
        self.engine, self.ids, self.slot = engine, ids, slot
        self.n_tokens, self.fail = n_tokens, fail
        self.cancelled = threading.Event()
        self.text, self.tokens = "", []
        self.stats = StreamingStats(prompt_tokens=len(ids))

    def cancel(self):
        self.cancelled.set()

    def close(self):
        pass

    def get_stats(self):
        return self.stats

    def __iter__(self):
        self.engine.started.append((self.ids[0], self.slot))
        for i in range(self.n_tokens):
            while not self.engine.step.acquire(timeout=0.01):
                if self.cancelled.is_set():
                    self.stats.finish_reason = "cancelled"
                    return
            if self.fail:
                raise ConfigError("bad option", field="temperature")
            self.tokens.append(i)
            self.text += "x"
            self.stats.tokens_generated += 1
            yield TokenEvent(i, "x", len(self.ids) + i, 0, i == self.n_tokens - 1)
        self.stats.finish_reason = "length"


class FakeEngine:
    pick_slot = Engine.pick_slot  # the runtime's own slot choice

    def __init__(self, slot_tokens):
        self.slots = [FakeSlot(t) for t in slot_tokens]
        self.step = threading.Semaphore(0)
        self.started: list[tuple[int, int]] = []
        self.fail_ids: set[int] = set()

    def slot_response(self, ids, config, slot):
        return FakeResponse(self, ids, slot, config.max_tokens, ids[0] in self.fail_ids)


def task(first_id: int, n_tokens: int = 2) -> list[GenerationRequest]:
    return [GenerationRequest([first_id, 1, 2], StreamingConfig(max_tokens=n_tokens))]


def submit(sched, requests):
    """Submit from the running event loop, which reads the job's items."""
    return sched.submit(requests, loop=asyncio.get_running_loop())


async def wait_until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_a_free_slot_sharing_the_prompt_prefix_is_chosen():
    async def main():
        engine = FakeEngine([[9, 9], [7, 1, 2, 3]])
        sched = Scheduler(engine, max_queue=4)
        job = submit(sched, task(7))
        assert job.slot == 1
        engine.step.release(2)
        items = [item async for item in job]
        assert [type(i) for i in items] == [Token, Token, Done]
        assert items[-1].text == "xx" and items[-1].stats.finish_reason == "length"
        await wait_until(lambda: sched.busy_slots == 0)
        sched.close()
    run(main())


def test_queue_is_fifo_and_bounded():
    async def main():
        engine = FakeEngine([[]])
        rejected = []
        sched = Scheduler(engine, max_queue=2, on_rejected=lambda: rejected.append(1))
        jobs = [submit(sched, task(i, 1)) for i in (10, 11, 12)]
        assert sched.busy_slots == 1 and sched.queue_depth == 2
        with pytest.raises(ServerBusy):
            submit(sched, task(13))
        assert rejected == [1]
        engine.step.release(3)
        for job in jobs:
            assert [type(i) for i in [item async for item in job]] == [Token, Done]
        assert [ids for ids, _ in engine.started] == [10, 11, 12]
        await wait_until(lambda: sched.busy_slots == 0 and sched.queue_depth == 0)
        sched.close()
    run(main())


def test_cancelling_queued_and_running_jobs_frees_everything():
    async def main():
        engine = FakeEngine([[]])
        stats = []
        sched = Scheduler(engine, max_queue=2, on_generation=stats.append)
        running, queued, after = (submit(sched, task(i, 50)) for i in (20, 21, 22))
        await wait_until(lambda: engine.started == [(20, 0)])
        queued.cancel()
        assert sched.queue_depth == 1
        assert await queued.next() is None  # its consumer sees the end at once
        running.cancel()
        items = [item async for item in running]
        assert items[-1].stats.finish_reason == "cancelled"
        await wait_until(lambda: [i for i, _ in engine.started] == [20, 22])
        assert 21 not in [i for i, _ in engine.started]
        after.cancel()
        await wait_until(lambda: sched.busy_slots == 0 and sched.queue_depth == 0)
        assert [s.finish_reason for s in stats] == ["cancelled", "cancelled"]
        sched.close()
    run(main())


def test_a_failing_generation_raises_in_the_consumer_and_releases_the_slot():
    async def main():
        engine = FakeEngine([[]])
        engine.fail_ids = {30}
        sched = Scheduler(engine, max_queue=1)
        bad, good = submit(sched, task(30)), submit(sched, task(31, 1))
        engine.step.release(2)
        with pytest.raises(ConfigError):
            async for _ in bad:
                pass
        assert [type(i) for i in [item async for item in good]] == [Token, Done]
        await wait_until(lambda: sched.busy_slots == 0)
        sched.close()
    run(main())


def test_several_tasks_run_in_order_on_one_slot():
    async def main():
        engine = FakeEngine([[], []])
        sched = Scheduler(engine, max_queue=0)
        job = submit(sched, task(40, 1) + task(41, 1) + task(42, 1))
        engine.step.release(3)
        done = [item.index for item in [i async for i in job] if isinstance(item, Done)]
        assert done == [0, 1, 2]
        assert {slot for _, slot in engine.started} == {job.slot}
        sched.close()
    run(main())


def test_a_job_cancelled_as_it_takes_its_slot_counts_as_one_cancelled_generation():
    async def main():
        engine = FakeEngine([[]])
        stats = []
        sched = Scheduler(engine, max_queue=0, on_generation=stats.append)
        job = submit(sched, task(50, 50))
        job.cancel()  # usually before the worker starts the generation, sometimes after
        assert [item async for item in job][-1:] in ([], [Done(0, stats[0], "", [])])
        await wait_until(lambda: sched.busy_slots == 0)
        assert [s.finish_reason for s in stats] == ["cancelled"]
        sched.close()
    run(main())


class SharingEngine(FakeEngine):
    """Records the seeds its generations get and the prefixes shared between slots."""

    def __init__(self, slot_tokens):
        super().__init__(slot_tokens)
        self.seeds, self.shared = {}, []

    def slot_response(self, ids, config, slot):
        self.seeds[slot] = self.seeds.get(slot, []) + [config.seed]
        return super().slot_response(ids, config, slot)

    def share_prefix(self, src, dst, ids):
        self.shared.append((src, dst))
        return True


def test_n_choices_decode_at_once_on_their_own_slots_after_one_prefill():
    async def main():
        engine = SharingEngine([[], [], [], []])
        sched = Scheduler(engine, max_queue=0)
        job = sched.submit(GenerationRequest([60, 1, 2], StreamingConfig(max_tokens=2, seed=7), n=3),
                           loop=asyncio.get_running_loop())
        assert len(job.slots) == 3 and sched.busy_slots == 3
        await wait_until(lambda: len(engine.started) == 1)
        await asyncio.sleep(0.05)
        assert engine.shared == []       # the other choices wait for choice 0's prefill
        engine.step.release(1)           # choice 0's first token: its prompt is cached
        await wait_until(lambda: len(engine.started) == 3)
        first = job.slots[0]
        assert sorted(engine.shared) == sorted((first, s) for s in job.slots[1:])
        engine.step.release(5)
        done = [i for i in [item async for item in job] if isinstance(i, Done)]
        assert sorted(d.index for d in done) == [0, 1, 2]
        assert sorted(seed for s in job.slots for seed in engine.seeds[s]) == [7, 8, 9]
        assert engine.seeds[first] == [7]
        await wait_until(lambda: sched.busy_slots == 0)
        sched.close()
    run(main())


def test_more_choices_than_slots_take_the_slots_as_they_free_and_wait_for_two():
    engine = SharingEngine([[], []])
    sched = Scheduler(engine, max_queue=1)
    job = sched.submit(GenerationRequest([70, 1, 2], StreamingConfig(max_tokens=1), n=3))
    assert job.width == 2
    single = sched.submit(GenerationRequest([71, 1, 2], StreamingConfig(max_tokens=1)))
    assert sched.queue_depth == 1     # FIFO: it waits behind the job holding both slots
    engine.step.release(4)
    assert sorted(r.text for r in job.results_sync()) == ["x", "x", "x"]
    assert [r.text for r in single.results_sync()] == ["x"]
    assert [i for i, _ in engine.started] == [70, 70, 70, 71]
    sched.close()


def test_a_failing_choice_stops_its_siblings_and_fails_the_job():
    engine = SharingEngine([[], []])
    sched = Scheduler(engine, max_queue=0)
    engine.fail_ids = {80}
    job = sched.submit(GenerationRequest([80, 1, 2], StreamingConfig(max_tokens=3), n=2))
    engine.step.release(1)
    with pytest.raises(ConfigError):
        job.results_sync()
    for _ in range(500):
        if sched.busy_slots == 0:
            break
        threading.Event().wait(0.01)
    assert sched.busy_slots == 0
    sched.close()


def test_a_job_of_several_prompts_runs_them_in_turn_each_with_its_choices_together():
    engine = SharingEngine([[], [], []])
    sched = Scheduler(engine, max_queue=0)
    job = sched.submit([GenerationRequest([90, 1, 2], StreamingConfig(max_tokens=1), n=2),
                        GenerationRequest([91, 1, 2], StreamingConfig(max_tokens=1), n=2)])
    assert job.width == 2 and sched.busy_slots == 2
    engine.step.release(4)
    results = job.results_sync()
    assert [r.text for r in results] == ["x"] * 4 and all(r.stats for r in results)
    assert [i for i, _ in engine.started] == [90, 90, 91, 91]
    sched.close()


# -- the reference's stream over a job; cancel scopes ----------------------------------------------------

def test_a_job_stream_reads_like_a_streaming_response_and_closing_frees_its_slot():
    engine = FakeEngine([[]])
    sched = Scheduler(engine, max_queue=1)
    stream = JobStream(sched, task(30, 50)[0])
    assert stream.state == StreamingState.IDLE and sched.busy_slots == 0   # nothing runs unread
    engine.step.release(2)
    first, second = next(stream), next(stream)
    assert (first.text, second.position) == ("x", 4) and stream.text == "xx"
    assert stream.state == StreamingState.GENERATING and sched.busy_slots == 1
    stream.close()   # returns once the job has ended: its slot is free
    assert sched.busy_slots == 0 and stream.state == StreamingState.CANCELLED
    assert stream.get_stats().finish_reason == "cancelled" and list(stream) == []
    assert stream.text == "xx" and stream.tokens == [0, 1]   # what was read
    whole = JobStream(sched, task(31, 3)[0])
    engine.step.release(3)
    assert [e.is_final for e in whole] == [False, False, True]
    assert whole.get_stats().finish_reason == "length" and whole.tokens == [0, 1, 2]
    assert whole.state == StreamingState.COMPLETED
    engine.fail_ids.add(32)
    failing = JobStream(sched, task(32)[0])
    engine.step.release()
    with pytest.raises(ConfigError):   # the generation's typed error, in the reader
        next(failing)
    sched.close()


def test_a_cancel_scope_cancels_its_jobs_and_those_submitted_later():
    engine = FakeEngine([[]])
    sched = Scheduler(engine, max_queue=2)
    scope = CancelScope()
    with scope.entered():
        running, queued = sched.submit(task(40, 50)), sched.submit(task(41, 5))
    outside = sched.submit(task(42, 2))   # submitted outside the scope
    assert sched.queue_depth == 2 and not running.cancelled
    scope.cancel()
    assert running.cancelled and queued.cancelled and not outside.cancelled
    running.results_sync()   # the running one stops at its next token and frees its slot
    engine.step.release(2)
    assert [r.text for r in outside.results_sync()] == ["xx"]   # the other job runs on
    assert [i for i, _ in engine.started] == [40, 42] and sched.queue_depth == 0
    with scope.entered():
        late = sched.submit(task(43, 5))
    assert late.cancelled and late.results_sync()[0].text == ""
    sched.close()


# -- every surface on an engine goes through its scheduler ----------------------------------------------

@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from tiny_models import write_tiny_model

    from abi.gguf import GGMLType

    path = tmp_path_factory.mktemp("tiny") / "llama.gguf"
    write_tiny_model(path, "llama", GGMLType.Q8_0)
    return str(path)


@pytest.fixture
def submitted(monkeypatch):
    """Every (scheduler, job) submitted while the test runs."""
    seen = []
    real = Scheduler.submit

    def submit(self, requests, loop=None):
        job = real(self, requests, loop)
        seen.append((self, job))
        return job

    monkeypatch.setattr(Scheduler, "submit", submit)
    return seen


def test_engine_generations_are_jobs_of_its_scheduler_with_unchanged_output(tiny_path, submitted):
    from abi.llm.engine import make_config

    engine = Engine(backend="cpu").load_model(tiny_path)
    opts = dict(max_tokens=8, temperature=0.9, seed=5, stop_tokens=[])
    text = engine.generate("hello there", **opts)
    assert [s for s, _ in submitted] == [engine.scheduler]
    # the same generation run straight on a slot, as before the scheduler was the one path
    direct = engine.slot_response(engine.model.tokenize("hello there"), make_config(**opts), 0)
    for _ in direct:
        pass
    assert text == direct.text
    reply = engine.chat([{"role": "user", "content": "hi"}], max_tokens=3, temperature=0)
    assert isinstance(reply, str) and len(submitted) == 2
    stream = engine.chat([{"role": "user", "content": "hi"}], stream=True, max_tokens=200,
                         temperature=0, stop_tokens=[])
    next(stream)
    stream.close()
    assert stream.job.cancelled and engine.scheduler.busy_slots == 0 and len(submitted) == 3
    # an agent's stream closed early (GeneratorExit) cancels its job the same way
    from abi.agents.backends import GenerationParams, LocalBackend

    pieces = LocalBackend(engine=engine).stream([{"role": "user", "content": "hi"}],
                                                GenerationParams(0.0, 1.0, 200))
    next(pieces)
    pieces.close()
    assert submitted[3][1].cancelled and engine.scheduler.busy_slots == 0
    engine.close()


def test_two_agents_on_the_shared_engine_generate_at_once_through_its_scheduler(
        tiny_path, submitted, monkeypatch):
    from abi.agents import Agent, backends

    monkeypatch.setenv("ABI_AGENT_SLOTS", "2")
    monkeypatch.setattr(backends, "_ENGINES", {})
    agents = [Agent(name=f"a{i}", backend="local", model=tiny_path, max_tokens=4, temperature=0)
              for i in range(2)]
    engine = agents[0].backend.engine
    assert agents[1].backend.engine is engine and engine.scheduler.n_slots == 2
    # each generation waits in its job thread until the other one runs too: taking turns
    # (one lock, one slot) would break the barrier and fail both replies
    both, busy = threading.Barrier(2, timeout=60), []
    real = engine.slot_response

    def meeting(ids, config, slot):
        both.wait()
        busy.append(engine.scheduler.busy_slots)
        return real(ids, config, slot)

    monkeypatch.setattr(engine, "slot_response", meeting)
    replies = [None, None]

    def chat(i):
        replies[i] = agents[i].chat(f"hello {i}")

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(r, str) for r in replies)
    assert busy == [2, 2] and [s for s, _ in submitted] == [engine.scheduler] * 2
    engine.close()


def test_the_llm_cli_generates_through_the_engines_scheduler(tiny_path, submitted, capsys,
                                                               monkeypatch):
    from abi.llm.cli import main

    argv = ["--model", tiny_path, "--backend", "cpu", "-n", "5", "--temperature", "0"]
    assert main(["generate", "hello", *argv]) == 0
    ((sched, job),) = submitted
    assert job.ended and capsys.readouterr().out == \
        Engine(backend="cpu").load_model(tiny_path).generate("hello", max_tokens=5, temperature=0) + "\n"
    lines = iter(["hi", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", *argv]) == 0
    assert len(submitted) == 3 and submitted[2][0] is not sched   # chat's own engine


@pytest.fixture
def no_cycle_collector():
    """What a test frees must go by reference counting alone."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_dropped_engine_is_freed_at_once_and_its_threads_exit(tiny_path, no_cycle_collector):
    engine = Engine(backend="cpu", n_slots=2).load_model(tiny_path)
    engine.generate("hello", max_tokens=4, temperature=0)
    sched = engine.scheduler
    threads = [*sched._jobs._threads, *sched._choices._threads, engine.batcher._thread]
    assert threads and all(t.is_alive() for t in threads)
    dropped, model = weakref.ref(engine), weakref.ref(engine.model)
    del engine, sched
    assert dropped() is None and model() is None   # its KV caches and weights with it
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)


def test_a_temporary_engines_stream_runs_to_its_end_then_frees_it(tiny_path, no_cycle_collector):
    messages, opts = [{"role": "user", "content": "hi"}], dict(max_tokens=6, temperature=0)
    stream = Engine(backend="cpu").load_model(tiny_path).chat(messages, stream=True, **opts)
    events = list(stream)   # submitted only now, the engine referred to by nothing else
    assert stream.state is StreamingState.COMPLETED and events[-1].is_final
    held = Engine(backend="cpu").load_model(tiny_path)
    assert stream.text == held.chat(messages, **opts)
    dropped = weakref.ref(stream.scheduler.engine)
    del stream
    assert dropped() is None


def test_a_models_own_generations_keep_its_cache_and_a_dropped_model_is_freed(
        tiny_path, no_cycle_collector):
    from abi.llm import load_model

    model = load_model(tiny_path, backend="cpu")
    first = model.generate("hello there", max_tokens=4, temperature=0)
    slot = model._default_slot
    assert slot.cache.tokens[:3] == model.tokenize("hello there")[:3]
    assert model.generate("hello there", max_tokens=4, temperature=0) == first
    assert model._default_slot is slot   # the next call's engine runs on the same KV cache
    dropped = weakref.ref(model)
    del model, slot
    assert dropped() is None


def test_a_process_exits_with_a_generation_still_running():
    # the job threads are joined at exit: without the scheduler's exit hook cancelling its
    # jobs, this generation (which ends only when cancelled) would keep the process alive
    script = textwrap.dedent("""
        import threading
        from abi.llm.scheduler import GenerationRequest, Scheduler
        from abi.llm.streaming import StreamingConfig

        class Endless:
            def __init__(self):
                self.cancelled = threading.Event()
                self.text, self.tokens = "", []
            def cancel(self):
                self.cancelled.set()
            def close(self):
                pass
            def get_stats(self):
                from abi.llm.streaming import StreamingStats
                return StreamingStats(finish_reason="cancelled")
            def __iter__(self):
                started.set()
                self.cancelled.wait()
                return iter(())

        class Slot:
            class cache:
                tokens = []

        class Engine:
            slots = [Slot()]
            def pick_slot(self, ids, free):
                return free[0]
            def slot_response(self, ids, config, slot):
                return Endless()

        started = threading.Event()
        engine = Engine()   # the scheduler holds it weakly
        Scheduler(engine).submit(GenerationRequest([1], StreamingConfig(max_tokens=5)))
        assert started.wait(10)
        print("exiting", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exiting"
