"""Ollama API: /api/generate and /api/chat (NDJSON streams), /api/embed, /api/embeddings,
/api/tags, /api/show, /api/ps, /api/version. Durations are nanoseconds, as in Ollama."""
from __future__ import annotations

import asyncio
import datetime
import json

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import __version__
from ..errors import ConfigError, NotSupported
from . import schemas as s
from .errors import describe
from .openai_routes import _dimensions
from ..llm.scheduler import Done, GenerationRequest, Token
from ..llm.reasoning import prompt_opens_reasoning
from ..llm.tools import ParsedReply, ToolCall
from ..llm.turns import needs_special_text, read_turn, turn_reader
from .streams import (ClientGone, JobStreamingResponse, check_grammar, check_prompt,
                      finish_reason, gone_response, grammar_of, guard, make_config, now_ns,
                      prompt_room, text_work)

router = APIRouter(tags=["Ollama"])

_ERRORS = {400: {"model": s.OllamaError}, 401: {"model": s.OllamaError},
           404: {"model": s.OllamaError}, 429: {"model": s.OllamaError},
           503: {"model": s.OllamaError}}
_NDJSON = {200: {"content": {"application/x-ndjson": {}}}}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _line(obj) -> str:
    return (obj.model_dump_json(exclude_none=True) if hasattr(obj, "model_dump_json")
            else json.dumps(obj)) + "\n"


def _config(state, n_prompt: int, opts: s.OllamaOptions | None, logprobs: bool, top: int | None,
            grammar=None, special_text: bool = False):
    o = opts or s.OllamaOptions()
    penalty, window = o.repeat_penalty, o.repeat_last_n
    if window == 0:       # Ollama: 0 turns the repeat penalty off
        penalty, window = 1.0, None
    elif window == -1:    # Ollama: -1 looks back over the whole context
        window = 0
    n_logprobs = (top or 1) if logprobs else 0
    return make_config(state, n_prompt, max_tokens=o.num_predict, ctx_limit=o.num_ctx,
                       seed=o.seed, temperature=o.temperature, top_k=o.top_k, top_p=o.top_p,
                       min_p=o.min_p, repetition_penalty=penalty, repetition_window=window,
                       presence_penalty=o.presence_penalty, frequency_penalty=o.frequency_penalty,
                       stop=o.stop or None, logprobs=n_logprobs, grammar=grammar,
                       special_text=special_text)


def _unsupported(images) -> None:
    if images:
        raise NotSupported("images are not supported: the served model reads text only")


def _messages(items: list[s.OllamaMessageIn]) -> list[dict]:
    """Ollama messages in the runtime's (OpenAI's) shape: calls get ids, and a tool result
    answers the latest unanswered call of its tool (Ollama names tools, not calls)."""
    out, open_calls = [], []
    for i, m in enumerate(items):
        msg = {"role": m.role, "content": m.content or ""}
        if m.thinking:
            if m.role != "assistant":
                raise ConfigError(f"messages[{i}]: only assistant messages carry thinking", field="messages")
            msg["reasoning_content"] = m.thinking
        if m.tool_calls:
            if m.role != "assistant":
                raise ConfigError(f"messages[{i}]: only assistant messages carry tool_calls",
                                  field="messages")
            calls = [ToolCall(c.function.name, json.dumps(c.function.arguments, ensure_ascii=False))
                     for c in m.tool_calls]
            msg["tool_calls"] = [c.to_openai() for c in calls]
            open_calls += calls
        if m.role == "tool":
            match = next((c for c in reversed(open_calls)
                          if m.tool_name is None or c.name == m.tool_name), None)
            if match is not None:
                open_calls.remove(match)
                msg["tool_call_id"] = match.id
            msg["name"] = m.tool_name or (match.name if match else None)
            if msg["name"] is None:
                del msg["name"]
        elif m.tool_name is not None:
            raise ConfigError(f"messages[{i}]: only tool messages carry tool_name", field="messages")
        out.append(msg)
    return out


def _logprobs(model, events, top: int) -> list[s.OllamaLogprob]:
    out = []
    for ev in events:
        info = ev.logprobs
        if info is None or ev.token_id in model.tokenizer.eog_ids:
            continue
        piece = lambda t: model.tokenizer.token_to_piece(int(t)).decode("utf-8", "replace")
        alts = [s.OllamaTokenLogprob(token=piece(t), logprob=lp) for t, lp in info["top"][:top]]
        out.append(s.OllamaLogprob(token=piece(ev.token_id), logprob=info["logprob"],
                                   top_logprobs=alts or None))
    return out


def _timings(model_name: str, stats, job, t0: int) -> dict:
    """Ollama's final-object statistics. load_duration is the time this request waited for a
    slot: the model itself is loaded once, when the server starts."""
    total = stats.total_time_ns if stats else 0
    prefill = stats.prefill_time_ns if stats else 0
    return dict(model=model_name, created_at=_now(), done=True, done_reason=finish_reason(stats),
                total_duration=now_ns() - t0, load_duration=job.wait_ns,
                prompt_eval_count=(stats.prompt_tokens - stats.cached_tokens) if stats else 0,
                prompt_eval_duration=prefill,
                eval_count=stats.tokens_generated if stats else 0,
                eval_duration=max(total - prefill, 0))


