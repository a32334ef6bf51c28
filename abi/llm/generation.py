"""The one generator behind every surface: a step generator of (token, logprobs), and
``StreamingResponse``, the pull iterator of TokenEvents with text, stop handling,
cancellation, timeouts and statistics. Callbacks, SSE, the CLI and the server consume it."""
from __future__ import annotations

import queue
import threading
import time
from contextlib import nullcontext
from functools import partial
from typing import Iterator, Sequence

from ..errors import ConfigError, ContextLengthExceeded
from .cache import KVCache
from .sampling import make_logits_processors, make_sampler, top_logprobs
from .streaming import StreamingConfig, StreamingState, StreamingStats, TokenEvent


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def generate_step(model, cache: KVCache, new_ids: Sequence[int], sampler, processors,
                  logprobs: int = 0, should_stop=None,
                  constraint=None, batcher=None, follows=None) -> Iterator[tuple[int, dict | None]]:
    """Prefill ``new_ids`` after what ``cache`` holds, then yield sampled tokens one by one,
    feeding each back. Stops early (yielding nothing more) when ``should_stop()`` is true.
    ``constraint`` (a ``constrain.Constraint``) masks the logits before each draw; its next
    mask is computed while the forward pass runs. ``batcher`` (an ``abi.llm.batcher.Batcher``)
    runs the forward passes in steps shared with the other sequences on the model; then,
    given ``follows(token, i)`` (whether the i-th generated token, from 0, may be followed)
    and no constraint, the tokens after the first are sampled in the batcher's stepping
    thread (``_chained``)."""
    forward = model.forward if batcher is None else batcher.forward
    if getattr(model, "backend", "cpu") == "cuda" and not logprobs and constraint is None:
        # sampling on the GPU: one token id per step crosses to the host, not the logits
        from .cuda_forward import device_steps

        steps = device_steps(model, cache, new_ids, sampler, processors, should_stop)
        if steps is not None:
            yield from steps
            return
    if constraint is not None:
        constraint.begin()
    logits = forward(new_ids, cache, "last", should_stop)
    history = list(cache.tokens)

    def pick(logits) -> tuple[int, dict | None]:
        raw = logits[0]
        adjusted = raw.copy()
        for proc in processors:
            adjusted = proc(history, adjusted)
        if constraint is not None:
            adjusted = constraint.apply(adjusted)
        token = sampler(adjusted)
        if constraint is not None:
            constraint.advance(token)
        history.append(token)
        return token, (top_logprobs(raw, token, logprobs) if logprobs else None)

    chain = batcher is not None and follows is not None and constraint is None
    made = 0   # tokens sampled
    while logits is not None:
        token, info = pick(logits)
        made += 1
        if chain and follows(token, made - 1) and not (should_stop is not None and should_stop()):
            yield from _chained(model, batcher, cache, pick, token, info, made, follows, should_stop)
            return
        yield token, info
        if should_stop is not None and should_stop():
            return
        logits = forward([token], cache, "last")


def _chained(model, batcher, cache: KVCache, pick, token: int, info, made: int, follows,
             should_stop) -> Iterator[tuple[int, dict | None]]:
    """A batched generation's decode from its first sampled ``token`` on. Each next token is
    sampled (``pick``) in the batcher's stepping thread as its step ends and queued for the
    next step at once, so that the generations' threads, taking turns at Python's lock, no
    longer hold every step up; this generator hands the tokens out, and its consumer's work
    on one (detokenising, stop strings, streaming) overlaps the next step. The steps run at
    most one token ahead of the consumer: a token sampled before the consumer took the one
    before waits (parked) until it does. A consumer that stops early (a stop string, a
    cancellation) leaves up to two tokens it did not use in the cache."""
    out: queue.SimpleQueue = queue.SimpleQueue()
    lock = threading.Lock()
    state = {"made": made, "untaken": 0, "closed": False}

    def then(result, error):   # the stepping thread, after this sequence's step
        try:
            if error is not None:
                raise error
            token, info = pick(model.check_finite(result, "last", cache))
            i = state["made"]
            state["made"] += 1
            go = follows(token, i) and not (should_stop is not None and should_stop())
            with lock:
                mode = "end" if not go or state["closed"] else "go" if state["untaken"] == 0 else "park"
                state["untaken"] += 1
            return ([token] if mode == "go" else None), partial(out.put, (token, info, mode))
        except BaseException as exc:   # the generation's error, raised in its own thread
            return None, partial(out.put, exc)

    running = batcher.submit([token], cache, "last", then=then)
    try:
        yield token, info
        while not (should_stop is not None and should_stop()):
            item = out.get()
            if isinstance(item, BaseException):
                raise item
            token, info, mode = item
            with lock:
                state["untaken"] -= 1
            if mode == "park":
                running = batcher.submit([token], cache, "last", then=then)
            yield token, info
            if mode == "end":
                return
    finally:   # no step may write into the cache once the generation has let it go
        with lock:
            state["closed"] = True
        running.done.wait()


