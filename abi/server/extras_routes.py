"""llama.cpp-style extras: /health, /metrics, /tokenize, /detokenize, /props."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from .. import __version__
from ..errors import ConfigError
from ..llm.streaming import StreamingConfig
from . import schemas as s
from .metrics import CONTENT_TYPE
from .streams import text_work

router = APIRouter(tags=["Server"])
_ERRORS = {400: {"model": s.ErrorResponse}, 401: {"model": s.ErrorResponse},
           503: {"model": s.ErrorResponse}}


@router.get("/health", response_model=s.Health, response_model_exclude_none=True,
            responses={503: {"model": s.Health, "description": "still loading"},
                       500: {"model": s.Health, "description": "loading failed"}},
            summary="200 once the model is loaded, 503 while loading (no API key needed)")
async def health(request: Request):
    state = request.app.state.abi
    if state.status == "loading":
        return JSONResponse(s.Health(status="loading").model_dump(exclude_none=True), status_code=503)
    if state.status == "error":
        return JSONResponse(s.Health(status="error", message=str(state.error)).model_dump(exclude_none=True),
                            status_code=500)
    sched = state.scheduler
    busy = sched.busy_slots
    return s.Health(status="ok", slots_idle=sched.n_slots - busy, slots_processing=busy,
                    queue_depth=sched.queue_depth)


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}}},
            summary="Prometheus metrics: requests, tokens, throughput, queue depth, busy slots")
async def metrics(request: Request):
    state = request.app.state.abi
    sched = state.scheduler
    text = state.metrics.render(busy_slots=sched.busy_slots if sched else 0,
                                total_slots=sched.n_slots if sched else state.options.parallel,
                                queue_depth=sched.queue_depth if sched else 0,
                                queue_limit=state.options.queue, model_loaded=state.ready)
    return PlainTextResponse(text, media_type=CONTENT_TYPE)


@router.post("/tokenize", response_model=s.TokenizeResponse, responses=_ERRORS,
             summary="Text to token ids (optionally with each token's text)")
async def tokenize(body: s.TokenizeRequest, request: Request):
    state = request.app.state.abi
    model = state.model
    ids = await text_work(state, model.tokenize, body.content,
                          None if body.add_special else False, body.parse_special)
    if not body.with_pieces:
        return s.TokenizeResponse(tokens=ids)
    tok = model.tokenizer
    return s.TokenizeResponse(tokens=[
        s.TokenPiece(id=t, piece=tok.token_to_piece(t, special=True).decode("utf-8", "replace"))
        for t in ids])


@router.post("/detokenize", response_model=s.DetokenizeResponse, responses=_ERRORS,
             summary="Token ids to text")
async def detokenize(body: s.DetokenizeRequest, request: Request):
    state = request.app.state.abi
    model = state.model
    if body.tokens and (min(body.tokens) < 0 or max(body.tokens) >= model.n_vocab):
        raise ConfigError(f"token ids must lie in [0, {model.n_vocab})", field="tokens")
    text = await text_work(state, model.detokenize, body.tokens)
    return s.DetokenizeResponse(content=text)


@router.get("/props", response_model=s.Props, responses=_ERRORS,
            summary="The server's model, slots and default generation settings")
async def props(request: Request):
    state = request.app.state.abi
    model = state.model
    d = StreamingConfig()
    cap = state.options.max_tokens
    tok = model.tokenizer
    text = lambda i: tok.tokens[i] if i is not None and 0 <= i < tok.n_vocab else ""
    settings = s.GenerationSettings(
        n_ctx=model.n_ctx, max_tokens=cap if cap is not None else -1, temperature=d.temperature,
        top_k=d.top_k, top_p=d.top_p, min_p=d.min_p, repeat_penalty=d.repetition_penalty,
        repeat_last_n=d.repetition_window, presence_penalty=d.presence_penalty,
        frequency_penalty=d.frequency_penalty)
    return s.Props(model=state.model_id, model_path=model.path, embedding_model=state.embedding_id,
                   total_slots=state.scheduler.n_slots, queue_limit=state.options.queue,
                   n_ctx=model.n_ctx, n_vocab=model.n_vocab, max_body_bytes=state.max_body,
                   backend=str(model.backend),
                   chat_template=model.template.source, bos_token=text(tok.bos_id),
                   eos_token=text(tok.eos_id), default_generation_settings=settings,
                   build_info=f"abi {__version__}")
