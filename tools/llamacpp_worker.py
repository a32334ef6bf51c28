"""Runs inside a Python that has llama-cpp-python (a development tool, never imported by
abi): evaluates a GGUF the way llama.cpp does and writes what the reference fixtures need.

    python tools/llamacpp_worker.py REQUEST.json OUT.npz

REQUEST: {"model": path, "kind": "logits"|"greedy"|"tokenize", ...}; see make_reference.py.
An optional "lora": [path, scale] runs the model with that LoRA adapter (--lora-scaled).
"""
import json
import sys

import numpy as np


def _llama(path, n_ctx=2048, lora=None):
    from llama_cpp import Llama

    extra = {"lora_path": lora[0], "lora_scale": float(lora[1])} if lora else {}
    return Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=2,
                 logits_all=True, verbose=False, **extra)


def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def logits(req):
    """Batched evaluation of ``ids``: per position the top-K log-probabilities, the log-prob
    of the actual next token, and the top-2 logit margin; optionally the full logits."""
    ids, k = req["ids"], req.get("topk", 32)
    llm = _llama(req["model"], n_ctx=max(len(ids) + 8, 64), lora=req.get("lora"))
    llm.eval(ids)
    raw = np.array(llm.scores[:len(ids)], dtype=np.float32)
    lp = _log_softmax(raw)
    top = np.argsort(-raw, axis=-1, kind="stable")[:, :k]
    srt = np.sort(raw, axis=-1)
    out = {
        "ids": np.array(ids, np.int32),
        "top_ids": top.astype(np.int32),
        "top_logprobs": np.take_along_axis(lp, top, axis=-1).astype(np.float32),
        "margin": (srt[:, -1] - srt[:, -2]).astype(np.float32),
        "next_logprob": lp[np.arange(len(ids) - 1), ids[1:]].astype(np.float32),
    }
    if req.get("full"):
        out["logits"] = raw
    return out


def greedy(req):
    """Greedy continuation of each prompt, one token at a time, with each step's margin."""
    llm = _llama(req["model"], n_ctx=req.get("n_ctx", 1024), lora=req.get("lora"))
    n_gen, tokens, margins, lengths = req["n_gen"], [], [], []
    for prompt in req["prompts"]:
        llm.reset()
        llm.eval(prompt)
        got, mg = [], []
        for _ in range(n_gen):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            order = np.argsort(-row, kind="stable")
            got.append(int(order[0]))
            mg.append(float(row[order[0]] - row[order[1]]))
            llm.eval([int(order[0])])
        tokens.append(got)
        margins.append(mg)
        lengths.append(len(prompt))
    return {"tokens": np.array(tokens, np.int32), "margins": np.array(margins, np.float32)}


if __name__ == "__main__":
    request = json.load(open(sys.argv[1]))
    result = {"logits": logits, "greedy": greedy}[request["kind"]](request)
    np.savez_compressed(sys.argv[2], **result)