class StopStrings:
    """Holds back text that may still turn into a stop string; cuts exactly at a match."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit, whether a stop string was reached)."""
        self.held += text
        if not self.stops:
            out, self.held = self.held, ""
            return out, False
        hits = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.held = self.held[:min(hits)], ""
            return out, True
        keep = 0
        for s in self.stops:  # longest suffix of held that starts some stop string
            for k in range(min(len(s) - 1, len(self.held)), keep, -1):
                if s.startswith(self.held[-k:]):
                    keep = k
                    break
        cut = len(self.held) - keep
        out, self.held = self.held[:cut], self.held[cut:]
        return out, False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


def _drain(detok, stops: StopStrings) -> str:
    """Text still held when generation ends: incomplete UTF-8 and stop-string prefixes."""
    tail, hit = stops.feed(detok.flush())
    return tail if hit else tail + stops.flush()


class StreamingResponse:
    """Pull-based stream of TokenEvents for one generation (``for event in response``).

    Work happens in the consumer's thread as it iterates (beside other generations of a
    batching engine, the sampling past the first token in the batcher's stepping thread);
    ``cancel()`` may be called from any thread and is honoured between prompt batches and
    between tokens.
    """

    def __init__(self, model, slot, prompt_ids: list[int], config: StreamingConfig, batcher=None):
        self.model, self.slot, self.config, self.batcher = model, slot, config, batcher
        self.prompt_ids = list(prompt_ids)
        self.state = StreamingState.IDLE
        self.stats = StreamingStats(prompt_tokens=len(self.prompt_ids))
        self._cancel = threading.Event()
        self._events = None
        self.text = ""  # everything emitted so far
        self.tokens: list[int] = []

    # -- the reference's API ----------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def get_stats(self) -> StreamingStats:
        return self.stats

    def __iter__(self):
        return self

    def __next__(self) -> TokenEvent:
        if self._events is None:
            self._events = self._run()
        return next(self._events)

    def close(self) -> None:
        """Stop early and release the slot (also done when the response is garbage-collected)."""
        if self._events is not None:
            self._events.close()
        elif self.state == StreamingState.IDLE:
            self.state = StreamingState.CANCELLED

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- the work ------------------------------------------------------------------------------
    def _run(self) -> Iterator[TokenEvent]:
        cfg, model, stats = self.config, self.model, self.stats
        tok = model.tokenizer
        start = time.perf_counter_ns()
        deadline = start + cfg.generation_timeout_ns if cfg.generation_timeout_ns else None
        timed_out = [False]

        def should_stop() -> bool:
            if deadline is not None and time.perf_counter_ns() > deadline:
                timed_out[0] = True
                return True
            return self._cancel.is_set()

        stop_ids = set(tok.eog_ids if cfg.stop_tokens is None else cfg.stop_tokens)
        constraint = None
        if cfg.grammar is not None:
            from .constrain import Constraint

            constraint = Constraint(cfg.grammar, tok, model.n_vocab)
            stop_ids |= tok.eog_ids  # the grammar ends on the vocabulary's end-of-generation set
        sampler = make_sampler(cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.seed)
        processors = make_logits_processors(cfg.repetition_penalty, cfg.repetition_window,
                                            cfg.presence_penalty, cfg.frequency_penalty,
                                            cfg.logit_bias)
        if cfg.max_tokens == 0:
            stats.finish_reason, self.state = "length", StreamingState.COMPLETED
            return
        if not self.prompt_ids:
            raise ConfigError("the prompt is empty: give at least one token", field="prompt")
        if len(self.prompt_ids) >= model.n_ctx:
            raise ContextLengthExceeded(
                f"the prompt has {len(self.prompt_ids)} tokens; the context holds {model.n_ctx}")
        with self.slot.lock, (self.batcher.member() if self.batcher else nullcontext()):
            cache, on_cpu = self.slot.cache, getattr(model, "backend", None) == "cpu"
            # keep the longest cached prefix (this slot's, or one copied from another slot of
            # the engine), but always recompute the last prompt token; a device-side cache
            # (CUDA) keeps its own rows, so only its own prefix
            stats.cached_tokens = self.slot.hold_prefix(self.prompt_ids, share=on_cpu)
            new_ids = self.prompt_ids[cache.length:]
            if on_cpu:
                # the whole generation's positions at once: growing by doubling after a long
                # prompt would hold the old and the new cache together
                cache.reserve(min(model.n_ctx, len(self.prompt_ids) + cfg.max_tokens))
            from .tokenizer import StreamingDetokenizer

            detok = StreamingDetokenizer(tok, cfg.special_text) if cfg.decode_tokens else None
            stops = StopStrings(cfg.stop)
            self.state = StreamingState.PREFILLING
            n_prompt = len(self.prompt_ids)

            def follows(token: int, i: int) -> bool:   # no end of generation by this token
                return (token not in stop_ids and i + 1 < cfg.max_tokens and n_prompt + i + 1 < model.n_ctx
                        and (constraint is None or not constraint.stopped))

            steps = generate_step(model, cache, new_ids, sampler, processors, cfg.logprobs,
                                  should_stop, constraint, self.batcher, follows)
            t_prev = start
            try:
                for i, (token, info) in enumerate(steps):
                    now = time.perf_counter_ns()
                    if i == 0:
                        stats.prefill_time_ns = stats.time_to_first_token_ns = now - start
                        self.state = StreamingState.GENERATING
                    else:
                        stats.decode_time_ns += now - t_prev
                        stats.decode_steps += 1
                    t_prev = now
                    stats.tokens_generated += 1
                    position = len(self.prompt_ids) + i
                    reason, text = None, None
                    if token in stop_ids:
                        reason = "stop"
                    else:
                        self.tokens.append(token)
                        if detok:
                            text, hit = stops.feed(detok.push(token))
                            reason = "stop" if hit else None
                    ended = False  # ended by the grammar: only the end of generation could follow
                    if reason is None and constraint is not None and constraint.stopped:
                        reason, ended = "stop", True
                    if reason is None and (stats.tokens_generated >= cfg.max_tokens
                                           or position + 1 >= model.n_ctx):
                        reason = "length"
                    if detok and (token in stop_ids or ended or reason == "length"):
                        text = (text or "") + _drain(detok, stops)
                    if text:
                        self.text += text
                    event = TokenEvent(token, text, position, time.time_ns(), reason is not None, info)
                    if reason is not None:
                        stats.finish_reason = reason
                        if constraint is not None:
                            # a stop string or the length limit may cut a match short
                            stats.constraint_complete = constraint.accepting
                        stats.total_time_ns = time.perf_counter_ns() - start
                        self.state = StreamingState.COMPLETED
                        yield event
                        return
                    yield event
            finally:
                steps.close()
                if constraint is not None:
                    constraint.close()
                    stats.constraint_time_ns = constraint.wait_ns
                if stats.finish_reason is None:
                    stats.total_time_ns = time.perf_counter_ns() - start
                    stats.finish_reason = "timeout" if timed_out[0] else "cancelled"
                    self.state = StreamingState.CANCELLED
