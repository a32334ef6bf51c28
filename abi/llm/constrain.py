"""Constrained decoding: a JSON schema, any JSON object, a regular expression or a
context-free grammar (Lark or llama.cpp's GBNF) enforced as a token mask before sampling.

The engine is llguidance: it builds a token trie from the vocabulary's bytes once, computes a
mask in tens of microseconds per step, compiles JSON schema, regex, Lark and (through its
converter) GBNF, and names what it cannot compile; it is what llama.cpp links for the same
job. Our code is the bridge: the GGUF vocabulary as bytes, the mask applied to logits, and
the typed errors. A grammar that does not compile is a ``GrammarError``, never a silent
unconstrained generation.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import GrammarError

KINDS = ("json_schema", "json_object", "regex", "lark", "gbnf")
# JSON written like json.dumps writes it: one space after ',' and ':' and nowhere else, so a
# small model cannot pad its answer with whitespace until the length limit
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Grammar:
    """What the output must match. Build one with the class methods; ``source`` is the
    schema (JSON text) or the grammar / regex text."""

    kind: str
    source: str
    field: str = "grammar"  # the request field to name in errors

    @classmethod
    def json_schema(cls, schema, field: str = "response_format") -> "Grammar":
        """Output that validates against ``schema`` (a dict, JSON text or a pydantic model
        class). The schema is always enforced as written: unsupported keywords are errors."""
        if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
            schema = schema.model_json_schema()
        if isinstance(schema, (str, bytes)):
            try:
                schema = json.loads(schema)
            except ValueError as exc:
                raise GrammarError(f"the JSON schema is not valid JSON: {exc}", field=field) from None
        if not isinstance(schema, dict):
            raise GrammarError(f"a JSON schema must be an object, got {type(schema).__name__}",
                               field=field)
        _check_schema(schema, field)
        return cls("json_schema", json.dumps(schema), field)  # key order kept: it is the output order

    @classmethod
    def json_object(cls, field: str = "response_format") -> "Grammar":
        """Any JSON object."""
        return cls("json_object", '{"type": "object"}', field)

    @classmethod
    def regex(cls, pattern: str, field: str = "grammar") -> "Grammar":
        return cls("regex", _text(pattern, field), field)

    @classmethod
    def lark(cls, text: str, field: str = "grammar") -> "Grammar":
        """A grammar in llguidance's Lark syntax (``start: ...``)."""
        return cls("lark", _text(text, field), field)

    @classmethod
    def gbnf(cls, text: str, field: str = "grammar") -> "Grammar":
        """A grammar in llama.cpp's GBNF (``root ::= ...``)."""
        return cls("gbnf", _text(text, field), field)

    def compiled(self) -> str:
        """The llguidance grammar text (checked against a tokenizer when a matcher is made)."""
        return _compile(self.kind, self.source, self.field)


def _text(value, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GrammarError(f"{field} must be non-empty text", field=field)
    return value


def _check_schema(schema: dict, field: str) -> None:
    """A malformed schema named by jsonschema's meta-schema check (the library tests use to
    validate outputs, so both sides read schemas alike)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise GrammarError(f"the JSON schema is malformed at {where}: {exc.message}",
                           field=field) from None


@lru_cache(maxsize=256)
def _compile(kind: str, source: str, field: str) -> str:
    import llguidance as llg

    try:
        if kind in ("json_schema", "json_object"):
            return llg.LLMatcher.grammar_from_json_schema(source, defaults=_JSON_OPTIONS)
        if kind == "regex":
            return llg.LLMatcher.grammar_from_regex(source)
        if kind == "lark":
            return llg.LLMatcher.grammar_from_lark(source)
        if kind == "gbnf":
            from llguidance.gbnf_to_lark import gbnf_to_lark

            return llg.LLMatcher.grammar_from_lark(gbnf_to_lark(source))
    except Exception as exc:  # the converters raise ValueError and their own error classes
        raise GrammarError(f"the {kind} grammar does not compile: {exc}", field=field) from None
    raise GrammarError(f"unknown grammar kind {kind!r}; one of {', '.join(KINDS)}", field=field)


def from_response_format(response_format, field: str = "response_format") -> Grammar | None:
    """OpenAI's ``response_format`` (``{"type": "text" | "json_object" | "json_schema",
    "json_schema": {"name", "schema", "strict"}}``), or a pydantic model class, as a Grammar
    (None for plain text)."""
    if response_format is None:
        return None
    if isinstance(response_format, Grammar):
        return response_format
    if isinstance(response_format, type) and hasattr(response_format, "model_json_schema"):
        return Grammar.json_schema(response_format, field)
    if not isinstance(response_format, dict):
        raise GrammarError("response_format must be an object with a 'type'", field=field)
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return Grammar.json_object(field)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise GrammarError("response_format json_schema needs json_schema.schema", field=field)
        return Grammar.json_schema(spec["schema"], field)
    raise GrammarError(f"response_format type must be text, json_object or json_schema, got "
                       f"{kind!r}", field=field)


# -- the vocabulary, as llguidance sees it ------------------------------------------------------

class _Vocabulary:
    """The shape llguidance's ``LLTokenizer`` reads: the bytes of every token (special ones
    marked with a leading 0xFF, as llama.cpp's bridge does), EOS, and an encoder."""

    is_tokenizer_wrapper = True

    def __init__(self, tokenizer, n_vocab: int):
        from .tokenizer import ATTR_CONTROL, ATTR_USER_DEFINED

        self._tok = tokenizer
        tokens, special = [], []
        for i in range(tokenizer.n_vocab):
            piece = tokenizer.token_to_piece(i, special=True)
            attr = tokenizer._attrs[i]
            if attr & ATTR_CONTROL or (attr & ATTR_USER_DEFINED and piece[:1] == b"<"
                                       and piece[-1:] == b">"):
                piece = b"\xff" + piece
                special.append(i)
            tokens.append(piece)
        tokens += [b""] * (n_vocab - len(tokens))  # embedding rows past the vocabulary
        self.tokens = tokens
        self.special_token_ids = special
        eos = tokenizer.eos_id if tokenizer.eos_id is not None else min(tokenizer.eog_ids, default=0)
        self.eos_token_id, self.bos_token_id = eos, tokenizer.bos_id

    def __call__(self, text: str) -> list[int]:
        return self._tok.encode(text, add_bos=False)


