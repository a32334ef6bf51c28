"""Routing evaluation: how often Abi sends labelled requests to the expected persona, and
per-class precision and recall of the routing, the query classifier and the policy.

Items are mappings with ``text``, ``persona`` and optionally ``query_type``, ``policy`` (the
expected policy category) and ``lookalike`` (a benign request in the words of a harmful
one). A violation is a category whose action is block or redirect; the report gives its
recall and precision as one binary decision, and the share of look-alikes blocked or
redirected. ``tools/eval_routing.py`` prints the report.
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
    actions = system.config.policy.actions
    violation_pairs, lookalikes_flagged, n_lookalikes = [], 0, 0
    for item in items:
        analysis = system.analyze(item["text"])
        decision = system.router.route(analysis)
        got = decision.persona.value
        persona_pairs.append((item["persona"], got))
        if item.get("query_type"):
            type_pairs.append((item["query_type"], analysis.query.query_type.value))
        expected_cat = item.get("policy") or "none"
        policy_pairs.append((expected_cat, analysis.policy.category or "none"))
        flagged = analysis.policy.action in ("block", "redirect")
        violation_pairs.append((actions.get(expected_cat) in ("block", "redirect"), flagged))
        if item.get("lookalike"):
            n_lookalikes += 1
            lookalikes_flagged += flagged
        if got != item["persona"]:
            misses.append({"text": item["text"], "expected": item["persona"], "got": got,
                           "reason": decision.reason})
    n = len(persona_pairs)
    confusion = Counter(persona_pairs)
    tp = sum(1 for e, p in violation_pairs if e and p)
    n_expected = sum(1 for e, _ in violation_pairs if e)
    n_flagged = sum(1 for _, p in violation_pairs if p)
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
        "violations": {"recall": tp / n_expected if n_expected else 0.0,
                       "precision": tp / n_flagged if n_flagged else 0.0,
                       "expected": n_expected, "flagged": n_flagged, "caught": tp},
        "lookalikes": {"items": n_lookalikes, "flagged": lookalikes_flagged,
                       "rate": lookalikes_flagged / n_lookalikes if n_lookalikes else 0.0},
        "classifier": getattr(system.router.policy.model, "kind", "unknown"),
        "misrouted": misses,
    }


def cross_validate(examples: list[tuple[str, str]], train, k: int = 5, seed: int = 0) -> dict:
    """k-fold figures of a classifier trained by ``train(examples)``, which returns a function
    texts -> one {class: probability} per text, on the shipped training data: the
    development figures, kept apart from the held-out evaluation sets. ``oof`` holds each
    example's (label, out-of-fold probabilities) for further analysis."""
    data = list(examples)
    random.Random(seed).shuffle(data)
    oof = []
    for f in range(k):
        test = data[f::k]
        predict = train([e for i, e in enumerate(data) if i % k != f])
        oof += zip((lab for _, lab in test), predict([t for t, _ in test]))
    pairs = [(lab, max(p, key=p.get)) for lab, p in oof]
    return {"accuracy": sum(e == p for e, p in pairs) / len(pairs),
            "classes": precision_recall(pairs, sorted({e for e, _ in pairs})), "oof": oof}


def violation_curve(oof: list[tuple[str, dict]], harmful: Iterable[str],
                    min_precision: float = 0.90) -> dict:
    """Recall, precision and the share of "none" examples flagged when the summed probability
    of the ``harmful`` classes must reach t, for t in 0.20 ... 0.95; ``best`` is the threshold
    of highest recall whose precision is at least ``min_precision`` (None if none is)."""
    harmful = set(harmful)
    mass = [(lab in harmful, lab == "none", sum(p.get(c, 0.0) for c in harmful))
            for lab, p in oof]
    n_harm = sum(h for h, _, _ in mass)
    n_none = sum(z for _, z, _ in mass)
    curve = []
    for t in [round(0.2 + 0.05 * i, 2) for i in range(16)]:
        flagged = [(h, z) for h, z, m in mass if m >= t]
        tp = sum(h for h, _ in flagged)
        curve.append({"threshold": t, "recall": tp / n_harm if n_harm else 0.0,
                      "precision": tp / len(flagged) if flagged else 0.0,
                      "none_flagged": (sum(z for _, z in flagged) / n_none if n_none
                                       else 0.0)})
    ok = [c for c in curve if c["precision"] >= min_precision]
    return {"curve": curve, "best": max(ok, key=lambda c: (c["recall"], -c["threshold"]))
            if ok else None}
