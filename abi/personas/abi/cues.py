"""Cue lexicons (``cues.yaml``): counts of technical terms, creative forms, factual and
explanation cues, personal and social phrases in a message. They are features of the query
classifier, which learns how much each kind of cue counts for each query type; they carry
knowledge (hundreds of technical terms) that a few hundred training examples cannot."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from abi.personas.textmodel import tokenize


@lru_cache(maxsize=1 << 16)
def stem(token: str) -> str:
    """A light suffix stripper, the same on lexicon and text, so "ending" meets "end",
    "killed" meets "kill" and "metres" meets "metre"."""
    n = len(token)
    if n > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if n > 4 and token.endswith("es") and token[-3] in "sxz" or token.endswith(("ches", "shes")):
        return token[:-2]
    if n > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    for suffix in ("ing", "ed"):
        if token.endswith(suffix) and n - len(suffix) >= 3:
            return token[:-len(suffix)]
    return token


@lru_cache(maxsize=64)   # the query and the policy lexicons read the same message
def _stems(text: str) -> tuple[str, ...]:
    return tuple(stem(t) for t in tokenize(text))


class CueLexicon:
    """Categories of cue words and phrases; ``counts(text)`` per category."""

    def __init__(self, categories: dict[str, list]):
        self.names = list(categories)
        self.words: dict[str, dict[str, None]] = {}
        self.prefixes: dict[str, tuple[str, ...]] = {}
        self.phrases: dict[str, set[tuple[str, ...]]] = {}
        self.max_phrase = 1
        for name, entries in categories.items():
            words, prefixes, phrases = {}, [], set()
            for entry in entries:
                entry = str(entry).lower()
                if entry.endswith("*") and len(entry) > 1 and " " not in entry:
                    prefixes.append(entry[:-1])
                    continue
                toks = tuple(_stems(entry))
                if len(toks) == 1:
                    words[toks[0]] = None
                elif toks:
                    phrases.add(toks)
                    self.max_phrase = max(self.max_phrase, len(toks))
            self.words[name], self.prefixes[name], self.phrases[name] = words, tuple(prefixes), phrases
        # one look-up per token for every category at once (routing runs this per message)
        self._phrase_names: dict[tuple[str, ...], list[str]] = {}
        for name, phrases in self.phrases.items():
            for ph in phrases:
                self._phrase_names.setdefault(ph, []).append(name)
        self._phrase_first = {ph[0] for ph in self._phrase_names}
        self._token_names: dict[str, tuple[str, ...]] = {}

    def _names_of(self, tok: str) -> tuple[str, ...]:
        """The categories whose words or prefixes match the token ``tok``."""
        names = self._token_names.get(tok)
        if names is None:
            names = tuple(n for n in self.names if tok in self.words[n]
                          or (self.prefixes[n] and tok.startswith(self.prefixes[n])))
            if len(self._token_names) > 1 << 16:  # bounded: texts bring new words forever
                self._token_names.clear()
            self._token_names[tok] = names
        return names

    def counts(self, text: str, negations: frozenset | None = None) -> dict[str, int]:
        """How many cues of each category ``text`` holds (a phrase counts once, not also
        its words). With ``negations``, a cue that one of them precedes (within three
        tokens of the same clause) counts under ``<category>_negated`` instead."""
        toks = _stems(text)
        # per category, the cues that start at each token: (start, tokens spanned),
        # the longest phrase first, else a word
        hits: dict[str, list[tuple[int, int]]] = {}
        for i, tok in enumerate(toks):
            found: dict[str, int] = {}
            if tok in self._phrase_first:
                for m in range(min(self.max_phrase, len(toks) - i), 1, -1):
                    for name in self._phrase_names.get(toks[i:i + m], ()):
                        found.setdefault(name, m)
            for name in self._names_of(tok):
                found.setdefault(name, 1)
            for name, m in found.items():
                hits.setdefault(name, []).append((i, m))
        out = {}
        for name in self.names:
            n = n_neg = 0
            nxt = 0   # a cue covers its tokens: the next one starts after it
            for i, m in hits.get(name, ()):
                if i < nxt:
                    continue
                if negations and _negated(toks, i, negations):
                    n_neg += 1
                else:
                    n += 1
                nxt = i + m
            out[name] = n
            if negations is not None:
                out[f"{name}_negated"] = n_neg
        return out


_CLAUSE_END = {".", ",", ";", "!", "?", "but", "and", "or"}


def _negated(toks: tuple[str, ...], i: int, negations: frozenset) -> bool:
    for j in range(i - 1, max(-1, i - 4), -1):
        if toks[j] in _CLAUSE_END:
            return False
        if toks[j] in negations:
            return True
    return False


@lru_cache(maxsize=None)
def cue_lexicon(name: str = "cues") -> CueLexicon:
    """The cue lexicon in ``<name>.yaml`` next to this module."""
    import yaml

    return CueLexicon(yaml.safe_load(Path(__file__).with_name(f"{name}.yaml").read_text("utf-8")))


def cue_features(text: str) -> dict[str, float]:
    """Each category's cue count, squashed into [0, 1) so that many cues saturate."""
    return {f"cue_{k}": 1.0 - math.exp(-v / 2.0) for k, v in cue_lexicon().counts(text).items()}
