"""Between GGUF files and trainable float32 llama models: load (dequantising any weight
type abi reads) and export (F32, F16 or Q8_0) with the tensor names and ``llama.*``
metadata llama.cpp expects, and the tokenizer copied from the vocabulary source."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, UnsupportedModelError
from ..gguf import GGMLType, GGUFValueType, GGUFWriter
from ..gguf import load as load_gguf
from .llama import LlamaConfig, LlamaModel, param_shapes

EXPORT_TYPES = {"f32": GGMLType.F32, "f16": GGMLType.F16, "q8_0": GGMLType.Q8_0}
# general.file_type ids: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0
_FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}


def tensor_as_float32(gf, name: str) -> np.ndarray:
    """A GGUF tensor as a float32 array, dequantised if need be."""
    info = gf.tensors[name]
    if info.ggml_type in (GGMLType.F32, GGMLType.F16, GGMLType.F64):
        return np.array(gf.tensor_array(name), dtype=np.float32)
    if info.ggml_type == GGMLType.BF16:
        bits = gf.tensor_data(name).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(info.shape).copy()
    from .._kernels import dequantize
    return np.asarray(dequantize(gf.tensor_data(name), info.ggml_type, info.shape),
                      dtype=np.float32).reshape(info.shape)


def load_llama_gguf(path: str | os.PathLike) -> tuple[LlamaModel, object]:
    """A float32 copy of a llama GGUF model, ready to fine-tune; also the parsed file."""
    gf = load_gguf(path)
    cfg = LlamaConfig.from_gguf(gf)
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name not in gf.tensors:
            raise UnsupportedModelError(f"{gf.path}: llama tensor {name!r} is missing")
        arr = tensor_as_float32(gf, name)
        if arr.shape != shape:
            raise UnsupportedModelError(f"{gf.path}: {name} has shape {arr.shape}, the metadata "
                                        f"implies {shape}")
        params[name] = arr
    return LlamaModel(cfg, params), gf


def tokenizer_metadata(gf) -> list[tuple[str, object, object]]:
    """Every ``tokenizer.*`` key of a GGUF file with its value type."""
    return [(k, v, gf.metadata_types[k]) for k, v in gf.metadata.items()
            if k.startswith("tokenizer.")]


def _tensor_type(name: str, arr: np.ndarray, export_type: str) -> GGMLType:
    if arr.ndim == 1:
        return GGMLType.F32  # norm gains stay F32, as llama.cpp's converter keeps them
    t = EXPORT_TYPES[export_type]
    if t == GGMLType.Q8_0 and arr.shape[-1] % t.block_size:
        return GGMLType.F16  # rows that are not whole Q8_0 blocks
    return t


def export_gguf(path: str | os.PathLike, model: LlamaModel, vocab_source,
                export_type: str = "f32", name: str = "abi-trained") -> Path:
    """Write ``model`` as a llama GGUF; ``vocab_source`` is the GGUF file (path or parsed)
    whose ``tokenizer.*`` metadata the model uses."""
    if export_type not in EXPORT_TYPES:
        raise ConfigError(f"export type must be one of {', '.join(EXPORT_TYPES)}, got "
                          f"{export_type!r}", field="export_type")
    gf = load_gguf(vocab_source) if isinstance(vocab_source, (str, os.PathLike)) else vocab_source
    tok_meta = tokenizer_metadata(gf)
    tokens = gf.get("tokenizer.ggml.tokens")
    cfg = model.config
    if tokens is None:
        raise ConfigError(f"{gf.path} has no tokenizer.ggml.tokens to copy", field="vocab_from")
    if len(tokens) != cfg.n_vocab:
        raise ConfigError(f"the vocabulary source has {len(tokens)} tokens, the model "
                          f"{cfg.n_vocab}", field="vocab_from")
    U32, F32 = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", "llama")
    w.add_metadata("general.name", name)
    w.add_metadata("general.file_type", _FILE_TYPES[export_type], U32)
    if export_type == "q8_0":
        w.add_metadata("general.quantization_version", 2, U32)
    w.add_metadata("llama.vocab_size", cfg.n_vocab, U32)
    w.add_metadata("llama.context_length", cfg.context_length, U32)
    w.add_metadata("llama.embedding_length", cfg.n_embd, U32)
    w.add_metadata("llama.block_count", cfg.n_layer, U32)
    w.add_metadata("llama.feed_forward_length", cfg.n_ff, U32)
    w.add_metadata("llama.attention.head_count", cfg.n_head, U32)
    w.add_metadata("llama.attention.head_count_kv", cfg.n_head_kv, U32)
    w.add_metadata("llama.rope.dimension_count", cfg.head_dim, U32)
    w.add_metadata("llama.rope.freq_base", float(cfg.rope_freq_base), F32)
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", float(cfg.rms_eps), F32)
    for key, value, vtype in tok_meta:
        w.add_metadata(key, value, vtype)
    for tname in param_shapes(cfg):
        arr = np.ascontiguousarray(model.params[tname], dtype=np.float32)
        ttype = _tensor_type(tname, arr, export_type)
        if ttype == GGMLType.F32:
            w.add_tensor(tname, arr, GGMLType.F32)
        elif ttype == GGMLType.F16:
            w.add_tensor(tname, arr.astype(np.float16), GGMLType.F16)
        else:
            from .._kernels import quantize

            raw = np.asarray(quantize(arr, ttype), dtype=np.uint8)
            w.add_tensor(tname, raw, ttype, shape=arr.shape)
    w.write()
    return Path(path)
