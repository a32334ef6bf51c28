"""The model ``train()`` trains: a two-layer tanh MLP classifier in numpy with analytic
gradients, and the synthetic task it learns (labels from a fixed random teacher network).

    h = tanh(x @ W1.T + b1)          # (B, H)
    logits = h @ W2.T + b2           # (B, C)
    loss = mean cross-entropy(logits, y)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .precision import Precision

N_INPUTS = 16
N_CLASSES = 4
PARAM_NAMES = ("W1", "b1", "W2", "b2")


def hidden_for_budget(model_size: int) -> int:
    """The widest hidden layer whose parameter count stays within ``model_size``."""
    per_unit = N_INPUTS + 1 + N_CLASSES
    hidden = (int(model_size) - N_CLASSES) // per_unit
    if hidden < 1:
        raise ConfigError(f"model_size {model_size} is too small: the smallest model has "
                          f"{per_unit + N_CLASSES} parameters", field="model_size")
    return hidden


def parameter_count(hidden: int) -> int:
    return hidden * (N_INPUTS + 1 + N_CLASSES) + N_CLASSES


def init_params(hidden: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Xavier-uniform weights, zero biases, float32."""
    def xavier(fan_out, fan_in):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_out, fan_in)).astype(np.float32)

    return {"W1": xavier(hidden, N_INPUTS), "b1": np.zeros(hidden, np.float32),
            "W2": xavier(N_CLASSES, hidden), "b2": np.zeros(N_CLASSES, np.float32)}


def flatten(params: dict[str, np.ndarray]) -> np.ndarray:
    """One float32 vector in PARAM_NAMES order (what federated nodes exchange)."""
    return np.concatenate([params[k].reshape(-1) for k in PARAM_NAMES]).astype(np.float32)


def unflatten(vector: np.ndarray, hidden: int) -> dict[str, np.ndarray]:
    shapes = {"W1": (hidden, N_INPUTS), "b1": (hidden,), "W2": (N_CLASSES, hidden),
              "b2": (N_CLASSES,)}
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vector.size != parameter_count(hidden):
        raise ConfigError(f"weight vector has {vector.size} values, the model {parameter_count(hidden)}",
                          field="weights")
    out, pos = {}, 0
    for k in PARAM_NAMES:
        n = int(np.prod(shapes[k]))
        out[k] = vector[pos:pos + n].reshape(shapes[k]).copy()
        pos += n
    return out


@dataclass
class SyntheticTask:
    """``n`` Gaussian inputs labelled by a random two-layer teacher (argmax of its logits)."""

    x: np.ndarray  # (n, N_INPUTS) float32
    y: np.ndarray  # (n,) int64

    @classmethod
    def generate(cls, n: int, seed: int, teacher_seed: int = 1234) -> "SyntheticTask":
        # the teacher is fixed across seeds so every node of a federation learns one task
        t = np.random.default_rng(teacher_seed)
        A = t.standard_normal((32, N_INPUTS))
        B = t.standard_normal((N_CLASSES, 32))
        x = np.random.default_rng(seed).standard_normal((n, N_INPUTS))
        y = np.argmax(np.tanh(x @ A.T) @ B.T, axis=1)
        return cls(x.astype(np.float32), y.astype(np.int64))


def loss_and_grads(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                   precision: Precision | None = None, loss_scale: float = 1.0,
                   ) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    """Mean cross-entropy, its gradients (multiplied by ``loss_scale``, in the compute
    precision) and the logits. Softmax and the loss itself are always computed in fp32."""
    pr = precision or Precision("fp32")
    W1, b1, W2, b2 = (pr.cast(params[k]) for k in PARAM_NAMES)
    xc = pr.cast(x)
    B = x.shape[0]
    h = pr.round(np.tanh(pr.round(xc @ W1.T + b1)))         # (B, H)
    logits = pr.round(h @ W2.T + b2).astype(pr.accum_dtype)  # (B, C)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(B), y].mean())

    dlogits = np.exp(logp)                                  # softmax, fp32
    dlogits[np.arange(B), y] -= 1.0
    dlogits *= pr.accum_dtype(loss_scale / B)
    d = pr.cast(dlogits)                                    # (B, C)
    grads = {"W2": pr.round(d.T @ h), "b2": pr.round(d.sum(axis=0))}
    dh = pr.round(d @ W2)                                   # (B, H)
    dpre = pr.round(dh * (1 - h * h))
    grads["W1"] = pr.round(dpre.T @ xc)
    grads["b1"] = pr.round(dpre.sum(axis=0))
    return loss, grads, logits
