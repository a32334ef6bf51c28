from abi.llm.threads import ThreadChooser


def drive(chooser, cost, steps):
    """Run ``steps`` decode steps whose duration is cost(n_threads, step)."""
    picks = []
    for i in range(steps):
        n = chooser.pick()
        chooser.record(n, cost(n, i))
        picks.append(n)
    return picks


def test_keeps_all_threads_on_a_quiet_machine_and_probes_rarely():
    c = ThreadChooser(2)
    picks = drive(c, lambda n, i: 0.005 if n == 2 else 0.009, 4000)
    assert c.current == 2
    assert picks[-2000:].count(1) / 2000 < 0.01  # probing costs under 1% once settled


def test_switches_to_one_thread_under_contention_and_back():
    c = ThreadChooser(2)
    busy = lambda i: 1000 <= i < 2000  # another process takes a core for a while
    cost = lambda n, i: (0.2 if n == 2 else 0.012) if busy(i) else (0.005 if n == 2 else 0.009)
    picks = drive(c, cost, 3000)
    assert picks[1100:2000].count(1) / 900 > 0.95   # found the 1-thread step quickly
    assert picks[2400:].count(2) / 600 > 0.95        # and went back when the core was free


def test_single_thread_has_nothing_to_choose():
    c = ThreadChooser(1)
    assert set(drive(c, lambda n, i: 0.01, 100)) == {1}


def test_batched_steps_are_judged_per_token(monkeypatch):
    """Steps of varying size (the batcher's): 2 threads are faster per token, so they stay
    chosen even when the 1-thread probes happen to land on small steps."""
    import abi.llm.threads as threads

    clock = [0.0]
    monkeypatch.setattr(threads.time, "perf_counter", lambda: clock[0])
    c = ThreadChooser(2)
    for i in range(3000):
        n = c.pick()
        tokens = 8 if n == 2 else 1   # the worst case: every probe a small step
        c.pick = lambda: n            # timed() runs the count just picked

        def run(n):
            clock[0] += tokens * (0.002 if n == 2 else 0.003)
        c.timed(run, tokens)
        del c.pick
    assert c.current == 2


def test_threads_done_with_parallel_work_let_their_openmp_pools_go(tmp_path, monkeypatch):
    # an idle pool makes libgomp sleep at the barriers of the threads that compute (threads.py):
    # the loading thread lets go after its scan, a prompt run outside a generation after it,
    # a scheduler's job thread after its job, but not between a generation's steps
    from tiny_models import write_tiny_model

    from abi.gguf import GGMLType
    from abi.llm import Engine, threads

    released = []
    monkeypatch.setattr(threads, "release_openmp_pool", lambda: released.append(1))
    path = tmp_path / "llama.gguf"
    write_tiny_model(path, "llama", GGMLType.Q8_0)
    engine = Engine(backend="cpu").load_model(str(path))
    assert len(released) == 1                       # after the load's scan
    model = engine.model
    model.logits([1, 2, 3])
    assert len(released) == 2                       # a prompt outside a generation
    with threads.computing():
        model.logits([1, 2, 3])
        model.forward([4], model.new_cache())
        assert len(released) == 2                   # kept while computing
    assert len(released) == 3                       # and let go at its end
    engine.generate("hello", max_tokens=4)
    assert len(released) == 4                       # one job: once, at its end


def test_batched_prompt_steps_take_every_thread_whatever_the_decode_steps_chose(tmp_path):
    """A step of several prompt tokens is compute-bound and shares its rows out as tasks, so
    it runs on every thread (as Model.forward gives a prompt) even while the decode steps'
    chooser holds one thread; a small piece beside decode tokens takes the chooser's count."""
    import abi.llm
    from abi.gguf import GGMLType
    from abi.llm.model import PROMPT_STEP_TOKENS
    from tiny_models import write_tiny_model

    path = tmp_path / "tiny.gguf"
    write_tiny_model(path, "llama", GGMLType.Q8_0, seed=3)
    m = abi.llm.load_model(path, n_threads=2)
    compiled = m._decoder()
    seen = []

    class Recording:
        def forward_many(self, parts, n_threads=0):
            seen.append(n_threads)
            return compiled.forward_many(parts, n_threads)

    m._compiled = Recording()
    m._batch_threads.current = 1
    caches = [m.new_cache() for _ in range(3)]
    m.forward_many([([5], caches[0], "last"), (list(range(3, 3 + PROMPT_STEP_TOKENS)), caches[1], "last")])
    m.forward_many([([6], caches[0], "last"), ([7, 8, 9], caches[2], "last")])
    assert seen == [0, 1]   # 0: every thread
