"""What the OpenAI, Ollama, llama.cpp and persona routes share around the runtime's scheduler
(``abi.llm.scheduler``): a request's options as a StreamingConfig, prompt checks, waiting on
a job while watching for the client to leave, and a streamed response that cancels its job
however it ends."""
from __future__ import annotations

import asyncio
import functools
import time

from starlette.responses import Response, StreamingResponse

from ..errors import ConfigError, ContextLengthExceeded, GrammarError
from ..llm.sampling import make_logits_processors, make_sampler
from ..llm.streaming import StreamingConfig, StreamingStats
from ..llm.scheduler import SEED_MASK, CancelScope, Job

MIN_TEMPERATURE = 1e-4


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def text_work(state, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in the server's text thread: chat templates, tokenising and
    detokenising, which take seconds on large inputs and must not hold up /health."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(state.text_pool, state.text_job,
                                      functools.partial(fn, *args, **kwargs))


def context_size(state, ctx_limit: int | None = None) -> int:
    """Tokens of context a request has: the model's, or less when the request asks."""
    n_ctx = state.model.n_ctx
    return min(n_ctx, ctx_limit or n_ctx)


def prompt_room(state, ctx_limit: int | None = None, used: int = 0) -> int:
    """The most tokens a prompt may add after ``used`` ones (one is left to generate): what
    ``Model.tokenize(max_tokens=...)`` takes, to refuse a hopeless text before tokenising it."""
    return context_size(state, ctx_limit) - 1 - used


def check_prompt(state, ids: list[int], ctx_limit: int | None = None) -> None:
    """A typed error for an empty prompt, one that leaves no room to generate, or ids
    outside the vocabulary."""
    model = state.model
    if not ids:
        raise ConfigError("the prompt is empty: give at least one token", field="prompt")
    n_ctx = context_size(state, ctx_limit)
    if len(ids) >= n_ctx:
        raise ContextLengthExceeded(
            f"the prompt is {len(ids)} tokens; the context holds {n_ctx} tokens for the prompt "
            "and the reply together. Shorten the prompt, or start the server with a larger --ctx")
    if min(ids) < 0 or max(ids) >= model.n_vocab:
        raise ConfigError(f"token ids must lie in [0, {model.n_vocab})", field="prompt")


def make_config(state, n_prompt: int, *, max_tokens: int | None = None,
                ctx_limit: int | None = None, logit_bias: dict | None = None,
                seed: int | None = None, **options) -> StreamingConfig:
    """A StreamingConfig from API options (None: abi's default), with max_tokens bounded by
    the room left in the context and by the server's --max-tokens."""
    model = state.model
    room = context_size(state, ctx_limit) - n_prompt
    cap = room if state.options.max_tokens is None else min(room, state.options.max_tokens)
    limit = cap if max_tokens is None or max_tokens < 0 else min(max_tokens, cap)
    fields = {k: v for k, v in options.items() if v is not None}
    if 0 < fields.get("temperature", 1.0) < MIN_TEMPERATURE:
        fields["temperature"] = 0.0  # as good as greedy, and dividing by it would overflow
    bias = None
    if logit_bias:
        try:
            bias = {int(k): float(v) for k, v in logit_bias.items()}
        except (TypeError, ValueError):
            raise ConfigError("logit_bias keys must be token ids (integers as strings)",
                              field="logit_bias") from None
        if min(bias) < 0 or max(bias) >= model.n_vocab:
            raise ConfigError(f"logit_bias names token ids outside [0, {model.n_vocab})",
                              field="logit_bias")
    cfg = StreamingConfig(max_tokens=max(limit, 0), logit_bias=bias,
                          seed=None if seed is None else seed & SEED_MASK, **fields)
    # the sampler and processors check their ranges: fail here, before any work is queued
    make_sampler(cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.seed)
    make_logits_processors(cfg.repetition_penalty, cfg.repetition_window, cfg.presence_penalty,
                           cfg.frequency_penalty, cfg.logit_bias)
    return cfg


def grammar_of(*, response_format=None, grammar=None, json_schema=None, ollama_format=None,
               tool_plan=None):
    """The one constraint a request asks for (None: none), from whichever field gives it;
    two at once are an error, as is anything the constraint engine cannot enforce."""
    from ..llm.constrain import Grammar, as_grammar, from_response_format

    found = []
    if response_format is not None:
        spec = response_format.model_dump(by_alias=True, exclude_none=True)
        g = from_response_format(spec)
        if g is not None:
            found.append(("response_format", g))
    if grammar is not None:
        found.append(("grammar", as_grammar(grammar)))
    if json_schema is not None:
        found.append(("json_schema", Grammar.json_schema(json_schema, field="json_schema")))
    if ollama_format is not None and ollama_format != "":
        if ollama_format == "json":
            found.append(("format", Grammar.json_object(field="format")))
        elif isinstance(ollama_format, dict):
            found.append(("format", Grammar.json_schema(ollama_format, field="format")))
        else:
            raise GrammarError(f"format must be \"json\" or a JSON schema object, got "
                               f"{ollama_format!r}", field="format")
    if tool_plan is not None and tool_plan.grammar is not None:
        found.append(("tool_choice", tool_plan.grammar))
    if len(found) > 1:
        raise ConfigError(f"{' and '.join(n for n, _ in found)} each constrain the output: "
                          "give one of them", field=found[1][0])
    return found[0][1] if found else None


async def check_grammar(state, grammar) -> None:
    """Compile a request's grammar now (off the event loop): a 400 before it queues."""
    if grammar is not None:
        from ..llm.constrain import check

        model = state.model
        await text_work(state, check, grammar, model.tokenizer, model.n_vocab)


def finish_reason(stats: StreamingStats | None) -> str:
    """OpenAI's and Ollama's finish reason for a choice's stats."""
    reason = stats.finish_reason if stats else None
    return "length" if reason in ("length", "timeout") else "stop"


async def _until_disconnected(request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def guard(request, job: Job | CancelScope, awaitable):
    """Await ``awaitable``; if the client disconnects first, cancel the job (freeing its
    slot or its place in the queue; a scope: its jobs) and raise ClientGone."""
    work = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(_until_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        watch.cancel()
        job.cancel()
        raise
    if work in done:
        watch.cancel()
        return work.result()
    work.cancel()
    job.cancel()
    raise ClientGone()


def gone_response() -> Response:
    """What a route returns for a client that left (nobody reads it; 499 in the metrics)."""
    return Response(status_code=499)


class JobStreamingResponse(StreamingResponse):
    """A streamed answer that cancels its job however the stream ends (finished, client
    gone, server stopping); cancelling a finished job does nothing."""

    def __init__(self, content, job: Job, media_type: str):
        super().__init__(content, media_type=media_type,
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job = job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


def now_ns() -> int:
    return time.perf_counter_ns()
