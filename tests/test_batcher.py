"""Continuous batching (abi/llm/batcher.py): one compiled forward per step over every
sequence's next token; a token's arithmetic does not depend on the batch."""
import threading
import time
import zlib

import numpy as np
import pytest

import abi.llm
from abi.gguf import GGMLType
from abi.llm import Engine
from tiny_models import write_tiny_model


@pytest.mark.parametrize("kv", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("name, arch", [("llama_q8_0", "llama"), ("gemma3_q8_0", "gemma3"),
                                        ("qwen3moe_q8_0", "qwen3moe")])
def test_forward_many_gives_each_sequence_its_own_bits(tmp_path, name, arch, kv):
    path = tmp_path / f"{name}.gguf"
    write_tiny_model(path, arch, GGMLType.Q8_0, seed=zlib.crc32(name.encode()), name=name)
    m = abi.llm.load_model(path, kv_dtype=kv)
    rng = np.random.default_rng(1)
    prompts = [[int(t) for t in rng.integers(3, 250, n)] for n in (9, 30, 1, 17)]
    alone = []
    for p in prompts:   # each sequence alone: prefill, then two decode steps
        cache = m.new_cache()
        alone.append([m.forward(p, cache, "all"), m.forward([5], cache), m.forward([7], cache)])
    caches = [m.new_cache() for _ in prompts]
    # prompts of different lengths in one call, then decode tokens of all four together
    first = m.forward_many([(p, c, "all") for p, c in zip(prompts, caches)])
    second = m.forward_many([([5], c, "last") for c in caches])
    third = m.forward_many([([7], c, "last") for c in caches[::-1]])[::-1]
    for i in range(len(prompts)):
        assert np.array_equal(first[i], alone[i][0])
        assert np.array_equal(second[i], alone[i][1])
        assert np.array_equal(third[i], alone[i][2])


@pytest.fixture(scope="module")
def engine(default_model_path):
    e = Engine(n_slots=4, backend="cpu").load_model(default_model_path)
    yield e
    e.close()


def _run_together(engine, jobs):
    """Run (prompt, options) jobs at once, each on its own thread and slot."""
    out = [None] * len(jobs)

    def work(i, prompt, options):
        out[i] = engine.generate(prompt, **options)

    threads = [threading.Thread(target=work, args=(i, p, o)) for i, (p, o) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


def test_same_seed_same_output_alone_and_beside_three_streams(engine):
    opts = dict(max_tokens=24, temperature=0.9, seed=1234, repetition_penalty=1.2)
    prompt = "Write a short poem about the sea."
    for slot in engine.slots:
        slot.cache.clear()
    alone = engine.generate(prompt, **opts)
    assert engine.batcher is not None
    for slot in engine.slots:   # no cached prefix helps either run
        slot.cache.clear()
    steps0 = engine.batcher.steps
    others = [("Tell me about Paris. " * 20, dict(max_tokens=30, temperature=0.7, seed=7)),
              ("List three colours.", dict(max_tokens=30, temperature=0, stop=["\n\n"])),
              ("What is 2 + 2?", dict(max_tokens=30, temperature=1.0, seed=99, top_k=5))]
    together = _run_together(engine, [(prompt, opts)] + others)
    assert together[0] == alone
    assert engine.batcher.max_sequences >= 3   # they really shared steps
    assert engine.batcher.steps - steps0 < 24 + 30 * 3


def _tokens(response, delay=0.0):
    out = []
    for ev in response:
        out.append(ev.token_id)
        time.sleep(delay)
    return out


def _stream_beside(engine, max_tokens):
    """A greedy stream on slot 1, consumed by a thread (returned, started)."""
    other = engine.create_streaming_response("Count slowly to twenty.", slot=1, max_tokens=max_tokens,
                                             temperature=0, stop_tokens=[])
    t = threading.Thread(target=_tokens, args=(other,))
    t.start()
    return t


def test_a_slow_consumer_holds_its_stream_back_without_changing_it(engine):
    """Past the first token the stepping thread samples (generation._chained), at most one
    token ahead of the consumer: a consumer slower than the steps makes its tokens wait
    (parked), and the tokens are those of a consumer that keeps up."""
    opts = dict(max_tokens=16, temperature=0.8, seed=5, stop_tokens=[])
    prompt = "Describe a walk in the forest."
    for slot in engine.slots:
        slot.cache.clear()
    fast = _tokens(engine.create_streaming_response(prompt, slot=0, **opts))
    for slot in engine.slots:
        slot.cache.clear()
    t = _stream_beside(engine, 40)
    steps0 = engine.batcher.steps
    slow = _tokens(engine.create_streaming_response(prompt, slot=0, **opts), delay=0.03)
    t.join(120)
    assert slow == fast and len(slow) == 16
    # the other stream ran on meanwhile: the slow one was not in every step
    assert engine.batcher.steps - steps0 > len(slow)


def test_a_stream_closed_early_leaves_its_cache_alone(engine):
    """A consumer that stops early (a stop string, a client gone) keeps at most the two
    tokens the steps ran ahead, and no later step writes into its cache."""
    for slot in engine.slots:
        slot.cache.clear()
    t = _stream_beside(engine, 30)
    r = engine.create_streaming_response("Tell me a story.", slot=0, max_tokens=200, temperature=0,
                                         stop_tokens=[])
    n_prompt = len(r.prompt_ids)
    for i, _ in enumerate(r):
        if i == 4:
            break
    r.close()
    cache = engine.slots[0].cache
    length = cache.length
    assert n_prompt + 4 <= length <= n_prompt + 5 + 2
    t.join(120)   # the other stream's steps go on; this cache stays as it was
    assert cache.length == length and len(cache.tokens) == length


def _break_steps_after(engine, monkeypatch, n, broken):
    """Empty every slot; past the n-th step, each step runs ``broken(forward_many, parts)``."""
    for slot in engine.slots:
        slot.cache.clear()
    real, calls = engine.model.forward_many, [0]

    def step(parts):
        calls[0] += 1
        return real(parts) if calls[0] <= n else broken(real, parts)

    monkeypatch.setattr(engine.model, "forward_many", step)


def test_a_failing_step_reaches_every_chained_stream(engine, monkeypatch):
    def broken(real, parts):
        raise RuntimeError("the step broke")

    _break_steps_after(engine, monkeypatch, 6, broken)
    errors = []

    def run(i):
        try:
            engine.generate(f"Say something about {i}.", max_tokens=50, temperature=0, stop_tokens=[], slot=i)
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    assert errors == ["the step broke"] * 2


def test_non_finite_logits_in_a_chained_stream_are_a_typed_error(engine, monkeypatch):
    from abi.errors import NonFiniteError

    _break_steps_after(engine, monkeypatch, 3,
                       lambda real, parts: [o if o is None else np.full_like(o, np.nan) for o in real(parts)])
    with pytest.raises(NonFiniteError):
        engine.generate("Say something.", max_tokens=30, temperature=0.7, seed=1, stop_tokens=[], slot=0)


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps(engine):
    for slot in engine.slots:
        slot.cache.clear()
    long_prompt = "The history of the printing press is long. " * 60   # ~600 tokens
    short = ("Say hello.", dict(max_tokens=20, temperature=0))
    expect = engine.generate(short[0], **short[1])
    for slot in engine.slots:
        slot.cache.clear()
    res = _run_together(engine, [short, (long_prompt, dict(max_tokens=4, temperature=0))])
    assert res[0] == expect
    assert engine.batcher.prefill_chunk < 600


def test_prompt_pieces_beside_decoding_streams_fit_the_time_of_their_decode_part():
    from abi.llm.batcher import Batcher, _Request

    class Model:
        n_batch = 512

    def piece(n):
        return [(_Request(list(range(600)), None, "last", short=False), n)]

    b = Batcher(Model(), prefill_chunk=64, prefill_s=0.06)
    try:
        assert b._prompt_budget(3) == 64          # nothing measured yet: whole chunks
        b._learn(0.030, 4, [])                    # a step of 4 decode tokens: 30 ms
        b._learn(0.030, 4, [])
        b._learn(0.300, 4, [])                    # once stalled: the median keeps 30 ms
        b._learn(0.1, 0, piece(50))               # a prompt alone: 2 ms a token
        assert b._prompt_budget(0) == 64          # no stream waits: whole chunks
        assert b._prompt_budget(4) == 30          # 60 ms (more than the 30 of the decode part)
        b._learn(0.100, 8, [])                    # a step of 8 decode tokens: 100 ms
        assert b._prompt_budget(8) == 50          # the decode part's 100 ms
        assert b._prompt_budget(6) == 30          # unmeasured: the largest measured below it
        late = piece(10)
        b._learn(0.100 + 0.004 * 10, 8, late)     # 4 ms a token beside 8 decode tokens
        assert b._prompt_budget(8) == int(0.1 / (0.002 + 0.3 * (0.004 - 0.002)))
        # that prompt's next piece is sized by its own last piece (its tokens attend over more)
        assert late[0][0].token_s == pytest.approx(0.004)
        assert b._prompt_budget(8, late[0][0].token_s) == int(0.1 / late[0][0].token_s)   # 24-25
        b._learn(10.0, 0, piece(2))               # a model far slower per prompt token: one a step
        assert b._prompt_budget(8) == 1
    finally:
        b.close()


def test_short_prompts_go_whole_beside_streams_and_long_ones_in_pieces_within_n_batch():
    from abi.llm.batcher import Batcher, _Request

    class Model:
        n_batch = 512

    b = Batcher(Model(), prefill_chunk=64, prefill_s=0.06)
    b.close()   # no stepping thread: _take is called here
    b._learn(0.030, 2, [])                        # a step of 2 decode tokens: 30 ms
    b._learn(0.1, 0, [(_Request(list(range(80)), None, "last"), 50)])   # 2 ms a prompt token:
    # long prompts get 30 a step
    decode = [_Request([1], None, "last") for _ in range(2)]
    long_prompt = _Request(list(range(600)), None, "last", short=False)
    burst = [_Request(list(range(60)), None, "last") for _ in range(9)]
    b._pending = decode + [long_prompt] + burst
    with b._cv:
        take = b._take()
    # every decode token, the long prompt's piece, then whole short prompts while they fit
    # the 512 - 30 tokens left: 8 of them; the ninth waits, first in line
    assert take == [(r, 1) for r in decode] + [(long_prompt, 30)] + [(r, 60) for r in burst[:8]]
    assert b._pending == [burst[8]]   # the long prompt's rest goes back in front after the step


def test_a_long_prompt_beside_a_stream_goes_in_pieces_that_keep_it_moving(engine):
    """The prompt arrives while a stream decodes: each step that carries decode tokens
    carries at most the prompt tokens that fit its budget, the stream gets tokens while the
    prompt prefills, and both outputs are those they give alone."""
    for slot in engine.slots:
        slot.cache.clear()
    short = ("Count from one to twenty.", dict(max_tokens=40, temperature=0, stop_tokens=[]))
    long_prompt = ("The history of the printing press is long. " * 60, dict(max_tokens=3, temperature=0))
    expect = [engine.generate(p, **o) for p, o in (short, long_prompt)]
    for slot in engine.slots:
        slot.cache.clear()
    model, batcher = engine.model, engine.batcher
    steps, budget = [], [None]
    inner, inner_budget = model.forward_many, batcher._prompt_budget

    def planned(*args):   # the step's budget, as _take computed it just before the step
        budget[0] = inner_budget(*args)
        return budget[0]

    def recorded(parts):
        decode = sum(1 for ids, _, _ in parts if len(ids) == 1)
        steps.append((decode, sum(len(ids) for ids, _, _ in parts if len(ids) > 1), budget[0]))
        return inner(parts)

    model.forward_many, batcher._prompt_budget = recorded, planned
    try:
        stream = engine.create_streaming_response(short[0], slot=0, **short[1])
        out = [None, None]

        def late():
            out[1] = engine.generate(long_prompt[0], **long_prompt[1])

        first = next(iter(stream))
        t = threading.Thread(target=late)
        t.start()
        out[0] = first.text + "".join(ev.text for ev in stream)
        t.join(300)
    finally:
        del model.forward_many, batcher._prompt_budget
    assert out == expect
    mixed = [(d, p, b) for d, p, b in steps if d and p]
    assert len(mixed) >= 2 and sum(p for _, p, _ in steps) >= 500
    assert all(p <= b for _, p, b in mixed)


def test_cancelling_a_prompt_between_its_pieces_stops_its_prefill(engine):
    for slot in engine.slots:
        slot.cache.clear()
    batcher = engine.batcher
    decoding = engine.create_streaming_response("Count to one hundred.", max_tokens=300,
                                                temperature=0, stop_tokens=[], slot=0)
    events = iter(decoding)
    next(events)   # a stream decodes, so the prompt below goes in small pieces
    long = engine.create_streaming_response("The history of the printing press is long. " * 60,
                                            max_tokens=3, temperature=0, slot=1)
    got = []
    t = threading.Thread(target=lambda: got.extend(long))
    before = batcher.step_tokens
    t.start()
    while batcher.step_tokens - before < 40:   # the stream's tokens and the prompt's first pieces
        next(events)
    long.cancel()
    t.join(120)
    decoding.cancel()
    for _ in events:
        pass
    assert long.get_stats().finish_reason == "cancelled" and not got
    assert engine.slots[1].cache.length < len(long.prompt_ids)


def test_cancelling_one_stream_leaves_the_others(engine):
    for slot in engine.slots:
        slot.cache.clear()
    r1 = engine.create_streaming_response("Count to one hundred.", max_tokens=200, temperature=0,
                                          stop_tokens=[], slot=0)
    r2 = engine.create_streaming_response("Name a fruit.", max_tokens=12, temperature=0, slot=1)
    got = []

    def consume():
        for ev in r2:
            got.append(ev)

    t = threading.Thread(target=consume)
    t.start()
    for i, _ in enumerate(r1):
        if i == 3:
            r1.cancel()
    t.join(120)
    assert r1.get_stats().finish_reason == "cancelled"
    assert r2.get_stats().finish_reason in ("stop", "length") and got


def test_n_choices_share_one_prefill_and_match_separate_seeded_runs(engine):
    from abi.llm.engine import make_config
    from abi.llm.scheduler import GenerationRequest

    prompt = "Write one line about autumn leaves."
    opts = dict(max_tokens=12, temperature=1.0, top_p=1.0, seed=4321, stop_tokens=[])
    expect = []
    for i in range(3):   # what choice i gave before: its own run with seed + i
        for slot in engine.slots:
            slot.cache.clear()
        expect.append(engine.generate(prompt, **{**opts, "seed": opts["seed"] + i}))
    for slot in engine.slots:
        slot.cache.clear()
    ids = engine.model.tokenize(prompt)
    engine.batcher.max_sequences = 0
    before = engine.batcher.step_tokens
    results = engine.scheduler.run(GenerationRequest(ids, make_config(**opts), n=3))
    assert [r.text for r in results] == expect
    assert engine.batcher.max_sequences == 3   # the choices decoded in shared steps
    # the prompt ran once; the two other choices recomputed only its last token
    fed = sum(r.stats.tokens_generated - 1 for r in results)
    assert engine.batcher.step_tokens - before == len(ids) + 2 + fed
    assert [r.stats.cached_tokens for r in results] == [0, len(ids) - 1, len(ids) - 1]


@pytest.mark.model
def test_the_server_batches_streams_and_a_seeded_stream_is_unchanged(default_model_path):
    """Through HTTP: a seeded streamed chat alone, then beside three other streams (one
    not streamed) on a --parallel 4 server, gives the same text."""
    import json

    import requests

    from serve_helpers import serve

    def chat(url, content, seed, stream=True):
        body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": content}],
                "max_tokens": 20, "temperature": 0.8, "seed": seed, "stream": stream}
        r = requests.post(url + "/v1/chat/completions", json=body, timeout=300, stream=stream)
        if not stream:
            return r.json()["choices"][0]["message"]["content"]
        text = ""
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                for c in json.loads(line[6:])["choices"]:
                    text += (c.get("delta") or {}).get("content") or ""
        return text

    with serve("--model", default_model_path, "--parallel", "4", "--ctx", "512") as srv:
        alone = chat(srv.url, "Describe a forest.", 5)
        jobs = [("Describe a forest.", 5, True), ("Name three rivers.", 1, True),
                ("What is rain?", 2, False), ("Tell me about owls.", 3, True)]
        out = [None] * 4

        def run(i):
            out[i] = chat(srv.url, *jobs[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert out[0] == alone and all(out)
