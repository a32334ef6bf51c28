"""Tokenizer fidelity: our ids, pieces, detokenisation and end-of-generation sets against
llama.cpp's, as recorded in tests/fixtures/tokens_*.json by tools/reference_tokens.py.

Small tokenizer-only GGUFs of our own (tok_bpe_small.gguf, tok_spm_small.gguf) stand in for
each pre-tokenizer and flag setting, so CI needs no model; the default model's file is
checked too (fetched on first use), and a real gemma3 file when one is in the model cache.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import abi.gguf
from abi.llm.tokenizer import load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
VARIANTS = ("plain", "special", "bos_plain", "bos_special")


def _fixture(name: str) -> dict:
    with open(FIXTURES / name, encoding="utf-8") as fh:
        return json.load(fh)


def _ids_digest(ids) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def _pieces_digest(pieces) -> str:
    h = hashlib.sha256()
    for p in pieces:
        h.update(len(p).to_bytes(4, "little") + p)
    return h.hexdigest()


def _same_ids(got: list[int], want) -> bool:
    if isinstance(want, dict):
        return len(got) == want["n"] and _ids_digest(got) == want["sha256"]
    return got == want


def _same_bytes(got: bytes, want) -> bool:
    if isinstance(want, str):
        return got == want.encode("utf-8")
    if "hex" in want:
        return got == bytes.fromhex(want["hex"])
    return len(got) == want["n"] and hashlib.sha256(got).hexdigest() == want["sha256"]


def _encode(tok, text, variant):
    return tok.encode(text, add_bos=None if variant.startswith("bos_") else False,
                      special=variant.endswith("special"))


def check_against(tok, texts, result):
    """Every id list, detokenisation and vocabulary fact of one oracle result."""
    info = result["info"]
    assert tok.n_vocab == info["n_vocab"]
    assert tok.bos_id == info["bos"] and tok.eos_id == info["eos"] and tok.eot_id == info["eot"]
    assert (tok.add_bos, tok.add_eos) == (info["add_bos"], info["add_eos"])
    assert sorted(tok.eog_ids) == info["eog"]
    for special in (False, True):
        pieces = [tok.token_to_piece(i, special) for i in range(tok.n_vocab)]
        assert _pieces_digest(pieces) == info[f"pieces_sha256/{'special' if special else 'plain'}"]
    mismatches = []
    for text, case in zip(texts, result["cases"], strict=True):
        ours = {v: _encode(tok, text, v) for v in VARIANTS}
        for v in VARIANTS:
            if not _same_ids(ours[v], case["ids"][v]):
                mismatches.append((text[:60], v, ours[v][:40], case["ids"][v]))
        for key, want in case["detok"].items():
            ids_name, render = key.split("/")
            got = tok.decode_bytes(ours[ids_name], special=render == "special")
            if not _same_bytes(got, want):
                mismatches.append((text[:60], key, got[:80], want))
    assert not mismatches, f"{len(mismatches)} differences from llama.cpp, first: {mismatches[:3]}"


# -- small BPE vocabulary, every supported pre-tokenizer ------------------------------------

BPE = _fixture("tokens_bpe_small.json")
SPM = _fixture("tokens_spm_small.json")


@pytest.fixture(scope="module")
def bpe_meta():
    return dict(abi.gguf.load(FIXTURES / BPE["gguf"]).metadata)


@pytest.fixture(scope="module")
def spm_meta():
    return dict(abi.gguf.load(FIXTURES / SPM["gguf"]).metadata)


def bpe_tokenizer(meta, pre):
    return load_tokenizer({**meta, "tokenizer.ggml.pre": pre})


def spm_tokenizer(meta, variant):
    return load_tokenizer({**meta, **SPM["variants"][variant]["changes"]})


@pytest.mark.parametrize("pre", sorted(BPE["pre"]))
def test_bpe_pre_tokenizers_match_llama_cpp(bpe_meta, pre):
    tok = bpe_tokenizer(bpe_meta, pre)
    assert tok.pre == pre
    check_against(tok, BPE["texts"], BPE["results"][BPE["pre"][pre]])


def test_bpe_fixture_covers_every_supported_pre_tokenizer():
    from abi.llm.tokenizer_bpe import PRE_TOKENIZERS

    assert set(BPE["pre"]) == set(PRE_TOKENIZERS)


@pytest.mark.parametrize("variant", sorted(SPM["variants"]))
def test_spm_matches_llama_cpp(spm_meta, variant):
    check_against(spm_tokenizer(spm_meta, variant), SPM["texts"], SPM["variants"][variant])


def test_fixture_texts_cover_the_required_kinds():
    texts = BPE["texts"]
    joined = "".join(texts)
    for needle in ("\t", "    ", "1234567", "3.14159", "1e-9", "👨\u200d👩", "🏳️\u200d🌈", "日本語", "Привет",
                   "مرحبا", "é", "\u0301", "<|im_start|>user\nhi<|im_end|>", "\n\n\n"):
        assert needle in joined, needle
    assert "" in texts and any(t.startswith(" ") and t.endswith(" ") for t in texts)
    assert len(texts[-1]) > 3000  # the long text (~1,900 tokens for the default model)


# -- real files ------------------------------------------------------------------------------

@pytest.mark.model
def test_default_model_matches_llama_cpp(default_gguf):
    ref = _fixture("tokens_smollm2-135m-instruct.json")
    tok = load_tokenizer(default_gguf)
    assert (tok.model, tok.pre) == ("gpt2", "smollm")
    check_against(tok, ref["texts"], ref)
    assert tok.eog_ids == {0, 2, 4}  # <|endoftext|>, <|im_end|>, <reponame> (FIM repo)


GEMMA = Path(os.environ.get("ABI_MODEL_DIR", "~/.cache/abi/models")).expanduser() / "gemma3-270m-q4_k_m.gguf"


@pytest.mark.skipif(not GEMMA.exists(), reason="no gemma3-270m GGUF in the model cache")
def test_real_gemma3_matches_llama_cpp():
    ref = _fixture("tokens_gemma3-270m.json")
    tok = load_tokenizer(abi.gguf.load(GEMMA))
    assert tok.model == "llama" and tok.add_bos and not tok.add_space_prefix
    check_against(tok, ref["texts"], ref)
