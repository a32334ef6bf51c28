"""The generation engine: streaming, stop handling, cancellation, timeouts, seeds, stats and
prefix reuse. Stream mechanics run on a scripted model (the real tokenizer, logits that
force a chosen token sequence); behaviour that needs real numbers runs on the default model."""
import threading
import time

import numpy as np
import pytest

import abi.gguf
import abi.llm
from abi.errors import ConfigError, ContextLengthExceeded
from abi.llm import SSEFormatter, StreamingConfig, StreamingState
from abi.llm.engine import Engine, Slot
from abi.llm.generation import StreamingResponse
from abi.llm.tokenizer import load_tokenizer


class FakeCache:
    def __init__(self):
        self.tokens, self.length = [], 0

    def truncate(self, n):
        self.length = min(self.length, n)
        del self.tokens[self.length:]


class ScriptedModel:
    """Emits ``script`` token by token (then EOS); each forward call can be slowed down."""

    def __init__(self, tokenizer, script, n_ctx=4096, delay=0.0, n_batch=8):
        self.tokenizer, self.script, self.n_ctx = tokenizer, list(script), n_ctx
        self.delay, self.n_batch, self.forward_calls = delay, n_batch, 0
        self.n_vocab = tokenizer.n_vocab

    def forward(self, ids, cache, output="last", should_stop=None):
        for s in range(0, len(ids), self.n_batch):
            if should_stop is not None and s and should_stop():
                return None
            self.forward_calls += 1
            time.sleep(self.delay)
            cache.tokens.extend(ids[s:s + self.n_batch])
            cache.length += len(ids[s:s + self.n_batch])
        step = cache.length - self.prompt_len
        logits = np.zeros((1, self.n_vocab), np.float32)
        nxt = self.script[step] if step < len(self.script) else self.tokenizer.eos_id
        logits[0, nxt] = 50.0
        return logits


@pytest.fixture(scope="module")
def tokenizer(default_model_path):
    return load_tokenizer(abi.gguf.load(default_model_path))


def scripted(tokenizer, text, prompt="Hi", **kw):
    script = tokenizer.encode(text, add_bos=False)
    model = ScriptedModel(tokenizer, script, **kw)
    prompt_ids = tokenizer.encode(prompt, add_bos=False)
    model.prompt_len = len(prompt_ids)
    return model, prompt_ids, script


def run(model, prompt_ids, **cfg):
    cfg.setdefault("temperature", 0.0)
    cfg.setdefault("repetition_penalty", 1.0)
    resp = StreamingResponse(model, Slot(FakeCache()), prompt_ids, StreamingConfig(**cfg))
    return resp, list(resp)


def test_stream_joins_to_text_and_ends_on_eos(tokenizer):
    model, prompt, script = scripted(tokenizer, "Hello world, this is a test.")
    resp, events = run(model, prompt)
    assert "".join(e.text for e in events) == "Hello world, this is a test."
    assert events[-1].is_final and events[-1].token_id == tokenizer.eos_id
    assert [e.position for e in events] == list(range(len(prompt), len(prompt) + len(script) + 1))
    stats = resp.get_stats()
    assert stats.finish_reason == "stop" and stats.tokens_generated == len(script) + 1
    assert resp.state == StreamingState.COMPLETED


def test_multibyte_utf8_split_across_tokens_is_never_emitted_half(tokenizer):
    text = "Café 👨‍👩‍👧 日本語 ✓"
    model, prompt, script = scripted(tokenizer, text)
    pieces = [tokenizer.token_to_piece(t) for t in script]
    assert any(p.decode("utf-8", "replace") != p.decode("utf-8", "ignore") for p in pieces), \
        "the text should need byte-split tokens"
    _, events = run(model, prompt)
    for e in events:
        assert "\ufffd" not in (e.text or "")
    assert "".join(e.text for e in events) == text


def test_stop_string_spanning_tokens_is_cut_exactly(tokenizer):
    model, prompt, script = scripted(tokenizer, "The answer is 42. END OF ANSWER and more")
    resp, events = run(model, prompt, stop=["END OF ANSWER"])
    out = "".join(e.text or "" for e in events)
    assert out == "The answer is 42. "
    assert resp.get_stats().finish_reason == "stop" and events[-1].is_final
    assert len(tokenizer.encode(" END OF ANSWER", add_bos=False)) > 1  # really spans tokens


def test_held_back_stop_prefix_is_flushed_at_the_end(tokenizer):
    model, prompt, _ = scripted(tokenizer, "value: 12 END")
    _, events = run(model, prompt, stop=["END OF"])
    assert "".join(e.text or "" for e in events) == "value: 12 END"


