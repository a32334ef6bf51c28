"""How close our logits are to a reference run (llama.cpp) of the same GGUF.

The reference stores, per position, its top-K token ids with log-probabilities, the
log-probability of the actual next token and its top-2 logit margin. KL(ref || ours) is
computed over the top-K tokens plus one bucket for the rest (by the log-sum inequality a
lower bound of the full KL, equal to it when the tail mass is negligible)."""
from __future__ import annotations

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def compare_logits(ref: dict, logits: np.ndarray, margin_threshold: float = 0.5) -> dict:
    """Metrics of our ``logits`` (T, V) against a reference dict (see module doc)."""
    ours = log_softmax(logits)
    top_ids = ref["top_ids"]
    ref_lp = ref["top_logprobs"].astype(np.float64)
    our_lp_top = np.take_along_axis(ours, top_ids, axis=-1)
    p = np.exp(ref_lp)
    p_tail = np.clip(1.0 - p.sum(-1), 1e-12, None)
    q_tail = np.clip(1.0 - np.exp(our_lp_top).sum(-1), 1e-12, None)
    kl = (p * (ref_lp - our_lp_top)).sum(-1) + p_tail * (np.log(p_tail) - np.log(q_tail))
    agree = ours.argmax(-1) == top_ids[:, 0]
    confident = ref["margin"] >= margin_threshold
    ids = ref["ids"]
    our_nll = -ours[np.arange(len(ids) - 1), ids[1:]]
    ref_nll = -ref["next_logprob"].astype(np.float64)
    return {
        "positions": int(len(ids)),
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
        "top1_agreement": float(agree.mean()),
        "top1_agreement_confident": float(agree[confident].mean()) if confident.any() else 1.0,
        "confident_positions": int(confident.sum()),
        "perplexity": float(np.exp(our_nll.mean())),
        "reference_perplexity": float(np.exp(ref_nll.mean())),
        "perplexity_ratio": float(np.exp(our_nll.mean() - ref_nll.mean())),
    }


def compare_greedy(ref_tokens, ref_margins, ours, margin_threshold: float = 0.5) -> dict:
    """Where our greedy continuation parts from the reference's, and whether that step was a
    near-tie for the reference (margin below the threshold), for each prompt."""
    results = []
    for ref_row, margin_row, our_row in zip(ref_tokens, ref_margins, ours):
        n = min(len(ref_row), len(our_row))
        part = next((i for i in range(n) if ref_row[i] != our_row[i]), None)
        results.append({
            "identical": part is None and len(our_row) >= len(ref_row),
            "parted_at": part,
            "margin_at_parting": float(margin_row[part]) if part is not None else None,
            "allowed": part is None or float(margin_row[part]) < margin_threshold,
        })
    return {"prompts": results, "all_allowed": all(r["allowed"] for r in results),
            "identical": sum(r["identical"] for r in results)}
