"""Federated averaging: a ``Coordinator`` collects weight updates from registered nodes and
aggregates them into the global model.

Rounds: the coordinator collects updates for ``step`` (1 at the start, +1 after each
``aggregate()``). An update must name a registered node, carry exactly ``model_size`` finite
values and a step that is neither in the future nor older than ``max_staleness`` rounds.

Aggregation rules (``FederatedConfig.aggregation``):

    fedavg        sum_i n_i * w_i / sum_i n_i            (n_i = num_samples)
    trimmed_mean  per coordinate: drop the floor(trim_ratio * m) largest and smallest of the
                  m values, average the rest             (robust to a few outliers)
    median        per coordinate median                   (robust to < m/2 bad nodes)

Across machines the same coordinator runs inside a Flower server: see
``abi.training.flower`` (optional extra ``train``).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, FederatedError

AGGREGATIONS = ("fedavg", "trimmed_mean", "median")


@dataclass
class FederatedConfig:
    aggregation: str = "fedavg"
    trim_ratio: float = 0.1        # trimmed_mean: fraction cut from each end
    min_updates: int = 1           # aggregate() refuses with fewer pending updates
    max_staleness: int = 0         # accept updates up to this many rounds old
    max_nodes: int = 10_000

    def validate(self) -> None:
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"unknown aggregation {self.aggregation!r}; choose one of "
                              f"{', '.join(AGGREGATIONS)}", field="aggregation")
        if not 0 <= self.trim_ratio < 0.5:
            raise ConfigError(f"trim_ratio must lie in [0, 0.5), got {self.trim_ratio!r}",
                              field="trim_ratio")
        if self.min_updates < 1 or self.max_staleness < 0 or self.max_nodes < 1:
            raise ConfigError("min_updates and max_nodes must be >= 1, max_staleness >= 0",
                              field="min_updates")


@dataclass
class Update:
    node_id: str
    step: int
    weights: np.ndarray = field(repr=False)  # float64 copy
    num_samples: int


class Coordinator:
    """``Coordinator(config, model_size)``: ``register_node``, ``submit_update``, ``aggregate``."""

    def __init__(self, config: FederatedConfig | None = None, model_size: int = 128,
                 initial_weights=None):
        self.config = config or FederatedConfig()
        self.config.validate()
        if not isinstance(model_size, (int, np.integer)) or model_size < 1:
            raise ConfigError(f"model_size must be a positive integer, got {model_size!r}",
                              field="model_size")
        self.model_size = int(model_size)
        self._lock = threading.Lock()
        self._nodes: dict[str, int] = {}          # node id -> updates accepted
        self._pending: dict[str, Update] = {}
        self.step = 1
        self.history: list[dict] = []             # one entry per aggregation
        if initial_weights is None:
            self.global_weights = np.zeros(self.model_size, np.float32)
        else:
            self.global_weights = self._check_weights(initial_weights, "initial weights") \
                .astype(np.float32)

    # -- nodes -----------------------------------------------------------------------------
    def register_node(self, node_id: str) -> None:
        if not isinstance(node_id, str) or not node_id or len(node_id) > 256:
            raise FederatedError(f"node id must be a non-empty string of <= 256 characters, "
                                 f"got {node_id!r}")
        with self._lock:
            if node_id in self._nodes:
                raise FederatedError(f"node {node_id!r} is already registered")
            if len(self._nodes) >= self.config.max_nodes:
                raise FederatedError(f"cannot register {node_id!r}: the federation already has "
                                     f"max_nodes={self.config.max_nodes} nodes")
            self._nodes[node_id] = 0

    def unregister_node(self, node_id: str) -> None:
        with self._lock:
            if self._nodes.pop(node_id, None) is None:
                raise FederatedError(f"unknown node {node_id!r}")
            self._pending.pop(node_id, None)

    @property
    def nodes(self) -> list[str]:
        return list(self._nodes)

    @property
    def pending(self) -> dict[str, Update]:
        return dict(self._pending)

    # -- updates ---------------------------------------------------------------------------
    def _check_weights(self, weights, what: str) -> np.ndarray:
        try:
            arr = np.array(weights, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise FederatedError(f"{what} are not numbers: {exc}") from None
        if arr.shape != (self.model_size,):
            raise FederatedError(f"{what} have shape {arr.shape}; the model has shape "
                                 f"({self.model_size},)")
        bad = ~np.isfinite(arr)
        if bad.any():
            raise FederatedError(f"{what} contain {int(bad.sum())} NaN/Inf values "
                                 f"(first at index {int(np.argmax(bad))})")
        return arr

    def submit_update(self, node_id: str, step: int, weights, num_samples: int = 1) -> None:
        """Queue a node's weights for the current round; a node's resubmission replaces its
        earlier update of the round."""
        with self._lock:
            if node_id not in self._nodes:
                raise FederatedError(f"unknown node {node_id!r}; register_node() it first")
            if not isinstance(step, (int, np.integer)) or isinstance(step, bool):
                raise FederatedError(f"step must be an integer, got {step!r}")
            if step > self.step:
                raise FederatedError(f"update from {node_id!r} is for step {step}, but the "
                                     f"federation is at step {self.step}")
            if step < self.step - self.config.max_staleness:
                raise FederatedError(f"stale update from {node_id!r}: step {step}, the federation "
                                     f"is at step {self.step} (max_staleness="
                                     f"{self.config.max_staleness})")
            if not isinstance(num_samples, (int, np.integer)) or isinstance(num_samples, bool) \
                    or num_samples < 1:
                raise FederatedError(f"num_samples must be a positive integer, got {num_samples!r}")
            arr = self._check_weights(weights, f"weights from {node_id!r}")
            self._pending[node_id] = Update(node_id, int(step), arr, int(num_samples))

    def aggregate(self) -> np.ndarray:
        """Combine the pending updates into new global weights (float32) and open the next
        round."""
        with self._lock:
            updates = list(self._pending.values())
            if len(updates) < self.config.min_updates:
                raise FederatedError(f"aggregate() needs at least {self.config.min_updates} "
                                     f"update(s) for step {self.step}, has {len(updates)}")
            result = aggregate_weights([u.weights for u in updates],
                                       [u.num_samples for u in updates], self.config)
            for u in updates:
                self._nodes[u.node_id] += 1
            self.history.append({"step": self.step, "nodes": [u.node_id for u in updates],
                                 "num_samples": [u.num_samples for u in updates]})
            self.global_weights = result
            self._pending.clear()
            self.step += 1
            return result.copy()


def aggregate_weights(weights: list[np.ndarray], num_samples: list[int],
                      config: FederatedConfig) -> np.ndarray:
    """The aggregation rule alone, on float64 rows; returns float32."""
    stack = np.stack([np.asarray(w, np.float64) for w in weights])      # (m, P)
    m = stack.shape[0]
    if config.aggregation == "fedavg":
        n = np.asarray(num_samples, np.float64)
        out = (n[:, None] * stack).sum(axis=0) / n.sum()
    elif config.aggregation == "median":
        out = np.median(stack, axis=0)
    else:
        cut = int(math.floor(config.trim_ratio * m))
        kept = np.sort(stack, axis=0)[cut:m - cut]
        out = kept.mean(axis=0)
    return out.astype(np.float32)
