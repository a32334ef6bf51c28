"""Mixed precision: low-precision compute, fp32 master weights, dynamic loss scaling.

numpy has float16 but no bfloat16, so bf16 compute is emulated: values live in float32
arrays rounded to bf16's 8-bit mantissa (round to nearest even) after every operation, which
gives bf16's rounding and range exactly.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16")


def normalize_precision(value) -> str:
    """``False``/``None``/"fp32" -> "fp32", ``True``/"fp16" -> "fp16", "bf16" -> "bf16"."""
    if value in (None, False, "", "fp32", "float32", "none", "no"):
        return "fp32"
    if value is True or value in ("fp16", "float16", "half"):
        return "fp16"
    if value in ("bf16", "bfloat16"):
        return "bf16"
    raise ConfigError(f"mixed_precision must be one of {', '.join(PRECISIONS)} (or a bool), "
                      f"got {value!r}", field="mixed_precision")


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 value (round half to even), still as float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    lsb = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = (bits + np.uint32(0x7FFF) + lsb) & np.uint32(0xFFFF0000)
    out = rounded.view(np.float32)
    return np.where(np.isnan(x), x, out)  # keep NaNs NaN (rounding could carry into Inf)


class Precision:
    """Casts for one compute precision: ``cast`` turns fp32 into the compute format and
    ``round`` re-rounds an op's result to it."""

    def __init__(self, name: str):
        # "fp64" is not a training option; gradient checks use it to compare with finite
        # differences at full precision
        self.name = name if name == "fp64" else normalize_precision(name)

    @property
    def dtype(self):
        return {"fp16": np.float16, "fp64": np.float64}.get(self.name, np.float32)

    @property
    def accum_dtype(self):
        """Where losses and softmax are computed: fp32, or fp64 in gradient checks."""
        return np.float64 if self.name == "fp64" else np.float32

    def cast(self, x: np.ndarray) -> np.ndarray:
        if self.name == "fp16":
            return np.asarray(x, dtype=np.float16)
        if self.name == "bf16":
            return round_bf16(x)
        return np.asarray(x, dtype=self.dtype)

    def round(self, x: np.ndarray) -> np.ndarray:
        return round_bf16(x) if self.name == "bf16" else x


class LossScaler:
    """Dynamic loss scaling: multiply the loss by ``scale`` before the backward pass so small
    gradients survive low precision; an overflow (Inf/NaN gradient) skips the step and
    multiplies the scale by ``backoff``; ``growth_interval`` clean steps in a row multiply it by
    ``growth``."""

    def __init__(self, init_scale: float = 2.0 ** 15, growth: float = 2.0, backoff: float = 0.5,
                 growth_interval: int = 200, min_scale: float = 1.0):
        if not (init_scale > 0 and math.isfinite(init_scale)):
            raise ConfigError(f"loss scale must be a positive number, got {init_scale!r}",
                              "loss_scale")
        self.scale = float(init_scale)
        self.growth, self.backoff = float(growth), float(backoff)
        self.growth_interval = int(growth_interval)
        self.min_scale = float(min_scale)
        self.good_steps = 0
        self.skipped = 0

    def update(self, found_overflow: bool) -> bool:
        """Record one step's outcome; returns True when the step should be applied."""
        if found_overflow:
            self.scale = max(self.scale * self.backoff, self.min_scale)
            self.good_steps = 0
            self.skipped += 1
            return False
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= self.growth
            self.good_steps = 0
        return True

    def state(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def load_state(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
        self.skipped = int(state["skipped"])


def all_finite(arrays) -> bool:
    return all(bool(np.isfinite(a).all()) for a in arrays)
