"""OpenAI API: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""
from __future__ import annotations

import asyncio
import base64
import time
import uuid

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import __version__
from ..errors import ConfigError, NotSupported, UnknownModel
from ..llm.sse import SSE_DONE, sse_event
from . import schemas as s
from .errors import describe
from ..llm.scheduler import Done, GenerationRequest, Token
from ..llm.reasoning import prompt_opens_reasoning
from ..llm.tools import finish_reason_of
from ..llm.turns import join_turn, needs_special_text, read_turn, turn_reader
from .streams import (ClientGone, JobStreamingResponse, check_grammar, check_prompt,
                      finish_reason, gone_response, grammar_of, guard, make_config,
                      prompt_room, text_work)

router = APIRouter(tags=["OpenAI"])

FINGERPRINT = f"abi-{__version__}"
_ERRORS = {400: {"model": s.ErrorResponse}, 401: {"model": s.ErrorResponse},
           404: {"model": s.ErrorResponse}, 429: {"model": s.ErrorResponse},
           503: {"model": s.ErrorResponse}}
_SSE = {200: {"content": {"text/event-stream": {}}}}


def _sse(obj) -> str:
    return sse_event(obj.model_dump_json(exclude_none=True) if hasattr(obj, "model_dump_json") else obj)


def _piece(model, token_id: int) -> tuple[str, list[int]]:
    raw = model.tokenizer.token_to_piece(int(token_id))
    return raw.decode("utf-8", "replace"), list(raw)


def _chat_logprobs(model, events) -> s.ChoiceLogprobs:
    content = []
    for ev in events:
        info = ev.logprobs
        if info is None or ev.token_id in model.tokenizer.eog_ids:
            continue
        text, raw = _piece(model, ev.token_id)
        top = []
        for tid, lp in info["top"]:
            t, b = _piece(model, tid)
            top.append(s.TopLogprob(token=t, logprob=lp, bytes=b))
        content.append(s.TokenLogprob(token=text, logprob=info["logprob"], bytes=raw, top_logprobs=top))
    return s.ChoiceLogprobs(content=content)


def _sampling(body: s.SamplingParams) -> dict:
    return dict(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                min_p=body.min_p, repetition_penalty=body.repeat_penalty,
                presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
                stop=[body.stop] if isinstance(body.stop, str) else (body.stop or None),
                stop_tokens=[] if body.ignore_eos else None)


def _messages(items: list[s.ChatMessageIn]) -> list[dict]:
    """Messages for the chat template, every field carried: tool calls of assistant turns,
    tool_call_id of tool results (which must answer an earlier call)."""
    out, call_ids = [], set()
    for i, m in enumerate(items):
        content = m.content
        if isinstance(content, list):   # text parts only: the schema refuses the others
            content = "".join(p.text or "" for p in content)
        for name in ("audio", "function_call", "annotations"):
            if getattr(m, name):
                raise NotSupported(f"messages[{i}].{name} is not supported"
                                   + ("; send tool_calls" if name == "function_call" else ""))
        if m.refusal and not content:  # an earlier refusal, replayed: it is what was said
            content = m.refusal
        role = "system" if m.role == "developer" else m.role
        msg = {"role": role, "content": content or ""}
        if m.name is not None:
            msg["name"] = m.name
        if m.reasoning_content:
            if role != "assistant":
                raise ConfigError(f"messages[{i}]: only assistant messages carry reasoning_content",
                                  field="messages")
            msg["reasoning_content"] = m.reasoning_content
        if m.tool_calls:
            if role != "assistant":
                raise ConfigError(f"messages[{i}]: only assistant messages carry tool_calls",
                                  field="messages")
            msg["tool_calls"] = [c.model_dump() for c in m.tool_calls]
            call_ids.update(c.id for c in m.tool_calls)
        if role == "tool":
            if m.tool_call_id is None:
                raise ConfigError(f"messages[{i}]: a tool message needs tool_call_id", field="messages")
            if m.tool_call_id not in call_ids:
                raise ConfigError(f"messages[{i}].tool_call_id {m.tool_call_id!r} answers no earlier "
                                  "assistant tool call", field="messages")
            msg["tool_call_id"] = m.tool_call_id
        elif m.tool_call_id is not None:
            raise ConfigError(f"messages[{i}]: only tool messages carry tool_call_id", field="messages")
        out.append(msg)
    return out


def _tool_calls(parsed) -> list[s.ToolCall] | None:
    return [s.ToolCall(id=c.id, function=s.FunctionCall(name=c.name, arguments=c.arguments))
            for c in parsed.tool_calls] or None


def _usage(n_prompt_tokens: int, results) -> s.Usage:
    """Usage of every choice; cached tokens: the first choice's (the others share its prompt).
    ``results``: Results in choice order, or Done items in the order they finished."""
    results = sorted(results, key=lambda r: getattr(r, "index", 0))
    done = [r.stats for r in results if r.stats is not None]
    completion = sum(st.tokens_generated for st in done)
    cached = done[0].cached_tokens if done else 0
    return s.Usage(prompt_tokens=n_prompt_tokens, completion_tokens=completion,
                   total_tokens=n_prompt_tokens + completion,
                   prompt_tokens_details=s.PromptTokensDetails(cached_tokens=cached))


async def _first(request, job):
    """The job's first item (after prefill), so errors become statuses before streaming."""
    return await guard(request, job, job.next())


