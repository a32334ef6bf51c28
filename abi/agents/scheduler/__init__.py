"""Learned backend scheduling for the GPU-aware agent: ``linucb`` (the contextual bandit),
``features`` (the request and backend features it reads), ``state`` (crash-safe state
files) and ``simulator`` (backends with known latency models, for measuring regret).
Nothing is imported here, so importing abi.agents stays light."""
