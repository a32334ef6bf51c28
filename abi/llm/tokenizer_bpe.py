"""Byte-level BPE (``tokenizer.ggml.model == "gpt2"``), matching llama.cpp's ids.

llama.cpp splits the text with a list of regexes chosen by ``tokenizer.ggml.pre``: each
regex cuts every piece left by the previous one into its matches and the gaps between them.
We give the same regexes to the ``tokenizers`` library as ``Split(..., "isolated")``
pre-tokenizers (with ``\\s`` spelled out as Unicode's White_Space set, which is what llama.cpp
means by it), map bytes to GPT-2's printable characters, and let its BPE model merge by rank.
The only known gap: characters assigned after Unicode 15.1 (llama.cpp's tables) are
classified by the regex engine's newer tables.
"""
from __future__ import annotations

import functools
import gc
from collections.abc import Mapping
from typing import Any

from ..errors import TokenizerError
from .memory import release_free_memory
from .tokenizer import Tokenizer

# Unicode White_Space: what llama.cpp's unicode tables call whitespace
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_S, _NS = f"[{_WS}]", f"[^{_WS}]"

_GPT2 = (rf"'s|'t|'re|'ve|'m|'ll|'d| ?\p{{L}}+| ?\p{{N}}+| ?[^{_WS}\p{{L}}\p{{N}}]+"
         rf"|{_S}+(?!{_NS})|{_S}+")


def _llama3_like(numbers: str) -> str:
    return (rf"'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+"
            rf"|{numbers}| ?[^{_WS}\p{{L}}\p{{N}}]+[\r\n]*|{_S}*[\r\n]+|{_S}+(?!{_NS})|{_S}+")