def test_max_tokens_gives_length(tokenizer):
    model, prompt, _ = scripted(tokenizer, "one two three four five six seven")
    resp, events = run(model, prompt, max_tokens=3)
    assert len(events) == 3 and resp.get_stats().finish_reason == "length" and events[-1].is_final


def test_decode_tokens_false_gives_ids_only(tokenizer):
    model, prompt, script = scripted(tokenizer, "abc def")
    _, events = run(model, prompt, decode_tokens=False)
    assert all(e.text is None for e in events) and [e.token_id for e in events[:-1]] == script


def test_cancel_from_another_thread_during_prefill(tokenizer):
    model, _, _ = scripted(tokenizer, "never", delay=0.05, n_batch=4)
    prompt = list(range(100, 400))  # 75 batches, about 4 s of prefill
    model.prompt_len = len(prompt)
    resp = StreamingResponse(model, Slot(FakeCache()), prompt, StreamingConfig(temperature=0))
    threading.Timer(0.2, resp.cancel).start()
    t = time.perf_counter()
    events = list(resp)
    assert time.perf_counter() - t < 1.5
    assert events == [] and resp.is_cancelled() and resp.get_stats().finish_reason == "cancelled"
    assert resp.state == StreamingState.CANCELLED and model.forward_calls < 40


def test_cancel_from_another_thread_during_decode(tokenizer):
    model, prompt, _ = scripted(tokenizer, "word " * 200, delay=0.01)
    resp = StreamingResponse(model, Slot(FakeCache()), prompt, StreamingConfig(temperature=0, max_tokens=500))
    seen = []
    for event in resp:
        seen.append(event)
        if len(seen) == 5:
            threading.Thread(target=resp.cancel).start()
    assert 5 <= len(seen) <= 8 and resp.get_stats().finish_reason == "cancelled"


def test_generation_timeout(tokenizer):
    model, prompt, _ = scripted(tokenizer, "word " * 200, delay=0.02)
    resp, events = run(model, prompt, max_tokens=500, generation_timeout_ns=150_000_000)
    assert resp.get_stats().finish_reason == "timeout" and 2 <= len(events) < 30


def test_zero_max_tokens_and_empty_prompt(tokenizer):
    model, prompt, _ = scripted(tokenizer, "x")
    resp, events = run(model, prompt, max_tokens=0)
    assert events == [] and resp.get_stats().finish_reason == "length"
    with pytest.raises(ConfigError):
        run(model, [])


def test_config_validation():
    with pytest.raises(ConfigError):
        StreamingConfig(max_tokens=-1)
    with pytest.raises(ConfigError):
        StreamingConfig(stop=[""])
    assert StreamingConfig(stop="x").stop == ["x"]
    d = StreamingConfig()
    assert (d.max_tokens, d.temperature, d.top_k, d.top_p, d.repetition_penalty,
            d.initial_buffer_capacity, d.decode_tokens, d.generation_timeout_ns) == \
        (256, 0.7, 40, 0.9, 1.1, 256, True, 0)


# -- on the default model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(default_model_path):
    return Engine(backend="cpu").load_model(default_model_path)


def test_seed_reproducible(engine):
    opts = dict(max_tokens=12, temperature=0.9, top_k=40, top_p=0.95)
    a = engine.generate("Once upon a time", seed=1234, **opts)
    b = engine.generate("Once upon a time", seed=1234, **opts)
    others = {engine.generate("Once upon a time", seed=s, **opts) for s in (1, 2, 3)}
    assert a == b and len(others | {a}) > 1


def test_prefix_reuse_matches_cold_run(engine, default_model_path):
    turn1 = [{"role": "user", "content": "Name a fruit."}]
    reply = engine.chat(turn1, max_tokens=8, temperature=0)
    turn2 = turn1 + [{"role": "assistant", "content": reply},
                     {"role": "user", "content": "And a vegetable?"}]
    warm = engine.chat(turn2, stream=True, max_tokens=12, temperature=0)
    warm_text = "".join(e.text or "" for e in warm)
    assert warm.get_stats().cached_tokens > 20
    cold_engine = Engine(backend="cpu").load_model(default_model_path)
    cold = cold_engine.chat(turn2, stream=True, max_tokens=12, temperature=0)
    cold_text = "".join(e.text or "" for e in cold)
    assert cold.get_stats().cached_tokens == 0
    assert warm.tokens == cold.tokens and warm_text == cold_text


