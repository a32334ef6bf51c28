"""Real files of every quant type, checked against llama.cpp (a development tool).

For each model and type, llama.cpp's own `llama-quantize` requantises the model (with an
importance matrix from `llama-imatrix` for the types that need one); then abi and llama.cpp
(through ABI_LLAMACPP_PYTHON) evaluate the same file on the same text and we compare: mean
KL, top-1 agreement (overall and where llama.cpp's top-2 margin >= 0.5), perplexity ratio.
The first rows of one tensor of each type found are written to tests/fixtures/quant/ so CI
checks our kernels on real blocks without the models.

    ABI_LLAMACPP_BIN=DIR ABI_LLAMACPP_PYTHON=PY python tools/quant_fidelity.py \\
        [--models smollm2-135m-instruct PATH ...] [--types Q3_K_M IQ4_XS ...] [--json OUT]

Bounds (the quant-types issue): top-1 >= 99 % where margin >= 0.5, mean KL <= 0.01,
perplexity within 2 %.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

# llama-quantize's names (IQ2_M: the mixture that stores IQ2_S tensors); the IQ1/IQ2 types
# refuse to run without an importance matrix
TYPES = ["Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS",
         "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0", "MXFP4_MOE"]
NEEDS_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M", "Q2_K", "IQ3_XXS"}
SLICE_ROWS = 16


def tool(name: str) -> str:
    d = os.environ.get("ABI_LLAMACPP_BIN")
    if not d or not (Path(d) / name).exists():
        raise SystemExit(f"set ABI_LLAMACPP_BIN to the folder holding llama.cpp's {name}")
    return str(Path(d) / name)


def _run(cmd: list[str]) -> None:
    env = dict(os.environ, LD_LIBRARY_PATH=os.environ["ABI_LLAMACPP_BIN"])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")


def imatrix_for(model: str, work: Path) -> Path:
    out = work / (Path(model).stem + ".imatrix.gguf")
    if not out.exists():
        text = work / "calibration.txt"
        text.write_text((ROOT / "README.md").read_text() * 2)
        _run([tool("llama-imatrix"), "-m", model, "-f", str(text), "-o", str(out), "-c", "256",
              "-t", "2", "--chunks", "24"])
    return out


def requantise(model: str, qtype: str, work: Path) -> Path:
    out = work / f"{Path(model).stem}-{qtype}.gguf"
    if not out.exists():
        cmd = [tool("llama-quantize"), "--allow-requantize"]
        if qtype in NEEDS_IMATRIX:
            cmd += ["--imatrix", str(imatrix_for(model, work))]
        _run(cmd + [model, str(out), qtype, "2"])
    return out


def type_histogram(path: Path) -> dict[str, int]:
    from abi.gguf import GGMLType, load

    g = load(path)
    return dict(Counter(GGMLType(t.ggml_type).name for t in g.tensors.values() if len(t.shape) == 2))


def write_slices(path: Path, label: str) -> list[str]:
    """The first rows of the first matrix of each quantised type in the file."""
    from abi.gguf import GGMLType, load

    g = load(path)
    out_dir = ROOT / "tests" / "fixtures" / "quant"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, info in g.tensors.items():
        t = GGMLType(info.ggml_type)
        if len(info.shape) != 2 or t.block_size == 1:
            continue
        f = out_dir / f"{t.name.lower()}.npz"
        if f.exists():
            continue
        rows = min(SLICE_ROWS, info.shape[0])
        raw = np.asarray(g.tensor_data(name)).reshape(info.shape[0], -1)[:rows]
        np.savez_compressed(f, raw=raw, ggml_type=np.int32(int(t)), cols=np.int32(info.shape[1]),
                            source=np.array(f"{label}:{name}"))
        written.append(t.name)
    return written


def evaluate(path: Path) -> dict:
    import abi.llm
    from abi.llm.fidelity import compare_logits
    from make_reference import FIDELITY_TEXT, llamacpp_tokenize, run_worker

    ids = llamacpp_tokenize(str(path), [FIDELITY_TEXT], special=False)[0]
    ref = run_worker({"kind": "logits", "model": str(path), "ids": ids, "topk": 64})
    model = abi.llm.load_model(str(path), backend="cpu")
    report = compare_logits(ref, model.logits(ids))
    report["forward"] = model.forward_path
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["smollm2-135m-instruct"])
    p.add_argument("--types", nargs="+", default=TYPES)
    p.add_argument("--work", default=os.path.expanduser("~/.cache/abi/quant"))
    p.add_argument("--json", help="write the table here as JSON")
    args = p.parse_args(argv)

    from abi.models_hub import resolve_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'model':<28} {'type':<10} {'forward':<9} {'KL':>7} {'top1':>6} {'top1@0.5':>8} "
          f"{'ppl ratio':>9}  tensor types")
    for m in args.models:
        src = str(resolve_model(m))
        for qtype in args.types:
            try:
                path = requantise(src, qtype, work)
            except RuntimeError as exc:
                print(f"{Path(src).stem:<28} {qtype:<10} llama-quantize failed: {str(exc).splitlines()[-1]}")
                continue
            r = evaluate(path)
            r.update(model=Path(src).stem, type=qtype, tensor_types=type_histogram(path),
                     slices=write_slices(path, f"{Path(src).stem}-{qtype}"))
            rows.append(r)
            print(f"{r['model']:<28} {qtype:<10} {r['forward']:<9} {r['mean_kl']:7.4f} "
                  f"{r['top1_agreement']:6.3f} {r['top1_agreement_confident']:8.3f} "
                  f"{r['perplexity_ratio']:9.4f}  {r['tensor_types']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    ok = all(r["top1_agreement_confident"] >= 0.99 and r["mean_kl"] <= 0.01
             and abs(r["perplexity_ratio"] - 1) <= 0.02 for r in rows)
    print("all within bounds" if ok else "SOME OUTSIDE BOUNDS")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
