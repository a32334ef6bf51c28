"""``Engine``: a loaded model plus generation slots (a KV cache each, reused across calls
for the longest common prompt prefix), the scheduler every generation on them goes through,
and the reference's streaming API on top."""
from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from typing import Callable, Iterable, Sequence

from ..errors import ConfigError
from .generation import StreamingResponse, common_prefix
from .scheduler import GenerationRequest, JobStream, Scheduler
from .streaming import StreamingConfig, StreamingStats

log = logging.getLogger("abi.llm")

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(StreamingConfig)}


class Slot:
    """One sequence's KV cache, the lock that serialises its use, and its engine's slots
    (``peers``, itself among them), whose cached prompt prefixes it may copy. ``rows``, one
    lock for all the peers, is held to cut a cache or copy rows between them: a generation
    writes only positions past its cache's tokens, so rows a copy reads stay put."""

    def __init__(self, cache):
        self.cache = cache
        self.lock = threading.Lock()
        self.peers: list[Slot] = [self]
        self.rows = threading.Lock()

    def hold_prefix(self, ids: Sequence[int], share: bool = True) -> int:
        """Keep the longest prefix of ``ids[:-1]`` this cache or (``share``) a peer's holds,
        the peer's rows copied (a system prompt that every conversation starts with is
        prefilled once), and forget the rest; returns the positions kept. Copied rows are
        the bits a prefill would write: a token's keys and values depend only on the tokens
        up to it, and not on the batch it ran in."""
        n = len(ids) - 1
        with self.rows:
            best, src = min(common_prefix(self.cache.tokens, ids), n), self
            for peer in self.peers if share else ():
                k = min(common_prefix(peer.cache.tokens, ids), n)
                if k > best:
                    best, src = k, peer
            if src is self:
                self.cache.truncate(max(best, 0))
            else:
                self.cache.copy_prefix(src.cache, best)
            return self.cache.length


def link_slots(slots: list[Slot]) -> list[Slot]:
    """Make ``slots`` one engine's: peers of each other under one rows lock."""
    rows = threading.Lock()
    for slot in slots:
        slot.peers, slot.rows = slots, rows
    return slots


def make_config(config: StreamingConfig | None = None, **overrides) -> StreamingConfig:
    """A StreamingConfig from keyword arguments with the reference's names."""
    unknown = set(overrides) - _CONFIG_FIELDS
    if unknown:
        raise ConfigError(f"unknown generation option(s): {', '.join(sorted(unknown))}",
                          field=sorted(unknown)[0])
    if config is None:
        return StreamingConfig(**overrides)
    return dataclasses.replace(config, **overrides) if overrides else config