def _unfinished(n: int, done: list) -> list[int]:
    """The choices a failed stream never finished: they end with finish_reason "error"."""
    finished = {d.index for d in done}
    return [i for i in range(n) if i not in finished]


def _error_event(exc) -> str:
    _, info = describe(exc)
    return _sse({"error": info})


# -- chat ------------------------------------------------------------------------------------------------

@router.post("/v1/chat/completions", response_model=s.ChatCompletion, responses={**_ERRORS, **_SSE},
             summary="Create a chat completion (streamed as server-sent events with stream=true)")
async def chat_completions(body: s.ChatCompletionRequest, request: Request):
    state = request.app.state.abi
    name = state.check_model(body.model)
    model = state.model
    plan = model.tool_plan(body.tools, body.tool_choice)
    grammar = grammar_of(response_format=body.response_format, grammar=body.grammar,
                         json_schema=body.json_schema, tool_plan=plan)
    messages = _messages(body.messages)
    ids = await text_work(state, model.chat_tokens, messages, plan=plan,
                         max_tokens=prompt_room(state), template_kwargs=body.chat_template_kwargs)
    check_prompt(state, ids)
    # None: reasoning stays inline; else whether the reply starts inside a <think> block
    inside = None if body.reasoning_format == "none" else \
        prompt_opens_reasoning(model.detokenize(ids[-8:], special=True))
    await check_grammar(state, grammar)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    n_logprobs = (body.top_logprobs or 0) if body.logprobs else 0
    config = make_config(state, len(ids), max_tokens=max_tokens, seed=body.seed,
                         logit_bias=body.logit_bias, logprobs=n_logprobs, grammar=grammar,
                         special_text=needs_special_text(model, plan), **_sampling(body))
    if body.logprobs and n_logprobs == 0:  # logprobs of the chosen tokens only
        config.logprobs = 1
    job = state.scheduler.submit(GenerationRequest(ids, config, body.n), loop=asyncio.get_running_loop())
    meta = dict(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=name,
                system_fingerprint=FINGERPRINT)
    try:
        if body.stream:
            first = await _first(request, job)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            readers = [turn_reader(model, plan, inside) for _ in range(body.n)]
            return JobStreamingResponse(
                _chat_stream(model, job, first, meta, len(ids), body.logprobs, n_logprobs, include_usage,
                             readers), job, "text/event-stream")
        results = await guard(request, job, job.results())
    except ClientGone:
        return gone_response()
    out = []
    for i, r in enumerate(results):
        lp = _trim_top(_chat_logprobs(model, r.events), n_logprobs) if body.logprobs else None
        parsed = read_turn(turn_reader(model, plan, inside), r.text)
        message = s.AssistantMessage(content=parsed.content, reasoning_content=parsed.reasoning,
                                     tool_calls=_tool_calls(parsed), tool_call_error=parsed.parse_error)
        out.append(s.ChatChoice(index=i, message=message, logprobs=lp,
                                finish_reason=finish_reason_of(parsed, finish_reason(r.stats))))
    return s.ChatCompletion(**meta, choices=out, usage=_usage(len(ids), results))


def _trim_top(lp: s.ChoiceLogprobs, n: int) -> s.ChoiceLogprobs:
    """With logprobs on and top_logprobs unset, OpenAI lists no alternatives."""
    for entry in lp.content or []:
        entry.top_logprobs = entry.top_logprobs[:n]
    return lp


def _deltas(events, calls: list) -> list[s.Delta]:
    """Deltas of a turn's events; ``calls`` (the choice's calls so far) gives their index.
    A call comes as OpenAI streams one: a delta with its id, type and name, then its
    arguments (sent once the call is complete and valid: abi.llm.turns)."""
    out = []
    for kind, value in events:
        if kind == "reasoning":
            out.append(s.Delta(reasoning_content=value))
        elif kind == "content":
            out.append(s.Delta(content=value))
        elif kind == "error":
            out.append(s.Delta(content="", tool_call_error=value))
        else:
            k = len(calls)
            calls.append(value)
            out.append(s.Delta(tool_calls=[s.ToolCallDelta(index=k, id=value.id, type="function",
                                                           function=s.FunctionCall(name=value.name))]))
            out.append(s.Delta(tool_calls=[s.ToolCallDelta(index=k, function=s.FunctionCall(
                arguments=value.arguments))]))
    return out


