"""LoRA adapters at inference, unmerged (llama.cpp's ``--lora`` / ``--lora-scaled``).

An adapter file (``abi.gguf.lora_adapter``, llama.cpp's GGUF format) holds, for each
adapted weight W (out, in), the factors A (rank, in) and B (out, rank). Every product with
W then becomes ``y = W x + s * B (A x)`` with ``s = scale * alpha / rank`` (``scale``:
the user's, per adapter; an alpha of 0 means ``s = scale``, as llama.cpp reads it).
Several adapters on one weight sum their terms: their factors are stacked along the rank,
``[s1 B1, s2 B2] [A1; A2]``, so every forward runs one low-rank product per weight.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import AdapterError, ConfigError
from ..gguf import GGUFFile, load

# what abi runs adapters on: the per-layer projections and the output (llama.cpp also
# adapts the token embedding and expert stacks; abi refuses those rather than ignore them)
ADAPTABLE = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
             "ffn_gate_inp", "output")


@dataclass(frozen=True)
class LoraSpec:
    """One adapter to load: its file and the user's scale."""
    path: str
    scale: float = 1.0

    def __str__(self) -> str:
        return self.path if self.scale == 1.0 else f"{self.path}:{self.scale:g}"


def parse_lora(value) -> LoraSpec:
    """A ``LoraSpec`` from a path, ``(path, scale)``, or the CLI's ``PATH[:SCALE]``."""
    if isinstance(value, LoraSpec):
        spec = value
    elif isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(f"a LoRA adapter is a path or (path, scale), got {value!r}", "lora")
        spec = LoraSpec(os.fspath(value[0]), _scale(value[1]))
    elif isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        path, sep, scale = text.rpartition(":")
        # a suffix that is not a number belongs to the path (a drive letter, a colon in a name)
        spec = LoraSpec(path, _scale(scale)) if sep and path and _is_number(scale) else LoraSpec(text)
    else:
        raise ConfigError(f"a LoRA adapter is a path or (path, scale), got {type(value).__name__}", "lora")
    if not os.path.isfile(spec.path):
        raise ConfigError(f"LoRA adapter {spec.path!r} is not a file", "lora")
    return spec


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _scale(value) -> float:
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"a LoRA scale must be a number, got {value!r}", "lora") from None
    if not np.isfinite(scale):
        raise ConfigError(f"a LoRA scale must be finite, got {scale}", "lora")
    return scale


def lora_specs(lora) -> list[LoraSpec]:
    """``load_model``'s ``lora`` option (None, one adapter or a list of them) as specs."""
    if lora is None:
        return []
    if isinstance(lora, (str, os.PathLike, LoraSpec)) or (
            isinstance(lora, tuple) and len(lora) == 2 and not isinstance(lora[1], (str, os.PathLike, tuple))):
        lora = [lora]
    return [parse_lora(v) for v in lora]


def read_adapter(spec: LoraSpec, base: GGUFFile) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{base weight name: (A, s * B)}`` of one adapter, validated against the base file:
    same architecture, every adapted tensor present in the base with matching shapes."""
    from ..gguf.lora_adapter import lora_scale, read_lora_adapter

    f = load(spec.path)
    if f.get("general.type") != "adapter" or f.get("adapter.type") != "lora":
        raise AdapterError(f"{spec.path} is not a LoRA adapter (general.type={f.get('general.type')!r}, "
                           f"adapter.type={f.get('adapter.type')!r})")
    if f.architecture != base.architecture:
        raise AdapterError(f"LoRA adapter {spec.path} is for architecture {f.architecture!r}; "
                           f"the model is {base.architecture!r}")
    for key in f.metadata:
        if key.startswith("adapter.alora"):   # activated LoRA: applies from an invocation on
            raise AdapterError(f"{spec.path}: activated LoRA ({key}) is not supported")
    alpha, pairs = read_lora_adapter(f)   # the file opened above, checked as an adapter
    out = {}
    for name, (a, b) in pairs.items():
        info = base.tensors.get(name)
        if info is None:
            raise AdapterError(f"LoRA adapter {spec.path}: tensor {name!r} does not exist in the "
                               f"base model {base.path}", name)
        stem = name.rsplit(".", 1)[0].split(".")[-1]
        if not name.endswith(".weight") or stem not in ADAPTABLE:
            raise AdapterError(f"LoRA adapter {spec.path}: abi does not run adapters on {name!r} "
                               f"(it runs them on {', '.join(ADAPTABLE)})", name)
        rank = a.shape[0]
        if len(info.shape) != 2 or rank == 0 or a.shape[1] != info.shape[1] or b.shape[0] != info.shape[0]:
            raise AdapterError(f"LoRA adapter {spec.path}: {name!r} has A {a.shape} and B {b.shape}, "
                               f"which do not fit the base weight {tuple(info.shape)} as (rank, "
                               f"{info.shape[-1]}) and ({info.shape[0]}, rank)", name)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise AdapterError(f"LoRA adapter {spec.path}: {name!r} holds NaN or Inf", name)
        s = np.float32(lora_scale(alpha, rank, spec.scale))
        out[name] = (np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b * s, np.float32))
    return out


def _linears(arch) -> dict:
    """The model's plain products by tensor name (split and expert views are named
    ``NAME[...]`` and tied outputs otherwise, so they never match an adapter's tensor)."""
    found = {}
    for layer in arch.layers:
        for attr in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "router"):
            lin = getattr(layer, attr, None)
            if lin is not None:
                found[lin.name] = lin
    found[arch.output.name] = arch.output
    return found


def attach_adapters(arch, base: GGUFFile, specs: list[LoraSpec]) -> None:
    """Validate ``specs`` against the base and set each adapted product's ``lora`` factors
    (several adapters stacked along the rank). Nothing is attached if any adapter fails."""
    from .models import decoder

    if not specs:
        return
    if not isinstance(arch, decoder.Model):
        raise AdapterError(f"LoRA adapters run on decoder models; {base.architecture!r} is not one")
    stacked: dict[str, list] = {}
    for spec in specs:
        for name, ab in read_adapter(spec, base).items():
            stacked.setdefault(name, []).append(ab)
    linears = _linears(arch)
    for name in stacked:
        if name not in linears:   # present in the file, but fused, stacked or tied in this model
            raise AdapterError(f"abi does not run adapters on {name!r} in this model (it is not "
                               f"a separate product: a fused or tied weight)", name)
    for name, parts in stacked.items():
        a = np.ascontiguousarray(np.concatenate([p[0] for p in parts], axis=0))
        b = np.ascontiguousarray(np.concatenate([p[1] for p in parts], axis=1))
        linears[name].lora = (a, b)
