"""Running GPU-agent requests for real on this machine: inference through ``abi.llm.Engine``,
embeddings through ``abi.embeddings.Encoder``, training through ``abi.training.train`` and
fine-tuning through ``abi.training.train_llm``, each on the configuration the scheduler chose.

Engines are loaded lazily, one per (device, threads, prefill batch), and kept; their load
time is reported as ``setup_s``, apart from the work itself, so the scheduler learns the
steady-state speed of a configuration rather than the one-off cost of opening it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import BackendUnavailable, InvalidRequestError
from .backends_discovery import (BackendSpec, CpuLoadMeter, cuda_free_mb, discover_backends,
                                 host_free_mb)

MAX_TRAINING_SAMPLES = 1_000_000
FINE_TUNE_SEQ_LEN = 32
MAX_FINE_TUNE_STEPS = 1000


@dataclass
class RunResult:
    content: str
    tokens: int            # generated tokens; input tokens (embedding); samples/tokens trained
    work_s: float          # time the work took, what the scheduler learns from
    setup_s: float = 0.0   # one-off cost on this configuration (loading a model)
    result: Any = field(default=None, repr=False)  # the embedding array, training report, ...
    simulated: bool = False  # work_s was not spent on this clock (a simulator's run)


@dataclass(frozen=True)
class BackendReading:
    load: float            # 0 idle .. 1 fully used by others
    free_mb: int


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit BLAS (numpy matmul) to ``n`` threads for the duration."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


class LocalExecutor:
    """Runs requests on this machine's backends. ``model``: the LLM (path or cache name; None:
    the default model); ``embedding_model``: the Encoder's model (None: all-MiniLM-L6-v2,
    used only when already in the model cache: the agent never downloads)."""

    def __init__(self, *, model=None, embedding_model=None, temperature: float = 0.7,
                 n_ctx: int = 4096, backends: list[BackendSpec] | None = None):
        from ..embeddings.encoder import DEFAULT_EMBEDDING_MODEL
        from ..models_hub import resolve_model

        self.model = model
        self.temperature = temperature
        self.n_ctx = n_ctx
        self._embedding_path = None
        self._embedding_problem = None
        try:
            self._embedding_path = str(resolve_model(embedding_model or DEFAULT_EMBEDDING_MODEL,
                                                     download=False))
        except Exception as exc:  # not in the cache: embedding requests are refused
            self._embedding_problem = str(exc)
        self.backends = backends if backends is not None else discover_backends(
            embedding_available=self._embedding_path is not None)
        self._engines: dict[tuple, Any] = {}
        self._encoders: dict[int | None, Any] = {}
        self._lock = threading.Lock()
        self._cpu = CpuLoadMeter()

    # -- what the scheduler reads ------------------------------------------------------------
    def arms_for(self, workload: str) -> list[BackendSpec]:
        return [b for b in self.backends if b.serves(workload)]

    def unavailable_reason(self, workload: str) -> str:
        if workload == "embedding" and self._embedding_problem:
            return f"no embedding model in the model cache ({self._embedding_problem})"
        return f"no backend on this machine runs {workload} workloads"

    def observe(self, backends: list[BackendSpec]) -> dict[str, BackendReading]:
        out = {}
        cpu_load = None
        for b in backends:
            if b.device == "cuda":
                index = int(b.name.split(":")[1])
                free = cuda_free_mb(index)
                out[b.name] = BackendReading(0.0, b.memory_limit_mb if free is None else free)
            else:
                if cpu_load is None:
                    cpu_load = (self._cpu.load(), host_free_mb())
                out[b.name] = BackendReading(*cpu_load)
        return out

    def finished(self) -> None:
        """Called after each run: the load window starts here."""
        self._cpu.snapshot()

    # -- running -------------------------------------------------------------------------------
    def run(self, request, backend: BackendSpec) -> RunResult:
        """Run on ``backend``: its threads go to the engine or Encoder, and BLAS (numpy's
        matrix products, the trainers' maths) is held to the same count."""
        workload = request.workload_type.value
        handler = getattr(self, "_run_" + workload)
        with blas_threads(backend.n_threads):
            return handler(request, backend)

    def _engine(self, backend: BackendSpec):
        from ..llm import Engine

        key = (backend.device, backend.n_threads, backend.n_batch)
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                return engine, 0.0
            t0 = time.perf_counter()
            engine = Engine(backend=backend.device, n_threads=backend.n_threads,
                            n_batch=backend.n_batch, n_ctx=self.n_ctx).load_model(self.model)
            self._engines[key] = engine
            return engine, time.perf_counter() - t0

    def _chat(self, engine, prompt: str, max_tokens: int) -> tuple[str, int]:
        response = engine.chat([{"role": "user", "content": prompt}], stream=True,
                               max_tokens=max_tokens, temperature=self.temperature)
        for _ in response:
            pass
        return response.text, response.get_stats().tokens_generated

    def _run_inference(self, request, backend) -> RunResult:
        engine, setup = self._engine(backend)
        t0 = time.perf_counter()
        text, tokens = self._chat(engine, request.prompt, request.max_tokens)
        return RunResult(text, tokens, time.perf_counter() - t0, setup)

    def _run_batch_inference(self, request, backend) -> RunResult:
        """One reply per non-empty line of the prompt, each up to max_tokens."""
        prompts = [line.strip() for line in request.prompt.splitlines() if line.strip()]
        engine, setup = self._engine(backend)
        t0 = time.perf_counter()
        replies, total = [], 0
        for p in prompts:
            text, tokens = self._chat(engine, p, request.max_tokens)
            replies.append(text)
            total += tokens
        return RunResult("\n\n".join(replies), total, time.perf_counter() - t0, setup,
                         result=replies)

    def _run_embedding(self, request, backend) -> RunResult:
        """The prompt's embedding (one per line when it has several lines)."""
        if self._embedding_path is None:
            raise BackendUnavailable(self.unavailable_reason("embedding"))
        setup = 0.0
        with self._lock:  # one Encoder per thread count: its threads are fixed at creation
            encoder = self._encoders.get(backend.n_threads)
            if encoder is None:
                from ..embeddings import Encoder

                t0 = time.perf_counter()
                encoder = self._encoders[backend.n_threads] = Encoder(
                    self._embedding_path, truncate=True, n_threads=backend.n_threads)
                setup = time.perf_counter() - t0
        texts = [line for line in request.prompt.splitlines() if line.strip()] or [request.prompt]
        t0 = time.perf_counter()
        vectors = encoder.encode_batch(texts)
        work = time.perf_counter() - t0
        tokens = sum(len(ids) for ids in encoder.tokenize(texts))
        content = (f"{len(texts)} embedding{'s' if len(texts) > 1 else ''} of dimension "
                   f"{vectors.shape[1]} ({tokens} input tokens)")
        return RunResult(content, tokens, work, setup, result=vectors)

    def _run_training(self, request, backend) -> RunResult:
        """The training sub-feature's run (a small numpy model on its synthetic task) over
        max_tokens samples, one epoch; the prompt is not training data here."""
        from ..training import TrainingConfig, train

        samples = min(max(request.max_tokens, 32), MAX_TRAINING_SAMPLES)
        t0 = time.perf_counter()
        report = train(TrainingConfig(epochs=1, sample_count=samples, batch_size=32))
        work = time.perf_counter() - t0
        content = (f"trained a {report.parameter_count}-parameter model on {samples} samples "
                   f"({report.steps} steps): final loss {report.final_loss:.4f}, "
                   f"accuracy {report.accuracy:.1%}")
        return RunResult(content, samples, work, result=report)

    def _run_fine_tuning(self, request, backend) -> RunResult:
        """Fine-tune the agent's LLM on the prompt's tokens, up to max_tokens of them
        (sequences of FINE_TUNE_SEQ_LEN); the tuned weights are reported, not kept."""
        from ..llm import load_model
        from ..training import LlmTrainingConfig, train_llm, write_tokenbin

        engine = next(iter(self._engines.values()), None)
        model = engine.model if engine is not None else load_model(self.model, n_ctx=self.n_ctx)
        ids = model.tokenize(request.prompt)
        seq_len = min(FINE_TUNE_SEQ_LEN, len(ids) - 1)
        if seq_len < 2:
            raise InvalidRequestError(f"fine-tuning needs a prompt of at least 3 tokens, got "
                                      f"{len(ids)}")
        steps = min(max(1, request.max_tokens // seq_len), MAX_FINE_TUNE_STEPS)
        with tempfile.TemporaryDirectory(prefix="abi-gpu-ft-") as tmp:
            data = write_tokenbin(os.path.join(tmp, "prompt.tokenbin"), ids)
            t0 = time.perf_counter()
            report = train_llm(LlmTrainingConfig(
                data_path=str(data), init_gguf=model.path, steps=steps, seq_len=seq_len,
                batch_size=1, lr_schedule="constant", learning_rate=1e-4))
            work = time.perf_counter() - t0
        losses = report.losses
        content = (f"fine-tuned {os.path.basename(model.path)} for {steps} step"
                   f"{'s' if steps > 1 else ''} on {len(ids)} prompt tokens: loss "
                   f"{losses[0]:.4f} -> {losses[-1]:.4f}")
        return RunResult(content, steps * seq_len, work, result=report)
