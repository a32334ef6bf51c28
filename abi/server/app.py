"""The FastAPI application: OpenAI, Ollama, llama.cpp-style and persona routes over one
ServerState, behind the API-key / body-size / metrics middleware. The OpenAPI spec is at
/openapi.json. Routes reach the state as ``request.app.state.abi``."""
from __future__ import annotations

import contextlib

from fastapi import FastAPI

from .. import __version__
from . import errors
from .middleware import ServerMiddleware
from .state import ServeOptions, ServerState


def create_app(options: ServeOptions | None = None, state: ServerState | None = None,
               load: bool = True) -> FastAPI:
    """An app for ``options`` (or an existing ``state``). With ``load``, the model loads in a
    background thread when the app starts, so /health answers 503 meanwhile."""
    state = state or ServerState(options or ServeOptions())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if load and state.status == "loading" and not state.ready_event.is_set():
            state.load_in_background()
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="abi", version=__version__, lifespan=lifespan,
                  description="OpenAI- and Ollama-compatible API over abi's GGUF runtime.")
    app.state.abi = state
    from .extras_routes import router as extras
    from .llama_routes import router as llama
    from .ollama_routes import router as ollama
    from .openai_routes import router as openai
    from .persona_routes import router as personas

    for router in (openai, ollama, llama, extras, personas):
        app.include_router(router)
    errors.install(app)
    app.add_middleware(ServerMiddleware, state=state)
    return app
