"""LoRA training against the full-parameter trainer, and the LoRA demonstration.

    python tools/bench_lora.py speed [--model M] [--seq-len 512] [--steps 2] [--threads N] [--repeat 2]
    python tools/bench_lora.py demo  [--model M]

``speed``: tokens/s and peak RSS of ``train lora`` (all layers; q, k, v, o) and of
``train llm --init`` (every parameter, a float32 copy of the model) on windows of
``--seq-len`` tokens of plain text (this repository's README), each trainer in its own
process so that each peak RSS is its own; the ratio LoRA / full, and the model file's size.
The first step of each run is warm-up and not timed.

``demo``: the demonstration of tests/test_lora_demo.py (the same settings): the held-out
questions' greedy answers before and after training, the hits, the training speed; with
``ABI_LLAMACPP_PYTHON`` set, also llama.cpp's greedy answers with the adapter file.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _text_records(model: str, seq_len: int, n: int) -> list[str]:
    """n texts of at least seq_len + 1 tokens, cut from the README."""
    from abi.llm.tokenizer import load_tokenizer

    tok = load_tokenizer(model)
    ids = tok.encode((ROOT / "README.md").read_text())
    need = seq_len + 1
    if len(ids) < n * need:
        ids = ids * (n * need // len(ids) + 1)
    return [tok.decode(ids[i * need:(i + 1) * need]) for i in range(n)]


def child_lora(model: str, seq_len: int, steps: int, threads: int | None) -> dict:
    import tracemalloc

    from abi.training.lora_trainer import LoraConfig, train_lora

    tracemalloc.start()   # numpy's arrays are traced: the cache and activations, not the map

    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "text.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in _text_records(model, seq_len, steps + 1)))
        times = []
        cfg = LoraConfig(model=model, data=str(data), out=None, rank=8, targets=("q", "k", "v", "o"),
                         steps=steps + 1, batch_size=1, max_seq_len=seq_len, threads=threads)
        last = [time.perf_counter()]

        def on_step(step, metrics):
            now = time.perf_counter()
            times.append((now - last[0], metrics["tokens_per_second"]))
            last[0] = now

        train_lora(cfg, on_step=on_step)
    return {"tokens_per_second": sum(t for _, t in times[1:]) / len(times[1:]), "peak_rss_mb": _peak_rss_mb(),
            "traced_peak_mb": tracemalloc.get_traced_memory()[1] / 2 ** 20}


def child_full(model: str, seq_len: int, steps: int, threads: int | None) -> dict:
    import contextlib

    from abi.training.datasets import write_tokenbin
    from abi.training.llm_trainer import LlmTrainingConfig, train_llm
    from abi.llm.tokenizer import load_tokenizer

    tok = load_tokenizer(model)
    limit = contextlib.nullcontext()
    if threads:
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(threads, "blas")
    with tempfile.TemporaryDirectory() as d, limit:
        ids = [i for t in _text_records(model, seq_len, steps + 1) for i in tok.encode(t)]
        write_tokenbin(Path(d) / "data.bin", ids)
        rates = []
        train_llm(LlmTrainingConfig(data_path=str(Path(d) / "data.bin"), init_gguf=model,
                                    steps=steps + 1, batch_size=1, seq_len=seq_len),
                  on_step=lambda s, m: rates.append(m["tokens_per_second"]))
    return {"tokens_per_second": sum(rates[1:]) / len(rates[1:]), "peak_rss_mb": _peak_rss_mb()}


def speed(args) -> None:
    results: dict[str, dict] = {}
    for _ in range(args.repeat):   # alternating, the best of each: shared machines drift
        for kind in ("lora", "full"):
            cmd = [sys.executable, __file__, "_child", kind, "--model", args.model, "--seq-len",
                   str(args.seq_len), "--steps", str(args.steps)] + (
                       ["--threads", str(args.threads)] if args.threads else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            r = json.loads(out.stdout.strip().splitlines()[-1])
            best = results.setdefault(kind, r)
            best["tokens_per_second"] = max(best["tokens_per_second"], r["tokens_per_second"])
    from abi.gguf import load

    file_mb = os.path.getsize(args.model) / 2 ** 20
    n_vocab = load(args.model).tensors["token_embd.weight"].shape[0]
    lo, fu = results["lora"], results["full"]
    print(f"model {Path(args.model).name} ({file_mb:.0f} MiB), seq len {args.seq_len}, batch 1, "
          f"{args.steps} timed steps, best of {args.repeat}, threads {args.threads or 'default'}")
    print(f"{'trainer':<28}{'tokens/s':>10}{'peak RSS MiB':>14}")
    print(f"{'train lora (r8, q,k,v,o)':<28}{lo['tokens_per_second']:>10.1f}{lo['peak_rss_mb']:>14.0f}")
    print(f"{'train llm (full, float32)':<28}{fu['tokens_per_second']:>10.1f}{fu['peak_rss_mb']:>14.0f}")
    print(f"lora / full: speed {lo['tokens_per_second'] / fu['tokens_per_second']:.2f}x, "
          f"memory {lo['peak_rss_mb'] / fu['peak_rss_mb']:.2f}x; lora peak RSS / model file "
          f"{lo['peak_rss_mb'] / file_mb:.2f}x")
    print(f"lora: the mapped model file {file_mb:.0f} MiB + allocations at their peak "
          f"{lo['traced_peak_mb']:.0f} MiB (dequantised weights <= 32 MiB, the rest activations: "
          f"logits of {args.seq_len} tokens alone are {args.seq_len * n_vocab * 4 / 2 ** 20:.0f} MiB for a "
          f"{n_vocab}-token vocabulary) + the interpreter")


def demo(args) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_lora_demo import DATA, DEMO, MAX_TOKENS, answers, held_out, hits

    from abi import _kernels
    from abi.training.lora_trainer import LoraConfig, train_lora

    os.environ["ABI_NUM_THREADS"] = "1"
    _kernels.default_num_threads(refresh=True)
    with tempfile.TemporaryDirectory() as d:
        adapter = str(Path(d) / "a.gguf")
        r = train_lora(LoraConfig(model=args.model, data=str(DATA / "lora_product.jsonl"),
                                  out=adapter, **DEMO))
        before, after = answers(args.model), answers(args.model, [adapter])
        theirs = _llamacpp_answers(args.model, adapter, [h["question"] for h in held_out()], MAX_TOKENS)
    for i, (h, b, a) in enumerate(zip(held_out(), before, after)):
        print(f"Q: {h['question']}  (expect {h['expect']!r})\n  before: {b}\n  after:  {a}")
        if theirs:
            print(f"  llama.cpp with the adapter: {theirs[i]}")
    print(f"hits before {hits(before)}/{len(before)}, after {hits(after)}/{len(after)}"
          + (f", llama.cpp with the adapter {hits(theirs)}/{len(theirs)}, same text as abi "
             f"{sum(x.strip() == y.strip() for x, y in zip(after, theirs))}/{len(after)}" if theirs else "")
          + f"; {r.steps} steps, loss {r.losses[0]:.3f} -> {r.losses[-1]:.3f}, "
          f"{r.tokens_per_second:.0f} tokens/s, {r.wall_time_s:.0f} s")


_LLAMACPP = """
import json, sys
import llama_cpp
model, adapter, questions, n = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model, lora_path=adapter, verbose=False, n_ctx=256, seed=0)
print(json.dumps([llm.create_chat_completion([{"role": "user", "content": q}], temperature=0.0, top_k=1,
                  max_tokens=n)["choices"][0]["message"]["content"] for q in questions]))
"""


def _llamacpp_answers(model: str, adapter: str, questions: list[str], max_tokens: int) -> list[str] | None:
    """llama.cpp's greedy replies with the adapter (None without ABI_LLAMACPP_PYTHON)."""
    python = os.environ.get("ABI_LLAMACPP_PYTHON")
    if not python:
        return None
    out = subprocess.run([python, "-c", _LLAMACPP, model, adapter, json.dumps(questions), str(max_tokens)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from abi.models_hub import resolve_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "demo", "_child"])
    p.add_argument("kind", nargs="?", choices=["lora", "full"])
    p.add_argument("--model", default=None)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeat", type=int, default=2, help="speed: alternating runs of each trainer")
    args = p.parse_args()
    args.model = str(resolve_model(args.model))
    if args.what == "_child":
        fn = child_lora if args.kind == "lora" else child_full
        print(json.dumps(fn(args.model, args.seq_len, args.steps, args.threads)))
    elif args.what == "speed":
        speed(args)
    else:
        demo(args)


if __name__ == "__main__":
    main()