_LOCK = threading.Lock()


def lltokenizer(tokenizer, n_vocab: int):
    """llguidance's tokenizer for ours, built once per (tokenizer, mask width)."""
    import llguidance as llg

    with _LOCK:
        cache = tokenizer.__dict__.setdefault("_llguidance", {})
        if n_vocab not in cache:
            eos = sorted(tokenizer.eog_ids) or [tokenizer.eos_id or 0]
            cache[n_vocab] = llg.LLTokenizer(_Vocabulary(tokenizer, n_vocab), n_vocab=n_vocab,
                                             eos_token=eos)
        return cache[n_vocab]


# -- one generation's constraint -----------------------------------------------------------------

# masks are computed here while the forward pass runs (llguidance drops the GIL)
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="abi-mask")


class Constraint:
    """The matcher of one generation: ``begin()`` before the prompt's forward, ``apply`` to
    each step's logits, ``advance`` with each sampled token. ``wait_ns`` is the time the
    decode loop spent on masks (waiting for one and applying it): the constraint's cost."""

    def __init__(self, grammar: Grammar, tokenizer, n_vocab: int):
        import llguidance as llg

        self.grammar = grammar
        self.n_vocab = n_vocab
        self._matcher = llg.LLMatcher(lltokenizer(tokenizer, n_vocab), grammar.compiled(),
                                      log_level=0)
        if self._matcher.is_error():
            raise GrammarError(f"the {grammar.kind} cannot be enforced: "
                               f"{self._matcher.get_error().strip()}", field=grammar.field)
        self._bits = np.zeros((n_vocab + 31) // 32, np.int32)
        self._pending = None
        self.stopped = False  # nothing but the end of generation may follow
        self.wait_ns = 0
        self.steps = 0

    def _fill(self) -> None:
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)

    def begin(self) -> None:
        """Start computing the next mask in the background."""
        if self._pending is None:
            self._pending = _POOL.submit(self._fill)

    def allowed(self) -> np.ndarray:
        """Boolean (n_vocab,) of the tokens the grammar allows next."""
        self.begin()
        self._pending.result()
        self._pending = None
        return np.unpackbits(self._bits.view(np.uint8), bitorder="little")[:self.n_vocab].view(bool)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter_ns()
        allowed = self.allowed()
        if not allowed.any():
            raise GrammarError(f"the {self.grammar.kind} allows no token here: "
                               f"{self._matcher.get_error() or 'the grammar is exhausted'}",
                               field=self.grammar.field)
        logits = np.where(allowed, logits, np.float32(-np.inf))
        self.wait_ns += time.perf_counter_ns() - t0
        self.steps += 1
        return logits

    def advance(self, token: int) -> None:
        """Consume a sampled token and start the next mask (unless the grammar is done)."""
        if not self._matcher.consume_token(int(token)):
            raise GrammarError(f"token {token} breaks the {self.grammar.kind}: "
                               f"{self._matcher.get_error()}", field=self.grammar.field)
        # read before the next mask starts: the matcher is busy while it computes
        self.stopped = self._matcher.is_stopped()
        if not self.stopped:
            self.begin()

    @property
    def accepting(self) -> bool:
        """What was generated so far is a complete match."""
        self._settle()
        return self._matcher.is_accepting()

    def _settle(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def close(self) -> None:
        self._settle()  # never free the mask buffer under a running computation


def check(grammar: Grammar | None, tokenizer, n_vocab: int) -> None:
    """Compile ``grammar`` against a vocabulary now, so that a request fails before it waits
    for a slot."""
    if grammar is not None:
        Constraint(grammar, tokenizer, n_vocab).close()


def as_grammar(value: Any, field: str = "grammar") -> Grammar | None:
    """``StreamingConfig.grammar``: a Grammar, or text in GBNF (llama.cpp's ``grammar``
    field) or Lark (a ``start:`` rule)."""
    if value is None or isinstance(value, Grammar):
        return value
    if isinstance(value, str):
        from llguidance.gbnf_to_lark import is_lark_syntax

        return Grammar.lark(value, field) if is_lark_syntax(value) else Grammar.gbnf(value, field)
    raise GrammarError(f"grammar must be an abi.llm.Grammar or grammar text, got "
                       f"{type(value).__name__}", field=field)
