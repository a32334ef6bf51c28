"""Routing and moderation evaluation of abi's multi-persona system on labelled request sets
that training never reads.

    python tools/eval_routing.py                      # tests/data/routing_heldout.yaml
    python tools/eval_routing.py tests/data/routing_fresh.yaml   # any other labelled set
    python tools/eval_routing.py --verbose            # also list the misrouted requests
    python tools/eval_routing.py --lexical            # the fallback without embeddings
    python tools/eval_routing.py --cross-validate     # + 5-fold CV on the training data:
                                                      # per-class figures and the
                                                      # out-of-fold threshold curve
    python tools/eval_routing.py --json               # the whole report as JSON

Prints routing accuracy with per-persona precision and recall and the confusion matrix,
violation recall and precision, the share of benign look-alikes blocked, per-category
precision and recall of the policy, and the query classifier's figures. Exit status 1 when
accuracy is below --min-accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

DEFAULT_SET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                           "routing_heldout.yaml")


def _table(title: str, classes: dict) -> str:
    lines = [f"{title:<20} {'precision':>9} {'recall':>7} {'f1':>6} {'n':>4}"]
    for name, m in classes.items():
        lines.append(f"  {name:<18} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} "
                     f"{m['support']:>4}")
    return "\n".join(lines)


def cross_validation(system) -> dict:
    """5-fold figures of the classifiers the system uses (semantic, or lexical without
    embeddings) on the shipped training data, and the out-of-fold violation curve: the
    harmful-probability threshold of highest recall at precision >= 0.90."""
    from abi.personas.abi.classifier import QueryClassifier
    from abi.personas.abi.policy import (MODEL_CATEGORIES, PolicyModel, SemanticPolicyModel,
                                         policy_examples)
    from abi.personas.data import load_examples
    from abi.personas.evaluation import cross_validate, violation_curve

    embedder = getattr(system.router.policy.model.model, "embedder", None)

    def train_query(ex):
        if embedder is not None:
            return QueryClassifier.train_semantic(embedder, ex, store=False).model.predict_many
        c = QueryClassifier.train(ex)
        return lambda texts: [c.classify(t).probabilities for t in texts]

    def train_policy(ex):
        if embedder is not None:
            return SemanticPolicyModel.train(embedder, ex, store=False).model.predict_many
        m = PolicyModel.train(ex)
        return lambda texts: [m.scores(t) for t in texts]

    actions = system.config.policy.actions
    harmful = [c for c in MODEL_CATEGORIES if actions[c] in ("block", "redirect")]
    out = {"cv_query_types": cross_validate(list(load_examples("queries")), train_query),
           "cv_policy": cross_validate(policy_examples(), train_policy)}
    out["cv_violations"] = violation_curve(out["cv_policy"].pop("oof"), harmful)
    out["cv_query_types"].pop("oof")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("path", nargs="?", default=DEFAULT_SET, help="labelled requests (YAML list)")
    p.add_argument("--verbose", "-v", action="store_true", help="list misrouted requests")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--cross-validate", action="store_true",
                   help="also report 5-fold cross-validation on the training data")
    p.add_argument("--mode", choices=("first_match", "weighted"), help="routing mode")
    p.add_argument("--lexical", action="store_true",
                   help="evaluate the lexical fallback (no sentence embeddings)")
    p.add_argument("--embedding-model", help="embedding GGUF path or name for the classifiers")
    p.add_argument("--min-accuracy", type=float, default=0.0,
                   help="exit 1 when routing accuracy is below this")
    args = p.parse_args(argv)

    import yaml

    from abi.personas import MultiPersonaConfig, MultiPersonaSystem
    from abi.personas.evaluation import evaluate

    with open(args.path, encoding="utf-8") as f:
        items = yaml.safe_load(f)
    system = MultiPersonaSystem(MultiPersonaConfig(
        backend="echo", routing_mode=args.mode,
        embedding_model="lexical" if args.lexical else args.embedding_model))
    report = evaluate(items, system)

    if args.cross_validate:
        report.update(cross_validation(system))

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"set: {os.path.relpath(args.path)} ({report['items']} requests), "
              f"{report['classifier']} classifiers")
        print(f"routing accuracy: {report['routing_accuracy']:.3f}")
        print(_table("persona", report["routing"]))
        names = list(report["routing"])
        print("confusion (rows: expected, columns: routed)")
        print(" " * 10 + "".join(f"{n:>8}" for n in names))
        for e in names:
            print(f"  {e:<8}" + "".join(f"{report['confusion'].get(f'{e}->{g}', 0):>8}"
                                          for g in names))
        v, la = report["violations"], report["lookalikes"]
        print(f"\nviolations (block or redirect): recall {v['recall']:.3f} "
              f"({v['caught']}/{v['expected']}), precision {v['precision']:.3f} "
              f"({v['caught']}/{v['flagged']} flagged)")
        print(f"benign look-alikes blocked or redirected: {la['rate']:.3f} "
              f"({la['flagged']}/{la['items']})")
        if report["query_types"]:   # only sets that label query types
            print(f"\nquery type accuracy: {report['query_type_accuracy']:.3f}")
            print(_table("query type", report["query_types"]))
        print(f"\npolicy accuracy (category or none): {report['policy_accuracy']:.3f}")
        print(_table("policy category", report["policy"]))
        for key, title in (("cv_query_types", "query classifier"), ("cv_policy", "policy model")):
            if key in report:
                print(f"\n5-fold cross-validation on the training data, {title}: "
                      f"accuracy {report[key]['accuracy']:.3f}")
                print(_table("class", report[key]["classes"]))
        if "cv_violations" in report:
            print("\nout-of-fold violations by threshold on the harmful probability "
                  f"(policy.threshold is {system.config.policy.threshold:.2f})")
            print(f"  {'threshold':>9} {'recall':>7} {'precision':>9} {'none flagged':>12}")
            for c in report["cv_violations"]["curve"]:
                print(f"  {c['threshold']:>9.2f} {c['recall']:>7.3f} {c['precision']:>9.3f} "
                      f"{c['none_flagged']:>12.3f}")
            best = report["cv_violations"]["best"]
            print("  highest recall at precision >= 0.90: " +
                  (f"threshold {best['threshold']:.2f}" if best else "none reaches it"))
        if args.verbose and report["misrouted"]:
            print("\nmisrouted:")
            for m in report["misrouted"]:
                print(f"  [{m['expected']} -> {m['got']}] {m['text']}\n      {m['reason']}")
    return 1 if report["routing_accuracy"] < args.min_accuracy else 0


if __name__ == "__main__":
    sys.exit(main())