# llama.cpp's regex lists, applied in order
_SPLITS = {
    "default": (r"[\p{P}$+<=>^~|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
    "gpt2": (_GPT2,),
    "smollm": (r"\p{N}", _GPT2),
    "llama3": (_llama3_like(r"\p{N}{1,3}"),),
    "qwen2": (_llama3_like(r"\p{N}"),),
}

# tokenizer.ggml.pre -> (splits, ignore_merges, clean_spaces, default add_bos), as llama.cpp sets them
PRE_TOKENIZERS: dict[str, tuple[str, bool, bool, bool]] = {
    "default": ("default", False, True, False),
    "gpt-2": ("gpt2", False, True, False),
    "phi-2": ("gpt2", False, True, False),
    "mpt": ("gpt2", False, True, False),
    "olmo": ("gpt2", False, True, False),
    "smollm": ("smollm", False, False, False),
    "starcoder": ("smollm", False, True, False),
    "refact": ("smollm", False, True, False),
    "codeshell": ("smollm", False, True, False),
    "command-r": ("smollm", False, False, False),
    "llama3": ("llama3", True, True, True),
    "llama-v3": ("llama3", True, True, True),
    "llama-bpe": ("llama3", True, True, True),
    "falcon3": ("llama3", True, True, True),
    "pixtral": ("llama3", True, True, True),
    "dbrx": ("llama3", False, True, False),
    "smaug-bpe": ("llama3", False, True, False),
    "qwen2": ("qwen2", False, False, False),
    "deepseek-r1-qwen": ("qwen2", False, False, False),
    "stablelm2": ("qwen2", False, True, False),
    "megrez": ("qwen2", False, True, False),
}


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table: printable Latin-1 bytes stand for
    themselves, the rest take the characters from U+0100 on, in byte order."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, extra = [], 0
    for b in range(256):
        if b in keep:
            table.append(chr(b))
        else:
            table.append(chr(256 + extra))
            extra += 1
    return table


_BYTE_CHARS = _byte_chars()
_CHAR_BYTES = {c: b for b, c in enumerate(_BYTE_CHARS)}


def _plain_merge_pairs(merges: list) -> list[tuple[str, str]] | None:
    """The pairs of the usual file, at C speed: every merge a string ``"a b"`` with one
    space, not the first character, and no merge twice; None otherwise. Those, and pairs
    that tokenizers refuses (a token the vocabulary lacks), go to _merge_pairs."""
    if not all(map(str.__instancecheck__, merges)):
        return None
    parts = " ".join(merges).split(" ")
    if len(parts) != 2 * len(merges):
        return None
    first, second = parts[0::2], parts[1::2]
    if not all(first) or list(map(" ".join, zip(first, second))) != merges or len(set(merges)) != len(merges):
        return None
    return list(zip(first, second))


def _merge_pairs(merges: list, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """``"a b"`` strings -> pairs, split at the first space after the first character as
    llama.cpp does. The first rank of a repeated merge counts, and a merge of or into an
    unknown token (which ``tokenizers`` cannot take) is left out."""
    pairs, seen = [], set()
    for m in merges:
        cut = m.find(" ", 1) if isinstance(m, str) else -1
        if cut < 0:
            continue
        pair = (m[:cut], m[cut + 1:])
        if pair in seen or pair[0] not in vocab or pair[1] not in vocab or pair[0] + pair[1] not in vocab:
            continue
        seen.add(pair)
        pairs.append(pair)
    return pairs


class BPETokenizer(Tokenizer):
    model = "gpt2"
    _default_ids = {"bos": 11, "eos": 11}  # llama.cpp's fallback for files without the keys

    def _pre_init(self, meta: Mapping[str, Any]) -> None:
        pre = meta.get("tokenizer.ggml.pre") or "default"
        if not isinstance(pre, str) or pre not in PRE_TOKENIZERS:
            raise TokenizerError(f"BPE pre-tokenizer {pre!r} is not supported; supported: "
                                 f"{', '.join(sorted(PRE_TOKENIZERS))}")
        self.pre = pre
        splits, self.ignore_merges, self.clean_spaces, self._default_add_bos = PRE_TOKENIZERS[pre]
        self._splits = _SPLITS[splits]
        merges = meta.get("tokenizer.ggml.merges")
        if not isinstance(merges, list):
            raise TokenizerError("a BPE vocabulary needs 'tokenizer.ggml.merges', which the file lacks")
        self._merges_raw = merges
        self._hf = None

    def _backend(self):
        """The ``tokenizers`` pipeline, built on first use (~60 ms for 49k merges)."""
        if self._hf is None:
            from tokenizers import Regex, Tokenizer as HFTokenizer, models, pre_tokenizers

            vocab = self._text_to_id
            gc_was_on = gc.isenabled()
            gc.disable()  # ~100k small containers: collections would only slow this down
            try:
                pairs = _plain_merge_pairs(self._merges_raw)
                try:
                    bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=self.ignore_merges) if pairs else None
                except Exception:   # a merge of or into a token the vocabulary lacks
                    bpe = None
                if bpe is None:
                    pairs = _merge_pairs(self._merges_raw, vocab)
                    bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=self.ignore_merges)
                del pairs
            finally:
                if gc_was_on:
                    gc.enable()
            release_free_memory()   # the pairs, back to the OS (14 MiB of 151k merges stayed resident)
            hf = HFTokenizer(bpe)
            hf.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in self._splits]
                + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
            self._hf = hf
        return self._hf

    # The BPE model skips byte characters outside its vocabulary (SmolLM2 lacks a few control
    # bytes). A missing ASCII byte makes its character vanish; a missing continuation byte
    # could make whole characters vanish, and then no length bound holds.
    @functools.cached_property
    def max_token_bytes(self) -> int | None:
        if any(_BYTE_CHARS[b] not in self._text_to_id for b in range(0x80, 0xC0)):
            return None
        return super().max_token_bytes

    @functools.cached_property
    def vanishing_chars(self) -> str:
        return "".join(chr(b) for b in range(0x80) if _BYTE_CHARS[b] not in self._text_to_id)

    def _encode_fragments(self, fragments: list[str | int], out: list[int]) -> None:
        texts = [frag for frag in fragments if not isinstance(frag, int)]
        if not texts:
            out.extend(fragments)
            return
        # one encode_batch call: unlike encode, it lets go of the GIL while it works, so a
        # long text does not stall the other threads (a server's event loop)
        encoded = iter(self._backend().encode_batch(texts, add_special_tokens=False))
        for frag in fragments:
            out.extend((frag,) if isinstance(frag, int) else next(encoded).ids)

    def _normal_piece(self, text: str) -> bytes:
        out = bytearray()
        for c in text:
            b = _CHAR_BYTES.get(c)
            if b is not None:
                out.append(b)
            else:  # not a byte character: llama.cpp writes this marker instead
                u = c.encode("utf-8", "surrogateescape")
                out += b"[UNK_BYTE_0x" + u.hex().encode() + text.encode("utf-8", "surrogateescape") + b"]"
        return bytes(out)
