"""``load_model(path)`` -> ``Model``: a GGUF file's architecture, weights (quantised,
memory-mapped), tokenizer and chat template behind one object."""
from __future__ import annotations

import functools
import logging
import operator
import os
import threading
import time
import weakref

import numpy as np

from ..errors import ConfigError, ContextLengthExceeded, InvalidRequestError, NonFiniteError
from ..gguf import GGUFFile, load
from ..models_hub import resolve_model
from .cache import KVCache, check_kv_dtype
from .capability import check_finite as check_finite_weights
from .capability import check_loadable, choose_cpu_forward, weights_used
from .chat_template import ChatTemplate
from .hparams import require
from .lora import attach_adapters, lora_specs
from .models import decoder, get_architecture
from .threads import ThreadChooser, release_unless_computing
from .weights import WeightLoader

log = logging.getLogger(__name__)
DEFAULT_BATCH = 512
PROMPT_STEP_TOKENS = 32   # a batched step with this many prompt tokens runs on every thread


class Model:
    def __init__(self, path: str | os.PathLike | None = None, *, n_ctx: int | None = None,
                 n_batch: int = DEFAULT_BATCH, kv_dtype: str = "f32",
                 chat_template: str | None = None, n_threads: int | None = None,
                 backend: str = "cpu", check_finite: bool = True, lora=None):
        t0 = time.perf_counter()
        self.path = str(resolve_model(path))
        self.gguf: GGUFFile = load(self.path)
        arch = get_architecture(self.gguf.architecture)
        self.args = arch.ModelArgs.from_gguf(self.gguf.metadata)
        # None means the trained context; 0 is an error, not a silent default
        self.n_ctx = int(self.args.n_ctx_train if n_ctx is None else n_ctx)
        if self.n_ctx <= 0:
            raise ConfigError(f"n_ctx must be positive, got {self.n_ctx}", "n_ctx")
        if self.n_ctx > self.args.n_ctx_train:
            scaled = getattr(self.args, "rope_freq_scale", 1.0) != 1.0 or \
                getattr(self.args, "rope_yarn_orig_ctx", 0) > 0
            log.warning("n_ctx %d is longer than the %d tokens this model was trained on%s; "
                        "output past %d tokens degrades", self.n_ctx, self.args.n_ctx_train,
                        "" if scaled else " and the file asks for no RoPE scaling",
                        self.args.n_ctx_train)
        # a decoder picks its RoPE factors by the context it will run (LongRoPE)
        context = {"n_ctx": self.n_ctx} if issubclass(arch.Model, decoder.Model) else {}
        self.arch = arch.Model(self.args, WeightLoader(self.gguf), **context)
        # LoRA adapters, unmerged: each adapted product adds its low-rank term
        self.adapters = lora_specs(lora)
        if self.adapters and backend == "cuda":
            raise ConfigError("LoRA adapters (lora=...) run on the CPU backend only, not 'cuda'; "
                              "fuse them into the model (abi lora fuse) to run on the GPU", "lora")
        if self.adapters and backend == "auto":
            backend = "cpu"   # the one backend that runs unmerged adapters
        attach_adapters(self.arch, self.gguf, self.adapters)
        from .tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer(self.gguf)
        self.n_vocab = self.args.n_vocab
        # every id the tokenizer can produce must have an embedding row
        require(self.tokenizer.n_vocab <= self.n_vocab, f"{self.path}: the tokenizer has "
                f"{self.tokenizer.n_vocab} tokens but the embedding only {self.n_vocab} rows")
        if n_batch <= 0:
            raise ConfigError(f"n_batch must be positive, got {n_batch}", "n_batch")
        self.n_batch = n_batch
        self.kv_dtype = check_kv_dtype(kv_dtype, [d for d in (getattr(self.args, "head_dim", 0),) if d])
        self._template_source = chat_template or self.gguf.get("tokenizer.chat_template")
        if n_threads is not None and n_threads < 1:
            raise ConfigError(f"n_threads must be >= 1, got {n_threads}", "n_threads")
        from .backend import select_backend

        self.backend = select_backend(backend)
        self.n_threads = n_threads
        # fail closed: every weight's type is checked against the kernels before any forward
        used = weights_used(self.arch)
        check_loadable(used, self.path)
        if check_finite:
            # a token table that is not the output matrix too is read by rows: the scan lets
            # go of its pages, so it never stays resident whole (llama.cpp maps only the rows used)
            embd, out = getattr(self.arch, "tok_embd", None), getattr(self.arch, "output", None)
            by_rows = embd is not None and out is not None and embd.name in self.gguf.tensors \
                and not np.may_share_memory(embd.raw, out.raw)
            check_finite_weights(self.gguf, release=(embd.name,) if by_rows else ())
        if self.backend == "cuda" and self.kv_dtype == "q8_0":
            raise ConfigError("the CUDA forward keeps an f16 KV cache on the device; kv_dtype "
                              "'q8_0' runs on the CPU backend only", "kv_dtype")
        self.forward_path = "cuda" if self.backend == "cuda" else \
            choose_cpu_forward(used, self.args.arch, isinstance(self.arch, decoder.Model))
        self._compiled = None  # the compiled forward, built on first use
        # generate/chat's engine, held weakly (it holds this model), and the slot it runs on
        self._default_engine: weakref.ref | None = None
        self._default_slot = None
        # the compiled forward keeps one set of scratch buffers: slots (threads) sharing this
        # model take turns, one batch at a time
        self._forward_lock = threading.Lock()
        self.load_seconds = time.perf_counter() - t0

    @functools.cached_property
    def template(self) -> ChatTemplate:
        """The chat template, compiled on first use (jinja2's import and the compile take
        ~50 ms that a plain completion never needs; a template that does not compile is a
        ChatTemplateError at the first chat request)."""
        source, tok = self._template_source, self.tokenizer
        text = lambda i: tok.tokens[i] if i is not None and 0 <= i < tok.n_vocab else ""
        return ChatTemplate(source if isinstance(source, str) else None, text(tok.bos_id), text(tok.eos_id))

    # -- text <-> ids --------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False,
                 max_tokens: int | None = None) -> list[int]:
        """``max_tokens``: refuse (ContextLengthExceeded) a text too long to fit in that many
        tokens, judged from its length before any tokenising."""
        if max_tokens is not None:
            check = getattr(self.tokenizer, "check_length", None)
            if check is not None:  # WordPiece vocabularies have no such bound
                check(text, max_tokens)
        return self.tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, ids, special: bool = False) -> str:
        return self.tokenizer.decode(ids, special=special)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tools=None,
                            **template_kwargs) -> str:
        """The prompt text; ``template_kwargs`` are extra template variables (enable_thinking)."""
        return self.template.render(messages, add_generation_prompt=add_generation_prompt, tools=tools,
                                    **template_kwargs)

    def tool_plan(self, tools=None, tool_choice=None):
        """How ``tools`` are offered to this model's chat template and read back
        (an ``abi.llm.tools.ToolPlan``); invalid tools or choices are ToolCallErrors."""
        from .tools import ToolPlan

        return ToolPlan(self.template.source, tools, tool_choice, self.tokenizer)

    def chat_tokens(self, messages, add_generation_prompt: bool = True, tools=None,
                    max_tokens: int | None = None, plan=None, template_kwargs=None) -> list[int]:
        """The prompt ids for a conversation; no second BOS when the template wrote one.
        ``max_tokens`` as in ``tokenize``, checked on the rendered prompt. Tool calls and
        results in ``messages`` are rendered as ``plan`` (default: ``tool_plan(tools)``) says."""
        plan = self.tool_plan(tools) if plan is None else plan
        text = self.apply_chat_template(plan.messages(list(messages)), add_generation_prompt,
                                        plan.template_tools, **(template_kwargs or {}))
        bos = self.template.bos_token
        add_bos = None if not (bos and text.startswith(bos)) else False
        return self.tokenize(text, add_bos=add_bos, special=True, max_tokens=max_tokens)

    # -- forward passes ------------------------------------------------------------------
    def new_cache(self) -> KVCache:
        return self.arch.new_cache(self.n_ctx, self.kv_dtype)

    def check_context(self, n_tokens: int) -> None:
        if n_tokens > self.n_ctx:
            raise ContextLengthExceeded(
                f"{n_tokens} tokens exceed the context length of {self.n_ctx}; shorten the "
                f"input or load the model with a larger n_ctx (trained: {self.args.n_ctx_train})")

    def _decoder(self):
        """The compiled forward for this backend (None where only the numpy one applies)."""
        if self._compiled is None:
            self._compiled = False
            if self.backend == "cuda":
                from .cuda_forward import CudaDecoder

                self._compiled = CudaDecoder(self.arch, self.n_batch)
            elif self.forward_path == "compiled":
                from .. import _kernels
                from ._decode import Decoder


                threads = self.n_threads or _kernels.default_num_threads()
                self._compiled = Decoder(self.arch, threads, self.n_batch)
                self._decode_threads = ThreadChooser(threads)
                self._batch_threads = ThreadChooser(threads)   # the batcher's decode steps
        return self._compiled or None

    def forward(self, ids, cache: KVCache, output: str = "last", should_stop=None) -> np.ndarray:
        """Feed ``ids`` after the cache's contents in batches of ``n_batch``.
        ``should_stop()`` is polled between batches (cancellation of long prompts)."""
        ids = self.check_request(ids, cache, output)
        with self._forward_lock:
            # the compiled forward reads and writes every kv_dtype; the CUDA forward keeps
            # its own f16 device cache, whatever the host cache dtype
            compiled = self._decoder()
        if self.backend == "cpu":
            # room for the whole request at once: growing batch by batch would hold the old
            # and the new arrays together at each doubling (the CUDA forward keeps its own)
            cache.reserve(cache.length + len(ids))
        outs = []
        try:
            for s in range(0, len(ids), self.n_batch):
                if should_stop is not None and s and should_stop():
                    return None
                chunk = ids[s:s + self.n_batch]
                last = s + self.n_batch >= len(ids)
                want = output if output != "last" or last else "none"
                with self._forward_lock:
                    if compiled is None:
                        out = self.arch.forward(chunk, cache, want)
                    elif len(chunk) == 1 and self.backend == "cpu":  # a decode step
                        out = self._decode_threads.timed(lambda n: compiled.forward(chunk, cache, want, n))
                    else:
                        out = compiled.forward(chunk, cache, want)
                if output != "last" or last:
                    outs.append(out)
        finally:
            if len(ids) > 1:   # a prompt: an idle pool slows the threads that compute (threads.py)
                release_unless_computing()
        return self.check_finite(outs[0] if len(outs) == 1 else np.concatenate(outs), output, cache)

    def check_request(self, ids, cache: KVCache, output: str) -> list[int]:
        """``ids`` as a list of valid token ids that fit after the cache's contents."""
        try:
            ids = [operator.index(t) for t in ids]
        except TypeError:
            raise InvalidRequestError("token ids must be integers") from None
        if not ids:
            raise InvalidRequestError("no tokens to run")
        if min(ids) < 0 or max(ids) >= self.n_vocab:
            raise InvalidRequestError(f"token ids must lie in [0, {self.n_vocab})")
        if output not in ("last", "all", "hidden"):
            raise InvalidRequestError(f"output must be 'last', 'all' or 'hidden', got {output!r}")
        self.check_context(cache.length + len(ids))
        return ids

    def check_finite(self, out, output: str, cache: KVCache):
        if out is not None and not np.isfinite(out).all():
            # fail closed: a NaN would be sampled as token 0 or an empty answer
            row = int(np.flatnonzero(~np.isfinite(out).all(axis=-1))[0])
            raise NonFiniteError(f"the forward pass produced NaN/Inf ({output} output row {row}, "
                                 f"{cache.length} tokens in the cache): the model's weights or "
                                 f"hyperparameters are broken")
        return out

    def forward_many(self, parts):
        """One compiled forward over several sequences' tokens: ``parts`` is a list of
        ``(ids, cache, output)`` with output "last", "all" or "none" (see ``abi.llm.batcher``)."""
        with self._forward_lock:
            compiled = self._decoder()
            if compiled is None or self.backend != "cpu":
                raise ConfigError("batching several sequences needs the compiled CPU forward "
                                  f"(this model runs the {self.forward_path} path)", "n_slots")
            chooser = self._batch_threads
            if all(len(ids) == 1 for ids, _, _ in parts):   # decode tokens only, as forward()
                return chooser.timed(lambda n: compiled.forward_many(parts, n), len(parts))
            if sum(len(ids) for ids, _, _ in parts if len(ids) > 1) >= PROMPT_STEP_TOKENS:
                # a prompt's worth: all threads, as forward() gives a prompt (its products
                # share their rows out as tasks, so a descheduled thread does less, not late)
                return compiled.forward_many(parts)
            # a small prompt piece beside decode tokens: the count the decode steps found faster
            return compiled.forward_many(parts, chooser.current)

    def logits(self, ids) -> np.ndarray:
        """float32 (len(ids), n_vocab): one forward pass from an empty cache."""
        if len(ids) == 0:
            return np.zeros((0, self.n_vocab), np.float32)
        return self.forward(ids, self.new_cache(), output="all")

    def hidden_states(self, ids) -> np.ndarray:
        """float32 (len(ids), n_embd): final-norm hidden states (for embeddings)."""
        return self.forward(ids, self.new_cache(), output="hidden")

    # -- generation (the engine's stream, joined) ----------------------------------------------
    def _engine(self):
        """The one-slot engine of ``generate`` and ``chat``: made again once no call holds it,
        so a dropped model is freed at once; its slot (KV cache) stays here, so calls still
        reuse a shared prompt prefix."""
        engine = self._default_engine and self._default_engine()
        if engine is None:
            from .engine import Engine

            slots = None if self._default_slot is None else [self._default_slot]
            engine = Engine.from_model(self, slots=slots)
            self._default_slot = engine.slots[0]
            self._default_engine = weakref.ref(engine)
        return engine

    def generate(self, prompt, **options) -> str:
        """Generated text for ``prompt`` (StreamingConfig names as keyword arguments)."""
        return self._engine().generate(prompt, **options)

    def chat(self, messages, **options) -> str:
        """The assistant's reply to ``messages`` (the chat template applied)."""
        return self._engine().chat(messages, **options)

    def __repr__(self) -> str:
        a = self.args
        return (f"Model({os.path.basename(self.path)!r}, arch={a.arch}, layers={a.n_layers}, "
                f"n_embd={a.n_embd}, n_ctx={self.n_ctx})")


def load_model(path: str | os.PathLike | None = None, **opts) -> Model:
    """Load a GGUF model by path or cache name (None: the default model). ``lora``: LoRA
    adapters to run unmerged, each a path or ``(path, scale)`` (``abi.llm.lora``)."""
    return Model(path, **opts)
