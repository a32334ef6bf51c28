"""Tokenizers built from GGUF metadata, giving the token ids llama.cpp gives.

``load_tokenizer(gguf_file)`` dispatches on ``tokenizer.ggml.model``:

- ``gpt2``  byte-level BPE (``tokenizer_bpe.BPETokenizer``): llama.cpp's pre-tokenizer
  splits for the file's ``tokenizer.ggml.pre``, then the ``tokenizers`` library's BPE model;
- ``llama`` SentencePiece-style BPE (``tokenizer_spm.SPMTokenizer``): merges ordered by the
  pieces' scores with byte fallback, our own code since ``tokenizers`` has no equivalent;
- ``bert``  WordPiece (``tokenizer_wpm.WordPieceTokenizer``).

Shared here, as llama.cpp does them: token attributes from the token types, special-token
partitioning of the text, BOS/EOS, the end-of-generation set, pieces and detokenisation, and
a streaming detokeniser that only ever emits complete UTF-8.
"""
from __future__ import annotations

import abc
import functools
import operator
import os
from itertools import compress
from types import SimpleNamespace
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ContextLengthExceeded, TokenizerError

# GGUF token types (tokenizer.ggml.token_type)
UNDEFINED, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = range(7)

# token attributes (bit flags), derived from the types and then adjusted as llama.cpp does
(ATTR_UNKNOWN, ATTR_UNUSED, ATTR_NORMAL, ATTR_CONTROL, ATTR_USER_DEFINED, ATTR_BYTE,
 ATTR_LSTRIP, ATTR_RSTRIP) = (1 << i for i in range(8))
_ATTR_OF_TYPE = (0, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_CONTROL, ATTR_USER_DEFINED, ATTR_UNUSED, ATTR_BYTE)

SUPPORTED_MODELS = ("gpt2", "llama", "bert")

# Later keys override earlier ones (the deprecated fim names come last, as in llama.cpp).
_ID_KEYS = (
    ("bos", "bos_token_id"), ("eos", "eos_token_id"), ("eot", "eot_token_id"),
    ("eom", "eom_token_id"), ("unk", "unknown_token_id"), ("sep", "seperator_token_id"),
    ("pad", "padding_token_id"), ("mask", "mask_token_id"),
    ("fim_pre", "fim_pre_token_id"), ("fim_suf", "fim_suf_token_id"),
    ("fim_mid", "fim_mid_token_id"), ("fim_pad", "fim_pad_token_id"),
    ("fim_rep", "fim_rep_token_id"), ("fim_sep", "fim_sep_token_id"),
    ("fim_pre", "prefix_token_id"), ("fim_suf", "suffix_token_id"), ("fim_mid", "middle_token_id"),
)
# Files without fim ids get them found by text; each found one becomes a control token.
_FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                "▁<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
              "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
              "<end_of_utterance>")
# Tokens that end a generation, found by their text (llama.cpp has no metadata key for them).
_EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
              "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
              "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
              "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[")
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")


def _metadata(gguf_file: Any) -> Mapping[str, Any]:
    if isinstance(gguf_file, (str, os.PathLike)):
        from ..gguf import load
        gguf_file = load(gguf_file)
    meta = getattr(gguf_file, "metadata", gguf_file)
    if not isinstance(meta, Mapping):
        raise TokenizerError(f"expected a GGUF file or its metadata, got {type(gguf_file).__name__}")
    return meta


def load_tokenizer(gguf_file: Any) -> "Tokenizer":
    """The tokenizer the file's ``tokenizer.ggml.model`` names (a GGUFFile, its metadata
    dict, or a path)."""
    meta = _metadata(gguf_file)
    model = meta.get("tokenizer.ggml.model")
    if model is None:
        raise TokenizerError("the file has no tokenizer (no 'tokenizer.ggml.model' key)")
    if model == "gpt2":
        from .tokenizer_bpe import BPETokenizer
        return BPETokenizer.from_gguf(meta)
    if model == "llama":
        from .tokenizer_spm import SPMTokenizer
        return SPMTokenizer.from_gguf(meta)
    if model == "bert":
        try:
            from .tokenizer_wpm import WordPieceTokenizer
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.tokenizer_wpm":
                raise
            raise TokenizerError("this file has a 'bert' (WordPiece) tokenizer, but abi's WordPiece "
                                 "tokenizer module (abi.llm.tokenizer_wpm) is not available") from None
        return WordPieceTokenizer.from_gguf(SimpleNamespace(metadata=meta))
    raise TokenizerError(f"tokenizer model {model!r} is not supported; supported: "
                         f"{', '.join(SUPPORTED_MODELS)}")


