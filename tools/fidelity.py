"""How close abi is to llama.cpp on any GGUF: token ids on a varied text set, top-1
agreement, mean KL and perplexity over a few hundred tokens, and greedy continuations.

    python tools/fidelity.py MODEL [--reference llama-cpp] [--json]

llama.cpp runs live through ABI_LLAMACPP_PYTHON (see tools/make_reference.py); bounds as
in the runtime issue: KL <= 0.005, top-1 >= 95% (>= 99.5% where llama.cpp's top-2 margin
>= 0.5), perplexity within 1%, greedy partings only at llama.cpp near-ties (< 0.5).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="GGUF path or model name")
    p.add_argument("--reference", choices=["llama-cpp"], default="llama-cpp")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import abi.llm
    from abi.llm.fidelity import compare_greedy, compare_logits
    from abi.models_hub import resolve_model
    from make_reference import GREEDY_PROMPTS, llamacpp_tokenize, reference_for
    from reference_tokens import all_texts

    path = str(resolve_model(args.model))
    model = abi.llm.load_model(path, backend=args.backend)
    texts = all_texts()
    theirs = llamacpp_tokenize(path, texts, special=False)
    ours = [model.tokenize(t) for t in texts]
    token_match = sum(a == b for a, b in zip(ours, theirs))

    chat = model.template.render([{"role": "user", "content": "What is the largest planet?"}])
    prompts = GREEDY_PROMPTS[:6] + [chat]
    ref = reference_for(path, prompts=prompts)
    logits = compare_logits(ref, model.logits([int(i) for i in ref["ids"]]))
    offsets = np.concatenate([[0], np.cumsum(ref["greedy_prompt_lengths"])])
    greedy = []
    for i in range(len(prompts)):
        cache = model.new_cache()
        out = model.forward([int(t) for t in ref["greedy_prompts"][offsets[i]:offsets[i + 1]]], cache)
        got = []
        for _ in range(ref["greedy_tokens"].shape[1]):
            got.append(int(np.argmax(out[0])))
            out = model.forward([got[-1]], cache)
        greedy.append(got)
    g = compare_greedy(ref["greedy_tokens"], ref["greedy_margins"], greedy)
    report = {"model": path, "token_match": f"{token_match}/{len(texts)}", **logits,
              "greedy_identical": f"{g['identical']}/{len(prompts)}",
              "greedy_partings_at_near_ties_only": g["all_allowed"], "greedy": g["prompts"]}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"model               {path}")
        print(f"token ids identical {report['token_match']} texts")
        print(f"top-1 agreement     {logits['top1_agreement']:.4f} "
              f"({logits['top1_agreement_confident']:.4f} where margin >= 0.5, "
              f"{logits['confident_positions']}/{logits['positions']} positions)")
        print(f"mean KL             {logits['mean_kl']:.5f} (max {logits['max_kl']:.4f})")
        print(f"perplexity          {logits['perplexity']:.3f} vs {logits['reference_perplexity']:.3f} "
              f"(ratio {logits['perplexity_ratio']:.4f})")
        print(f"greedy identical    {report['greedy_identical']}, partings only at near-ties: "
              f"{g['all_allowed']}")
        for r, prompt in zip(g["prompts"], prompts):
            if not r["identical"]:
                print(f"  parted at step {r['parted_at']} (llama.cpp margin {r['margin_at_parting']:.3f})"
                      f": {prompt[:40]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