class Engine:
    """Generation engine. ``Engine(**model_opts)`` loads nothing until ``load_model``.

    ``model_opts`` go to :func:`abi.llm.load_model` (``n_ctx``, ``n_batch``, ``kv_dtype``,
    ``chat_template``); ``n_slots`` sets how many sequences keep their own KV cache.

    Before loading, the memory plan (``abi.llm.memory``: weights + KV caches for n_ctx x
    n_slots + scratch) is checked against ``max_memory`` (bytes or "4GiB") and the machine's
    available memory: over either, ``MemoryBudgetExceeded``, or with ``fit`` a smaller
    context. ``preallocate`` holds every cache and buffer from the start (a server), so no
    request can fail to get memory later. With several slots, generations are batched
    (``abi.llm.batcher``): prompts of at most ``prefill_chunk`` tokens go whole into a step,
    longer ones in pieces of at most that many.

    Every generation (``generate``, ``chat``, ``chat_turn``, the streams) is a request to the
    engine's one scheduler (``self.scheduler``, ``abi.llm.scheduler``): callers in several
    threads (agents, a server's routes, a batch job) share its slots and decode together,
    and up to ``max_queue`` requests wait for a slot, past that ``ServerBusy``.
    """

    def __init__(self, n_slots: int = 1, backend: str = "auto", max_memory=None, fit: bool = False,
                 preallocate: bool = False, prefill_chunk: int = 64, max_queue: int = 64,
                 **model_opts):
        if n_slots < 1:
            raise ConfigError("n_slots must be >= 1", field="n_slots")
        if prefill_chunk < 1:
            raise ConfigError("prefill_chunk must be >= 1", field="prefill_chunk")
        if max_queue < 0:
            raise ConfigError("max_queue must be >= 0", field="max_queue")
        self.prefill_chunk, self.max_queue = prefill_chunk, max_queue
        from .backend import select_backend
        from .memory import parse_size

        if backend == "auto" and model_opts.get("lora"):
            backend = "cpu"   # the one backend that runs unmerged LoRA adapters
        self.backend = select_backend(backend)
        self.n_slots = n_slots
        self.max_memory = None if max_memory is None else parse_size(max_memory)
        self.fit, self.preallocate = fit, preallocate
        self.model_opts = model_opts
        self.model = None
        self.memory_plan = None
        self.batcher = None
        self.slots: list[Slot] = []
        self._scheduler: Scheduler | None = None
        self._scheduler_lock = threading.Lock()

    # -- loading ----------------------------------------------------------------------------
    def load_model(self, path=None) -> "Engine":
        from ..gguf import load
        from ..models_hub import resolve_model
        from .memory import check_plan, plan_memory
        from .model import DEFAULT_BATCH, load_model

        path = resolve_model(path)
        o = self.model_opts
        plan = plan_memory(load(path), o.get("n_ctx"), self.n_slots, o.get("kv_dtype", "f32"),
                           o.get("n_batch", DEFAULT_BATCH), o.get("n_threads"))
        fitted = check_plan(plan, self.max_memory, self.fit)
        if fitted.n_ctx != plan.n_ctx:
            log.warning("--fit: context shrunk from %d to %d tokens to fit the memory allowed",
                        plan.n_ctx, fitted.n_ctx)
            self.model_opts = {**o, "n_ctx": fitted.n_ctx}
        self.memory_plan = fitted
        log.info("%s", fitted.describe())
        self.model = load_model(path, backend=self.backend, **self.model_opts)
        self.slots = link_slots([Slot(self.model.new_cache()) for _ in range(self.n_slots)])
        self._start_batcher()
        if self.preallocate:
            self._allocate()
        log.info("loaded %s (%.2f s, backend %s)", self.model.path, self.model.load_seconds,
                 self.backend)
        return self

    def _allocate(self) -> None:
        """Every slot's whole cache and the forward's scratch, held now."""
        model = self.model
        for slot in self.slots:
            slot.cache.reserve(model.n_ctx)
            slot.cache.commit()
        decoder = model._decoder() if model.backend == "cpu" else None
        if decoder is not None:
            # a prompt batch beside every other slot's decode token
            decoder.reserve(model.n_batch + self.n_slots, model.n_ctx)

    @classmethod
    def from_model(cls, model, n_slots: int = 1, max_queue: int = 64,
                   slots: list[Slot] | None = None) -> "Engine":
        """An engine around an already loaded Model; ``slots``: ``n_slots`` slots of an
        earlier engine of it to run on (their caches reused), else new ones."""
        engine = cls(n_slots=n_slots, backend=model.backend, max_queue=max_queue)
        engine.model = model
        if slots is not None and len(slots) != n_slots:
            raise ConfigError(f"{len(slots)} slot(s) given for n_slots={n_slots}", field="slots")
        engine.slots = link_slots(slots or [Slot(model.new_cache()) for _ in range(n_slots)])
        engine._start_batcher()
        return engine

    def _start_batcher(self) -> None:
        """Several slots on the compiled CPU forward: their steps are batched together."""
        from .batcher import Batcher

        m = self.model
        self.batcher = Batcher(m, self.prefill_chunk) if self.n_slots > 1 and m.backend == "cpu" and \
            m.forward_path == "compiled" else None
        if self.batcher is not None:
            # its thread holds it (and the model): an engine freed unclosed stops it
            weakref.finalize(self, self.batcher.close).atexit = False

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler of this engine's slots (made on first use, the model loaded then)."""
        if self._scheduler is None:
            self._require_model()
            with self._scheduler_lock:
                if self._scheduler is None:
                    self._scheduler = Scheduler(self, self.max_queue)
        return self._scheduler

    def close(self) -> None:
        """Cancel what is running and stop the scheduler's and the batcher's threads (an
        engine nobody refers to is freed at once and its threads stop by themselves, once
        its generations have ended)."""
        if self._scheduler is not None:
            self._scheduler.close()
        if self.batcher is not None:
            self.batcher.close()

    def _require_model(self):
        if self.model is None:
            self.load_model()
        return self.model

    @property
    def n_ctx(self) -> int:
        return self._require_model().n_ctx

    # -- prompts ------------------------------------------------------------------------------
    def _prompt_ids(self, prompt) -> list[int]:
        model = self._require_model()
        if isinstance(prompt, str):
            return model.tokenize(prompt)
        return [int(t) for t in prompt]

    def pick_slot(self, ids: Sequence[int], among: Iterable[int] | None = None) -> int:
        """The slot for a prompt: of the slots ``among`` (default: the free ones, or all when
        none is free), the one whose cache shares the longest prefix with ``ids`` (the
        first on a tie). The one rule of slot choice; the scheduler (``abi.llm.scheduler``) uses it."""
        if among is None:
            among = [i for i, s in enumerate(self.slots) if not s.lock.locked()] \
                or range(len(self.slots))
        return max(among, key=lambda i: common_prefix(self.slots[i].cache.tokens, ids))

    def share_prefix(self, src: int, dst: int, ids: Sequence[int]) -> bool:
        """Give slot ``dst`` the keys and values of ``ids[:-1]`` held by slot ``src`` (copied
        rows: the choices of one prompt prefill it once). False where they cannot be shared:
        ``src`` does not hold them, or the model keeps its cache on a device."""
        n = len(ids) - 1
        if self.model.backend != "cpu" or n < 1 or common_prefix(self.slots[src].cache.tokens, ids) < n:
            return False
        with self.slots[dst].lock:
            self.slots[dst].hold_prefix(ids)   # src holds all of ids[:-1]: the longest there is
        return True

    def count_chat_tokens(self, messages) -> int:
        return len(self._require_model().chat_tokens(messages))

    # -- the reference's API ------------------------------------------------------------------
    def create_streaming_response(self, prompt, config: StreamingConfig | None = None,
                                  slot: int | None = None, response_format=None,
                                  **options) -> JobStream:
        """A pull iterator of TokenEvents for ``prompt`` (text, or a list of token ids): a
        request to the scheduler, submitted on the first ``next()`` (``JobStream``).
        ``slot`` pins the generation to one KV-cache slot (it waits for that slot).
        ``response_format``: OpenAI's (``{"type": "json_object"}``, ``{"type": "json_schema",
        "json_schema": {"schema": ...}}``) or a pydantic model class; it sets the grammar."""
        if response_format is not None:
            from .constrain import from_response_format

            grammar = from_response_format(response_format)
            if grammar is not None:
                if options.get("grammar") is not None or (config and config.grammar is not None):
                    raise ConfigError("give response_format or grammar, not both", field="grammar")
                options["grammar"] = grammar
        cfg = make_config(config, **options)
        if cfg.grammar is not None:  # a grammar that cannot compile fails here, not mid-stream
            from .constrain import check

            check(cfg.grammar, self._require_model().tokenizer, self.model.n_vocab)
        ids = self._prompt_ids(prompt)
        return JobStream(self.scheduler, GenerationRequest(ids, cfg, slot=slot))

    def slot_response(self, ids: list[int], config: StreamingConfig, slot: int) -> StreamingResponse:
        """The generation itself, on ``slot``: what the scheduler's job threads run."""
        return StreamingResponse(self.model, self.slots[slot], ids, config, self.batcher)

    def generate_streaming(self, prompt, on_token: Callable[[str], None], **options) -> StreamingStats:
        """Call ``on_token(text)`` for each piece of generated text."""
        response = self.create_streaming_response(prompt, **options)
        for event in response:
            if event.text:
                on_token(event.text)
        return response.get_stats()

    def generate_streaming_with_config(self, prompt, config: StreamingConfig) -> StreamingStats:
        """Run to completion calling ``config.on_token(event)`` and ``config.on_complete(stats)``."""
        response = self.create_streaming_response(prompt, config)
        for event in response:
            if config.on_token is not None:
                config.on_token(event)
        stats = response.get_stats()
        if config.on_complete is not None:
            config.on_complete(stats)
        return stats

    def generate(self, prompt, **options) -> str:
        response = self.create_streaming_response(prompt, **options)
        for _ in response:
            pass
        return response.text

    def chat_turn(self, messages, tools=None, tool_choice=None, slot: int | None = None,
                  **options):
        """One assistant turn with tools: ``(ParsedReply, StreamingStats)``, the reply's
        ``content``, ``tool_calls`` (parsed by the chat template's family) and ``reasoning``. ``tool_choice``:
        ``auto`` (default), ``none``, ``required`` or a function's name, the last two
        enforced with the constraint engine."""
        from .reasoning import prompt_opens_reasoning
        from .turns import needs_special_text, read_turn, turn_reader

        model = self._require_model()
        plan = model.tool_plan(tools, tool_choice)
        if plan.grammar is not None:
            if options.get("grammar") is not None or options.get("response_format") is not None:
                raise ConfigError("tool_choice required/named constrains the output already: "
                                  "give no grammar or response_format with it", field="tool_choice")
            options["grammar"] = plan.grammar
        ids = model.chat_tokens(messages, plan=plan)
        options.setdefault("special_text", needs_special_text(model, plan))
        response = self.create_streaming_response(ids, slot=slot, **options)
        for _ in response:
            pass
        inside = prompt_opens_reasoning(model.detokenize(ids[-8:], special=True))
        return read_turn(turn_reader(model, plan, inside), response.text), response.get_stats()

    def chat(self, messages, stream: bool = False, tools=None, slot: int | None = None, **options):
        """Apply the chat template and generate: the reply text, or with ``stream=True`` the
        stream (a ``JobStream``). Earlier turns already in a slot's cache are not recomputed."""
        ids = self._require_model().chat_tokens(messages, tools=tools)
        response = self.create_streaming_response(ids, slot=slot, **options)
        if stream:
            return response
        for _ in response:
            pass
        return response.text
