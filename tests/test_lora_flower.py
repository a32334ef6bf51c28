"""Federated LoRA over Flower: a real server and three client processes on 127.0.0.1, each
training the adapter on its shard of a chat set; the validation loss falls over the rounds and
each round's global factors are the Coordinator's FedAvg of the clients' factors."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")   # the train/test extra

from abi.gguf import GGMLType
from tests.tiny_models import write_tiny_model

DIMS = {"n_embd": 32, "n_ff": 64, "n_head": 4, "n_kv": 2, "n_layer": 2}
LORA = dict(rank=4, alpha=8.0, targets=("q", "v", "up"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_flower_lora_three_clients(tmp_path):
    from abi.training.flower import LoraClient, lora_coordinator, run_server

    model = str(tmp_path / "tiny.gguf")
    write_tiny_model(model, "llama", GGMLType.Q8_0, seed=3, dims=DIMS)
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"color of {i}?"},
        {"role": "assistant", "content": "blue" if i % 2 else "red"}]}) + "\n" for i in range(36)))
    nodes = ["node-a", "node-b", "node-c"]
    address = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "abi.training.flower", "lora-client", "--address", address,
         "--node-id", node, "--model", model, "--data", str(data), "--shard", str(i), "--shards", "3",
         "--rank", "4", "--alpha", "8", "--targets", "q,v,up", "--local-steps", "4",
         "--learning-rate", "1e-2", "--seed", str(i)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i, node in enumerate(nodes)]
    coordinator = lora_coordinator(model, nodes, **LORA)
    initial = coordinator.global_weights.copy()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _, strategy = run_server(address, coordinator, rounds=3, min_clients=3, round_timeout=120)
    finally:
        for s, h in handlers.items():  # Flower installs its own handlers in this process
            signal.signal(s, h)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    for p in procs:
        assert p.returncode == 0, p.stderr.read()[-2000:]
    assert len(strategy.rounds) == 3 and len(strategy.eval_losses) == 3

    # the validation loss of the starting adapter (B = 0: the base model), as the clients weigh it
    clients = [LoraClient(n, model, str(data), i, 3, seed=i, **LORA) for i, n in enumerate(nodes)]
    evals = [c.evaluate([initial], {}) for c in clients]
    start = sum(loss * n for loss, n, _ in evals) / sum(n for _, n, _ in evals)
    losses = [start] + strategy.eval_losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses

    for rnd in strategy.rounds:   # FedAvg of the factors, weighted by the clients' samples
        ups = rnd["updates"]
        w = np.stack([u["weights"].astype(np.float64) for u in ups])
        n = np.array([u["num_samples"] for u in ups], np.float64)
        np.testing.assert_allclose(rnd["result"], (n[:, None] * w).sum(0) / n.sum(), rtol=1e-5, atol=1e-7)
        assert not np.allclose(ups[0]["weights"], ups[1]["weights"])