def _parts(events, keep_empty: bool) -> list[tuple]:
    """(reply, thinking) arguments of the stream's parts for a turn's events: each call whole
    in its own part, as Ollama streams them."""
    parts = []
    for kind, value in events:
        if kind == "reasoning":
            parts.append((ParsedReply(""), value))
        elif kind == "content":
            parts.append((ParsedReply(value), None))
        elif kind == "call":
            parts.append((ParsedReply("", [value]), None))
        else:
            parts.append((ParsedReply("", parse_error=value), None))
    return parts or ([(ParsedReply(""), None)] if keep_empty else [])


def _loaded(model_name: str, chat: bool):
    """Ollama's answer to an empty request: the model is loaded."""
    base = dict(model=model_name, created_at=_now(), done=True, done_reason="load")
    if chat:
        return s.OllamaChatResponse(**base, message=s.OllamaMessageOut(content=""))
    return s.OllamaGenerateResponse(**base, response="")


async def _run(request, state, body, ids, make_final, make_part, t0, grammar=None, reader=None,
               special_text=False):
    """Submit one generation; a JSON reply, or an NDJSON stream ending in the final object.
    A ``reader`` (chat: abi.llm.turns) splits the reply into content, ``thinking`` and tool
    calls; without one the text is the reply."""
    model = state.model
    top = body.top_logprobs or 0
    await check_grammar(state, grammar)
    config = _config(state, len(ids), body.options, body.logprobs, body.top_logprobs, grammar,
                     special_text)
    job = state.scheduler.submit(GenerationRequest(ids, config), loop=asyncio.get_running_loop())
    try:
        if not body.stream:
            (result,) = await guard(request, job, job.results())
            lp = _logprobs(model, result.events, top) if body.logprobs else None
            parsed = ParsedReply(result.text) if reader is None else read_turn(reader, result.text)
            return make_final(parsed, result.tokens, result.stats, job, lp)
        first = await guard(request, job, job.next())
    except ClientGone:
        return gone_response()

    def events(text: str, final: bool = False) -> list[tuple]:
        if reader is None:
            return [("content", text)] if text else []
        return reader.finish() if final else reader.feed(text)

    async def lines():
        item = first
        try:
            while item is not None:
                if isinstance(item, Token):
                    ev = item.event
                    lp = _logprobs(model, [ev], top) if body.logprobs else None
                    for k, (reply, thinking) in enumerate(_parts(events(ev.text or ""), bool(lp))):
                        yield _line(make_part(reply, lp if k == 0 else None, thinking))
                elif isinstance(item, Done):
                    for reply, thinking in _parts(events("", final=True), False):
                        yield _line(make_part(reply, None, thinking))
                    yield _line(make_final(ParsedReply(""), item.tokens, item.stats, job, None))
                item = await job.next()
        except Exception as exc:
            yield json.dumps({"error": describe(exc)[1]["message"]}) + "\n"

    return JobStreamingResponse(lines(), job, "application/x-ndjson")


@router.post("/api/generate", response_model=s.OllamaGenerateResponse, responses={**_ERRORS, **_NDJSON},
             response_model_exclude_none=True,
             summary="Generate a completion for a prompt (NDJSON stream unless stream=false)")
async def generate(body: s.OllamaGenerateRequest, request: Request):
    t0 = now_ns()
    state = request.app.state.abi
    name = state.check_model(body.model)
    _unsupported(body.images)
    grammar = grammar_of(ollama_format=body.format)
    if body.suffix:
        raise NotSupported("suffix (fill-in-the-middle) is not supported")
    if not body.prompt and not body.context:
        return _loaded(name, chat=False)
    model = state.model
    context = list(body.context or [])
    if context and (min(context) < 0 or max(context) >= model.n_vocab):
        raise ConfigError(f"context token ids must lie in [0, {model.n_vocab})", field="context")

    ctx_limit = body.options.num_ctx if body.options else None
    room = prompt_room(state, ctx_limit, len(context))

    def prompt_ids():  # rendering and tokenising a large prompt: off the event loop
        if not body.prompt:
            return []
        if body.raw:
            return model.tokenize(body.prompt, add_bos=False if context else None, max_tokens=room)
        messages = ([{"role": "system", "content": body.system}] if body.system else [])
        return model.chat_tokens(messages + [{"role": "user", "content": body.prompt}],
                                 max_tokens=room)

    ids = context + await text_work(state, prompt_ids)
    check_prompt(state, ids, ctx_limit)

    def final(reply, tokens, stats, job, lp):
        return s.OllamaGenerateResponse(**_timings(name, stats, job, t0), response=reply.content or "",
                                        context=ids + list(tokens), logprobs=lp)

    def part(reply, lp, thinking=None):   # /api/generate keeps reasoning in the response text
        return s.OllamaGenerateResponse(model=name, created_at=_now(), done=False,
                                        response=reply.content or "", logprobs=lp)

    return await _run(request, state, body, ids, final, part, t0, grammar)


