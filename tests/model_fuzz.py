"""Inconsistent and hostile variants of a tiny model, run in worker subprocesses.

A case is a tiny llama, qwen2 or gemma3 file with one to three mutations (a metadata value
out of range or of the wrong type, a deleted key, a tensor declared with another shape, a
NaN in a weight, a tokenizer list cut short, ...). Each case loads the file on the compiled
CPU forward and runs a short prompt, then runs the same prompt on the numpy forward. What
must hold: a typed ``AbiError``, or finite logits on which both forwards agree; never
another exception, a signal, a hang or unbounded memory. A worker runs many cases (a
process per case would cost most of the time in imports); when one dies, the parent
records the case it was running and starts a new worker after it.

    python tests/model_fuzz.py [N] [--seed S]     # a report of N cases
"""
from __future__ import annotations

import json
import math
import os
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
D, H, KV, HD, F, L, CTX = 64, 4, 2, 16, 128, 2, 64
MEMORY_LIMIT = 4 << 30          # address space of a worker
CASE_TIMEOUT = 30.0             # seconds without progress before a worker counts as hung
ARCHS = ("llama", "qwen2", "gemma3", "qwen3moe", "gpt-oss", "qwen2moe", "dots1")
MOE_ARCHS = ("qwen3moe", "gpt-oss", "qwen2moe", "dots1")
N_EXP, N_USED, F_EXP = 4, 2, 32   # the mixtures of experts
# the shared experts: qwen2moe's gated one, dots1's (2 * F_EXP wide) beside sigmoid routing
# with a selection bias, after a dense first layer
SHARED = {"qwen2moe": {"expert_shared_feed_forward_length": 48},
          "dots1": {"expert_shared_count": 2, "leading_dense_block_count": 1, "expert_gating_func": 2,
                    "expert_weights_norm": True, "expert_weights_scale": 2.5}}
HPARAM_KEYS = (
    "context_length", "embedding_length", "block_count", "feed_forward_length",
    "attention.head_count", "attention.head_count_kv", "rope.freq_base",
    "attention.layer_norm_rms_epsilon", "attention.key_length", "attention.value_length",
    "rope.dimension_count", "vocab_size", "rope.scaling.type", "rope.scaling.factor",
    "rope.scaling.original_context_length", "rope.scaling.attn_factor",
    "rope.scaling.yarn_log_multiplier", "expert_count", "expert_used_count", "expert_feed_forward_length",
    "expert_gating_func", "expert_weights_scale", "expert_weights_norm", "expert_shared_count",
    "expert_shared_feed_forward_length", "leading_dense_block_count")
GEMMA_KEYS = ("attention.sliding_window", "attention.sliding_window_pattern", "rope.freq_base_swa",
              "final_logit_softcapping", "attn_logit_softcapping")
TOKENIZER_KEYS = ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.model",
                  "tokenizer.ggml.add_bos_token", "tokenizer.ggml.pre", "tokenizer.ggml.merges",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.padding_token_id",
                  "tokenizer.ggml.unknown_token_id", "general.architecture")


# -- the base model -------------------------------------------------------------------------

