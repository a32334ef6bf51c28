"""The context a scheduling decision sees: the request (prompt length, max_tokens, memory
hint), the backend's state (load, memory in use), all scaled by the priority weight.

Why these shapes: a backend's latency is about  fixed + prefill * prompt + decode * tokens,
each slowed as the machine gets busier; with the load interaction terms that latency is
linear in the features, which is what a linear bandit can learn exactly. Scaling the vector
by the priority weight w makes the reward -w * latency linear in it too. Workload type is
not a feature: each workload type has its own policy, since it has its own backends.
"""
from __future__ import annotations

FEATURES = (
    "bias",               # fixed cost of the backend
    "prompt_kchars",      # prompt length, thousands of characters
    "max_htokens",        # generation / work budget, hundreds of tokens
    "memory_hint_gb",
    "load",               # how busy the backend's device is, 0 = idle, 1 = fully used by others
    "load_x_prompt",
    "load_x_tokens",
    "memory_used",        # fraction of the backend's memory in use
)


def context_vector(prompt_chars: int, max_tokens: int, memory_hint_mb: float, load: float,
                   memory_used: float, weight: float = 1.0):
    import numpy as np

    kchars = prompt_chars / 1000.0
    htokens = max_tokens / 100.0
    load = float(min(max(load, 0.0), 4.0))  # a runaway load reading must not dominate
    x = np.array([1.0, kchars, htokens, memory_hint_mb / 1024.0, load, load * kchars,
                  load * htokens, float(min(max(memory_used, 0.0), 1.0))])
    return weight * x
