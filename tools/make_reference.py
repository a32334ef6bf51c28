"""Makes the llama.cpp reference fixtures in tests/fixtures/ (a development tool).

llama.cpp runs through llama-cpp-python in a separate Python (built once from its PyPI
source: `pip install llama-cpp-python` with CMAKE_ARGS, see README); point
ABI_LLAMACPP_PYTHON at that interpreter. abi itself never needs it.

    python tools/make_reference.py default     # fidelity fixture of the default model
    python tools/make_reference.py tiny        # tiny random-weight models per arch / quant type
    python tools/make_reference.py tokens      # tokenizer fixtures (tools/reference_tokens.py)
    python tools/make_reference.py lora        # random LoRA adapters on a tiny model and the default
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT))

# A varied text of a few hundred tokens: prose, dialogue, numbers, a list and code.
FIDELITY_TEXT = """The lighthouse keeper had kept the same routine for thirty-one years. Every evening at
dusk she climbed the ninety-four steps, polished the great lens, and lit the lamp that warned
ships away from the rocks below. In the winter of 1987 a storm came in from the north-east,
and for three days the waves broke over the lower gallery.

"You should leave," said the harbour master on the radio. "Nobody will blame you."
"The ships still need the light," she answered, and switched the radio off.

What she wrote in the log that week is still kept in the museum:
- Monday: wind force 9, visibility poor, lamp lit at 16:42.
- Tuesday: wind force 11, two windows broken, lamp lit at 16:40.
- Wednesday: calm by noon; a fishing boat, the Mary Ellen, passed safely at 21:15.

Modern lighthouses are automatic. A small computer checks the bulb, the batteries and the
weather, and it reports faults over the network. A typical controller loop looks like this:

def check(lamp, sensors):
    if sensors.visibility() < 2.5 and not lamp.is_on():
        lamp.switch_on()
    return {"lamp": lamp.is_on(), "battery": sensors.battery_percent()}

Engineers say the machines are more reliable than people ever were, and that is probably true.
Still, some of the old keepers say that a machine cannot notice the small things: the way the
sea changes colour before a gale, or the sound a boat makes when it is in trouble. They miss
the work, the long nights, and the feeling of being useful to strangers they would never meet.
"""

GREEDY_PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n",
    "Water boils at a temperature of",
    "The three primary colors are",
    "Here is a list of fruits: apple, banana,",
    "<|im_start|>user\nWhat is the largest planet in our solar system?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a haiku about autumn.<|im_end|>\n<|im_start|>assistant\n",
]


def llamacpp_python() -> str:
    exe = os.environ.get("ABI_LLAMACPP_PYTHON")
    if not exe or not os.path.exists(exe):
        raise SystemExit("set ABI_LLAMACPP_PYTHON to a Python with llama-cpp-python installed")
    return exe


def run_worker(request: dict) -> dict:
    """Run tools/llamacpp_worker.py in the llama.cpp Python and return its arrays."""
    with tempfile.TemporaryDirectory() as tmp:
        req, out = Path(tmp) / "req.json", Path(tmp) / "out.npz"
        req.write_text(json.dumps(request))
        subprocess.run([llamacpp_python(), str(ROOT / "tools" / "llamacpp_worker.py"), str(req), str(out)],
                       check=True)
        with np.load(out) as data:
            return {k: data[k] for k in data.files}


def llamacpp_tokenize(model: str, texts: list[str], special: bool) -> list[list[int]]:
    code = ("import json,sys\nfrom llama_cpp import Llama\n"
            "m=Llama(model_path=sys.argv[1],vocab_only=True,verbose=False)\n"
            "texts=json.loads(sys.stdin.read())\n"
            f"print(json.dumps([m.tokenize(t.encode(),add_bos=True,special={special}) for t in texts]))")
    proc = subprocess.run([llamacpp_python(), "-c", code, model], input=json.dumps(texts),
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reference_for(model: str, text: str = FIDELITY_TEXT, prompts=GREEDY_PROMPTS, n_gen: int = 32,
                  topk: int = 64) -> dict:
    """llama.cpp's view of ``model``: text ids, per-position top-K, greedy continuations."""
    ids = llamacpp_tokenize(model, [text], special=False)[0]
    ref = run_worker({"kind": "logits", "model": model, "ids": ids, "topk": topk})
    prompt_ids = llamacpp_tokenize(model, list(prompts), special=True)
    greedy = run_worker({"kind": "greedy", "model": model, "prompts": prompt_ids, "n_gen": n_gen})
    ref.update(greedy_tokens=greedy["tokens"], greedy_margins=greedy["margins"],
               greedy_prompt_lengths=np.array([len(p) for p in prompt_ids], np.int32),
               greedy_prompts=np.array([t for p in prompt_ids for t in p], np.int32))
    return ref


