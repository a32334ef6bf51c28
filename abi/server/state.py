"""What one server holds: its options, the engine (one model, N slots), the scheduler, the
optional embedding encoder, metrics, and whether loading has finished."""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import AbiError, ModelLoading, NotSupported, UnknownModel
from ..llm.memory import release_free_memory
from .metrics import Metrics

log = logging.getLogger("abi.server")

DEFAULT_QUEUE = 64
# request bodies: the context's worth of text (tokens x the longest token's bytes) plus room
# for the JSON around it; while the model loads, a fixed bound
BODY_ENVELOPE = 64 * 1024
BODY_BYTES_PER_TOKEN = 64  # where the vocabulary gives no bound of its own
LOADING_MAX_BODY = 1024 * 1024


@dataclass
class ServeOptions:
    model: str | None = None            # path or model-cache name; None: the default model
    embedding_model: str | None = None  # None: no embeddings endpoint
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    parallel: int = 1                   # generation slots
    ctx: int | None = None              # context length per slot (None: the model's)
    queue: int = DEFAULT_QUEUE          # requests that may wait for a slot
    max_tokens: int | None = None       # server-wide cap on tokens per generation
    backend: str = "auto"
    kv_dtype: str = "f32"
    check_finite: bool = True
    threads: int | None = None
    max_body: int | None = None         # bytes per request body (None: from the context)
    lora: tuple = ()                    # LoRA adapters (abi.llm.lora.LoraSpec), run unmerged
    max_memory: int | None = None       # bytes the memory plan may take (None: what is available)
    fit: bool = False                   # shrink the context to fit instead of refusing
    prefill_chunk: int = 64             # longer prompts go into batched steps in pieces


def model_id(path: str) -> str:
    """The name clients use for a model: its file name without ``.gguf``."""
    return Path(path).stem