@router.post("/api/chat", response_model=s.OllamaChatResponse, responses={**_ERRORS, **_NDJSON},
             response_model_exclude_none=True,
             summary="Reply to a conversation (NDJSON stream unless stream=false)")
async def chat(body: s.OllamaChatRequest, request: Request):
    t0 = now_ns()
    state = request.app.state.abi
    name = state.check_model(body.model)
    _unsupported([m for m in body.messages if m.images])
    model = state.model
    plan = model.tool_plan(body.tools, body.tool_choice)
    grammar = grammar_of(ollama_format=body.format, tool_plan=plan)
    if not body.messages:
        return _loaded(name, chat=True)
    messages = _messages(body.messages)
    ctx_limit = body.options.num_ctx if body.options else None
    # think false asks the template not to reason (Qwen3's enable_thinking); otherwise any
    # reasoning the reply holds comes apart as message.thinking
    kwargs = {"enable_thinking": False} if body.think is False else None
    ids = await text_work(state, model.chat_tokens, messages, plan=plan,
                         max_tokens=prompt_room(state, ctx_limit), template_kwargs=kwargs)
    check_prompt(state, ids, ctx_limit)
    inside = prompt_opens_reasoning(model.detokenize(ids[-8:], special=True))

    def message(reply, thinking=None):
        calls = [c.to_ollama() for c in reply.tool_calls] or None
        return s.OllamaMessageOut(content=reply.content or "", thinking=thinking or None, tool_calls=calls,
                                  tool_call_error=reply.parse_error)

    def final(reply, tokens, stats, job, lp):
        timings = _timings(name, stats, job, t0)
        return s.OllamaChatResponse(**timings, message=message(reply, reply.reasoning), logprobs=lp)

    def part(reply, lp, thinking=None):
        return s.OllamaChatResponse(model=name, created_at=_now(), done=False,
                                    message=message(reply, thinking), logprobs=lp)

    return await _run(request, state, body, ids, final, part, t0, grammar,
                      turn_reader(model, plan, inside), needs_special_text(model, plan))


@router.post("/api/embed", response_model=s.OllamaEmbedResponse, responses=_ERRORS,
             summary="Embed one text or a list of texts")
async def embed(body: s.OllamaEmbedRequest, request: Request):
    t0 = now_ns()
    state = request.app.state.abi
    name = state.check_embedding_model(body.model)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)

    def work() -> bytes:  # embedding and serialising thousands of vectors: off the event loop
        if texts:
            vectors, n_tokens = state.embed(texts, body.truncate)
            vectors = _dimensions(vectors, body.dimensions)
        else:
            vectors, n_tokens = np.zeros((0, state.encoder.dimension), np.float32), 0
        return s.OllamaEmbedResponse(model=name, embeddings=vectors.tolist(),
                                     total_duration=now_ns() - t0, load_duration=0,
                                     prompt_eval_count=n_tokens).model_dump_json().encode()

    return Response(await asyncio.to_thread(work), media_type="application/json")


@router.post("/api/embeddings", response_model=s.OllamaEmbeddingsResponse, responses=_ERRORS,
             summary="Embed one text (the older endpoint)")
async def embeddings(body: s.OllamaEmbeddingsRequest, request: Request):
    state = request.app.state.abi
    state.check_embedding_model(body.model)
    vectors, _ = await asyncio.to_thread(state.embed, [body.prompt], True)
    return s.OllamaEmbeddingsResponse(embedding=vectors[0].tolist())


@router.get("/api/tags", response_model=s.OllamaTags, responses=_ERRORS, summary="List the models served")
async def tags(request: Request):
    state = request.app.state.abi
    state.require_ready()
    cards = await asyncio.to_thread(state.describe_models)
    return s.OllamaTags(models=[s.OllamaModel(**c) for c in cards])


@router.get("/api/ps", response_model=s.OllamaPs, responses=_ERRORS, summary="List the models in memory")
async def ps(request: Request):
    state = request.app.state.abi
    state.require_ready()
    cards = await asyncio.to_thread(state.describe_models)
    far = "2100-01-01T00:00:00Z"  # loaded for the server's lifetime
    out = []
    for c in cards:
        n_ctx = state.engine.model.n_ctx if c["name"] == state.model_id else state.encoder_n_ctx
        out.append(s.OllamaRunningModel(**c, expires_at=far, size_vram=0, context_length=n_ctx))
    return s.OllamaPs(models=out)


@router.post("/api/show", response_model=s.OllamaShowResponse, responses=_ERRORS,
             summary="Describe a model: details, template, parameters, metadata")
async def show(body: s.OllamaShowRequest, request: Request):
    state = request.app.state.abi
    state.require_ready()
    name = body.model or body.name
    if not name:
        raise ConfigError("give the model's name in 'model'", field="model")
    info = await asyncio.to_thread(state.show, name)
    return s.OllamaShowResponse(**info)


@router.get("/api/version", response_model=s.OllamaVersion, summary="The server's version")
async def version():
    return s.OllamaVersion(version=__version__)
