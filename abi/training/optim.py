"""Optimisers over a dict of named float32 arrays, updated in place.

    sgd    v = mu*v + g;  p -= lr * (g + mu*v if nesterov else v)     (PyTorch's convention)
    adam   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
           p -= lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m/(1-b1^t), v_hat = v/(1-b2^t)
    adamw  as adam, but weight decay is decoupled: p -= lr*wd*p before the adam update

For sgd and adam, weight decay is the classic L2 term added to the gradient. Decay applies
to matrices only (ndim >= 2): biases and norm gains are left alone, as in most LLM recipes.
An optimiser's whole state (moments, step count) round-trips through ``state_dict`` so a
resumed run continues bit for bit.
"""
from __future__ import annotations

import abc

import math

import numpy as np

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")

Params = dict[str, np.ndarray]


def global_norm(grads: Params) -> float:
    """L2 norm over every gradient together."""
    total = 0.0
    for g in grads.values():
        flat = g.reshape(-1)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_grad_norm(grads: Params, max_norm: float) -> float:
    """Scale ``grads`` in place so their global norm is at most ``max_norm`` (<= 0: no
    clipping). Returns the norm before clipping."""
    norm = global_norm(grads)
    if max_norm > 0 and norm > max_norm:
        scale = np.float32(max_norm / (norm + 1e-6))
        for g in grads.values():
            g *= scale
    return norm


class Optimizer(abc.ABC):
    """Base: holds the parameters it updates, its hyperparameters and the step count."""

    name = ""
    _slots: tuple[str, ...] = ()  # per-parameter state arrays

    def __init__(self, params: Params, weight_decay: float = 0.0):
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}", "weight_decay")
        self.params = params
        self.weight_decay = float(weight_decay)
        self.t = 0
        self.state = {slot: {k: np.zeros_like(p) for k, p in params.items()} for slot in self._slots}

    def _decays(self, name: str) -> bool:
        return self.weight_decay > 0 and self.params[name].ndim >= 2

    def step(self, grads: Params, lr: float) -> None:
        missing = set(self.params) - set(grads)
        if missing:
            raise ConfigError(f"no gradient for parameters {sorted(missing)}", "grads")
        self.t += 1
        for name, p in self.params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ConfigError(f"gradient of {name!r} has shape {g.shape}, parameter {p.shape}",
                                  "grads")
            self._update(name, p, g, np.float32(lr))

    @abc.abstractmethod
    def _update(self, name: str, p: np.ndarray, g: np.ndarray, lr: np.float32) -> None:
        """Update parameter ``p`` in place from its gradient ``g``."""

    # -- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """(arrays keyed "slot/param", JSON-able scalars)."""
        arrays = {f"{slot}/{k}": a for slot, d in self.state.items() for k, a in d.items()}
        return arrays, {"name": self.name, "t": self.t, **self.hyperparameters()}

    def load_state_dict(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        if scalars.get("name") != self.name:
            raise ConfigError(f"optimizer state is for {scalars.get('name')!r}, not {self.name!r}",
                              "optimizer")
        for slot, d in self.state.items():
            for k in d:
                key = f"{slot}/{k}"
                if key not in arrays or arrays[key].shape != d[k].shape:
                    raise ConfigError(f"optimizer state lacks {key!r} or has the wrong shape",
                                      "optimizer")
                d[k][...] = arrays[key]
        self.t = int(scalars["t"])

    def hyperparameters(self) -> dict:
        return {"weight_decay": self.weight_decay}


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, params: Params, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum must lie in [0, 1), got {momentum!r}", "momentum")
        if nesterov and momentum == 0:
            raise ConfigError("nesterov needs a momentum > 0", "nesterov")
        self._slots = ("velocity",) if momentum > 0 else ()
        super().__init__(params, weight_decay)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, name, p, g, lr):
        if self._decays(name):
            g = g + np.float32(self.weight_decay) * p
        if self.momentum > 0:
            v = self.state["velocity"][name]
            v *= np.float32(self.momentum)
            v += g
            g = g + np.float32(self.momentum) * v if self.nesterov else v
        p -= lr * g

    def hyperparameters(self):
        return {**super().hyperparameters(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    name = "adam"
    _slots = ("m", "v")
    decoupled = False

    def __init__(self, params: Params, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ConfigError(f"betas must lie in [0, 1), got {betas!r}", "betas")
        if eps <= 0:
            raise ConfigError(f"eps must be > 0, got {eps!r}", "eps")
        super().__init__(params, weight_decay)
        self.b1, self.b2, self.eps = float(b1), float(b2), float(eps)

    def _update(self, name, p, g, lr):
        if self._decays(name):
            if self.decoupled:
                p *= np.float32(1.0) - lr * np.float32(self.weight_decay)
            else:
                g = g + np.float32(self.weight_decay) * p
        m, v = self.state["m"][name], self.state["v"][name]
        m *= np.float32(self.b1)
        m += np.float32(1 - self.b1) * g
        v *= np.float32(self.b2)
        v += np.float32(1 - self.b2) * (g * g)
        bc1 = np.float32(1 - self.b1 ** self.t)
        bc2 = np.float32(1 - self.b2 ** self.t)
        denom = np.sqrt(v / bc2)
        denom += np.float32(self.eps)
        p -= (lr / bc1) * m / denom

    def hyperparameters(self):
        return {**super().hyperparameters(), "betas": [self.b1, self.b2], "eps": self.eps}


class AdamW(Adam):
    name = "adamw"
    decoupled = True

    def __init__(self, params: Params, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, betas, eps, weight_decay)


def make_optimizer(name: str, params: Params, *, weight_decay: float | None = None,
                   momentum: float = 0.9, nesterov: bool = False,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Optimizer:
    """``weight_decay=None`` means each optimiser's default (0.01 for adamw, else 0)."""
    if name == "sgd":
        return SGD(params, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay or 0.0)
    if name == "adam":
        return Adam(params, betas=betas, eps=eps, weight_decay=weight_decay or 0.0)
    if name == "adamw":
        return AdamW(params, betas=betas, eps=eps,
                     weight_decay=0.01 if weight_decay is None else weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}",
                      field="optimizer")
