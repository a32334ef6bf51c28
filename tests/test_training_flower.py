"""Federated training over Flower: a real server and three client processes on 127.0.0.1,
with every aggregate checked against the Coordinator's own arithmetic."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

import flwr  # in the test extra as well as train

from abi.training import mlp
from abi.training.federated import Coordinator, FederatedConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _coordinator(nodes, aggregation="fedavg"):
    hidden = mlp.hidden_for_budget(512)
    init = mlp.flatten(mlp.init_params(hidden, np.random.default_rng(0)))
    c = Coordinator(FederatedConfig(aggregation=aggregation), mlp.parameter_count(hidden),
                    initial_weights=init)
    for n in nodes:
        c.register_node(n)
    return c


def test_flower_server_and_three_client_processes():
    from abi.training.flower import run_server

    address = f"127.0.0.1:{_free_port()}"
    nodes = {"node-a": (64, 1), "node-b": (128, 2), "node-c": (256, 3)}  # samples, seed
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "abi.training.flower", "client", "--address", address,
         "--node-id", node, "--samples", str(samples), "--seed", str(seed)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for node, (samples, seed) in nodes.items()]
    coordinator = _coordinator(nodes)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _, strategy = run_server(address, coordinator, rounds=3, min_clients=3,
                                 round_timeout=60)
    finally:
        for s, h in handlers.items():  # Flower installs its own handlers in this process
            signal.signal(s, h)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    for p in procs:
        assert p.returncode == 0, p.stderr.read()[-2000:]

    assert len(strategy.rounds) == 3 and coordinator.step == 4
    replay = _coordinator(nodes)
    for i, rnd in enumerate(strategy.rounds, 1):
        ups = rnd["updates"]
        assert sorted(u["node_id"] for u in ups) == sorted(nodes) and not rnd["rejected"]
        assert {u["node_id"]: u["num_samples"] for u in ups} == {k: v[0] for k, v in nodes.items()}
        assert all(u["step"] == i for u in ups)
        # the nodes really trained, each differently
        assert not np.allclose(ups[0]["weights"], ups[1]["weights"])
        for u in ups:
            replay.submit_update(u["node_id"], u["step"], u["weights"], u["num_samples"])
        expected = replay.aggregate()
        np.testing.assert_array_equal(rnd["result"], expected)
        # and the Coordinator's arithmetic is FedAvg weighted by samples
        w = np.stack([u["weights"].astype(np.float64) for u in ups])
        n = np.array([u["num_samples"] for u in ups], np.float64)
        np.testing.assert_allclose(expected, (n[:, None] * w).sum(0) / n.sum(), rtol=1e-6, atol=1e-7)
        assert not np.allclose(expected, w.mean(0), rtol=1e-4, atol=1e-6)  # weighting mattered
    np.testing.assert_array_equal(coordinator.global_weights, strategy.rounds[-1]["result"])
    assert strategy.eval_losses[-1] < strategy.eval_losses[0]


def test_strategy_rejects_bad_updates_and_aggregates_the_rest():
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    from abi.training.flower import CoordinatorStrategy

    c = _coordinator(["a", "b"])
    size = c.model_size
    strategy = CoordinatorStrategy(c, min_clients=2)

    def res(node, weights, n=10, step=1):
        return (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters([weights]), n,
                             {"node_id": node, "step": step}))

    nan = np.zeros(size, np.float32)
    nan[3] = np.nan
    results = [res("a", np.ones(size, np.float32), 10), res("b", np.full(size, 3.0, np.float32), 30),
               res("intruder", np.ones(size, np.float32)), res("a", nan),
               res("b", np.ones(size - 1, np.float32)), res("b", np.ones(size, np.float32), step=2)]
    params, metrics = strategy.aggregate_fit(1, results, [])
    assert metrics == {"accepted": 2, "rejected": 4, "failures": 0}
    errors = " | ".join(r["error"] for r in strategy.rounds[0]["rejected"])
    for needle in ("unknown node 'intruder'", "NaN/Inf", "shape", "step 2"):
        assert needle in errors
    from flwr.common import parameters_to_ndarrays

    out = parameters_to_ndarrays(params)[0]
    np.testing.assert_allclose(out, np.full(size, (10 * 1 + 30 * 3) / 40), rtol=1e-6)
    # a round where every update is rejected aggregates nothing and keeps the model
    params, metrics = strategy.aggregate_fit(2, [res("intruder", np.ones(size, np.float32), step=2)], [])
    assert params is None and metrics["rejected"] == 1 and c.step == 2