class Tokenizer(abc.ABC):
    """Base of the GGUF tokenizers. Subclasses set ``_default_ids`` and the defaults of the
    flags, and implement ``_encode_fragments``."""

    model = ""
    _default_ids: dict[str, int] = {}
    _default_add_bos = False
    _default_add_space_prefix = False
    clean_spaces = False

    @classmethod
    def from_gguf(cls, gguf_file: Any) -> "Tokenizer":
        if cls is Tokenizer:
            return load_tokenizer(gguf_file)
        return cls(_metadata(gguf_file))

    def __init__(self, meta: Mapping[str, Any]):
        tokens = meta.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not tokens:
            raise TokenizerError("the file's vocabulary ('tokenizer.ggml.tokens') is missing or empty")
        n = len(tokens)
        if set(map(type, tokens)) != {str} or "" in tokens:
            # non-UTF-8 texts stay distinct (surrogate escapes); empty ones are named as llama.cpp does
            tokens = [(t.decode("utf-8", "surrogateescape") if isinstance(t, bytes) else str(t)) or f"[EMPTY_{i}]"
                      for i, t in enumerate(tokens)]
        self.tokens: list[str] = tokens
        self.n_vocab = n
        types = meta.get("tokenizer.ggml.token_type")
        if types is None:
            types = [NORMAL] * n
        elif not isinstance(types, list) or len(types) < n or not all(map(int.__instancecheck__, types)):
            raise TokenizerError(f"'tokenizer.ggml.token_type' must list an integer type for each of the {n} tokens")
        self.token_types: list[int] = types[:n] if len(types) > n else types
        if min(self.token_types) >= 0 and max(self.token_types) < len(_ATTR_OF_TYPE):
            self._attrs = list(map(_ATTR_OF_TYPE.__getitem__, self.token_types))
        else:
            self._attrs = [_ATTR_OF_TYPE[t] if 0 <= t < len(_ATTR_OF_TYPE) else 0 for t in self.token_types]
        self._text_to_id = dict(zip(tokens, range(n)))  # later duplicates win, as in llama.cpp

        self._pre_init(meta)
        self._ids = self._read_special_ids(meta)
        self.bos_id, self.eos_id = self._ids.get("bos"), self._ids.get("eos")
        self.eot_id, self.unk_id, self.pad_id = self._ids.get("eot"), self._ids.get("unk"), self._ids.get("pad")

        def flag(key, default):
            value = meta.get(f"tokenizer.ggml.{key}")
            return default if value is None else bool(value)

        self.add_bos: bool = flag("add_bos_token", self._default_add_bos)
        self.add_eos: bool = flag("add_eos_token", False)
        self.add_space_prefix: bool = flag("add_space_prefix", self._default_add_space_prefix)
        self.eog_ids: frozenset[int] = self._find_eog()
        special_mask = ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN
        self._special_order = sorted(
            compress(range(n), map(special_mask.__and__, self._attrs)),
            key=lambda i: (-len(self.tokens[i].encode("utf-8", "surrogateescape")), i))
        self._apply_name_rules(meta)
        self._partition_index: dict | None = None
        self._pieces: list[bytes | None] = [None] * n

    def _pre_init(self, meta: Mapping[str, Any]) -> None:
        """Hook for subclasses to read their own keys before the shared ones."""

    # -- special ids and the end-of-generation set -----------------------------------------
    def _read_special_ids(self, meta: Mapping[str, Any]) -> dict[str, int]:
        n = self.n_vocab
        ids = {k: v for k, v in self._default_ids.items() if 0 <= v < n}
        for name, key in _ID_KEYS:
            value = meta.get(f"tokenizer.ggml.{key}")
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n:
                ids[name] = value  # an out-of-range value keeps the default, as llama.cpp does
        if "eot" not in ids:
            found = [self._text_to_id[t] for t in _EOT_TEXTS if t in self._text_to_id]
            if found:
                ids["eot"] = min(found)
                self._attrs[ids["eot"]] |= ATTR_CONTROL
        if "eom" not in ids and "<|eom_id|>" in self._text_to_id:
            ids["eom"] = self._text_to_id["<|eom_id|>"]
            self._attrs[ids["eom"]] |= ATTR_CONTROL
        for name, texts in _FIM_TEXTS.items():
            if name not in ids:
                found = [self._text_to_id[t] for t in texts if t in self._text_to_id]
                if found:  # llama.cpp takes the first in hash order; we take the lowest id
                    ids[name] = min(found)
                    self._attrs[ids[name]] |= ATTR_CONTROL
        return ids

    def _find_eog(self) -> frozenset[int]:
        eog = {self._ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if k in self._ids}
        for text in _EOG_TEXTS:
            i = self._text_to_id.get(text)
            if i is not None:
                eog.add(i)
                self._attrs[i] |= ATTR_CONTROL
        for text in _ALWAYS_RENDERED:
            i = self._text_to_id.get(text)
            if i is not None:
                self._attrs[i] = ATTR_USER_DEFINED
        eog.update(self._ids[k] for k in ("eos", "eot", "eom") if k in self._ids)
        by_text = {self.tokens[i]: i for i in eog}
        # files with both <|return|>/<|call|> (or <|calls|>/<|flush|>) use <|end|> mid-answer
        if "<|end|>" in by_text and (("<|return|>" in by_text and ("<|call|>" in by_text or "<|calls|>" in by_text))
                                     or ("<|flush|>" in by_text and ("<|call|>" in by_text or "<|calls|>" in by_text))):
            eog.discard(by_text["<|end|>"])
            self._attrs[by_text["<|end|>"]] = ATTR_USER_DEFINED
        if "</s>" in by_text and ("<|tool_response>" in by_text or "<|plamo:eos|>" in by_text):
            eog.discard(by_text["</s>"])
            self._attrs[by_text["</s>"]] = ATTR_NORMAL
        return frozenset(eog)

    def _apply_name_rules(self, meta: Mapping[str, Any]) -> None:
        """llama.cpp's per-model strip attributes: Phi-3 files (by ``general.name``) eat the
        whitespace after their special tokens, except after <unk>, <s> and <|endoftext|>."""
        name = str(meta.get("general.name") or "").lower()
        if "phi-3" in name or "phi3" in name:
            for i in self._special_order:
                self._attrs[i] |= ATTR_RSTRIP
            for text, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
                i = self._text_to_id.get(text)
                if i is not None:
                    self._attrs[i] = self._attrs[i] | ATTR_RSTRIP if on else self._attrs[i] & ~ATTR_RSTRIP

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.eog_ids

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_bos=None`` adds BOS and EOS as the file says (llama.cpp's
        ``add_special=true``), ``False`` adds neither, ``True`` forces BOS. ``special=True``
        parses control-token text such as ``<|im_start|>``; user-defined tokens are always
        parsed, as in llama.cpp."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode() takes a str, got {type(text).__name__}")
        text = _valid_unicode(text)
        with_bos = add_bos is True or (add_bos is None and self.add_bos)
        with_eos = add_bos is not False and self.add_eos
        out: list[int] = []
        if with_bos:
            if self.bos_id is None:
                raise TokenizerError("BOS was asked for but the vocabulary has no BOS token")
            out.append(self.bos_id)
        fragments = self._partition(text, special) if text else []
        self._encode_fragments(fragments, out)
        if with_eos:
            if self.eos_id is None:
                raise TokenizerError("the file asks for EOS but the vocabulary has no EOS token")
            out.append(self.eos_id)
        return out

    @abc.abstractmethod
    def _encode_fragments(self, fragments: list[str | int], out: list[int]) -> None:
        """Append the ids of plain-text fragments (ints are special-token ids) to ``out``."""

    def _partition(self, text: str, special: bool) -> list[str | int]:
        """Split ``text`` around special tokens, longest token first, each claiming all its
        occurrences left to right before the next is looked for (llama.cpp's order)."""
        index = self._partition_index
        if index is None:
            index = self._partition_index = self._build_partition_index()
        short, by_prefix = index
        if by_prefix is None:  # few special tokens: looking each one up is cheapest
            candidates = [c for c in short if c[1] in text]
        else:
            candidates = [c for c in short if c[1] in text]
            grams = {text[i:i + _GRAM] for i in range(len(text) - _GRAM + 1)}
            for g in grams.intersection(by_prefix):
                candidates.extend(c for c in by_prefix[g] if c[1] in text)
        if not candidates:
            return [text]
        candidates.sort()
        fragments: list[str | int] = [text]
        for _, tok_text, tok_id, is_control, lstrip, rstrip in candidates:
            if is_control and not special:
                continue
            new: list[str | int] = []
            for frag in fragments:
                if isinstance(frag, int) or tok_text not in frag:
                    new.append(frag)
                elif not (lstrip or rstrip):
                    parts = frag.split(tok_text)
                    if parts[0]:
                        new.append(parts[0])
                    for part in parts[1:]:
                        new.append(tok_id)
                        if part:
                            new.append(part)
                else:  # stripping can swallow the next occurrence: search as llama.cpp does
                    pos, end = 0, len(frag)
                    while (found := frag.find(tok_text, pos)) >= 0:
                        left = frag[pos:found].rstrip(_C_SPACE) if lstrip else frag[pos:found]
                        if left:
                            new.append(left)
                        new.append(tok_id)
                        pos = found + len(tok_text)
                        while rstrip and pos < end and frag[pos] in _C_SPACE:
                            pos += 1
                    if pos < end:
                        new.append(frag[pos:])
            fragments = new
        return fragments

    def _build_partition_index(self):
        attrs = self._attrs
        entries = [(rank, self.tokens[i], i, bool(attrs[i] & (ATTR_CONTROL | ATTR_UNKNOWN)),
                    bool(attrs[i] & ATTR_LSTRIP), bool(attrs[i] & ATTR_RSTRIP))
                   for rank, i in enumerate(self._special_order)]
        if len(entries) <= 64:
            return entries, None
        short, by_prefix = [], {}
        for entry in entries:
            if len(entry[1]) < _GRAM:
                short.append(entry)
            else:
                by_prefix.setdefault(entry[1][:_GRAM], []).append(entry)
        return short, by_prefix

    @functools.cached_property
    def max_token_bytes(self) -> int | None:
        """The most bytes of text one token can stand for, so that a text longer than
        ``n * max_token_bytes`` characters cannot fit in ``n`` tokens; None where no such
        bound holds (tokens that strip the whitespace around them)."""
        if any(a & (ATTR_LSTRIP | ATTR_RSTRIP) for a in self._attrs):
            return None
        return max(len(self.token_to_piece(i, special=True)) for i in range(self.n_vocab))

    @functools.cached_property
    def vanishing_chars(self) -> str:
        """Characters that encode to no token at all (the vocabulary lacks their bytes)."""
        return ""

    def check_length(self, text: str, max_tokens: int) -> None:
        """ContextLengthExceeded when ``text`` cannot fit in ``max_tokens`` tokens, judged from
        its length alone: a cheap refusal before tokenising a huge text."""
        per_token = self.max_token_bytes
        if per_token is None or len(text) <= max(max_tokens, 0) * per_token:
            return
        # characters that leave a token <= their UTF-8 bytes <= tokens * the longest token
        n = len(text) - sum(map(text.count, self.vanishing_chars))
        if n > max(max_tokens, 0) * per_token:
            raise ContextLengthExceeded(
                f"the prompt is {len(text)} characters: more than {max(max_tokens, 0)} tokens can "
                f"hold (at most {per_token} bytes each), so it cannot fit the context. Shorten "
                "the prompt or use a larger context")

    # -- pieces and decoding -----------------------------------------------------------------
    def token_to_piece(self, token_id: int, special: bool = False) -> bytes:
        """The bytes of one token (llama.cpp's ``token_to_piece`` with ``lstrip=0``); control
        and unknown tokens are empty unless ``special``."""
        try:
            index = operator.index(token_id)  # numpy integers too
        except TypeError:
            index = -1
        if not 0 <= index < self.n_vocab:
            raise TokenizerError(f"token id {token_id!r} is outside the vocabulary (0..{self.n_vocab - 1})")
        token_id = index
        if not special and self._attrs[token_id] & (ATTR_CONTROL | ATTR_UNKNOWN):
            return b""
        piece = self._pieces[token_id]
        if piece is None:
            piece = self._pieces[token_id] = self._make_piece(token_id)
        return piece

    def _make_piece(self, token_id: int) -> bytes:
        attr, text = self._attrs[token_id], self.tokens[token_id]
        if attr & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED):
            return text.encode("utf-8", "surrogateescape")
        if attr & ATTR_NORMAL:
            return self._normal_piece(text)
        if attr & ATTR_BYTE:
            try:
                return bytes([int(text[3:5], 16)])
            except ValueError:
                return b"\x00"  # llama.cpp's strtol gives 0 for a malformed byte token
        return b""  # unused and undefined tokens render as nothing

    @abc.abstractmethod
    def _normal_piece(self, text: str) -> bytes:
        """The bytes a normal vocabulary entry stands for."""

    def decode_bytes(self, ids: Iterable[int], special: bool = False) -> bytes:
        """llama.cpp's ``llama_detokenize(remove_special=false, unparse_special=special)``:
        the pieces joined, one leading space dropped when the file adds a space prefix, and
        for BPE vocabularies that ask for it, the tokenizer's space clean-up."""
        out = []
        remove_space = self.add_space_prefix
        for token_id in ids:
            piece = self.token_to_piece(token_id, special)
            if remove_space and piece[:1] == b" ":
                piece = piece[1:]
            remove_space = False
            out.append(piece)
        data = b"".join(out)
        return _clean_up_spaces(data) if self.clean_spaces else data

    def decode(self, ids: Iterable[int], special: bool = False) -> str:
        """Text of ``ids``; ``special=True`` renders control tokens' text. Invalid UTF-8 (a
        sequence cut mid-character) becomes U+FFFD."""
        return self.decode_bytes(ids, special).decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} model={self.model!r} n_vocab={self.n_vocab}>"