def test_a_slot_copies_the_prefix_another_slot_holds_and_answers_as_a_cold_run(default_model_path):
    """Two users whose prompts share a system prompt: the second one's slot copies those rows
    from the first one's (its own cache holds nothing), prefills only the rest, and answers
    with the tokens a cold engine gives."""
    system = {"role": "system", "content": "You are a careful assistant. Answer in one short sentence."}
    first = [system, {"role": "user", "content": "Name a fruit."}]
    second = [system, {"role": "user", "content": "Name a colour."}]
    two = Engine(backend="cpu", n_slots=2).load_model(default_model_path)
    two.chat(first, max_tokens=4, temperature=0, slot=0)
    model = two.model
    ids = model.chat_tokens(second)
    shared = next(i for i, (a, b) in enumerate(zip(model.chat_tokens(first), ids)) if a != b)
    warm = two.chat(second, stream=True, max_tokens=10, temperature=0, slot=1)
    warm_text = "".join(e.text or "" for e in warm)
    assert warm.get_stats().cached_tokens == shared > 10
    cold = Engine(backend="cpu").load_model(default_model_path).chat(second, stream=True, max_tokens=10,
                                                                      temperature=0)
    assert "".join(e.text or "" for e in cold) == warm_text and warm.tokens == cold.tokens
    assert two.slots[0].cache.tokens[:shared] == two.slots[1].cache.tokens[:shared]


def test_hold_prefix_takes_the_longest_among_the_peers_and_only_its_own_without_sharing():
    from types import SimpleNamespace

    from abi.llm.engine import link_slots

    class Cache(SimpleNamespace):
        def truncate(self, n):
            del self.tokens[n:]

        def copy_prefix(self, src, n):
            self.tokens[:] = src.tokens[:n]
            self.copied = n

        @property
        def length(self):
            return len(self.tokens)

    a, b, c = link_slots([Slot(Cache(tokens=t)) for t in ([1, 2, 9], [1, 2, 3, 4, 8], [7])])
    assert c.hold_prefix([1, 2, 3, 4, 5]) == 4 and c.cache.copied == 4     # b's 4, not a's 2
    assert a.hold_prefix([1, 2, 3, 4], share=False) == 2 and a.cache.tokens == [1, 2]
    assert b.hold_prefix([1, 2, 3, 4]) == 3   # its own: the last prompt token is recomputed


def test_callbacks_stats_and_sse(engine):
    pieces, events, done = [], [], []
    stats = engine.generate_streaming("The sky is", pieces.append, max_tokens=5, temperature=0)
    assert "".join(pieces) and stats.tokens_generated == 5
    cfg = StreamingConfig(max_tokens=4, temperature=0, on_token=events.append, on_complete=done.append)
    stats = engine.generate_streaming_with_config("The sky is", cfg)
    assert len(events) == 4 and done == [stats] and events[-1].is_final
    assert stats.prompt_tokens == 3 and stats.time_to_first_token_ns > 0
    assert stats.tokens_per_second() > 0 and stats.prefill_tokens_per_second() >= 0
    line = SSEFormatter.format_token_event(events[0])
    assert line.startswith('data: {"token_id":') and line.endswith("}\n\n")


def test_logprobs_reported(engine):
    resp = engine.create_streaming_response("The capital of France is", max_tokens=2,
                                            temperature=0, logprobs=3)
    first = next(iter(resp))
    assert first.logprobs["token"] == first.token_id and len(first.logprobs["top"]) == 3
    assert first.logprobs["top"][0][0] == first.token_id and first.logprobs["logprob"] <= 0


def test_prompt_longer_than_context(default_model_path):
    small = Engine(backend="cpu", n_ctx=16).load_model(default_model_path)
    with pytest.raises(ContextLengthExceeded):
        small.generate("word " * 40, max_tokens=2)


def test_unknown_option_is_a_config_error(engine):
    with pytest.raises(ConfigError, match="unknown generation option"):
        engine.generate("x", max_tokenz=3)


def test_pick_slot_prefers_the_longest_shared_prefix_among_the_free():
    from types import SimpleNamespace

    engine = Engine(backend="cpu")
    engine.slots = [Slot(SimpleNamespace(tokens=t)) for t in ([5, 6], [1, 2, 3, 9], [1, 2], [])]
    assert engine.pick_slot([1, 2, 3, 4]) == 1
    engine.slots[1].lock.acquire()                 # busy: the next best free slot
    assert engine.pick_slot([1, 2, 3, 4]) == 2
    assert engine.pick_slot([1, 2, 3, 4], among=[0, 3]) == 0   # a tie: the first
    for s in engine.slots:
        s.lock.acquire(blocking=False)
    assert engine.pick_slot([1, 2, 3, 4]) == 1      # none free: the best of all