class ServerState:
    def __init__(self, options: ServeOptions):
        self.options = options
        self.metrics = Metrics()
        self.engine = None
        self.scheduler = None
        self.encoder = None
        self._encoder_lock = threading.Lock()  # the encoder runs one batch at a time
        self.status = "loading"               # loading, ready, error
        self.error: AbiError | None = None
        self.started = time.time()
        self.ready_event = threading.Event()
        self._aliases: dict[str, str] = {}
        self._embedding_aliases: dict[str, str] = {}
        self._describe_lock = threading.Lock()
        self._cards: list[dict] | None = None
        self._max_body: int | None = None
        self._personas = None
        self._personas_lock = threading.Lock()
        # rendering and tokenising prompts: off the event loop, one at a time, so that a burst
        # of huge prompts queues here instead of taking every core and bloating a malloc
        # arena per thread
        self.text_pool = ThreadPoolExecutor(1, thread_name_prefix="abi-text")
        self._text_queued = 0
        self._text_lock = threading.Lock()

    # -- loading --------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model (and the embedding model); blocking. Errors end in ``self.error``."""
        from ..llm import Engine

        o = self.options
        try:
            model_opts = {"n_ctx": o.ctx, "kv_dtype": o.kv_dtype, "check_finite": o.check_finite,
                          "lora": list(o.lora)}
            if o.threads is not None:
                model_opts["n_threads"] = o.threads
            engine = Engine(n_slots=o.parallel, backend=o.backend, max_memory=o.max_memory, fit=o.fit,
                            preallocate=True, prefill_chunk=o.prefill_chunk, max_queue=o.queue,
                            **model_opts).load_model(o.model)
            encoder = None
            if o.embedding_model is not None:
                from ..embeddings import Encoder

                name = None if o.embedding_model in ("", "default") else o.embedding_model
                encoder = Encoder(name)
            tok = engine.model.tokenizer
            per_token = getattr(tok, "max_token_bytes", None) or BODY_BYTES_PER_TOKEN
            self._max_body = engine.model.n_ctx * per_token + BODY_ENVELOPE
            self.engine, self.encoder = engine, encoder
            # the engine's one scheduler: every route, persona and agent on it is counted
            self.scheduler = engine.scheduler
            self.scheduler.on_generation = self.metrics.record_generation
            self.scheduler.on_rejected = self.metrics.record_rejected
            self._aliases = _aliases(engine.model.path, o.model)
            if encoder is not None:
                self._embedding_aliases = _aliases(encoder.path, o.embedding_model)
            self.status = "ready"
            log.info("model %s ready (%d slot(s), context %d)", self.model_id, o.parallel,
                     engine.model.n_ctx)
        except AbiError as exc:
            self.error, self.status = exc, "error"
            log.error("loading failed: %s", exc)
        except Exception as exc:  # an unexpected failure still ends the loading state
            self.error, self.status = AbiError(f"loading the model failed: {exc}"), "error"
            log.exception("loading failed")
        finally:
            self.ready_event.set()

    def load_in_background(self) -> threading.Thread:
        t = threading.Thread(target=self.load, name="abi-load", daemon=True)
        t.start()
        return t

    def text_job(self, job):
        """Run ``job`` (in the text thread). Tokenising a long text frees tens of MB in many
        small blocks, which the allocator keeps; once no more work waits, hand the free
        pages back, so that a burst of huge prompts leaves no lasting footprint."""
        with self._text_lock:
            self._text_queued += 1
        try:
            return job()
        finally:
            with self._text_lock:
                self._text_queued -= 1
                idle = self._text_queued == 0
            if idle:
                release_free_memory()

    def personas(self):
        """The persona system, built on first use: its behaviour from the environment
        (``MultiPersonaConfig.from_env``), its local endpoints answered by this server's engine
        through its scheduler (slots, queue, metrics)."""
        self.require_ready()
        with self._personas_lock:
            if self._personas is None:
                from ..agents.backends import LocalBackend
                from ..personas import MultiPersonaConfig, MultiPersonaSystem

                self._personas = MultiPersonaSystem(
                    MultiPersonaConfig.from_env(), local=LocalBackend(
                        engine=self.engine, max_tokens=self.options.max_tokens))
            return self._personas

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()   # its scheduler too
        self.text_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def max_body(self) -> int:
        """Bytes a request body may hold: ``--max-body-bytes``, else what the model's context
        can hold once it is loaded."""
        if self.options.max_body is not None:
            return self.options.max_body
        return self._max_body or LOADING_MAX_BODY

    # -- readiness and names -----------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def require_ready(self) -> None:
        if self.status == "ready":
            return
        if self.status == "error":
            raise self.error
        raise ModelLoading("the model is still loading; retry in a moment")

    @property
    def model(self):
        self.require_ready()
        return self.engine.model

    @property
    def model_id(self) -> str:
        return model_id(self.engine.model.path) if self.engine else ""

    @property
    def embedding_id(self) -> str | None:
        return model_id(self.encoder.path) if self.encoder else None

    def model_ids(self) -> list[str]:
        ids = [self.model_id] if self.engine else []
        return ids + ([self.embedding_id] if self.encoder else [])

    def check_model(self, name: str) -> str:
        """The served LLM's id for ``name`` (UnknownModel when it names another)."""
        self.require_ready()
        if name in self._aliases:
            return self.model_id
        raise UnknownModel(f"the model {name!r} is not served here; available: "
                           f"{', '.join(self.model_ids())}")

    def check_embedding_model(self, name: str) -> str:
        self.require_ready()
        if self.encoder is None:
            raise NotSupported("this server has no embedding model; start it with "
                               "--embedding-model NAME (e.g. all-minilm-l6-v2)")
        if name in self._embedding_aliases:
            return self.embedding_id
        raise UnknownModel(f"the embedding model {name!r} is not served here; available: "
                           f"{self.embedding_id}")

    def embed(self, texts: list[str], truncate: bool = False):
        """Embedding rows for ``texts`` (blocking: call from a worker thread)."""
        with self._encoder_lock:
            saved = self.encoder.truncate
            self.encoder.truncate = truncate
            try:
                vectors = self.encoder.encode_batch(texts)
                n_tokens = sum(len(ids) for ids in self.encoder.tokenize(texts))
            finally:
                self.encoder.truncate = saved
        return vectors, n_tokens

    # -- descriptions (Ollama's tags, ps and show) -------------------------------------------------
    def describe_models(self) -> list[dict]:
        """Ollama's card for each model (hashes the files once: call from a worker thread)."""
        with self._describe_lock:
            if self._cards is None:
                paths = [self.engine.model.path] + ([self.encoder.path] if self.encoder else [])
                self._cards = [_card(p) for p in paths]
        return self._cards

    def show(self, name: str) -> dict:
        embedding = self.encoder is not None and name in self._embedding_aliases
        if not embedding:
            self.check_model(name)
        wanted = self.embedding_id if embedding else self.model_id
        card = next(c for c in self.describe_models() if c["name"] == wanted)
        if embedding:
            from ..gguf import load

            path = self.encoder.path
            metadata, template, params = load(path).metadata, "", ""
        else:
            model = self.engine.model
            path, metadata, template = model.path, model.gguf.metadata, model.template.source
            tok = model.tokenizer
            stops = sorted({tok.tokens[i] for i in tok.eog_ids if 0 <= i < tok.n_vocab})
            params = "\n".join(f'stop "{t}"' for t in stops)
        info = {}
        for key, value in metadata.items():
            shown = _json_value(value)
            if shown is not None:
                info[key] = shown
        return {"modelfile": f"# served by abi\nFROM {path}\n", "parameters": params,
                "template": template, "details": card["details"], "model_info": info,
                "capabilities": ["embedding"] if embedding else ["completion"],
                "modified_at": card["modified_at"]}

    @property
    def encoder_n_ctx(self) -> int:
        return int(self.encoder.max_tokens) if self.encoder else 0


def _aliases(path: str, given: str | None) -> dict[str, str]:
    """Names a request may use for a model: its id, ``id:latest``, the file name, the path."""
    stem = model_id(path)
    names = {stem, f"{stem}:latest", os.path.basename(path), str(path)}
    if given:
        names.add(given)
    return {n: stem for n in names}


# -- model descriptions (Ollama's tags, ps and show) -----------------------------------------------

def _param_size(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _card(path: str) -> dict:
    """Ollama's description of a model file (hashing it once: call from a worker thread)."""
    import datetime

    from ..gguf import load
    from ..llm.info import model_info
    from ..models_hub import describe

    entry = describe(Path(path))
    info = model_info(load(path))
    stat = os.stat(path)
    modified = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc)
    family = info["architecture"]
    return {"name": model_id(path), "model": model_id(path),
            "modified_at": modified.isoformat().replace("+00:00", "Z"),
            "size": stat.st_size, "digest": _sha256(path),
            "details": {"parent_model": "", "format": "gguf", "family": family,
                        "families": [family], "parameter_size": _param_size(info["n_params"]),
                        "quantization_level": str(entry.get("quant", "?"))}}


def _json_value(value):
    """A metadata value for JSON, or None when it is too big to show (vocabularies, merges)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) <= 64:
        items = [_json_value(v) for v in value]
        return None if any(v is None for v in items) else items
    return None
