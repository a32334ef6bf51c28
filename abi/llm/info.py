"""What a GGUF model is: the facts `python -m abi llm info` prints."""
from __future__ import annotations

import os

from ..gguf import GGUFFile, load
from ..models_hub import resolve_model

_SPECIAL_TOKEN_KEYS = ("bos", "eos", "eot", "eom", "unknown", "separator", "padding", "mask",
                       "fim_pre", "fim_suf", "fim_mid")


def adapter_info(f: GGUFFile, scale: float | None = None) -> dict:
    """A LoRA adapter file's facts: alpha, ranks and the weights it adapts (by kind)."""
    pairs = [n[:-len(".lora_a")] for n in f.tensors if n.endswith(".lora_a")]
    ranks = sorted({f.tensors[n + ".lora_a"].shape[0] for n in pairs})
    kinds = sorted({n.rsplit(".", 1)[0].split(".")[-1] for n in pairs})
    info = {"path": f.path, "architecture": f.architecture, "type": f.get("adapter.type"),
            "alpha": f.get("adapter.lora.alpha"), "ranks": ranks, "tensors": len(pairs), "targets": kinds}
    if scale is not None:
        info["scale"] = scale
    return info


def model_info(model: str | os.PathLike | GGUFFile | None = None, lora=(), n_ctx: int | None = None,
               n_slots: int = 1) -> dict:
    """``lora``: adapters (``load_model``'s option) to check against the model and list;
    ``n_ctx``, ``n_slots``: the context and slots of the memory plan per KV dtype."""
    f = model if isinstance(model, GGUFFile) else load(resolve_model(model))
    if f.get("general.type") == "adapter":
        return {"path": f.path, "adapter": adapter_info(f)}
    adapters = []
    if lora:
        from .lora import lora_specs, read_adapter

        for spec in lora_specs(lora):
            read_adapter(spec, f)   # refused (AdapterError) unless it fits this model
            adapters.append(adapter_info(load(spec.path), spec.scale))
    arch = f.architecture or "?"
    tokens = f.get("tokenizer.ggml.tokens") or []
    special = {}
    for kind in _SPECIAL_TOKEN_KEYS:
        tid = f.get(f"tokenizer.ggml.{kind}_token_id")
        if isinstance(tid, int):
            special[kind] = {"id": tid, "text": tokens[tid] if 0 <= tid < len(tokens) else None}
    types: dict[str, dict[str, int]] = {}
    for t in f.tensors.values():
        entry = types.setdefault(t.ggml_type.name, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += t.nbytes
    recipe, refusal = None, None
    try:   # the layer recipe abi would run this file with
        from ..errors import AbiError
        from .models import get_architecture

        args = get_architecture(arch).ModelArgs.from_gguf(f.metadata)
        recipe = args.recipe() if hasattr(args, "recipe") else None
    except AbiError as exc:
        refusal = str(exc)
    memory = {}
    if refusal is None:
        from .cache import KV_DTYPES
        from .memory import plan_memory

        for kv in KV_DTYPES:
            try:
                plan = plan_memory(f, n_ctx, n_slots, kv)
            except AbiError:   # q8_0 on heads that are not whole blocks
                continue
            memory[kv] = {"n_ctx": plan.n_ctx, "n_slots": plan.n_slots, "weights": plan.weights,
                          "kv_per_token": plan.kv_per_token, "kv": plan.kv,
                          "scratch": plan.scratch, "total": plan.total}
    rope = {k: f.arch_get(f"rope.{k}") for k in
            ("freq_base", "dimension_count", "scaling.type", "scaling.factor",
             "scaling.original_context_length")}
    return {
        "path": f.path,
        "architecture": arch,
        "name": f.get("general.name"),
        "n_params": sum(t.n_elements for t in f.tensors.values()),
        "file_size": f.file_size,
        "gguf_version": f.version,
        "context_length": f.arch_get("context_length"),
        "n_layers": f.arch_get("block_count"),
        "n_heads": f.arch_get("attention.head_count"),
        "n_kv_heads": f.arch_get("attention.head_count_kv", f.arch_get("attention.head_count")),
        "n_embd": f.arch_get("embedding_length"),
        "n_ff": f.arch_get("feed_forward_length"),
        "rope": {k: v for k, v in rope.items() if v is not None},
        "tokenizer_model": f.get("tokenizer.ggml.model"),
        "tokenizer_pre": f.get("tokenizer.ggml.pre"),
        "vocab_size": len(tokens) or f.arch_get("vocab_size"),
        "special_tokens": special,
        "has_chat_template": isinstance(f.get("tokenizer.chat_template"), str),
        "tensor_count": len(f.tensors),
        "tensor_types": dict(sorted(types.items(), key=lambda kv: -kv[1]["bytes"])),
        "recipe": recipe,
        "unsupported": refusal,
        "adapters": adapters,
        "memory": memory,
    }


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def _adapter_line(a: dict) -> str:
    scale = f"scale {a['scale']:g}, " if "scale" in a else ""
    return (f"{a['path']} ({scale}{a['type']}, alpha {a['alpha']}, rank "
            f"{'/'.join(map(str, a['ranks']))}, {a['tensors']} tensors: {', '.join(a['targets'])})")


def format_info(info: dict) -> str:
    def row(label, value):
        return f"{label:<18} {value}"

    if "adapter" in info:   # the file is an adapter, not a model
        return "\n".join([row("adapter", _adapter_line(info["adapter"])),
                          row("for architecture", info["adapter"]["architecture"])])

    params = info["n_params"]
    rope = ", ".join(f"{k}={v}" for k, v in info["rope"].items()) or "-"
    lines = [
        row("model", info["path"]),
        row("architecture", info["architecture"]),
        row("name", info["name"] or "-"),
        row("parameters", f"{params / 1e6:.1f} M" if params < 1e9 else f"{params / 1e9:.2f} B"),
        row("file size", _size(info["file_size"])),
        row("context length", info["context_length"]),
        row("layers", info["n_layers"]),
        row("heads", f"{info['n_heads']} (KV heads: {info['n_kv_heads']})"),
        row("embedding size", info["n_embd"]),
        row("feed-forward", info["n_ff"]),
        row("rope", rope),
        row("tokenizer", f"{info['tokenizer_model']} (pre-tokenizer: {info['tokenizer_pre'] or '-'})"),
        row("vocabulary", info["vocab_size"]),
        row("special tokens", ", ".join(f"{k}={v['id']} {v['text']!r}"
                                        for k, v in info["special_tokens"].items()) or "-"),
        row("chat template", "yes" if info["has_chat_template"] else "no"),
    ]
    if info.get("unsupported"):
        lines.append(row("runs in abi", f"no: {info['unsupported']}"))
    for a in info.get("adapters", ()):
        lines.append(row("LoRA adapter", _adapter_line(a)))
    for kv, p in (info.get("memory") or {}).items():
        lines.append(row(f"memory ({kv} KV)", f"{_size(p['kv_per_token'] * 1024)}/1k tokens "
                         f"({p['kv_per_token']:,} B/token); KV {_size(p['kv'])} for {p['n_ctx']} ctx "
                         f"x {p['n_slots']} slot(s); total {_size(p['total'])} with weights "
                         f"{_size(p['weights'])} + scratch {_size(p['scratch'])}"))
    for key, value in (info.get("recipe") or {}).items():
        if isinstance(value, tuple):   # per-layer flags: the layers where they hold
            value = ",".join(str(i) for i, v in enumerate(value) if v) or "-"
        lines.append(row(f"recipe.{key}", value))
    lines += [
        "",
        f"{'tensor type':<12} {'count':>6} {'bytes':>14}",
    ]
    for name, t in info["tensor_types"].items():
        lines.append(f"{name:<12} {t['count']:>6} {t['bytes']:>14,}  ({_size(t['bytes'])})")
    lines.append(f"{'total':<12} {info['tensor_count']:>6} "
                 f"{sum(t['bytes'] for t in info['tensor_types'].values()):>14,}")
    return "\n".join(lines)
