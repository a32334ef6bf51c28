"""Federated training across machines on Flower (``flwr``, optional extra ``train``).

``CoordinatorStrategy`` is a Flower ``Strategy`` whose aggregation and validation are the
``Coordinator``'s: every client result becomes ``submit_update(node_id, step, weights,
num_samples)`` (rejected updates are reported, not averaged in) and the new global model is
``Coordinator.aggregate()``. ``AbiClient`` is a Flower ``NumPyClient`` that trains the
reference's simulation model (``abi.training.mlp``) on a node's local data; ``LoraClient``
trains a LoRA adapter of a GGUF model on the node's shard of a JSONL data set.

Federated LoRA aggregates the adapters' factors themselves: the global A and B are the
Coordinator's aggregate (FedAvg weighted by the clients' sample counts, or its trimmed mean
or median) of the clients' A and B, each factor separately. That is FedAvg of the factors,
not of their product (mean(B) @ mean(A) is not mean(B @ A)); every client starts each round
from the same global factors, so after a round of small local steps the two stay close.

    python -m abi.training.flower server --address 127.0.0.1:8089 --nodes a,b,c --rounds 3
    python -m abi.training.flower client --address 127.0.0.1:8089 --node-id a --seed 1
    python -m abi.training.flower lora-server --model M.gguf --nodes a,b,c --rounds 3 [--rank 8 ...]
    python -m abi.training.flower lora-client --model M.gguf --data D.jsonl --node-id a --shard 0 --shards 3

This uses Flower's long-standing ``start_server``/``start_client`` entry points (gRPC), which
Flower marks deprecated in favour of its SuperLink/SuperNode deployment; the strategy and
client classes are the same in both.
"""
from __future__ import annotations

import argparse
import logging as _logging
import os
import sys
from types import SimpleNamespace

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no usage reports from our processes

import numpy as np

try:
    from flwr.client import NumPyClient
    from flwr.common import (EvaluateIns, FitIns, ndarrays_to_parameters,
                             parameters_to_ndarrays)
    from flwr.server.strategy import Strategy
except ImportError as exc:  # pragma: no cover - depends on the environment
    from ..errors import ConfigError

    raise ConfigError("federated training across machines needs Flower: "
                      "pip install 'abi[train]'", field="flwr") from exc

from ..errors import FederatedError
from . import mlp
from .federated import Coordinator, FederatedConfig
from .optim import make_optimizer

log = _logging.getLogger("abi.training.flower")


def _flat(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in arrays]) \
        if arrays else np.zeros(0, np.float32)


class CoordinatorStrategy(Strategy):
    """A Flower strategy that delegates validation and aggregation to a ``Coordinator``.

    Each round asks ``min_clients`` clients to train from the global weights for the
    coordinator's current step; ``rounds`` records, per aggregated round, the accepted
    updates (node, step, weights, samples), the rejections and the result.
    """

    def __init__(self, coordinator: Coordinator, min_clients: int = 2, local_epochs: int = 1,
                 evaluate: bool = True):
        super().__init__()
        self.coordinator = coordinator
        self.min_clients = int(min_clients)
        self.local_epochs = int(local_epochs)
        self.do_evaluate = evaluate
        self.rounds: list[dict] = []
        self.eval_losses: list[float] = []

    def __repr__(self) -> str:
        return f"CoordinatorStrategy({self.coordinator.config.aggregation})"

    def initialize_parameters(self, client_manager):
        return ndarrays_to_parameters([self.coordinator.global_weights])

    def configure_fit(self, server_round, parameters, client_manager):
        clients = client_manager.sample(num_clients=self.min_clients,
                                        min_num_clients=self.min_clients)
        ins = FitIns(parameters, {"step": self.coordinator.step, "local_epochs": self.local_epochs})
        return [(c, ins) for c in clients]

    def aggregate_fit(self, server_round, results, failures):
        accepted, rejected = [], []
        for _, res in results:
            node_id = str(res.metrics.get("node_id", ""))
            step = int(res.metrics.get("step", -1))
            weights = _flat(parameters_to_ndarrays(res.parameters))
            try:
                self.coordinator.submit_update(node_id, step, weights, num_samples=res.num_examples)
                accepted.append({"node_id": node_id, "step": step, "weights": weights,
                                 "num_samples": res.num_examples})
            except FederatedError as exc:
                log.warning("round %d: rejected update: %s", server_round, exc)
                rejected.append({"node_id": node_id, "error": str(exc)})
        metrics = {"accepted": len(accepted), "rejected": len(rejected),
                   "failures": len(failures)}
        if not accepted:
            return None, metrics
        step = self.coordinator.step
        result = self.coordinator.aggregate()
        self.rounds.append({"server_round": server_round, "step": step, "updates": accepted,
                            "rejected": rejected, "result": result})
        return ndarrays_to_parameters([result]), metrics

    def configure_evaluate(self, server_round, parameters, client_manager):
        if not self.do_evaluate:
            return []
        clients = client_manager.sample(num_clients=self.min_clients,
                                        min_num_clients=self.min_clients)
        return [(c, EvaluateIns(parameters, {})) for c in clients]

    def aggregate_evaluate(self, server_round, results, failures):
        if not results:
            return None, {}
        n = sum(r.num_examples for _, r in results)
        loss = sum(r.loss * r.num_examples for _, r in results) / n
        self.eval_losses.append(float(loss))
        return float(loss), {"clients": len(results)}

    def evaluate(self, server_round, parameters):
        return None


