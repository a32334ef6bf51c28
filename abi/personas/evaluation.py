"""Routing evaluation: how often Abi sends labelled requests to the expected persona, and
per-class precision and recall of the routing, the query classifier and the policy.

Items are mappings with ``text``, ``persona`` and optionally ``query_type`` and ``policy``
(the expected policy category). ``tools/eval_routing.py`` prints the report.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Any, Iterable

from abi.personas.types import Persona


def precision_recall(pairs: list[tuple[str, str]], labels: Iterable[str]) -> dict[str, dict]:
    """Per label: precision, recall, F1 and support, from (expected, predicted) pairs."""
    out = {}
    for lab in labels:
        tp = sum(1 for e, p in pairs if e == lab and p == lab)
        fp = sum(1 for e, p in pairs if e != lab and p == lab)
        fn = sum(1 for e, p in pairs if e == lab and p != lab)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
    return out


def evaluate(items: list[dict], system: Any) -> dict:
    """Route every item with ``system`` (a MultiPersonaSystem; nothing is generated)."""
    persona_pairs, type_pairs, policy_pairs, misses = [], [], [], []
    for item in items:
        analysis = system.analyze(item["text"])
        decision = system.router.route(analysis)
        got = decision.persona.value
        persona_pairs.append((item["persona"], got))
        if item.get("query_type"):
            type_pairs.append((item["query_type"], analysis.query.query_type.value))
        policy_pairs.append((item.get("policy") or "none", analysis.policy.category or "none"))
        if got != item["persona"]:
            misses.append({"text": item["text"], "expected": item["persona"], "got": got,
                           "reason": decision.reason})
    n = len(persona_pairs)
    confusion = Counter(persona_pairs)
    return {
        "items": n,
        "routing_accuracy": sum(e == p for e, p in persona_pairs) / n if n else 0.0,
        "routing": precision_recall(persona_pairs, [p.value for p in Persona]),
        "confusion": {f"{e}->{p}": c for (e, p), c in sorted(confusion.items())},
        "query_type_accuracy": (sum(e == p for e, p in type_pairs) / len(type_pairs)
                                if type_pairs else 0.0),
        "query_types": precision_recall(type_pairs, sorted({e for e, _ in type_pairs})),
        "policy_accuracy": (sum(e == p for e, p in policy_pairs) / len(policy_pairs)
                            if policy_pairs else 0.0),
        "policy": precision_recall(policy_pairs, sorted({e for e, _ in policy_pairs} - {"none"})),
        "misrouted": misses,
    }


def cross_validate(examples: list[tuple[str, str]], train, k: int = 5, seed: int = 0) -> dict:
    """k-fold accuracy of a classifier trained by ``train(examples)`` (which returns a
    function text -> label) on the shipped training data: the development figure, kept
    apart from the held-out evaluation set."""
    data = list(examples)
    random.Random(seed).shuffle(data)
    pairs = []
    for f in range(k):
        test = data[f::k]
        predict = train([e for i, e in enumerate(data) if i % k != f])
        pairs += [(lab, predict(text)) for text, lab in test]
    return {"accuracy": sum(e == p for e, p in pairs) / len(pairs),
            "classes": precision_recall(pairs, sorted({e for e, _ in pairs}))}
