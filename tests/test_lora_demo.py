"""The demonstration: LoRA teaches the default SmolLM2 facts about a fictional product
(tests/data/lora_product.jsonl); before training it cannot answer differently phrased
held-out questions about them (tests/data/lora_product_heldout.jsonl), after it answers
most. Greedy replies of the runtime itself (``load_model``, then with the trained adapter
unmerged, ``load_model(lora=...)``), judged by containing the expected string. Runs on one
thread so that it is reproducible and does not fight the other tests for the cores."""
import json
from pathlib import Path

import pytest

from abi.llm import load_model
from abi.training.lora_trainer import LoraConfig, train_lora

DATA = Path(__file__).parent / "data"
# the demonstration's settings (tools/bench_lora.py reports the same run)
DEMO = dict(rank=8, alpha=16.0, lora_layers=8, targets=("q", "k", "v", "o", "gate", "up", "down"),
            steps=30, batch_size=4, learning_rate=2e-3, lr_schedule="constant", max_seq_len=128,
            seed=0, threads=1, recompute=False)
MAX_TOKENS = 20   # of each greedy reply


def held_out():
    return [json.loads(line) for line in (DATA / "lora_product_heldout.jsonl").read_text().splitlines()]


def answers(model_path, lora=()):
    model = load_model(model_path, lora=list(lora))
    return [model.chat([{"role": "user", "content": h["question"]}], max_tokens=MAX_TOKENS,
                       temperature=0.0) for h in held_out()]


def hits(replies):
    return sum(h["expect"].lower() in r.lower() for h, r in zip(held_out(), replies))


@pytest.mark.slow
def test_lora_teaches_smollm2_a_product(default_model_path, tmp_path, monkeypatch):
    from abi import _kernels

    monkeypatch.setenv("ABI_NUM_THREADS", "1")
    _kernels.default_num_threads(refresh=True)
    try:
        adapter = str(tmp_path / "product.gguf")
        report = train_lora(LoraConfig(model=default_model_path, data=str(DATA / "lora_product.jsonl"),
                                       out=adapter, **DEMO))
        before = answers(default_model_path)
        after = answers(default_model_path, [adapter])
    finally:
        monkeypatch.delenv("ABI_NUM_THREADS")
        _kernels.default_num_threads(refresh=True)
    for h, b, a in zip(held_out(), before, after):
        print(f"{h['question']}\n  before: {b}\n  after:  {a}")
    assert hits(before) <= 1, before
    assert hits(after) >= 5, after
    assert report.losses[-1] < report.losses[0] / 4