class AbiClient(NumPyClient):
    """Trains abi's MLP on this node's data: ``local_epochs`` of SGD from the global weights
    per round, reporting its node id, the step it trained for and its sample count."""

    def __init__(self, node_id: str, model_size: int = 512, samples: int = 128, seed: int = 0,
                 batch_size: int = 32, learning_rate: float = 0.1):
        self.node_id = node_id
        self.hidden = mlp.hidden_for_budget(model_size)
        self.task = mlp.SyntheticTask.generate(samples, seed)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)

    def get_parameters(self, config):
        init = mlp.init_params(self.hidden, np.random.default_rng(self.seed))
        return [mlp.flatten(init)]

    def fit(self, parameters, config):
        params = mlp.unflatten(_flat(parameters), self.hidden)
        step = int(config.get("step", 0))
        opt = make_optimizer("sgd", params, momentum=0.0)
        rng = np.random.default_rng([self.seed, step])  # deterministic per node and round
        n = len(self.task.y)
        loss_sum = 0.0
        for _ in range(int(config.get("local_epochs", 1))):
            order = rng.permutation(n)
            for s in range(0, n, self.batch_size):
                idx = order[s:s + self.batch_size]
                loss, grads, _ = mlp.loss_and_grads(params, self.task.x[idx], self.task.y[idx])
                opt.step(grads, self.learning_rate)
                loss_sum += loss * len(idx)
        return [mlp.flatten(params)], n, {"node_id": self.node_id, "step": step,
                                          "train_loss": loss_sum / max(n, 1)}

    def evaluate(self, parameters, config):
        params = mlp.unflatten(_flat(parameters), self.hidden)
        loss, _, logits = mlp.loss_and_grads(params, self.task.x, self.task.y)
        acc = float((logits.argmax(axis=1) == self.task.y).mean())
        return float(loss), len(self.task.y), {"accuracy": acc, "node_id": self.node_id}


