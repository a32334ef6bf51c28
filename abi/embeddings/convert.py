"""Hugging Face BERT (safetensors + tokenizer) -> GGUF ``bert``, laid out as llama.cpp reads it.

    python -m abi convert hf-to-gguf DIR [--outtype f32|f16|q8_0] [-o FILE]

DIR is a Hugging Face model folder (config.json, model.safetensors, tokenizer.json or
vocab.txt), optionally a sentence-transformers folder whose modules.json names the pooling.
Written: the ``bert.*`` hyperparameters, ``bert.pooling_type``, the WordPiece vocabulary
in llama.cpp's "phantom space" form (word-initial pieces prefixed with U+2581, ``##`` dropped
from continuations, control tokens as they are), special token ids and tensors named
``token_embd``, ``position_embd``, ``token_types``, ``token_embd_norm`` and per layer
``blk.N.attn_{q,k,v,output}``, ``attn_output_norm``, ``ffn_up``, ``ffn_down``,
``layer_output_norm``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import ConversionError
from ..gguf import GGMLType, GGUFValueType, GGUFWriter
from . import safetensors

OUTTYPES = {"f32": GGMLType.F32, "f16": GGMLType.F16, "q8_0": GGMLType.Q8_0}
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}  # general.file_type (llama_ftype)
POOLING_TYPES = {"none": 0, "mean": 1, "cls": 2, "last": 3}
SUPPORTED_ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining")
GELU_NAMES = ("gelu",)  # HF's exact (erf) GELU, which bert.py computes
PHANTOM = "\u2581"
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # llama.cpp token types

_LAYER_MAP = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_GLOBAL_MAP = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.LayerNorm": "token_embd_norm",
}
# tensors an embedding model does not use
_SKIPPED = re.compile(r"^(embeddings\.position_ids|pooler\..*|cls\..*)$")
_KEEP_F32 = ("position_embd.weight", "token_types.weight")  # as llama.cpp keeps them


def _read_json(path: Path, what: str) -> dict | list:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ConversionError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"cannot read {what} {path}: {exc}") from None


def gguf_tensor_name(hf_name: str) -> str | None:
    """The GGUF name of a Hugging Face BERT tensor; None for tensors that are dropped."""
    name = hf_name[5:] if hf_name.startswith("bert.") else hf_name
    if name.endswith(".gamma"):
        name = name[:-6] + ".weight"
    elif name.endswith(".beta"):
        name = name[:-5] + ".bias"
    if _SKIPPED.match(name):
        return None
    stem, _, kind = name.rpartition(".")
    if kind not in ("weight", "bias"):
        raise ConversionError(f"unexpected tensor {hf_name!r} (not a weight or a bias)")
    if stem in _GLOBAL_MAP:
        return f"{_GLOBAL_MAP[stem]}.{kind}"
    m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", stem)
    if m and m.group(2) in _LAYER_MAP:
        return f"blk.{int(m.group(1))}.{_LAYER_MAP[m.group(2)]}.{kind}"
    raise ConversionError(f"unexpected tensor {hf_name!r} for a BERT model")


# -- reading the Hugging Face folder -------------------------------------------------------

def _transformer_dir(model_dir: Path) -> Path:
    """sentence-transformers folders may keep the transformer in a sub-folder."""
    if (model_dir / "config.json").is_file():
        return model_dir
    modules = model_dir / "modules.json"
    if modules.is_file():
        for mod in _read_json(modules, "modules.json"):
            if str(mod.get("type", "")).endswith("Transformer"):
                sub = model_dir / mod.get("path", "")
                if (sub / "config.json").is_file():
                    return sub
    raise ConversionError(f"{model_dir} holds no config.json: not a Hugging Face model folder")


def read_pooling(model_dir: Path) -> str | None:
    """Pooling named by a sentence-transformers modules.json (mean, cls, last), if any."""
    modules = model_dir / "modules.json"
    if not modules.is_file():
        return None
    for mod in _read_json(modules, "modules.json"):
        if str(mod.get("type", "")).endswith("Pooling"):
            cfg = _read_json(model_dir / mod.get("path", "") / "config.json", "pooling config")
            if cfg.get("pooling_mode_mean_tokens"):
                return "mean"
            if cfg.get("pooling_mode_cls_token"):
                return "cls"
            if cfg.get("pooling_mode_lasttoken"):
                return "last"
            mode = cfg.get("pooling_mode")
            if mode in ("mean", "cls"):
                return mode
            if mode == "lasttoken":
                return "last"
            raise ConversionError(f"pooling {cfg} is not supported; supported: mean, cls, last")
    return None


def _open_weights(tdir: Path) -> dict[str, tuple[safetensors.SafetensorsFile, str]]:
    single = tdir / "model.safetensors"
    index = tdir / "model.safetensors.index.json"
    if single.is_file():
        f = safetensors.load(single)
        return {name: (f, name) for name in f.tensors}
    if index.is_file():
        weight_map = _read_json(index, "safetensors index").get("weight_map") or {}
        files = {}
        out = {}
        for name, shard in weight_map.items():
            if shard not in files:
                files[shard] = safetensors.load(tdir / shard)
            out[name] = (files[shard], name)
        return out
    if (tdir / "pytorch_model.bin").is_file():
        raise ConversionError(f"{tdir} holds only pytorch_model.bin; abi converts safetensors "
                              "weights (save the model with safe_serialization=True)")
    raise ConversionError(f"{tdir} holds no model.safetensors")


def read_vocab(tdir: Path, vocab_size: int) -> dict:
    """Tokens (HF form), llama.cpp token types, special ids and normaliser flags."""
    special_names = {"cls": "[CLS]", "sep": "[SEP]", "unk": "[UNK]", "pad": "[PAD]", "mask": "[MASK]"}
    cfg_path = tdir / "tokenizer_config.json"
    tok_cfg = _read_json(cfg_path, "tokenizer_config.json") if cfg_path.is_file() else {}
    for key in special_names:
        value = tok_cfg.get(f"{key}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            special_names[key] = value

    vocab: dict[str, int] = {}
    added: dict[int, tuple[str, bool]] = {}
    lowercase = bool(tok_cfg.get("do_lower_case", True))
    strip_accents = tok_cfg.get("strip_accents")
    add_bos = add_eos = True
    tj_path = tdir / "tokenizer.json"
    if tj_path.is_file():
        tj = _read_json(tj_path, "tokenizer.json")
        model = tj.get("model") or {}
        if model.get("type") != "WordPiece":
            raise ConversionError(f"tokenizer model is {model.get('type')!r}; a BERT model needs WordPiece")
        vocab = dict(model.get("vocab") or {})
        for entry in tj.get("added_tokens") or []:
            added[int(entry["id"])] = (entry["content"], bool(entry.get("special")))
            vocab.setdefault(entry["content"], int(entry["id"]))
        norm = tj.get("normalizer") or {}
        for n in norm.get("normalizers", [norm]):
            if n.get("type") == "BertNormalizer":
                lowercase = bool(n.get("lowercase", lowercase))
                strip_accents = n.get("strip_accents", strip_accents)
            elif n.get("type") == "Lowercase":
                lowercase = True
            elif n.get("type") == "StripAccents":
                strip_accents = True
        post = tj.get("post_processor") or {}
        for proc in post.get("processors", [post]):
            if proc.get("type") == "TemplateProcessing":
                single = proc.get("single") or []
                add_bos = bool(single) and "SpecialToken" in single[0]
                add_eos = bool(single) and "SpecialToken" in single[-1]
    elif (tdir / "vocab.txt").is_file():
        with open(tdir / "vocab.txt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                vocab.setdefault(line.rstrip("\n"), i)
        for key, text in special_names.items():
            if text in vocab:
                added[vocab[text]] = (text, True)
    else:
        raise ConversionError(f"{tdir} holds neither tokenizer.json nor vocab.txt")
    if not vocab:
        raise ConversionError("the tokenizer's vocabulary is empty")
    if max(vocab.values()) >= vocab_size or min(vocab.values()) < 0:
        raise ConversionError(f"token ids run outside the model's vocab_size {vocab_size}")

    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        tok = by_id[i]
        if i in added:
            kind = CONTROL if added[i][1] else USER_DEFINED
        else:
            kind = NORMAL
        # llama.cpp's phantom-space form of the WordPiece vocabulary
        if kind == CONTROL:
            text = tok
        elif tok.startswith("##"):
            text = tok[2:]
        else:
            text = PHANTOM + tok
        tokens.append(text)
        types.append(kind)

    def sid(key):
        return vocab.get(special_names[key])

    if sid("unk") is None:
        raise ConversionError(f"unknown token {special_names['unk']!r} is not in the vocabulary")
    return dict(tokens=tokens, types=types, cls=sid("cls"), sep=sid("sep"), unk=sid("unk"),
                pad=sid("pad"), mask=sid("mask"), lowercase=lowercase,
                strip_accents=strip_accents, add_bos=add_bos, add_eos=add_eos)


# -- conversion ----------------------------------------------------------------------------

def _hparam(config: dict, key: str, kind=int):
    value = config.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value <= 0):
        raise ConversionError(f"config.json: {key} is {value!r}; expected a positive {kind.__name__}")
    return value


def convert_hf_to_gguf(model_dir: str | os.PathLike, out_path: str | os.PathLike,
                       outtype: str = "f32", name: str | None = None) -> Path:
    """Convert a Hugging Face BERT folder to a GGUF file; returns its path."""
    if outtype not in OUTTYPES:
        raise ConversionError(f"outtype {outtype!r} is not supported; choose one of {', '.join(OUTTYPES)}")
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ConversionError(f"{model_dir} is not a folder")
    tdir = _transformer_dir(model_dir)
    config = _read_json(tdir / "config.json", "config.json")
    archs = config.get("architectures") or []
    if config.get("model_type") != "bert" and not set(archs) & set(SUPPORTED_ARCHITECTURES):
        raise ConversionError(
            f"model_type {config.get('model_type')!r} ({', '.join(archs) or 'no architectures'}) is not "
            f"supported; abi converts BERT models ({', '.join(SUPPORTED_ARCHITECTURES)})")
    act = config.get("hidden_act", "gelu")
    if act not in GELU_NAMES:
        raise ConversionError(f"hidden_act {act!r} is not supported; supported: {', '.join(GELU_NAMES)}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"position_embedding_type {config['position_embedding_type']!r} is not "
                              "supported; supported: absolute")
    n_embd = _hparam(config, "hidden_size")
    n_layer = _hparam(config, "num_hidden_layers")
    n_head = _hparam(config, "num_attention_heads")
    n_ff = _hparam(config, "intermediate_size")
    n_ctx = _hparam(config, "max_position_embeddings")
    n_vocab = _hparam(config, "vocab_size")
    n_types = int(config.get("type_vocab_size", 2))
    eps = float(config.get("layer_norm_eps", 1e-12))
    if n_embd % n_head:
        raise ConversionError(f"hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")

    vocab = read_vocab(tdir, n_vocab)
    pooling = read_pooling(model_dir) or read_pooling(tdir)
    weights = _open_weights(tdir)

    expected = {
        "token_embd.weight": (n_vocab, n_embd), "position_embd.weight": (n_ctx, n_embd),
        "token_types.weight": (n_types, n_embd),
        "token_embd_norm.weight": (n_embd,), "token_embd_norm.bias": (n_embd,),
    }
    for i in range(n_layer):
        for t, shape in (("attn_q", (n_embd, n_embd)), ("attn_k", (n_embd, n_embd)),
                         ("attn_v", (n_embd, n_embd)), ("attn_output", (n_embd, n_embd)),
                         ("ffn_up", (n_ff, n_embd)), ("ffn_down", (n_embd, n_ff))):
            expected[f"blk.{i}.{t}.weight"] = shape
            expected[f"blk.{i}.{t}.bias"] = (shape[0],)
        for t in ("attn_output_norm", "layer_output_norm"):
            expected[f"blk.{i}.{t}.weight"] = (n_embd,)
            expected[f"blk.{i}.{t}.bias"] = (n_embd,)

    arrays: dict[str, np.ndarray] = {}
    for hf_name, (f, key) in weights.items():
        gname = gguf_tensor_name(hf_name)
        if gname is None:
            continue
        if gname in arrays:
            raise ConversionError(f"two tensors map to {gname!r}")
        arr = f.get(key)
        if gname not in expected:
            raise ConversionError(f"tensor {hf_name!r} ({gname}) does not belong to a "
                                  f"{n_layer}-layer model")
        if tuple(arr.shape) != expected[gname]:
            raise ConversionError(f"tensor {hf_name!r} has shape {tuple(arr.shape)}; "
                                  f"config.json implies {expected[gname]}")
        if arr.dtype.kind != "f":
            raise ConversionError(f"tensor {hf_name!r} is {arr.dtype}, not floating point")
        arrays[gname] = arr
    missing = [n for n in expected if n not in arrays]
    if missing:
        raise ConversionError(f"{len(missing)} tensors are missing, e.g. {missing[0]!r}")

    w = GGUFWriter(out_path)
    U32, F32, BOOL = GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.BOOL
    w.add_metadata("general.architecture", "bert")
    w.add_metadata("general.type", "model")
    w.add_metadata("general.name", name or config.get("_name_or_path") or model_dir.name)
    w.add_metadata("bert.block_count", n_layer, U32)
    w.add_metadata("bert.context_length", n_ctx, U32)
    w.add_metadata("bert.embedding_length", n_embd, U32)
    w.add_metadata("bert.feed_forward_length", n_ff, U32)
    w.add_metadata("bert.attention.head_count", n_head, U32)
    w.add_metadata("bert.attention.layer_norm_epsilon", eps, F32)
    w.add_metadata("general.file_type", FILE_TYPES[outtype], U32)
    w.add_metadata("bert.attention.causal", False, BOOL)
    if pooling is not None:
        w.add_metadata("bert.pooling_type", POOLING_TYPES[pooling], U32)
    w.add_metadata("general.quantization_version", 2, U32)
    w.add_metadata("tokenizer.ggml.token_type_count", n_types, U32)
    w.add_metadata("tokenizer.ggml.model", "bert")
    w.add_metadata("tokenizer.ggml.pre", "default")  # llama.cpp runs no pre-tokenizer for WordPiece
    w.add_metadata("tokenizer.ggml.tokens", vocab["tokens"], GGUFValueType.ARRAY, GGUFValueType.STRING)
    w.add_metadata("tokenizer.ggml.token_type", vocab["types"], GGUFValueType.ARRAY, GGUFValueType.INT32)
    for key, field in (("bos", "cls"), ("eos", "sep"), ("unknown", "unk"), ("seperator", "sep"),
                       ("padding", "pad"), ("mask", "mask")):
        if vocab[field] is not None:  # "seperator" is llama.cpp's spelling
            w.add_metadata(f"tokenizer.ggml.{key}_token_id", vocab[field], U32)
    w.add_metadata("tokenizer.ggml.add_bos_token", vocab["add_bos"], BOOL)
    w.add_metadata("tokenizer.ggml.add_eos_token", vocab["add_eos"], BOOL)
    w.add_metadata("tokenizer.ggml.add_sep_token", False, BOOL)
    w.add_metadata("tokenizer.ggml.normalizer.lowercase", vocab["lowercase"], BOOL)
    if vocab["strip_accents"] is not None:
        w.add_metadata("tokenizer.ggml.normalizer.strip_accents", bool(vocab["strip_accents"]), BOOL)

    target = OUTTYPES[outtype]
    for gname in expected:
        arr = arrays[gname]
        if arr.ndim == 1 or gname in _KEEP_F32 or target == GGMLType.F32:
            w.add_tensor(gname, np.asarray(arr, dtype=np.float32), GGMLType.F32)
        elif target == GGMLType.Q8_0 and arr.shape[-1] % 32 == 0:
            from .._kernels import quantize

            x = np.ascontiguousarray(arr, dtype=np.float32)
            w.add_tensor(gname, quantize(x, GGMLType.Q8_0), GGMLType.Q8_0, shape=x.shape)
        else:  # f16, and Q8_0's fallback for rows that are not whole blocks
            w.add_tensor(gname, np.asarray(arr, dtype=np.float16), GGMLType.F16)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    w.write()
    return Path(out_path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["hf-to-gguf"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="python -m abi convert hf-to-gguf",
        description="Convert a Hugging Face BERT model folder (safetensors) to a GGUF file.")
    parser.add_argument("model_dir", help="folder with config.json, model.safetensors and tokenizer files")
    parser.add_argument("--outtype", choices=sorted(OUTTYPES), default="f32",
                        help="type of the 2-D weights (default: f32; norms and biases stay f32)")
    parser.add_argument("-o", "--outfile", help="output file (default: DIR/<name>-<outtype>.gguf)")
    parser.add_argument("--name", help="general.name to record (default: from config.json)")
    args = parser.parse_args(argv)
    out = args.outfile or str(Path(args.model_dir) / f"{Path(args.model_dir).resolve().name}-{args.outtype}.gguf")
    path = convert_hf_to_gguf(args.model_dir, out, args.outtype, name=args.name)
    print(path)
    return 0
