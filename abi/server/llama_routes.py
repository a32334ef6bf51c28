"""llama-server's own generation route: /completion (``prompt``, ``n_predict``, ``grammar``,
``json_schema``, ... ; the answer's ``content``, ``stop``, ``tokens_predicted``, ``timings``;
streamed as SSE ``data:`` lines, the last with ``stop`` true, and no ``[DONE]``)."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from ..errors import ConfigError
from ..llm.sse import sse_event
from . import schemas as s
from .errors import describe
from ..llm.scheduler import Done, GenerationRequest, Token
from .streams import (ClientGone, JobStreamingResponse, check_grammar, check_prompt,
                      gone_response, grammar_of, guard, make_config, prompt_room, text_work)

router = APIRouter(tags=["llama-server"])
_ERRORS = {400: {"model": s.ErrorResponse}, 401: {"model": s.ErrorResponse},
           429: {"model": s.ErrorResponse}, 503: {"model": s.ErrorResponse}}


def _logit_bias(bias) -> dict | None:
    """llama-server's ``[[id, bias], ...]`` or ``{"id": bias}``; ``false`` bans the token."""
    if not bias:
        return None
    pairs = bias.items() if isinstance(bias, dict) else bias
    out = {}
    for key, value in pairs:
        try:
            token = int(key)
        except ValueError:
            raise ConfigError("logit_bias keys must be token ids (text keys are not supported)",
                              field="logit_bias") from None
        out[str(token)] = -100.0 if value is False else float(value)
    return out


def _probs(model, events) -> list[s.LlamaProbs]:
    def entry(tid, lp):
        raw = model.tokenizer.token_to_piece(int(tid))
        return dict(id=int(tid), logprob=lp, token=raw.decode("utf-8", "replace"), bytes=list(raw))

    return [s.LlamaProbs(**entry(ev.token_id, ev.logprobs["logprob"]),
                         top_logprobs=[s.LlamaTokenProb(**entry(t, lp)) for t, lp in ev.logprobs["top"]])
            for ev in events if ev.logprobs is not None and ev.token_id not in model.tokenizer.eog_ids]


def _timings(stats) -> s.LlamaTimings:
    prompt_n = stats.prompt_tokens - stats.cached_tokens
    prompt_ms, predicted_ms = stats.prefill_time_ns / 1e6, stats.decode_time_ns / 1e6
    return s.LlamaTimings(
        cache_n=stats.cached_tokens, prompt_n=prompt_n, prompt_ms=prompt_ms,
        prompt_per_token_ms=prompt_ms / prompt_n if prompt_n else 0.0,
        prompt_per_second=stats.prefill_tokens_per_second(), predicted_n=stats.tokens_generated,
        predicted_ms=predicted_ms,
        predicted_per_token_ms=predicted_ms / stats.decode_steps if stats.decode_steps else 0.0,
        predicted_per_second=stats.tokens_per_second())


def _stop_type(model, stop: list[str], done: Done) -> tuple[str, str]:
    """(stop_type, stopping_word): a stop string is the text the generated tokens hold past
    the returned content."""
    reason = done.stats.finish_reason
    if reason in ("length", "timeout"):
        return "limit", ""
    if reason != "stop":
        return "none", ""
    rest = model.detokenize(done.tokens)[len(done.text):]
    word = next((w for w in stop if rest.startswith(w)), None)
    return ("word", word) if word is not None else ("eos", "")


@router.post("/completion", response_model=s.LlamaCompletion, responses=_ERRORS,
             response_model_exclude_none=True,
             summary="llama-server's completion of a prompt (SSE data lines with stream=true)")
async def completion(body: s.LlamaCompletionRequest, request: Request):
    state = request.app.state.abi
    name = state.check_model(body.model) if body.model else state.model_id
    model = state.model
    grammar = grammar_of(grammar=body.grammar, json_schema=body.json_schema)
    if isinstance(body.prompt, str):
        # llama-server parses special tokens in prompt text
        ids = await text_work(state, model.tokenize, body.prompt, special=True,
                              max_tokens=prompt_room(state))
        prompt_text = body.prompt
    else:
        ids = list(body.prompt)
        prompt_text = await text_work(state, model.detokenize, ids)
    check_prompt(state, ids)
    await check_grammar(state, grammar)
    penalty, window = body.repeat_penalty, body.repeat_last_n
    if window == 0:       # llama-server: 0 turns the repeat penalty off, -1 looks back over the context
        penalty, window = 1.0, None
    elif window == -1:
        window = 0
    config = make_config(state, len(ids), max_tokens=body.n_predict, seed=None if body.seed == -1 else body.seed,
                         logit_bias=_logit_bias(body.logit_bias), temperature=body.temperature,
                         top_k=body.top_k, top_p=body.top_p, min_p=body.min_p,
                         repetition_penalty=penalty, repetition_window=window,
                         presence_penalty=body.presence_penalty,
                         frequency_penalty=body.frequency_penalty, stop=body.stop or None,
                         logprobs=body.n_probs, grammar=grammar,
                         stop_tokens=[] if body.ignore_eos else None)
    job = state.scheduler.submit(GenerationRequest(ids, config), loop=asyncio.get_running_loop())

    def final(done: Done, content: str, events) -> s.LlamaCompletion:
        stop_type, word = _stop_type(model, body.stop, done)
        st = done.stats
        return s.LlamaCompletion(
            content=content, tokens=list(done.tokens) if body.return_tokens and content else [],
            stop=True, model=name, tokens_predicted=st.tokens_generated, tokens_evaluated=len(ids),
            prompt=prompt_text, has_new_line="\n" in done.text,
            truncated=len(ids) + st.tokens_generated >= model.n_ctx, stop_type=stop_type,
            stopping_word=word, tokens_cached=st.cached_tokens, timings=_timings(st),
            completion_probabilities=_probs(model, events) if body.n_probs and events else None)

    try:
        if not body.stream:
            (result,) = await guard(request, job, job.results())
            done = Done(0, result.stats, result.text, result.tokens)
            return final(done, result.text, result.events)
        first = await guard(request, job, job.next())
    except ClientGone:
        return gone_response()

    async def events():
        item, n = first, 0
        try:
            while item is not None:
                if isinstance(item, Token):
                    ev = item.event
                    n += 1
                    if ev.text or (body.n_probs and ev.logprobs is not None):
                        probs = _probs(model, [ev]) if body.n_probs else None
                        yield sse_event(s.LlamaCompletion(
                            content=ev.text or "", tokens=[ev.token_id], stop=False,
                            tokens_predicted=n, tokens_evaluated=len(ids),
                            completion_probabilities=probs or None).model_dump_json(exclude_none=True))
                elif isinstance(item, Done):
                    yield sse_event(final(item, "", None).model_dump_json(exclude_none=True))
                item = await job.next()
        except Exception as exc:   # llama-server sends the error as the stream's last data line
            yield sse_event({"error": describe(exc)[1]})

    return JobStreamingResponse(events(), job, "text/event-stream")