_GRAM = 3  # special-token candidates are found by their first three characters
_C_SPACE = " \t\n\x0b\x0c\r"  # C's isspace(), which llama.cpp strips with


def _valid_unicode(text: str) -> str:
    """Lone surrogates cannot be UTF-8; each becomes U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _clean_up_spaces(data: bytes) -> bytes:
    """The three in-place passes of llama.cpp's detokenize ``clean_spaces``: drop the space
    before ``? ! . ,``, around a lone apostrophe, and before ``'s 'm 're 've``."""
    if data[:1] == b"" or (b" " not in data):
        return data
    if any(p in data for p in (b" ?", b" !", b" .", b" ,")):
        t, total = bytearray(data), 1
        for i in range(1, len(t)):
            x = t[i]
            if t[i - 1] == 0x20 and x in b"?!.,":
                total -= 1
            t[total] = x
            total += 1
        data = bytes(t[:total])
    if b" ' " in data:
        t, total, i, n = bytearray(data), 1, 1, len(data)
        while i < n:
            x = t[i]
            if x == 0x27 and i + 1 < n and t[i - 1] == 0x20 and t[i + 1] == 0x20:
                total -= 1
                i += 1
                t[i] = 0
            t[total] = x
            total += 1
            i += 1
        data = bytes(t[:total])
    if b" '" in data:
        t, total, n = bytearray(data), 1, len(data)
        for i in range(1, n):
            x = t[i]
            if t[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
                x1 = t[i + 1]
                if x1 in b"sm" or (x1 not in b"td" and i + 2 < n
                                   and (x1, t[i + 2]) in ((0x72, 0x65), (0x76, 0x65))):
                    total -= 1
            t[total] = x
            total += 1
        data = bytes(t[:total])
    return data


def _utf8_complete_len(buf: bytes) -> int:
    """Length of the longest prefix of ``buf`` that does not end inside a UTF-8 sequence."""
    n = len(buf)
    for back in range(1, min(4, n) + 1):
        b = buf[n - back]
        if b < 0x80:
            return n
        if b >= 0xC0:  # lead byte: complete only if all its continuation bytes are here
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4 if b < 0xF8 else 1
            return n if back >= need else n - back
    return n  # only continuation bytes at the end: invalid anyway, nothing to wait for


class StreamingDetokenizer:
    """Turns ids into text one at a time, emitting only complete UTF-8 characters.

    The first piece loses one leading space when the tokenizer adds a space prefix (SPM), as
    llama.cpp's detokenize does; ``strip_leading_space`` overrides that. Joined, the outputs of
    ``push`` and ``flush`` are the pieces' bytes decoded as UTF-8 (no BPE space clean-up).
    """

    def __init__(self, tokenizer: Tokenizer, special: bool = False,
                 strip_leading_space: bool | None = None):
        self.tokenizer = tokenizer
        self.special = special
        self._strip = tokenizer.add_space_prefix if strip_leading_space is None else strip_leading_space
        self._first = True
        self._pending = b""

    def push(self, token_id: int) -> str:
        piece = self.tokenizer.token_to_piece(token_id, self.special)
        if self._first:
            self._first = False
            if self._strip and piece[:1] == b" ":
                piece = piece[1:]
        buf = self._pending + piece if self._pending else piece
        cut = _utf8_complete_len(buf)
        self._pending = buf[cut:]
        return buf[:cut].decode("utf-8", "replace")

    def flush(self) -> str:
        """Whatever is held back (an incomplete sequence becomes U+FFFD)."""
        out, self._pending = self._pending, b""
        return out.decode("utf-8", "replace")