async def _chat_stream(model, job, first, meta, n_prompt, logprobs, n_top, include_usage, readers):
    def chunk(index, delta, lp=None, finish=None):
        return _sse(s.ChatCompletionChunk(**meta, choices=[s.ChunkChoice(
            index=index, delta=delta, logprobs=lp, finish_reason=finish)]))

    n = len(readers)
    events = [[] for _ in range(n)]   # each choice's events, for its finish reason
    calls = [[] for _ in range(n)]
    for i in range(n):
        yield chunk(i, s.Delta(role="assistant", content=""))
    stats = []
    item = first
    try:
        while item is not None:
            if isinstance(item, Token):
                ev, i = item.event, item.index
                lp = _trim_top(_chat_logprobs(model, [ev]), n_top) if logprobs else None
                if lp is not None and not lp.content:
                    lp = None
                new = readers[i].feed(ev.text or "")
                events[i] += new
                deltas = _deltas(new, calls[i])
                if lp is not None and not deltas:
                    deltas = [s.Delta(content="")]
                for k, delta in enumerate(deltas):
                    yield chunk(i, delta, lp if k == 0 else None)
            elif isinstance(item, Done):
                stats.append(item)
                i = item.index
                new = readers[i].finish()
                events[i] += new
                for delta in _deltas(new, calls[i]):
                    yield chunk(i, delta)
                yield chunk(i, s.Delta(), finish=finish_reason_of(join_turn(events[i]),
                                                                  finish_reason(item.stats)))
            item = await job.next()
    except Exception as exc:  # a later choice failed: say so in the stream, as OpenAI does
        for i in _unfinished(n, stats):
            yield chunk(i, s.Delta(), finish="error")
        yield _error_event(exc)
        return
    if include_usage:
        usage = _usage(n_prompt, stats)
        yield _sse(s.ChatCompletionChunk(**meta, choices=[], usage=usage))
    yield SSE_DONE


# -- completions ---------------------------------------------------------------------------------------