def make_default(args) -> None:
    from abi.models_hub import resolve_model

    model = str(resolve_model(None))
    ref = reference_for(model)
    out = FIXTURES / "reference_smollm2.npz"
    np.savez_compressed(out, **ref)
    meta = {"model": "smollm2-135m-instruct", "llama_cpp_python": "0.3.36", "text": FIDELITY_TEXT,
            "prompts": GREEDY_PROMPTS, "topk": 64, "n_gen": 32}
    (FIXTURES / "reference_smollm2.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB), {len(ref['ids'])} positions")


def make_tiny(args) -> None:
    from tiny_models import TINY_CASES, write_tiny_model

    out_dir = FIXTURES / "tiny"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    ids = [int(i) for i in rng.integers(3, 250, size=40)]
    for name, arch, qtype in TINY_CASES:
        if args.only and name not in args.only.split(","):
            continue
        path = out_dir / f"{name}.gguf"
        digest = write_tiny_model(path, arch, qtype, seed=zlib.crc32(name.encode()), name=name)
        ref = run_worker({"kind": "logits", "model": str(path), "ids": ids, "topk": 16, "full": True})
        np.savez_compressed(out_dir / f"{name}.npz", ids=ref["ids"], logits=ref["logits"].astype(np.float32),
                            margin=ref["margin"], sha256=np.array(digest))
        print(f"{name}: {path.stat().st_size // 1024} KiB")


# LoRA agreement: (case, adapter seed, rank, B's std, scale); the tiny base is the recorded tiny case
LORA_TINY = ("llama_q8_0", 7, 4, 0.5, 0.7)
LORA_DEFAULT = (11, 4, 0.05, 1.0)


def make_lora(args) -> None:
    """llama.cpp's logits with a random adapter (tests/random_adapters.py), which the tests
    regenerate bit for bit (checked by sha256): for a tiny model (full logits) and for the
    default model (top-K of FIDELITY_TEXT)."""
    from random_adapters import write_random_adapter
    from tiny_models import write_tiny_model

    from abi.gguf import GGMLType
    from abi.models_hub import resolve_model

    out_dir = FIXTURES / "lora"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    ids = [int(i) for i in rng.integers(3, 250, size=40)]
    with tempfile.TemporaryDirectory() as tmp:
        name, seed, rank, std, scale = LORA_TINY
        base, adapter = f"{tmp}/{name}.gguf", f"{tmp}/adapter.gguf"
        model_digest = write_tiny_model(base, "llama", GGMLType.Q8_0, seed=zlib.crc32(name.encode()), name=name)
        digest = write_random_adapter(base, adapter, rank=rank, std=std, seed=seed)
        ref = run_worker({"kind": "logits", "model": base, "ids": ids, "topk": 16, "full": True,
                          "lora": [adapter, scale]})
        np.savez_compressed(out_dir / f"tiny_{name}.npz", ids=ref["ids"], logits=ref["logits"].astype(np.float32),
                            margin=ref["margin"], sha256=np.array(digest), model_sha256=np.array(model_digest))
        seed, rank, std, scale = LORA_DEFAULT
        model = str(resolve_model(None))
        digest = write_random_adapter(model, adapter, rank=rank, std=std, seed=seed)
        text_ids = llamacpp_tokenize(model, [FIDELITY_TEXT], special=False)[0]
        ref = run_worker({"kind": "logits", "model": model, "ids": text_ids, "topk": 64, "lora": [adapter, scale]})
        ref.pop("logits", None)
        np.savez_compressed(out_dir / "smollm2.npz", sha256=np.array(digest), **ref)
    print(f"wrote {out_dir}")


def make_tokens(args) -> None:
    import reference_tokens

    reference_tokens.main([])


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tests")]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["default", "tiny", "tokens", "lora", "all"])
    parser.add_argument("--only", default="", help="tiny: only these cases (comma-separated names)")
    a = parser.parse_args()
    for step in (["default", "tiny", "tokens", "lora"] if a.what == "all" else [a.what]):
        {"default": make_default, "tiny": make_tiny, "tokens": make_tokens, "lora": make_lora}[step](a)