class LoraClient(NumPyClient):
    """Trains a LoRA adapter on this node's shard of a JSONL data set (every ``shards``-th
    example from ``shard``): ``local_steps`` AdamW steps per round from the global factors;
    evaluates the global factors on the shard's held-out part (``val_split``)."""

    def __init__(self, node_id: str, model: str, data: str, shard: int, shards: int, *,
                 rank: int = 8, alpha: float = 16.0, targets=("q", "v"), lora_layers=None,
                 local_steps: int = 5, batch_size: int = 4, learning_rate: float = 1e-3,
                 max_seq_len: int = 256, val_split: float = 0.25, seed: int = 0):
        from .lora_data import load_examples, split

        if not 0 <= shard < shards:
            raise FederatedError(f"shard {shard} is not in 0..{shards - 1}")
        self.node_id, self.seed = node_id, int(seed)
        self.model = lora_model(model, rank, alpha, targets, lora_layers)
        examples, _ = load_examples(data, self.model.gguf, max_seq_len)
        self.examples = examples[shard::shards]
        self.train_idx, self.val_idx = split(self.examples, val_split, self.seed)
        self.local_steps, self.batch_size, self.lr = int(local_steps), int(batch_size), float(learning_rate)

    def _set(self, parameters) -> None:
        flat, at = _flat(parameters), 0
        for p in self.model.params.values():
            p[...] = flat[at:at + p.size].reshape(p.shape)
            at += p.size

    def get_parameters(self, config):
        return [_flat(self.model.params.values())]

    def _batch(self, idx):
        from .lora_data import pad_batch

        return pad_batch([self.examples[i] for i in idx])

    def fit(self, parameters, config):
        from .optim import clip_grad_norm

        self._set(parameters)
        step = int(config.get("step", 0))
        opt = make_optimizer("adamw", self.model.params, weight_decay=0.0)
        rng = np.random.default_rng([self.seed, step])   # deterministic per node and round
        loss_sum = 0.0
        for _ in range(self.local_steps):
            idx = rng.choice(self.train_idx, size=min(self.batch_size, len(self.train_idx)), replace=False)
            grads = {k: np.zeros_like(v) for k, v in self.model.params.items()}
            loss, _ = self.model.loss_and_grads(*self._batch(idx), grads)
            clip_grad_norm(grads, 1.0)
            opt.step(grads, self.lr)
            loss_sum += loss
        return self.get_parameters({}), len(self.train_idx), {
            "node_id": self.node_id, "step": step, "train_loss": loss_sum / max(self.local_steps, 1)}

    def evaluate(self, parameters, config):
        self._set(parameters)
        total, count = 0.0, 0
        for b in range(0, len(self.val_idx), self.batch_size):
            loss, n = self.model.loss_and_grads(*self._batch(self.val_idx[b:b + self.batch_size]), None)
            total, count = total + loss * n, count + n
        return total / max(count, 1), len(self.val_idx), {"node_id": self.node_id}


def lora_model(model: str, rank: int, alpha: float, targets, lora_layers):
    """The LoRA model every node and the server build alike (seed 0: the same initial A,
    and B = 0), so that the server's initial factors are the clients'."""
    from .lora import LoraModel

    return LoraModel(model, rank=rank, alpha=alpha, targets=tuple(targets), lora_layers=lora_layers, seed=0)


def lora_coordinator(model: str, nodes, *, rank: int = 8, alpha: float = 16.0, targets=("q", "v"),
                     lora_layers=None, aggregation: str = "fedavg") -> Coordinator:
    """A Coordinator over the flattened LoRA factors, starting from their initial values."""
    init = _flat(lora_model(model, rank, alpha, targets, lora_layers).params.values())
    coord = Coordinator(FederatedConfig(aggregation=aggregation), init.size, initial_weights=init)
    for n in nodes:
        coord.register_node(n)
    return coord


def run_server(address: str, coordinator: Coordinator, rounds: int, min_clients: int,
               local_epochs: int = 1, round_timeout: float | None = 120.0):
    """Serve ``rounds`` rounds; returns (Flower History, the strategy)."""
    import flwr

    strategy = CoordinatorStrategy(coordinator, min_clients=min_clients, local_epochs=local_epochs)
    history = flwr.server.start_server(
        server_address=address, strategy=strategy,
        config=flwr.server.ServerConfig(num_rounds=rounds, round_timeout=round_timeout))
    return history, strategy


def run_client(address: str, client: NumPyClient, max_wait_time: float = 60.0) -> None:
    import flwr

    flwr.client.start_client(server_address=address, client=client.to_client(), insecure=True,
                             max_wait_time=max_wait_time)