def base_model(arch: str, rng) -> tuple[dict, dict]:
    """(metadata, tensors) of a consistent tiny model; tensors map a name to
    [data, ggml_type, declared shape] (data: float32 values, or raw blocks for Q8_0)."""
    from abi import _kernels
    from abi.gguf import GGMLType
    from tiny_models import _vocab

    tokens, types = _vocab()
    meta = {"general.architecture": arch, f"{arch}.context_length": CTX,
            f"{arch}.embedding_length": D, f"{arch}.block_count": L,
            f"{arch}.feed_forward_length": F, f"{arch}.attention.head_count": H,
            f"{arch}.attention.head_count_kv": H if arch == "dots1" else KV, f"{arch}.rope.freq_base": 10000.0,
            f"{arch}.attention.layer_norm_rms_epsilon": 1e-6,
            "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.merges": ["Ġ t", "Ġ a"], "tokenizer.ggml.eos_token_id": 258,
            "tokenizer.ggml.bos_token_id": 258, "tokenizer.ggml.add_bos_token": False}
    if arch in ("gemma3", "qwen3moe", "gpt-oss", "dots1"):
        meta.update({f"{arch}.attention.key_length": HD, f"{arch}.attention.value_length": HD})
    if arch in ("gemma3", "gpt-oss"):
        meta.update({f"{arch}.attention.sliding_window": 8, f"{arch}.attention.sliding_window_pattern": 2})
    if arch in MOE_ARCHS:
        meta.update({f"{arch}.expert_count": N_EXP, f"{arch}.expert_used_count": N_USED,
                     f"{arch}.expert_feed_forward_length": F_EXP})
        meta.update({f"{arch}.{k}": v for k, v in SHARED.get(arch, {}).items()})
    kv = H if arch == "dots1" else KV   # llama.cpp loads dots1's K and V as wide as Q
    f32 = GGMLType.F32

    def mat(rows, cols):
        return [(rng.standard_normal((rows, cols)) / math.sqrt(cols)).astype(np.float32), f32, (rows, cols)]

    def vec(n, spread=0.1):
        return [(1.0 + spread * rng.standard_normal(n)).astype(np.float32), f32, (n,)]

    embd = (0.3 * rng.standard_normal((len(tokens), D))).astype(np.float32)
    tensors = {"token_embd.weight": [_kernels.quantize(embd, GGMLType.Q8_0), GGMLType.Q8_0, embd.shape],
               "output_norm.weight": vec(D),
               # an F32 output matrix: the tied Q8_0 one would add the quantised activations'
               # error to the comparison of the two forwards
               "output.weight": [embd.copy(), f32, embd.shape]}
    for i in range(L):
        p = f"blk.{i}."
        tensors.update({p + "attn_norm.weight": vec(D), p + "attn_q.weight": mat(H * HD, D),
                        p + "attn_k.weight": mat(kv * HD, D), p + "attn_v.weight": mat(kv * HD, D),
                        p + "attn_output.weight": mat(D, H * HD),
                        p + ("post_attention_norm" if arch == "gpt-oss" else "ffn_norm") + ".weight": vec(D)})
        if arch in MOE_ARCHS and i >= SHARED.get(arch, {}).get("leading_dense_block_count", 0):
            tensors[p + "ffn_gate_inp.weight"] = mat(N_EXP, D)   # a router and (experts, rows, cols) stacks
            for part, rows, cols in (("gate", F_EXP, D), ("up", F_EXP, D), ("down", D, F_EXP)):
                stack = mat(N_EXP * rows, cols)
                tensors[p + f"ffn_{part}_exps.weight"] = [stack[0], f32, (N_EXP, rows, cols)]
            fs = {"qwen2moe": 48, "dots1": 2 * F_EXP}.get(arch, 0)
            if fs:
                tensors.update({p + "ffn_gate_shexp.weight": mat(fs, D), p + "ffn_up_shexp.weight": mat(fs, D),
                                p + "ffn_down_shexp.weight": mat(D, fs)})
            if arch == "qwen2moe":
                tensors[p + "ffn_gate_inp_shexp.weight"] = vec(D, 1.0)
            if arch == "dots1":
                tensors[p + "exp_probs_b.bias"] = vec(N_EXP, 1.0)
        else:
            tensors.update({p + "ffn_gate.weight": mat(F, D), p + "ffn_up.weight": mat(F, D),
                            p + "ffn_down.weight": mat(D, F)})
        if arch in ("qwen3moe", "dots1"):
            tensors.update({p + "attn_q_norm.weight": vec(HD), p + "attn_k_norm.weight": vec(HD)})
        if arch == "gpt-oss":
            for n, size in (("attn_q", H * HD), ("attn_k", KV * HD), ("attn_v", KV * HD), ("attn_output", D),
                            ("ffn_gate_inp", N_EXP)):
                tensors[p + n + ".bias"] = vec(size, 1.0)
            for part, rows in (("gate", F_EXP), ("up", F_EXP), ("down", D)):
                tensors[p + f"ffn_{part}_exps.bias"] = [0.1 * rng.standard_normal((N_EXP, rows)).astype(np.float32),
                                                        f32, (N_EXP, rows)]
            tensors[p + "attn_sinks.weight"] = vec(H, 1.0)
        if arch in ("qwen2", "qwen2moe"):
            for n, size in (("attn_q", H * HD), ("attn_k", KV * HD), ("attn_v", KV * HD)):
                tensors[p + n + ".bias"] = vec(size, 1.0)
        if arch == "gemma3":
            tensors.update({p + "attn_q_norm.weight": vec(HD), p + "attn_k_norm.weight": vec(HD),
                            p + "post_attention_norm.weight": vec(D), p + "post_ffw_norm.weight": vec(D)})
    return meta, tensors


# -- mutations ------------------------------------------------------------------------------

