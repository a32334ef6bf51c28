"""Turning per-token hidden states into one vector per text, and L2 normalisation."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

POOLING = ("mean", "cls", "last")


def pool(hidden: np.ndarray, mask: np.ndarray, kind: str) -> np.ndarray:
    """hidden (B, T, D), mask (B, T) of real tokens -> (B, D).

    mean: average of the real tokens; cls: the first real token; last: the last real one.
    A row without real tokens pools to zeros.
    """
    if kind not in POOLING:
        raise ConfigError(f"pooling {kind!r} is not supported; choose one of {', '.join(POOLING)}",
                          "pooling")
    mask = np.asarray(mask, dtype=bool)
    B, T, D = hidden.shape
    counts = mask.sum(axis=1)
    if kind == "mean":
        summed = np.einsum("btd,bt->bd", hidden, mask.astype(hidden.dtype))
        return summed / np.maximum(counts, 1)[:, None].astype(hidden.dtype)
    rows = np.arange(B)
    if kind == "cls":
        index = mask.argmax(axis=1)
    else:
        index = T - 1 - mask[:, ::-1].argmax(axis=1)
    out = hidden[rows, index].copy()
    out[counts == 0] = 0
    return out


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]
    return x / np.maximum(norms, eps).astype(x.dtype)
