"""What a batch job computes, independent of where it runs: a ``JobSpec`` (picklable, so a
Ray actor receives it) and the runner that loads the model once and turns a shard's items into
result rows. The local path and every Ray actor run this same code, so their results agree."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ConfigError

TASKS = ("embed", "generate")


@dataclass(frozen=True)
class JobSpec:
    """``task``: embed or generate. ``field``: the item key holding the input (its kind:
    text, or chat ``messages``). ``model_opts``: for embed, ``Encoder`` options; for generate,
    ``Engine`` options. ``options``: generation options (sampling, ``grammar``), plus ``chat``
    and ``system`` for prompts wrapped in the chat template."""

    task: str
    field: str
    kind: str = "text"
    model: str | None = None
    model_opts: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    n_threads: int | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"batch task {self.task!r} is not one of {', '.join(TASKS)}", "task")
        if self.kind not in ("text", "messages") or (self.kind == "messages" and self.task != "generate"):
            raise ConfigError(f"a batch {self.task} job cannot take {self.kind!r} inputs", "kind")


def settings_of(spec: JobSpec) -> dict:
    """The settings that decide the results, as JSON-able values (recorded with each row)."""
    if spec.task == "embed":
        return dict(sorted(spec.model_opts.items()))
    out = {}
    for k, v in sorted(spec.options.items()):
        if k == "grammar" and v is not None:
            v = {"kind": v.kind, "source": v.source}
        elif k == "logit_bias" and v:
            v = {str(t): b for t, b in v.items()}
        out[k] = v
    out.update({k: v for k, v in spec.model_opts.items() if k in ("n_ctx", "kv_dtype")})
    return out


def resolved_model(spec: JobSpec) -> str:
    from ..models_hub import resolve_model

    if spec.task == "embed" and spec.model is None:
        from ..embeddings import DEFAULT_EMBEDDING_MODEL

        return str(resolve_model(DEFAULT_EMBEDDING_MODEL))
    return str(resolve_model(spec.model))


class Runner:
    """The model of ``spec``, loaded once; ``run(items)`` gives one result row per item."""

    def __init__(self, spec: JobSpec):
        self.spec = spec
        threads = {"n_threads": spec.n_threads} if spec.n_threads else {}
        if spec.task == "embed":
            from ..embeddings import Encoder

            self.encoder = Encoder(spec.model, **spec.model_opts, **threads)
            self.model = self.encoder.path
        else:
            from ..llm import Engine

            # a job queues every item at once in the engine's scheduler
            self.engine = Engine(**spec.model_opts, **threads, max_queue=1 << 30).load_model(spec.model)
            self.model = str(self.engine.model.path)
        self.settings = json.dumps(settings_of(spec), sort_keys=True)

    def run(self, items: list[dict], on_done: Callable[[int], None] | None = None) -> list[dict]:
        rows = []
        if self.spec.task == "embed":
            step = 4 * self.encoder.batch_size  # a few encoder batches between progress updates
            for s in range(0, len(items), step):
                chunk = items[s:s + step]
                vectors = self.encoder.encode_batch([it[self.spec.field] for it in chunk])
                rows += [{"row": it["row"], "id": it["id"], "embedding": v.tolist(),
                          "model": self.model, "settings": self.settings}
                         for it, v in zip(chunk, vectors)]
                if on_done:
                    on_done(len(chunk))
            return rows
        # every item queued at once: with n_slots > 1 they decode together (batched steps),
        # each with its own seed, so the results do not depend on the slots
        jobs = [self.engine.scheduler.submit(self._request(it)) for it in items]
        try:
            for it, job in zip(items, jobs):
                (result,) = job.results_sync()
                stats = result.stats
                rows.append({"row": it["row"], "id": it["id"], "text": result.text,
                             "finish_reason": stats.finish_reason,
                             "prompt_tokens": stats.prompt_tokens,
                             "completion_tokens": stats.tokens_generated, "model": self.model,
                             "settings": self.settings})
                if on_done:
                    on_done(1)
        finally:
            for job in jobs:   # a failure stops the items still queued
                job.cancel()
        return rows

    def _request(self, item: dict):
        from ..llm.engine import make_config
        from ..llm.scheduler import GenerationRequest

        opts = dict(self.spec.options)
        chat, system = opts.pop("chat", False), opts.pop("system", None)
        if opts.get("seed") is not None:
            # one seed per item: the same sample wherever and in whatever order it runs
            opts["seed"] = int(opts["seed"]) + item["row"]
        value = item[self.spec.field]
        model = self.engine.model
        if self.spec.kind == "messages" or chat:
            messages = value if self.spec.kind == "messages" else \
                ([{"role": "system", "content": system}] if system else []) + \
                [{"role": "user", "content": value}]
            ids = model.chat_tokens(messages)
        else:
            ids = model.tokenize(value)
        return GenerationRequest(ids, make_config(**opts))
