"""The cuda backend on a GPU: fidelity against llama.cpp, prefill and decode speed, and
decode as a fraction of the memory-bandwidth bound (a development tool, issue 11 point 4).

    # on a GPU machine (pip install -e .[gpu]); models by path or cache name
    python tools/bench_gpu.py                                  # default model + its fixture
    python tools/bench_gpu.py --model default --reference tests/fixtures/reference_smollm2.npz \\
        --model gemma3-270m-q4_k_m.gguf --reference gemma3.ref.npz --json gpu.json

    # once, where llama.cpp is (ABI_LLAMACPP_PYTHON, see tools/make_reference.py): no GPU needed
    python tools/bench_gpu.py make-reference ~/.cache/abi/models/gemma3-270m-q4_k_m.gguf gemma3.ref.npz

The bandwidth bound: a decode step reads every weight once (``CudaDecoder.decode_bytes``);
the device's bandwidth is a device-to-device copy measured in the same run, counted as
bytes read plus bytes written. bound tok/s = bandwidth / bytes per token; the target is
decode >= 50% of it. Fidelity uses the runtime's bounds (tests/test_runtime_fidelity.py):
mean KL <= 0.005, top-1 >= 95% (>= 99.5% where llama.cpp's margin >= 0.5), perplexity
within 1%, greedy continuations parting only at llama.cpp near-ties; the CPU backend's
figures on the same reference are printed beside them (on gemma3-270m the CPU backend
itself measures mean KL 0.0056 and top-1 93.5%, so those bounds are SmolLM2's).

``--simulate`` runs the same code in numba's CUDA simulator (tiny models only: it checks
the tool, not the hardware).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BOUNDS = {"mean_kl": 0.005, "top1_agreement": 0.95, "top1_agreement_confident": 0.995, "perplexity_ratio": 0.01}


def copy_bandwidth(cuda, nbytes: int, reps: int = 20) -> float:
    """Bytes moved per second (read + write) by device-to-device copies of ``nbytes``."""
    src = cuda.device_array(nbytes, np.uint8)
    dst = cuda.device_array(nbytes, np.uint8)
    dst.copy_to_device(src)  # warm-up
    cuda.synchronize()
    start, stop = cuda.event(), cuda.event()
    start.record()
    for _ in range(reps):
        dst.copy_to_device(src)
    stop.record()
    stop.synchronize()
    seconds = max(start.elapsed_time(stop), 1e-3) / 1e3  # ms (the simulator reports 0)
    return 2 * nbytes * reps / seconds


def fidelity(model, reference: dict) -> dict:
    """compare_logits on the reference text, and greedy continuations drawn on the device."""
    from abi.llm.cuda_forward import DeviceSampling
    from abi.llm.fidelity import compare_greedy, compare_logits

    ids = [int(i) for i in reference["ids"]]
    metrics = compare_logits(reference, model.logits(ids))
    lens = reference["greedy_prompt_lengths"]
    offsets = np.concatenate([[0], np.cumsum(lens)])
    n_gen = reference["greedy_tokens"].shape[1]
    decoder = model._decoder()
    ours = []
    for i in range(len(lens)):
        prompt = [int(t) for t in reference["greedy_prompts"][offsets[i]:offsets[i + 1]]]
        steps = decoder.steps(model.new_cache(), prompt, DeviceSampling(temperature=0.0))
        ours.append([next(steps) for _ in range(n_gen)])
        steps.close()
    greedy = compare_greedy(reference["greedy_tokens"], reference["greedy_margins"], ours)
    metrics["greedy_identical"] = f"{greedy['identical']}/{len(lens)}"
    metrics["greedy_all_allowed"] = greedy["all_allowed"]
    metrics["within_bounds"] = bool(
        metrics["mean_kl"] <= BOUNDS["mean_kl"] and metrics["top1_agreement"] >= BOUNDS["top1_agreement"]
        and metrics["top1_agreement_confident"] >= BOUNDS["top1_agreement_confident"]
        and abs(metrics["perplexity_ratio"] - 1) <= BOUNDS["perplexity_ratio"] and greedy["all_allowed"])
    return metrics


def _timed(cuda, fn) -> float:
    cuda.synchronize()
    t = time.perf_counter()
    fn()
    cuda.synchronize()
    return time.perf_counter() - t


def speed(model, cuda, n_prompt: int, n_decode: int, bandwidth: float) -> dict:
    from abi.llm.cuda_forward import DeviceSampling

    decoder = model._decoder()
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(10, model.n_vocab - 10, n_prompt)]
    model.forward(prompt[:min(64, n_prompt)], model.new_cache())  # compile everything once
    prefill = min(_timed(cuda, lambda: model.forward(prompt, model.new_cache())) for _ in range(3))
    out = {"prefill_tokens": n_prompt, "prefill_tok_s": n_prompt / prefill}

    def decode_device():
        steps = decoder.steps(model.new_cache(), prompt[:16], DeviceSampling(temperature=0.0))
        next(steps)
        for _ in range(4):                      # warm-up: compile, capture the graph
            next(steps)
        t = time.perf_counter()
        for _ in range(n_decode):
            next(steps)
        return (time.perf_counter() - t) / n_decode

    def decode_host_logits():
        cache = model.new_cache()
        logits = model.forward(prompt[:16], cache)
        for _ in range(4):
            logits = model.forward([int(np.argmax(logits[0]))], cache)
        t = time.perf_counter()
        for _ in range(n_decode):
            logits = model.forward([int(np.argmax(logits[0]))], cache)
        return (time.perf_counter() - t) / n_decode

    per_token = min(decode_device() for _ in range(2))
    out["decode_tok_s"] = 1 / per_token
    out["decode_tok_s_host_logits"] = 1 / decode_host_logits()
    out["cuda_graphs"] = decoder.use_graphs
    nbytes = decoder.decode_bytes()
    out["weight_bytes_per_token"] = nbytes
    out["bandwidth_bound_tok_s"] = bandwidth / nbytes
    out["fraction_of_bandwidth_bound"] = (nbytes / bandwidth) / per_token
    return out


def run(args) -> dict:
    if args.simulate:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from numba import cuda

    import abi.llm
    from abi.llm import backend as backend_mod
    from abi.models_hub import resolve_model

    if args.simulate:  # select_backend looks for a driver; the simulator has none
        backend_mod.select_backend = lambda name="auto": "cuda"
    device = "simulator" if args.simulate else cuda.get_current_device().name
    device = device.decode() if isinstance(device, bytes) else str(device)
    bandwidth = copy_bandwidth(cuda, args.copy_mib << 20, reps=2 if args.simulate else 20)
    report = {"device": device, "copy_bandwidth_GBps": bandwidth / 1e9, "models": []}
    print(f"device: {device}; device-to-device copy {bandwidth / 1e9:.0f} GB/s (read + write)", flush=True)
    refs = args.reference or []
    for i, name in enumerate(args.model or ["default"]):
        path = str(resolve_model(None if name == "default" else name))
        ref_path = refs[i] if i < len(refs) else (ROOT / "tests/fixtures/reference_smollm2.npz" if name == "default" else None)
        t = time.perf_counter()
        model = abi.llm.load_model(path, backend="cuda", n_ctx=args.ctx)
        model._decoder()
        entry = {"model": os.path.basename(path), "load_s": time.perf_counter() - t}
        if ref_path:
            ref = dict(np.load(ref_path))
            entry["fidelity"] = fidelity(model, ref)
            entry["reference"] = str(ref_path)
            if not args.simulate:  # the CPU backend on the same reference, for scale
                from abi.llm.fidelity import compare_logits

                cpu = abi.llm.load_model(path, backend="cpu", n_ctx=args.ctx)
                entry["fidelity_cpu_backend"] = compare_logits(ref, cpu.logits([int(i) for i in ref["ids"]]))
        entry.update(speed(model, cuda, args.prompt, args.decode, bandwidth))
        report["models"].append(entry)
        print(json.dumps(entry, indent=1, default=float), flush=True)
    print()
    print(f"{'model':34} {'prefill tok/s':>13} {'decode tok/s':>12} {'bound tok/s':>11} {'of bound':>8} {'fidelity':>9}")
    for e in report["models"]:
        fid = e.get("fidelity", {}).get("within_bounds")
        print(f"{e['model'][:34]:34} {e['prefill_tok_s']:13.0f} {e['decode_tok_s']:12.0f} "
              f"{e['bandwidth_bound_tok_s']:11.0f} {100 * e['fraction_of_bandwidth_bound']:7.1f}% "
              f"{'-' if fid is None else ('ok' if fid else 'OUTSIDE'):>9}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return report


def make_reference(args) -> None:
    """llama.cpp's reference for a model (text logits top-64, greedy continuations)."""
    sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tests")]
    import make_reference as mr

    ref = mr.reference_for(str(Path(args.model).expanduser()))
    np.savez_compressed(args.out, **ref)
    print(f"wrote {args.out}: {len(ref['ids'])} positions, {len(ref['greedy_prompt_lengths'])} greedy prompts")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["make-reference"]:
        p = argparse.ArgumentParser(prog="bench_gpu.py make-reference")
        p.add_argument("model")
        p.add_argument("out")
        make_reference(p.parse_args(argv[1:]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="GGUF path or cache name ('default'); repeatable")
    p.add_argument("--reference", action="append", help="llama.cpp reference .npz for the model at the same position")
    p.add_argument("--prompt", type=int, default=512, help="prefill length (tokens)")
    p.add_argument("--decode", type=int, default=256, help="decode steps timed")
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument("--copy-mib", type=int, default=1024, help="size of the bandwidth copy")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--simulate", action="store_true", help="numba's CUDA simulator (tiny models; checks the tool)")
    report = run(p.parse_args(argv))
    ok = all(e.get("fidelity", {}).get("within_bounds", True) for e in report["models"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
