"""The one optimisation loop every trainer runs: per step, the trainer's gradients (already
accumulated over its micro-batches), a finiteness check, clipping, the scheduled optimizer
step, a progress bar, periodic and final checkpoints, and the caller's ``on_step``. What a
trainer owns is only what differs: how a step's gradients are computed (``StepFn``) and
what its checkpoints hold (``snapshot``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import TrainingError
from .checkpoint import CheckpointManager, check_writable
from .optim import clip_grad_norm


@dataclass
class StepResult:
    """One step's outcome. ``grads`` None: the step is skipped (a loss-scale overflow),
    nothing is applied but the step still counts. ``metrics`` go to ``on_step``."""

    loss: float
    grads: dict[str, np.ndarray] | None
    metrics: dict = field(default_factory=dict)


StepFn = Callable[[int], StepResult]


class Checkpoints:
    """Where a run's checkpoints go (None: nowhere), checked writable before any step."""

    def __init__(self, path: str | None, keep: int, on_error: str, retries: int, retry_delay: float):
        self.manager = None
        if path:
            check_writable(path)
            self.manager = CheckpointManager(path, keep)
        self.on_error, self.retries, self.retry_delay = on_error, retries, retry_delay
        self.written: list[str] = []

    def save(self, step: int, snapshot: Callable[[], tuple[dict, dict]], final: bool) -> bool:
        tensors, meta = snapshot()
        path = self.manager.save_or_keep(step, tensors, meta, final=final, on_error=self.on_error,
                                         retries=self.retries, retry_delay=self.retry_delay)
        if path is not None:
            self.written.append(str(path))
        return path is not None


def run(step_fn: StepFn, *, optimizer, schedule, grad_clip: float, start: int, total: int,
        checkpoints: Checkpoints, interval: int, snapshot: Callable[[], tuple[dict, dict]],
        on_step: Callable | None = None, progress: bool = False, desc: str = "train",
        postfix: Callable[[StepResult], dict] | None = None, resumed: bool = False) -> int:
    """Steps ``start`` .. ``total``; returns the last step. A non-finite loss or gradient in
    an applied step is a TrainingError (a diverged run is not saved as if it were fine)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, unit="step", desc=desc, dynamic_ncols=True)
    step = start
    last_saved = step if resumed else -1
    try:
        while step < total:
            result = step_fn(step)
            if result.grads is not None:
                if not (np.isfinite(result.loss) and all(np.isfinite(g).all() for g in result.grads.values())):
                    raise TrainingError(f"training diverged at step {step}: non-finite loss or "
                                        "gradient; lower the learning rate")
                result.metrics.setdefault("grad_norm", clip_grad_norm(result.grads, grad_clip))
                result.metrics.setdefault("lr", schedule(step))
                optimizer.step(result.grads, result.metrics["lr"])
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(**(postfix(result) if postfix else {"loss": f"{result.loss:.4f}"}))
            if checkpoints.manager and interval and step % interval == 0:
                if checkpoints.save(step, snapshot, final=step == total):
                    last_saved = step
            if on_step is not None:
                on_step(step, result)
        if checkpoints.manager and last_saved != step:
            checkpoints.save(step, snapshot, final=True)
    finally:
        if bar is not None:
            bar.close()
    return step
