"""LoRA adapter files in llama.cpp's GGUF format (what `llama-cli --lora` loads).

Facts from llama.cpp's ``llama-adapter.cpp``: ``general.type = "adapter"``,
``general.architecture`` equal to the base model's, ``adapter.type = "lora"``,
``adapter.lora.alpha`` (float32). Each adapted base weight ``NAME.weight`` has two
tensors ``NAME.weight.lora_a`` and ``NAME.weight.lora_b``; in numpy order
A is (rank, n_in) and B is (n_out, rank), and the weight update, in the ``W @ x``
convention with W of shape (n_out, n_in), is ``(alpha / rank) * B @ A``.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError, GGUFError
from . import GGMLType, GGUFFile, GGUFValueType, GGUFWriter, load

_SUFFIX_A, _SUFFIX_B = ".lora_a", ".lora_b"
_DTYPES = {np.dtype(np.float32): GGMLType.F32, np.dtype(np.float16): GGMLType.F16}


def write_lora_adapter(path: str | os.PathLike, arch: str, alpha: float,
                       tensors: dict[str, tuple[np.ndarray, np.ndarray]],
                       dtype=np.float32, metadata: dict | None = None) -> None:
    """Write ``{base_name: (A, B)}`` (base_name like ``blk.0.attn_q.weight``) as an adapter.

    ``dtype`` is float32 or float16 for the stored factors; ``metadata`` adds keys
    (e.g. ``general.name``)."""
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES:
        raise ConfigError(f"adapter tensors can be float32 or float16, not {dtype}", "dtype")
    if not tensors:
        raise ConfigError("an adapter needs at least one (A, B) pair", "tensors")
    writer = GGUFWriter(path)
    writer.add_metadata("general.type", "adapter")
    writer.add_metadata("general.architecture", str(arch))
    writer.add_metadata("adapter.type", "lora")
    writer.add_metadata("adapter.lora.alpha", float(alpha), GGUFValueType.FLOAT32)
    for key, value in (metadata or {}).items():
        writer.add_metadata(key, value)
    for name, (a, b) in tensors.items():
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ConfigError(f"{name}: A must be (rank, n_in) and B (n_out, rank), "
                              f"got {a.shape} and {b.shape}", name)
        writer.add_tensor(name + _SUFFIX_A, a.astype(dtype), _DTYPES[dtype])
        writer.add_tensor(name + _SUFFIX_B, b.astype(dtype), _DTYPES[dtype])
    writer.write()


def read_lora_adapter(path: str | os.PathLike | GGUFFile, arch: str | None = None
                      ) -> tuple[float, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Read an adapter (a path, or the file already opened): ``(alpha, {base_name: (A, B)})``
    as float32 arrays.

    Raises GGUFError when the file is not a LoRA adapter, a factor is missing or the
    shapes do not pair up; with ``arch`` given, also when the architectures differ.
    An alpha of 0 (or absent) means scale 1, as llama.cpp reads it (see ``lora_scale``)."""
    f = path if isinstance(path, GGUFFile) else load(path)
    path = f.path
    if f.get("general.type") != "adapter" or f.get("adapter.type") != "lora":
        raise GGUFError(f"{path} is not a LoRA adapter (general.type="
                        f"{f.get('general.type')!r}, adapter.type={f.get('adapter.type')!r})", None)
    if arch is not None and f.architecture != arch:
        raise GGUFError(f"adapter {path} is for architecture {f.architecture!r}, "
                        f"the model is {arch!r}", None)
    pairs: dict[str, list] = {}
    for name in f.tensors:
        for i, suffix in enumerate((_SUFFIX_A, _SUFFIX_B)):
            if name.endswith(suffix):
                pairs.setdefault(name[:-len(suffix)], [None, None])[i] = name
                break
        else:
            raise GGUFError(f"{path}: tensor {name!r} is neither a lora_a nor a lora_b", None)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for base, (name_a, name_b) in pairs.items():
        if name_a is None or name_b is None:
            raise GGUFError(f"{path}: {base!r} has only one of lora_a/lora_b", None)
        a = np.array(f.tensor_array(name_a), dtype=np.float32)
        b = np.array(f.tensor_array(name_b), dtype=np.float32)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise GGUFError(f"{path}: {base!r} has A {a.shape} and B {b.shape}; expected "
                            f"(rank, n_in) and (n_out, rank)", None)
        out[base] = (a, b)
    return float(f.get("adapter.lora.alpha", 0.0)), out


def lora_scale(alpha: float, rank: int, user_scale: float = 1.0) -> float:
    """The factor on ``B @ A``: ``user_scale * alpha / rank``, or ``user_scale`` when alpha is
    0 (llama.cpp's ``get_scale``)."""
    return float(user_scale) * (float(alpha) / rank if alpha else 1.0)


def lora_delta(a: np.ndarray, b: np.ndarray, alpha: float, user_scale: float = 1.0) -> np.ndarray:
    """The dense update (n_out, n_in) that an (A, B) pair adds to its base weight."""
    return lora_scale(alpha, a.shape[0], user_scale) * (b.astype(np.float32) @ a.astype(np.float32))