def _lora_args(p) -> None:
    p.add_argument("--model", required=True, help="the base GGUF")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--targets", default="q,v")
    p.add_argument("--lora-layers", type=int, default=None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m abi.training.flower")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--address", default="127.0.0.1:8089")
    s.add_argument("--nodes", required=True, help="comma-separated node ids allowed to join")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--model-size", type=int, default=512)
    s.add_argument("--aggregation", default="fedavg", choices=["fedavg", "trimmed_mean", "median"])
    s.add_argument("--local-epochs", type=int, default=1)
    c = sub.add_parser("client")
    c.add_argument("--address", default="127.0.0.1:8089")
    c.add_argument("--node-id", required=True)
    c.add_argument("--model-size", type=int, default=512)
    c.add_argument("--samples", type=int, default=128)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--learning-rate", type=float, default=0.1)
    ls = sub.add_parser("lora-server")
    ls.add_argument("--address", default="127.0.0.1:8089")
    ls.add_argument("--nodes", required=True)
    ls.add_argument("--rounds", type=int, default=3)
    ls.add_argument("--aggregation", default="fedavg", choices=["fedavg", "trimmed_mean", "median"])
    ls.add_argument("--out", help="write the final global adapter here")
    _lora_args(ls)
    lc = sub.add_parser("lora-client")
    lc.add_argument("--address", default="127.0.0.1:8089")
    lc.add_argument("--node-id", required=True)
    lc.add_argument("--data", required=True)
    lc.add_argument("--shard", type=int, required=True)
    lc.add_argument("--shards", type=int, required=True)
    lc.add_argument("--local-steps", type=int, default=5)
    lc.add_argument("--batch-size", type=int, default=4)
    lc.add_argument("--learning-rate", type=float, default=1e-3)
    lc.add_argument("--max-seq-len", type=int, default=256)
    lc.add_argument("--seed", type=int, default=0)
    _lora_args(lc)
    a = p.parse_args(argv)
    if a.role == "server":
        nodes = [n for n in a.nodes.split(",") if n]
        size = mlp.parameter_count(mlp.hidden_for_budget(a.model_size))
        init = mlp.flatten(mlp.init_params(mlp.hidden_for_budget(a.model_size),
                                           np.random.default_rng(0)))
        coord = Coordinator(FederatedConfig(aggregation=a.aggregation), size, initial_weights=init)
        for n in nodes:
            coord.register_node(n)
        _, strategy = run_server(a.address, coord, a.rounds, len(nodes), a.local_epochs)
        for loss in strategy.eval_losses:
            print(f"eval loss {loss:.4f}")
        return 0
    if a.role == "lora-server":
        nodes = [n for n in a.nodes.split(",") if n]
        targets = tuple(a.targets.split(","))
        coord = lora_coordinator(a.model, nodes, rank=a.rank, alpha=a.alpha, targets=targets,
                                 lora_layers=a.lora_layers, aggregation=a.aggregation)
        _, strategy = run_server(a.address, coord, a.rounds, len(nodes))
        for loss in strategy.eval_losses:
            print(f"validation loss {loss:.4f}")
        if a.out:
            from ..gguf.lora_adapter import write_lora_adapter

            m = lora_model(a.model, a.rank, a.alpha, targets, a.lora_layers)
            LoraClient._set(SimpleNamespace(model=m), [coord.global_weights])
            write_lora_adapter(a.out, m.args.arch, a.alpha, m.adapter_tensors())
        return 0
    if a.role == "lora-client":
        run_client(a.address, LoraClient(
            a.node_id, a.model, a.data, a.shard, a.shards, rank=a.rank, alpha=a.alpha,
            targets=tuple(a.targets.split(",")), lora_layers=a.lora_layers, local_steps=a.local_steps,
            batch_size=a.batch_size, learning_rate=a.learning_rate, max_seq_len=a.max_seq_len,
            seed=a.seed))
        return 0
    run_client(a.address, AbiClient(a.node_id, a.model_size, a.samples, a.seed,
                                    learning_rate=a.learning_rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