def _values(current, rng):
    pool = [0, -1, 1, 2, 3, 7, 8, 16, 31, 32, 48, 63, 64, 65, 96, 128, 256, 1000, 1 << 20,
            (1 << 31) - 1, 1 << 31, 1 << 32, 1 << 40, (1 << 63) - 1, -(1 << 31),
            float("nan"), float("inf"), float("-inf"), 1e-30, 1e30, 0.5, -0.5, 1e-6, 2.0,
            "64", "yarn", "linear", "none", "longrope", "", True, False, [1, 2], [True, False]]
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        pool += [current + 1, current - 1, current * 2, current // 2 if isinstance(current, int) else current / 2]
    return pool[int(rng.integers(len(pool)))]


def mutate(meta: dict, tensors: dict, rng) -> str:
    """Apply one random mutation in place; return its description."""
    arch = meta.get("general.architecture")
    kind = rng.choice(["value", "value", "value", "delete", "shape", "swap", "drop", "nan",
                       "scale", "tokens", "f16"])
    names = sorted(tensors)
    if kind in ("value", "delete"):
        keys = [f"{arch}.{k}" for k in HPARAM_KEYS + (GEMMA_KEYS if arch == "gemma3" else ())]
        key = str(rng.choice(keys + list(TOKENIZER_KEYS)))
        if kind == "delete":
            meta.pop(key, None)
            return f"delete {key}"
        meta[key] = _values(meta.get(key, 8), rng)
        return f"{key} = {meta[key]!r}"
    if kind == "tokens" and isinstance(meta.get("tokenizer.ggml.token_type"), list):
        toks = meta["tokenizer.ggml.tokens"]
        n = int(rng.choice([0, 1, 100, 259, 261, 300]))
        meta["tokenizer.ggml.tokens"] = (toks + [f"x{i}" for i in range(n - len(toks))])[:n]
        meta["tokenizer.ggml.token_type"] = (meta["tokenizer.ggml.token_type"] + [1] * n)[:n]
        return f"{n} tokens"
    name = str(rng.choice(names))
    data, t, shape = tensors[name]
    if kind == "shape":
        if len(shape) == 3:
            a, b, c = shape
            options = [(b, a, c), (a, c, b), (a * b, c), (a, b * c), (1, a * b, c)]
        elif len(shape) == 2:
            a, b = shape
            options = [(b, a), (a * 2, b // 2), (a // 2, b * 2), (a * b,), (1, a * b)]
        else:
            options = [(shape[0] // 2, 2), (1, shape[0]), (shape[0] // 2,)]
        new = options[int(rng.integers(len(options)))]
        if math.prod(new) == math.prod(shape) and all(d > 0 for d in new) and (t.name == "F32" or new[-1] % 32 == 0):
            tensors[name][2] = new
        return f"{name} declared {new}"
    if kind == "swap":
        other = str(rng.choice(names))
        if math.prod(tensors[other][2]) == math.prod(shape) and tensors[other][1] == t:
            tensors[name][2], tensors[other][2] = tensors[other][2], shape
        return f"swap shapes {name} <-> {other}"
    if kind == "drop":
        del tensors[name]
        return f"drop {name}"
    if kind == "nan":
        if t.name == "F32":
            data = data.copy()
            data.flat[int(rng.integers(data.size))] = rng.choice([np.nan, np.inf, -np.inf])
            tensors[name][0] = data
        return f"non-finite value in {name}"
    embd = tensors.get("token_embd.weight")
    if kind == "scale" and embd is not None and embd[1].name == "Q8_0":  # a block scale: NaN or Inf
        raw = tensors["token_embd.weight"][0].copy().reshape(-1, 34)
        raw[int(rng.integers(len(raw))), 0:2] = np.frombuffer(
            np.array([rng.choice([0x7E00, 0x7C00, 0xFC00])], "<u2").tobytes(), np.uint8)
        tensors["token_embd.weight"][0] = raw.reshape(tensors["token_embd.weight"][0].shape)
        return "non-finite embedding block scale"
    if t.name == "F32":   # a valid variation: the same tensor stored as F16
        from abi.gguf import GGMLType

        tensors[name] = [data.astype(np.float16), GGMLType.F16, shape]
    return f"{name} as F16"


def write(path: str, meta: dict, tensors: dict) -> None:
    from abi.gguf import GGUFValueType, GGUFWriter

    w = GGUFWriter(path)
    for key, value in meta.items():
        kind = GGUFValueType.FLOAT32 if isinstance(value, float) else None
        if key == "tokenizer.ggml.token_type" and isinstance(value, list) and value \
                and all(isinstance(v, int) and abs(v) < 1 << 31 for v in value):
            kind = GGUFValueType.INT32
        w.add_metadata(key, value, kind)
    for name, (data, t, shape) in tensors.items():
        w.add_tensor(name, data, t, shape=shape)
    w.write()


def make_case(index: int, seed: int, path: str) -> list[str]:
    """Write case ``index`` to ``path``; return its mutations."""
    rng = np.random.default_rng([seed, index])
    meta, tensors = base_model(ARCHS[index % len(ARCHS)], rng)
    done = [mutate(meta, tensors, rng) for _ in range(int(rng.integers(1, 4)))]
    write(path, meta, tensors)
    return done


# -- one case, in the worker ----------------------------------------------------------------

def run_case(path: str) -> tuple[str, str]:
    """("typed", error class) | ("ok", "") | ("mismatch", detail) | ("untyped", repr)."""
    import abi.llm
    from abi.errors import AbiError

    try:
        model = abi.llm.load_model(path, n_threads=2)
        ids = [i % model.n_vocab for i in (1, 7, 42, 99, 258)]
        compiled = model.logits(ids)
        cache = model.new_cache()
        model.forward(ids[:3], cache)
        step = model.forward(ids[3:4], cache)             # a decode step (T = 1)
    except AbiError as exc:
        return "typed", type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - what this harness is looking for
        return "untyped", f"{type(exc).__name__}: {exc}"
    model._compiled = False   # the numpy forward of the same model object, as reference
    try:
        reference = model.logits(ids)
    except AbiError as exc:
        return "typed", f"numpy {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001
        return "untyped", f"numpy {type(exc).__name__}: {exc}"
    scale = float(np.abs(reference).max()) + 1e-6
    err = max(float(np.abs(compiled - reference).max()), float(np.abs(step[-1] - reference[3]).max()))
    # float weights: the two forwards differ by float32 rounding only; a quantised output
    # matrix (the tied Q8_0 embedding) adds the compiled path's quantised activations
    tol = 2e-3 if model.arch.output.ggml_type.name in ("F32", "F16") else 2e-2
    if compiled.shape != reference.shape or not err <= tol * scale + 1e-4:
        return "mismatch", f"max |compiled - numpy| = {err:.3g} (logits up to {scale:.3g})"
    return "ok", ""


def worker(start: int, stop: int, seed: int, tmp: str) -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    path = os.path.join(tmp, f"case_{os.getpid()}.gguf")
    for i in range(start, stop):
        print(f"CASE {i}", flush=True)
        mutations = make_case(i, seed, path)
        outcome, detail = run_case(path)
        print("RESULT " + json.dumps([i, outcome, detail, mutations]), flush=True)


# -- the parent -----------------------------------------------------------------------------

def limit_memory() -> None:
    """Cap this process's address space at MEMORY_LIMIT. Each child calls it on itself (first
    thing in the worker, or LIMIT_MEMORY in a ``-c`` program), not through subprocess's
    preexec_fn: that forks the test process, and once it has loaded gRPC (Ray, Flower) gRPC's
    fork handlers can abort the child."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


# the first line of a ``python -c`` child program: limit_memory() without importing this file
LIMIT_MEMORY = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"


def run_cases(count: int, seed: int = 0, start: int = 0) -> list[list]:
    """[index, outcome, detail, mutations] for each case; outcome is also "signal <name>"
    or "hang" for a case that killed or stalled its worker."""
    results: list[list] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        i = start
        while i < start + count:
            proc = subprocess.Popen([sys.executable, __file__, "--worker", str(i), str(start + count),
                                     str(seed), tmp], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, cwd=ROOT, env=env)
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],
                             daemon=True).start()
            current = None
            while True:
                try:
                    line = lines.get(timeout=CASE_TIMEOUT)
                except queue.Empty:
                    proc.kill()
                    proc.wait()
                    results.append([current, "hang", "", []])
                    i = current + 1
                    break
                if line is None:
                    code = proc.wait()
                    if current is not None and code != 0:
                        name = signal.Signals(-code).name if code < 0 else f"exit {code}"
                        results.append([current, f"signal {name}" if code < 0 else name, "", []])
                        i = current + 1
                    else:
                        i = start + count
                    break
                if line.startswith("CASE "):
                    current = int(line.split()[1])
                elif line.startswith("RESULT "):
                    results.append(json.loads(line[7:]))
                    current = None
    return results


def summary(results: list[list]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, outcome, *_ in results:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        limit_memory()
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        import argparse

        ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        ap.add_argument("count", nargs="?", type=int, default=2000)
        ap.add_argument("--seed", type=int, default=0)
        args = ap.parse_args()
        res = run_cases(args.count, args.seed)
        for r in res:
            if r[1] not in ("ok", "typed"):
                print(r)
        print(summary(res))
