"""WordPiece (BERT) tokenizer from GGUF metadata, as llama.cpp reads a ``bert`` vocabulary.

llama.cpp stores the vocabulary in "phantom space" form: a word-initial piece ``hello`` is
written ``▁hello``, a continuation piece ``##lo`` is written ``lo``, and control tokens
(``[CLS]``, ``[SEP]``...) are kept as they are. We turn it back into the ``##`` form and
run the ``tokenizers`` library's WordPiece behind BERT's normaliser and pre-tokeniser, which
gives the ids of the Hugging Face tokenizer the file was converted from.
"""
from __future__ import annotations

from ..errors import TokenizerError

PHANTOM = "\u2581"
# llama.cpp token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# llama.cpp's fallback ids for a bert vocabulary without the keys
_DEFAULT_IDS = {"bos": 101, "unknown": 100, "seperator": 102, "padding": 0, "mask": 103}
_DEFAULT_TEXT = {"bos": "[CLS]", "unknown": "[UNK]", "seperator": "[SEP]", "padding": "[PAD]",
                 "mask": "[MASK]"}
MAX_INPUT_CHARS_PER_WORD = 100  # longer words become [UNK], as in BERT's tokenizer


class WordPieceTokenizer:
    """``encode(text)`` -> ids; ``add_bos`` wraps the ids in ``[CLS] ... [SEP]``."""

    def __init__(self, tokens: list[str], token_types: list[int] | None = None, *,
                 cls_id: int | None = None, sep_id: int | None = None, unk_id: int | None = None,
                 pad_id: int | None = None, mask_id: int | None = None, add_bos: bool = True,
                 add_sep: bool = True, lowercase: bool = True, strip_accents: bool | None = None):
        from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

        if not tokens:
            raise TokenizerError("the bert vocabulary is empty")
        if token_types is None:  # files without types: bracketed pieces are the control tokens
            token_types = [CONTROL if t.startswith("[") and t.endswith("]") else NORMAL for t in tokens]
        if len(token_types) != len(tokens):
            raise TokenizerError(f"{len(tokens)} tokens but {len(token_types)} token types")
        self.tokens = list(tokens)
        self.token_types = list(token_types)
        n = len(tokens)

        def check(name, value):
            if value is not None and not 0 <= value < n:
                raise TokenizerError(f"{name} token id {value} is outside the vocabulary of {n}")
            return value

        self.cls_id, self.sep_id = check("[CLS]", cls_id), check("[SEP]", sep_id)
        self.unk_id, self.pad_id, self.mask_id = check("[UNK]", unk_id), check("[PAD]", pad_id), check("[MASK]", mask_id)
        if self.unk_id is None:
            raise TokenizerError("the bert vocabulary has no unknown token")
        self.add_bos, self.add_sep = add_bos, add_sep

        vocab: dict[str, int] = {}
        self._control: list[str] = []
        for i, (tok, kind) in enumerate(zip(self.tokens, self.token_types)):
            if kind == CONTROL or kind == UNUSED:
                piece = tok
                if kind == CONTROL:
                    self._control.append(tok)
            elif tok.startswith(PHANTOM):
                piece = tok[len(PHANTOM):]
            else:
                piece = "##" + tok
            vocab.setdefault(piece, i)  # on a clash the lower id wins
        if self.tokens[self.unk_id] not in vocab:
            raise TokenizerError(f"unknown token {self.tokens[self.unk_id]!r} is not in the vocabulary")

        def build(with_special: bool) -> Tokenizer:
            tok = Tokenizer(models.WordPiece(vocab, unk_token=self.tokens[self.unk_id],
                                             max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
            tok.normalizer = normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=True, lowercase=lowercase,
                strip_accents=lowercase if strip_accents is None else strip_accents)
            tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
            if with_special and self._control:
                tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                        for t in self._control])
            return tok

        self._plain = build(False)
        self._build = build
        self._special = None  # built on first use of special=True

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, gguf_file) -> "WordPieceTokenizer":
        md = gguf_file.metadata
        model = md.get("tokenizer.ggml.model")
        if model != "bert":
            raise TokenizerError(f"tokenizer.ggml.model is {model!r}, not 'bert' (WordPiece)")
        tokens = md.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise TokenizerError("tokenizer.ggml.tokens is missing or not a list of strings")
        types = md.get("tokenizer.ggml.token_type")
        text_to_id = {t: i for i, t in enumerate(tokens)}

        def special(name):
            value = md.get(f"tokenizer.ggml.{name}_token_id")
            if value is None:
                value = text_to_id.get(_DEFAULT_TEXT[name])
            if value is None and _DEFAULT_IDS[name] < len(tokens):
                value = _DEFAULT_IDS[name]
            return value

        lowercase = bool(md.get("tokenizer.ggml.normalizer.lowercase", True))
        strip = md.get("tokenizer.ggml.normalizer.strip_accents")
        add_eos, add_sep = md.get("tokenizer.ggml.add_eos_token"), md.get("tokenizer.ggml.add_sep_token")
        # [SEP] closes the sequence unless the file turns both flags off
        close = True if add_eos is None and add_sep is None else bool(add_eos or add_sep)
        sep = md.get("tokenizer.ggml.seperator_token_id")
        if sep is None:
            sep = md.get("tokenizer.ggml.eos_token_id")
        if sep is None:
            sep = special("seperator")
        return cls(tokens, types, cls_id=special("bos"), sep_id=sep, unk_id=special("unknown"),
                   pad_id=special("padding"), mask_id=special("mask"),
                   add_bos=bool(md.get("tokenizer.ggml.add_bos_token", True)), add_sep=close,
                   lowercase=lowercase, strip_accents=None if strip is None else bool(strip))

    # -- use -------------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    @property
    def bos_id(self) -> int | None:  # the names every abi tokenizer answers to
        return self.cls_id

    @property
    def eos_id(self) -> int | None:
        return self.sep_id

    def _tokenizer(self, special: bool):
        if not special:
            return self._plain
        if self._special is None:
            self._special = self._build(True)
        return self._special

    def _wrap(self, ids: list[int], add_bos: bool | None) -> list[int]:
        if not (self.add_bos if add_bos is None else add_bos):
            return ids
        if self.cls_id is None:
            raise TokenizerError("this vocabulary has no [CLS] token to add")
        tail = [self.sep_id] if self.add_sep and self.sep_id is not None else []
        return [self.cls_id] + ids + tail

    def encode(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_bos=None`` follows the file (``[CLS] ... [SEP]`` for
        BERT); ``special=True`` turns control-token text such as ``[SEP]`` into its id."""
        if not isinstance(text, str):
            raise TokenizerError(f"text must be a str, not {type(text).__name__}")
        ids = self._tokenizer(special).encode(text, add_special_tokens=False).ids
        return self._wrap(ids, add_bos)

    def encode_batch(self, texts: list[str], add_bos: bool | None = None,
                     special: bool = False) -> list[list[int]]:
        """``encode`` for many texts at once (the tokenizers library runs them in parallel)."""
        if not all(isinstance(t, str) for t in texts):
            raise TokenizerError("every text must be a str")
        encs = self._tokenizer(special).encode_batch(list(texts), add_special_tokens=False)
        return [self._wrap(e.ids, add_bos) for e in encs]

    def decode(self, ids, special: bool = False) -> str:
        """Text of ``ids``; control tokens are left out unless ``special``."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.n_vocab:
                raise TokenizerError(f"token id {i} is outside the vocabulary of {self.n_vocab}")
        # the control tokens must be registered as special for the decoder to drop them
        return self._tokenizer(True).decode(ids, skip_special_tokens=not special)

    def token_to_piece(self, token_id: int) -> str:
        return self.tokens[token_id]
