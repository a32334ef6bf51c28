"""Check that models exported by ``abi.training`` load and compute the same in llama.cpp.

Trains a small llama from scratch (tokenizer copied from --vocab-from), exports it as
F32, F16 and Q8_0 GGUF, then, in the llama-cpp-python interpreter given by
--llamacpp-python, loads each file, evaluates a token sequence and compares its logits with
our numpy forward pass; finally lets llama.cpp generate a few tokens.

    python tools/check_training_export.py --vocab-from ~/.cache/abi/models/smollm2-135m-instruct.gguf \\
        --llamacpp-python "$ABI_LLAMACPP_PYTHON" --out /tmp/export-check

Development tool only: llama.cpp is never a dependency of abi.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

_LLAMACPP = r"""
import json, sys
import numpy as np
import llama_cpp

# ggml's extra CPU buffer types (AMX / repacked Q8_0) crash on some VMs that advertise AMX;
# load plain CPU buffers, which are what every machine runs
import llama_cpp.llama_cpp as _low

_default_params = _low.llama_model_default_params
def _params():
    p = _default_params()
    p.use_extra_bufts = False
    return p
_low.llama_model_default_params = llama_cpp.llama_model_default_params = _params

job = json.loads(sys.argv[1])
out = {}
for item in job["models"]:
    # an F32 KV cache (llama.cpp's default is F16) so F32 weights compare at full precision
    llm = llama_cpp.Llama(model_path=item["gguf"], n_ctx=64, logits_all=True, verbose=False,
                          n_threads=2, seed=0, type_k=0, type_v=0)
    toks = job["tokens"]
    llm.eval(toks)
    logits = np.array(llm.scores[:len(toks)], dtype=np.float32)
    ours = np.load(item["expected"])
    diff = float(np.max(np.abs(logits - ours)))
    scale = float(np.max(np.abs(ours)))
    agree = float(np.mean(logits.argmax(-1) == ours.argmax(-1)))
    llm.reset()
    res = llm(job["prompt"], max_tokens=12, temperature=0.0)
    text = res["choices"][0]["text"]
    out[item["type"]] = {"max_abs_diff": diff, "max_abs_logit": scale, "argmax_agreement": agree,
                         "n_vocab": llm.n_vocab(), "generated": text,
                         "generated_tokens": res["usage"]["completion_tokens"]}
print(json.dumps(out))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--vocab-from", required=True)
    p.add_argument("--llamacpp-python", required=True)
    p.add_argument("--out", default="/tmp/abi-export-check")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--text", help="train on this UTF-8 text (tokenised with the vocab model) "
                                  "instead of a synthetic token stream; prompts come from it")
    a = p.parse_args(argv)

    from abi.gguf import load
    from abi.training.datasets import write_tokenbin
    from abi.training.gguf_export import export_gguf, load_llama_gguf
    from abi.training.llm_trainer import LlmTrainingConfig, train_llm

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    n_vocab = len(load(a.vocab_from).get("tokenizer.ggml.tokens"))
    rng = np.random.default_rng(0)
    prompt = "Once upon a time"
    if a.text:
        from abi.training.datasets import tokenize_text_file

        tokenize_text_file(a.vocab_from, a.text, out / "data.bin")
        prompt = " ".join(Path(a.text).read_text(encoding="utf-8").split()[:4])
    else:
        stream = np.concatenate([rng.permutation(np.arange(100, 164)) for _ in range(200)])
        write_tokenbin(out / "data.bin", stream)
    cfg = LlmTrainingConfig(data_path=str(out / "data.bin"), vocab_from=a.vocab_from,
                            n_layer=2, n_embd=64, n_head=4, n_head_kv=2, n_ff=128,
                            context_length=64, seq_len=32, batch_size=8 if a.text else 4,
                            steps=a.steps, learning_rate=1e-2 if a.text else 3e-3)
    report = train_llm(cfg)
    print(f"trained {report.steps} steps, loss {report.losses[0]:.3f} -> {report.final_loss:.3f}, "
          f"n_vocab {n_vocab}")
    tokens = [int(t) for t in rng.integers(0, n_vocab, 24)]
    job = {"tokens": tokens, "prompt": prompt, "models": []}
    for t in ("f32", "f16", "q8_0"):
        path = export_gguf(out / f"model-{t}.gguf", report.model, a.vocab_from, t)
        # what the file holds, run through our forward (quantisation included)
        reloaded, _ = load_llama_gguf(path)
        expected = reloaded.forward(np.array([tokens]))[0]
        np.save(out / f"expected-{t}.npy", expected)
        job["models"].append({"type": t, "gguf": str(path), "expected": str(out / f"expected-{t}.npy")})
    res = subprocess.run([a.llamacpp_python, "-c", _LLAMACPP, json.dumps(job)],
                         capture_output=True, text=True)
    if res.returncode or not res.stdout.strip():
        print(f"llama.cpp run failed (exit {res.returncode}):\n{res.stdout[-2000:]}"
              f"{res.stderr[-4000:]}", file=sys.stderr)
        return 1
    results = json.loads(res.stdout.strip().splitlines()[-1])
    ok = True
    for t, r in results.items():
        rel = r["max_abs_diff"] / max(r["max_abs_logit"], 1e-9)
        # llama.cpp multiplies F16/Q8_0 weights with activations rounded to F16/Q8_0, abi
        # with float32 activations: allow that rounding, nothing more
        tol, agree = {"f32": (1e-4, 1.0), "f16": (5e-3, 1.0), "q8_0": (5e-2, 0.95)}[t]
        good = rel < tol and r["argmax_agreement"] >= agree and r["n_vocab"] == n_vocab
        ok &= good
        abi_text = ""
        try:
            import abi.llm

            abi_text = abi.llm.load_model(str(out / f"model-{t}.gguf")).generate(
                prompt, max_tokens=12, temperature=0)
        except ImportError:
            pass
        print(f"{t:5s} abi generates {abi_text!r}")
        print(f"{t:5s} llama.cpp vs abi logits: max |diff| {r['max_abs_diff']:.2e} "
              f"(max |logit| {r['max_abs_logit']:.2f}, rel {rel:.1e}), argmax agreement "
              f"{r['argmax_agreement']:.2f}, generated {r['generated_tokens']} tokens {r['generated']!r}  "
              f"{'OK' if good else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
