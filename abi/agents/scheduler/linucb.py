"""Disjoint LinUCB (Li et al., 2010): one ridge regression of reward on context per arm,
an arm chosen by its predicted reward plus an upper-confidence bonus.

For arm a with design matrix A_a = ridge*I + sum x x^T and b_a = sum r x, the score of a
context x is  theta_a . x + alpha_t * sigma * sqrt(x^T A_a^-1 x),  theta_a = A_a^-1 b_a.

- alpha_t decays with the episode count t: alpha0 / sqrt(1 + t / decay_episodes), floored at
  alpha_min, so exploration fades as the models firm up.
- sigma is the observed noise scale (root of an exponential mean of squared prediction
  errors), which makes alpha unit-free: rewards may be seconds or milliseconds.
- discount < 1 forgets old evidence (A and b shrink towards the prior), so the policy follows
  a machine whose speed changes; 1.0 is the stationary textbook algorithm.
- An arm never tried predicts 0, above any (negative) latency reward: every arm is tried
  before the policy settles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError


class _Arm:
    __slots__ = ("A", "b", "n")

    def __init__(self, dim: int, ridge: float):
        self.A = np.eye(dim) * ridge
        self.b = np.zeros(dim)
        self.n = 0

    def theta(self) -> np.ndarray:
        return np.linalg.solve(self.A, self.b)


@dataclass(frozen=True)
class Choice:
    arm: str
    greedy_arm: str | None   # the tried arm with the best predicted reward, bonus aside
    predicted: float         # the chosen arm's predicted reward
    bonus: float             # its exploration bonus

    @property
    def explored(self) -> bool:
        """Chosen for what is not yet known: an untried arm, or one the bonus lifted."""
        return self.arm != self.greedy_arm


class LinUCB:
    def __init__(self, dim: int, *, ridge: float = 1.0, alpha0: float = 1.0,
                 alpha_min: float = 0.05, decay_episodes: float = 100.0, discount: float = 1.0,
                 noise_rate: float = 0.05):
        if dim < 1:
            raise ConfigError(f"dim must be >= 1, got {dim}", "dim")
        for name, value in (("ridge", ridge), ("decay_episodes", decay_episodes)):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}", name)
        if not (0 <= alpha_min <= alpha0):
            raise ConfigError(f"need 0 <= alpha_min <= alpha0, got {alpha_min}, {alpha0}", "alpha0")
        if not 0 < discount <= 1:
            raise ConfigError(f"discount must be in (0, 1], got {discount}", "discount")
        self.dim = dim
        self.ridge = float(ridge)
        self.alpha0 = float(alpha0)
        self.alpha_min = float(alpha_min)
        self.decay_episodes = float(decay_episodes)
        self.discount = float(discount)
        self.noise_rate = float(noise_rate)
        self.arms: dict[str, _Arm] = {}
        self.episodes = 0
        self.noise_var: float | None = None  # None until a first prediction error is seen

    # -- choosing ----------------------------------------------------------------------------
    def alpha(self) -> float:
        decayed = self.alpha0 / math.sqrt(1.0 + self.episodes / self.decay_episodes)
        return max(self.alpha_min, decayed)

    def sigma(self) -> float:
        return math.sqrt(self.noise_var) if self.noise_var else 1.0

    def radius(self) -> float:
        """Confidence radius in reward units: noise plus what the ridge prior may hide
        (sqrt(ridge) * the largest weight norm learned so far), after OFUL's bound."""
        norm = max((float(np.linalg.norm(a.theta())) for a in self.arms.values()), default=0.0)
        return self.sigma() + math.sqrt(self.ridge) * norm

    def _arm(self, name: str) -> _Arm:
        arm = self.arms.get(name)
        if arm is None:
            arm = self.arms[name] = _Arm(self.dim, self.ridge)
        return arm

    def estimate(self, name: str, x: np.ndarray) -> tuple[float, float]:
        """(predicted reward, confidence width sqrt(x^T A^-1 x)) of arm ``name`` at ``x``."""
        arm = self.arms.get(name)
        if arm is None:
            return 0.0, float(math.sqrt(x @ x / self.ridge))
        width = math.sqrt(max(0.0, float(x @ np.linalg.solve(arm.A, x))))
        return float(arm.theta() @ x), width

    def select(self, contexts: dict[str, np.ndarray], explore_scale: float = 1.0) -> Choice:
        """The arm to play among ``contexts`` (arm name -> its context vector)."""
        if not contexts:
            raise ConfigError("no arms to choose from", "arms")
        scale = self.alpha() * self.radius() * explore_scale
        best = greedy = None
        for name in sorted(contexts):  # sorted: ties break the same way every run
            x = self._check(contexts[name])
            mean, width = self.estimate(name, x)
            score = mean + scale * width
            if best is None or score > best[0]:
                best = (score, name, mean, scale * width)
            tried = name in self.arms and self.arms[name].n > 0
            if tried and (greedy is None or mean > greedy[0]):
                greedy = (mean, name)
        return Choice(arm=best[1], greedy_arm=greedy and greedy[1], predicted=best[2],
                      bonus=best[3])

    # -- learning ----------------------------------------------------------------------------
    def update(self, name: str, x: np.ndarray, reward: float, track_noise: bool = True) -> None:
        """Add one observation. ``track_noise=False`` keeps penalised outcomes (failures) out
        of the noise estimate: they are not noise around a latency."""
        x = self._check(x)
        if not math.isfinite(reward):
            raise ConfigError(f"reward must be finite, got {reward}", "reward")
        arm = self._arm(name)
        if track_noise and arm.n > 0:
            err2 = (reward - float(arm.theta() @ x)) ** 2
            self.noise_var = err2 if self.noise_var is None else (
                (1 - self.noise_rate) * self.noise_var + self.noise_rate * err2)
        if self.discount < 1.0:
            prior = np.eye(self.dim) * self.ridge
            arm.A = self.discount * arm.A + (1 - self.discount) * prior
            arm.b = self.discount * arm.b
        arm.A += np.outer(x, x)
        arm.b += reward * x
        arm.n += 1
        self.episodes += 1

    def _check(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,) or not np.all(np.isfinite(x)):
            raise ConfigError(f"context must be {self.dim} finite numbers, got shape {x.shape}",
                              "context")
        return x

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "dim": self.dim, "episodes": self.episodes, "noise_var": self.noise_var,
            "arms": {name: {"A": arm.A.tolist(), "b": arm.b.tolist(), "n": arm.n}
                     for name, arm in sorted(self.arms.items())},
        }

    def load_dict(self, d: dict) -> None:
        """Take learned state from ``to_dict`` output; hyperparameters stay this object's."""
        if int(d["dim"]) != self.dim:
            raise ConfigError(f"saved policy has {d['dim']} features, this one {self.dim}", "dim")
        arms = {}
        for name, a in d["arms"].items():
            arm = _Arm(self.dim, self.ridge)
            arm.A = np.asarray(a["A"], np.float64)
            arm.b = np.asarray(a["b"], np.float64)
            arm.n = int(a["n"])
            if arm.A.shape != (self.dim, self.dim) or arm.b.shape != (self.dim,) or \
                    not (np.all(np.isfinite(arm.A)) and np.all(np.isfinite(arm.b))):
                raise ConfigError(f"saved arm {name!r} has malformed matrices", "arms")
            arms[str(name)] = arm
        noise = d.get("noise_var")
        self.arms = arms
        self.episodes = int(d["episodes"])
        self.noise_var = None if noise is None else float(noise)