def _prompts(model, prompt, room: int) -> list[tuple[list[int], str]]:
    """(token ids, text) per prompt of a completions request; texts longer than ``room``
    tokens can hold are refused untokenised."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and isinstance(prompt[0], int):
        prompt = [prompt]
    out = []
    for p in prompt:
        if isinstance(p, str):
            out.append((model.tokenize(p, max_tokens=room), p))
        else:
            ids = [int(t) for t in p]
            if min(ids) < 0 or max(ids) >= model.n_vocab:
                raise ConfigError(f"prompt token ids must lie in [0, {model.n_vocab})", field="prompt")
            out.append((ids, model.detokenize(ids)))
    return out


def _completion_logprobs(model, events, offset: int) -> s.CompletionLogprobs:
    tokens, lps, tops, offsets = [], [], [], []
    for ev in events:
        info = ev.logprobs
        if info is None or ev.token_id in model.tokenizer.eog_ids:
            continue
        text, _ = _piece(model, ev.token_id)
        tokens.append(text)
        lps.append(info["logprob"])
        tops.append({_piece(model, tid)[0]: lp for tid, lp in info["top"]})
        offsets.append(offset)
        offset += len(text)
    return s.CompletionLogprobs(tokens=tokens, token_logprobs=lps, top_logprobs=tops,
                                text_offset=offsets)


@router.post("/v1/completions", response_model=s.Completion, responses={**_ERRORS, **_SSE},
             summary="Create a text completion (streamed as server-sent events with stream=true)")
async def completions(body: s.CompletionRequest, request: Request):
    state = request.app.state.abi
    name = state.check_model(body.model)
    if body.suffix:
        raise NotSupported("suffix (fill-in-the-middle) is not supported")
    model = state.model
    grammar = grammar_of(response_format=body.response_format, grammar=body.grammar,
                         json_schema=body.json_schema)
    prompts = await text_work(state, _prompts, model, body.prompt, prompt_room(state))
    await check_grammar(state, grammar)
    requests = []
    n_logprobs = body.logprobs or 0
    for ids, _ in prompts:
        check_prompt(state, ids)
        config = make_config(state, len(ids), max_tokens=body.max_tokens, seed=body.seed,
                             logit_bias=body.logit_bias, logprobs=n_logprobs, grammar=grammar,
                             **_sampling(body))
        if body.logprobs is not None and n_logprobs == 0:
            config.logprobs = 1
        requests.append(GenerationRequest(ids, config, body.n))
    job = state.scheduler.submit(requests, loop=asyncio.get_running_loop())
    meta = dict(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=name,
                system_fingerprint=FINGERPRINT)
    n_prompt = sum(len(ids) for ids, _ in prompts)
    echo = [text if body.echo else "" for _, text in prompts for _ in range(body.n)]
    try:
        if body.stream:
            first = await _first(request, job)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return JobStreamingResponse(
                _completion_stream(model, job, first, meta, echo, body.logprobs is not None,
                                   n_logprobs, n_prompt if include_usage else None),
                job, "text/event-stream")
        results = await guard(request, job, job.results())
    except ClientGone:
        return gone_response()
    out = []
    for i, r in enumerate(results):
        lp = None
        if body.logprobs is not None:
            lp = _completion_logprobs(model, r.events, len(echo[i]))
            lp.top_logprobs = [dict(list(t.items())[:n_logprobs]) for t in lp.top_logprobs]
        out.append(s.CompletionChoice(index=i, text=echo[i] + r.text, logprobs=lp,
                                      finish_reason=finish_reason(r.stats)))
    return s.Completion(**meta, choices=out, usage=_usage(n_prompt, results))


async def _completion_stream(model, job, first, meta, echo, logprobs, n_top, usage_prompt):
    def chunk(index, text, lp=None, finish=None):
        return _sse(s.Completion(**meta, choices=[s.CompletionChoice(
            index=index, text=text, logprobs=lp, finish_reason=finish)]))

    for i, text in enumerate(echo):
        if text:
            yield chunk(i, text)
    offsets = [len(t) for t in echo]
    stats = []
    item = first
    try:
        while item is not None:
            if isinstance(item, Token):
                ev, i = item.event, item.index
                lp = None
                if logprobs:
                    lp = _completion_logprobs(model, [ev], offsets[i])
                    lp.top_logprobs = [dict(list(t.items())[:n_top]) for t in lp.top_logprobs]
                    lp = lp if lp.tokens else None
                if ev.text or lp is not None:
                    yield chunk(i, ev.text or "", lp)
                offsets[i] += len(ev.text or "")
            elif isinstance(item, Done):
                stats.append(item)
                yield chunk(item.index, "", finish=finish_reason(item.stats))
            item = await job.next()
    except Exception as exc:
        for i in _unfinished(len(offsets), stats):
            yield chunk(i, "", finish="error")
        yield _error_event(exc)
        return
    if usage_prompt is not None:
        yield _sse(s.Completion(**meta, choices=[], usage=_usage(usage_prompt, stats)))
    yield SSE_DONE


# -- embeddings and models ----------------------------------------------------------------------------------

@router.post("/v1/embeddings", response_model=s.EmbeddingResponse, responses=_ERRORS,
             summary="Create embeddings (when the server was started with --embedding-model)")
async def embeddings(body: s.EmbeddingRequest, request: Request):
    state = request.app.state.abi
    name = state.check_embedding_model(body.model)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)

    def work() -> bytes:  # embedding and serialising thousands of vectors: off the event loop
        vectors, n_tokens = state.embed(texts)
        vectors = _dimensions(vectors, body.dimensions)
        data = []
        for i, v in enumerate(vectors):
            if body.encoding_format == "base64":
                emb = base64.b64encode(np.asarray(v, "<f4").tobytes()).decode("ascii")
            else:
                emb = v.tolist()
            data.append(s.EmbeddingData(index=i, embedding=emb))
        usage = s.EmbeddingUsage(prompt_tokens=n_tokens, total_tokens=n_tokens)
        return s.EmbeddingResponse(data=data, model=name, usage=usage).model_dump_json().encode()

    return Response(await asyncio.to_thread(work), media_type="application/json")


def _dimensions(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Keep the first ``dimensions`` components, unit length again (OpenAI's and Ollama's
    shortening); more than the model has is an error."""
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    if dimensions > vectors.shape[1]:
        raise ConfigError(f"dimensions is {dimensions}; this model's embeddings have "
                          f"{vectors.shape[1]}", field="dimensions")
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return cut / np.where(norms > 0, norms, 1)


@router.get("/v1/models", response_model=s.ModelList, responses=_ERRORS, summary="List the models served")
async def list_models(request: Request):
    state = request.app.state.abi
    state.require_ready()
    created = int(state.started)
    return s.ModelList(data=[s.ModelCard(id=m, created=created) for m in state.model_ids()])


@router.get("/v1/models/{model_id:path}", response_model=s.ModelCard, responses=_ERRORS,
            summary="Describe one model")
async def get_model(model_id: str, request: Request):
    state = request.app.state.abi
    state.require_ready()
    if model_id not in state.model_ids():
        raise UnknownModel(f"the model {model_id!r} is not served here; available: "
                           f"{', '.join(state.model_ids())}")
    return s.ModelCard(id=model_id, created=int(state.started))
