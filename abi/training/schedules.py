"""Learning-rate schedules: ``make_schedule(name, ...)`` returns ``lr(step)``.

``step`` is the 0-based index of the optimizer step about to be taken and ``total_steps``
the number of steps in the run; past the end every schedule holds its final value.

    constant        lr
    cosine          min_lr + (lr - min_lr) * (1 + cos(pi * s / T)) / 2
    warmup_cosine   lr * (s + 1) / W for s < W, then cosine over the remaining T - W steps
    step            lr * gamma ** floor(s / step_size)
    polynomial      min_lr + (lr - min_lr) * (1 - s / T) ** power
"""
from __future__ import annotations

import math
from typing import Callable

from ..errors import ConfigError

SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "polynomial")

Schedule = Callable[[int], float]


def make_schedule(name: str, lr: float, total_steps: int, *, warmup_steps: int | None = None,
                  min_lr: float = 0.0, step_size: int | None = None, gamma: float = 0.1,
                  power: float = 1.0) -> Schedule:
    """Build a schedule. Defaults: warmup is 10% of the run (at least 1 step), the step
    schedule decays by ``gamma`` every third of the run."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown lr schedule {name!r}; choose one of {', '.join(SCHEDULES)}",
                          field="lr_schedule")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"learning rate must be a positive number, got {lr!r}", "learning_rate")
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}", "total_steps")
    if not 0 <= min_lr <= lr:
        raise ConfigError(f"min_lr must lie in [0, lr], got {min_lr!r}", "min_lr")
    T = total_steps

    if name == "constant":
        return lambda s: lr

    def cosine_from(s: float, length: float) -> float:
        frac = min(max(s / length, 0.0), 1.0) if length > 0 else 1.0
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))

    if name == "cosine":
        return lambda s: cosine_from(s, T)

    if name == "warmup_cosine":
        W = max(1, T // 10) if warmup_steps is None else int(warmup_steps)
        if not 0 <= W <= T:
            raise ConfigError(f"warmup_steps must lie in [0, {T}], got {W}", "warmup_steps")
        return lambda s: lr * (s + 1) / W if s < W else cosine_from(s - W, T - W)

    if name == "step":
        size = max(1, T // 3) if step_size is None else int(step_size)
        if size < 1:
            raise ConfigError(f"step_size must be >= 1, got {size}", "step_size")
        if not 0 < gamma <= 1:
            raise ConfigError(f"gamma must lie in (0, 1], got {gamma!r}", "gamma")
        return lambda s: lr * gamma ** (max(s, 0) // size)

    if power <= 0:
        raise ConfigError(f"power must be > 0, got {power!r}", "power")
    return lambda s: min_lr + (lr - min_lr) * (1.0 - min(max(s, 0), T) / T) ** power
