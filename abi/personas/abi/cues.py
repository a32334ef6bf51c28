"""Cue lexicons (``cues.yaml``): counts of technical terms, creative forms, factual and
explanation cues, personal and social phrases in a message. They are features of the query
classifier, which learns how much each kind of cue counts for each query type; they carry
knowledge (hundreds of technical terms) that a few hundred training examples cannot."""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from abi.personas.textmodel import tokenize


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


def _stems(text: str) -> list[str]:
    return [stem(t) for t in tokenize(text)]


class CueLexicon:
    """Categories of cue words and phrases; ``counts(text)`` per category."""

    def __init__(self, categories: dict[str, list]):
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

    def counts(self, text: str, negations: frozenset | None = None) -> dict[str, int]:
        """How many cues of each category ``text`` holds (a phrase counts once, not also
        its words). With ``negations``, a cue that one of them precedes (within three
        tokens of the same clause) counts under ``<category>_negated`` instead."""
        toks = _stems(text)
        out = {}
        for name in self.words:
            words, prefixes, phrases = self.words[name], self.prefixes[name], self.phrases[name]
            n = n_neg = 0
            i = 0
            while i < len(toks):
                span = 0
                for m in range(min(self.max_phrase, len(toks) - i), 1, -1):
                    if tuple(toks[i:i + m]) in phrases:
                        span = m
                        break
                if not span:
                    tok = toks[i]
                    span = -1 if tok in words or (prefixes and tok.startswith(prefixes)) else 0
                if span:
                    if negations and _negated(toks, i, negations):
                        n_neg += 1
                    else:
                        n += 1
                i += abs(span) or 1
            out[name] = n
            if negations is not None:
                out[f"{name}_negated"] = n_neg
        return out


_CLAUSE_END = {".", ",", ";", "!", "?", "but", "and", "or"}


def _negated(toks: list[str], i: int, negations: frozenset) -> bool:
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
