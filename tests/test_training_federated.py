"""Federated Coordinator: the aggregation rules and every rejection."""
from __future__ import annotations

import numpy as np
import pytest

import abi
from abi.errors import ConfigError, FederatedError
from abi.training.federated import Coordinator, FederatedConfig


def test_reference_example_through_the_ai_namespace():
    federated = abi.ai.training.federated
    assert federated is abi.training.federated
    c = federated.Coordinator(federated.FederatedConfig(), 2)
    c.register_node("node-a")
    c.submit_update(node_id="node-a", step=1, weights=[0.1, 0.2])
    out = c.aggregate()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.float32([0.1, 0.2]))
    assert c.step == 2


def test_fedavg_is_weighted_by_samples():
    c = Coordinator(model_size=3)
    for n in ("a", "b", "c"):
        c.register_node(n)
    c.submit_update("a", 1, [1.0, 0.0, 2.0], num_samples=1)
    c.submit_update("b", 1, [4.0, 3.0, 2.0], num_samples=2)
    c.submit_update("c", 1, [0.0, 6.0, 2.0], num_samples=3)
    out = c.aggregate()
    np.testing.assert_allclose(out, [(1 + 8 + 0) / 6, (0 + 6 + 18) / 6, 2.0], rtol=1e-7)
    np.testing.assert_array_equal(c.global_weights, out)
    assert c.history[0] == {"step": 1, "nodes": ["a", "b", "c"], "num_samples": [1, 2, 3]}


def test_trimmed_mean_and_median_resist_an_outlier():
    honest = [np.array([1.0, 2.0]), np.array([1.2, 2.2]), np.array([0.8, 1.8]),
              np.array([1.1, 2.1])]
    evil = np.array([1e6, -1e6])
    for rule, expect in [("trimmed_mean", [(1.0 + 1.1 + 1.2) / 3, (1.8 + 2.0 + 2.1) / 3]),
                         ("median", [1.1, 2.0])]:
        c = Coordinator(FederatedConfig(aggregation=rule, trim_ratio=0.2), model_size=2)
        for i, w in enumerate(honest + [evil]):
            c.register_node(f"n{i}")
            c.submit_update(f"n{i}", 1, w, num_samples=1000 if i == 4 else 1)
        np.testing.assert_allclose(c.aggregate(), expect, rtol=1e-6)
    fedavg = Coordinator(model_size=2)
    for i, w in enumerate(honest + [evil]):
        fedavg.register_node(f"n{i}")
        fedavg.submit_update(f"n{i}", 1, w)
    assert abs(fedavg.aggregate()[0]) > 1e4  # plain averaging is dragged away


def test_rejections_are_clear_errors():
    c = Coordinator(model_size=4)
    c.register_node("a")
    with pytest.raises(FederatedError, match="already registered"):
        c.register_node("a")
    with pytest.raises(FederatedError, match="unknown node 'zz'"):
        c.submit_update("zz", 1, np.zeros(4))
    with pytest.raises(FederatedError, match=r"shape \(3,\).*\(4,\)"):
        c.submit_update("a", 1, np.zeros(3))
    with pytest.raises(FederatedError, match=r"shape \(2, 2\)"):
        c.submit_update("a", 1, np.zeros((2, 2)))
    with pytest.raises(FederatedError, match="NaN/Inf"):
        c.submit_update("a", 1, [0.0, np.nan, 0.0, 0.0])
    with pytest.raises(FederatedError, match="NaN/Inf"):
        c.submit_update("a", 1, [0.0, 0.0, -np.inf, 0.0])
    with pytest.raises(FederatedError, match="not numbers"):
        c.submit_update("a", 1, ["x", 1, 2, 3])
    with pytest.raises(FederatedError, match="num_samples"):
        c.submit_update("a", 1, np.zeros(4), num_samples=0)
    with pytest.raises(FederatedError, match="step 2"):
        c.submit_update("a", 2, np.zeros(4))
    with pytest.raises(FederatedError, match="at least 1"):
        c.aggregate()
    c.submit_update("a", 1, np.ones(4))
    c.aggregate()
    with pytest.raises(FederatedError, match="stale update"):
        c.submit_update("a", 1, np.zeros(4))
    assert not c.pending


def test_staleness_window_and_resubmission():
    c = Coordinator(FederatedConfig(max_staleness=1, min_updates=2), model_size=1)
    c.register_node("a")
    c.register_node("b")
    c.submit_update("a", 1, [1.0])
    c.submit_update("a", 1, [3.0])  # a resubmission replaces the node's earlier update
    with pytest.raises(FederatedError, match="at least 2"):
        c.aggregate()
    c.submit_update("b", 1, [5.0])
    assert c.aggregate()[0] == 4.0
    c.submit_update("a", 1, [0.0])  # one round old: accepted with max_staleness=1
    c.submit_update("b", 2, [2.0])
    assert c.aggregate()[0] == 1.0
    with pytest.raises(FederatedError, match="stale"):
        c.submit_update("a", 1, [0.0])
    c.unregister_node("b")
    with pytest.raises(FederatedError, match="unknown node"):
        c.submit_update("b", 3, [0.0])


def test_bad_configuration():
    with pytest.raises(ConfigError):
        Coordinator(FederatedConfig(aggregation="mode"), 4)
    with pytest.raises(ConfigError):
        Coordinator(FederatedConfig(trim_ratio=0.5), 4)
    with pytest.raises(ConfigError):
        Coordinator(None, 0)
    with pytest.raises(FederatedError):
        Coordinator(None, 2, initial_weights=[1.0])
