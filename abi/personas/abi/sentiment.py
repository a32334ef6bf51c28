"""Sentiment analysis: polarity, emotions, urgency and distress of a message, from a lexicon
(``sentiment_lexicon.yaml``) with negation, intensifiers, contrast and emphasis rules.

How a message is scored:
- tokens are matched against lexicon phrases (longest first) and words (``frustrat*``
  entries match any ending);
- a negation within the three tokens before a word (same clause) flips and damps its
  valence ("not good" is mildly negative) and cancels its emotion ("not angry");
- intensifiers before a word scale it ("very frustrated" > "frustrated" > "a bit
  frustrated"); a word in capitals inside mixed-case text counts more;
- after "but"/"however" the clause weighs more and the one before less;
- exclamation marks add emphasis; polarity is the sum squashed into [-1, 1].
Emotion intensities are 1 - exp(-evidence), so more evidence saturates towards 1.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

NEGATIVE_EMOTIONS = ("anger", "frustration", "sadness", "fear")
_CLAUSE_END = {".", ",", ";", ":", "!", "?", "but", "however", "although", "though", "yet"}
_CONTRAST = {"but", "however", "although", "though", "yet"}
_NEGATION_SCALE = -0.74     # "not good" is about as negative as "good" is positive, times 0.74
_ALPHA = 15.0               # polarity = s / sqrt(s^2 + alpha)
_EMOTICONS = {
    ":)": ("joy", 0.5, 1.5), ":-)": ("joy", 0.5, 1.5), ":d": ("joy", 0.6, 2.0),
    ":(": ("sadness", 0.6, -1.8), ":-(": ("sadness", 0.6, -1.8), ":'(": ("sadness", 0.8, -2.2),
    "😊": ("joy", 0.6, 1.8), "🙂": ("joy", 0.4, 1.2), "😀": ("joy", 0.6, 2.0),
    "😂": ("joy", 0.5, 1.5), "❤": ("joy", 0.5, 2.0), "🙏": ("gratitude", 0.6, 1.5),
    "😢": ("sadness", 0.8, -2.2), "😭": ("sadness", 0.9, -2.4), "😞": ("sadness", 0.6, -1.8),
    "😡": ("anger", 0.9, -2.5), "😠": ("anger", 0.8, -2.3), "🤬": ("anger", 1.0, -2.8),
    "😤": ("frustration", 0.7, -1.8), "😩": ("frustration", 0.7, -2.0),
    "😫": ("frustration", 0.7, -2.0), "😰": ("fear", 0.8, -2.0), "😱": ("fear", 0.8, -2.0),
    "😨": ("fear", 0.8, -2.0), "😕": ("confusion", 0.5, -0.8), "🤔": ("confusion", 0.3, 0.0),
}
_TOKEN = re.compile(r"[:;]['-]?[()dDpP]|[A-Za-z0-9_]+(?:'[A-Za-z]+)?|[!?.,;:]|[^\sA-Za-z0-9_]",
                    re.UNICODE)


@dataclass
class SentimentResult:
    """polarity in [-1, 1]; emotions: emotion -> intensity in [0, 1]; emotion: the strongest
    (``neutral`` when none reaches 0.2); urgency and distress in [0, 1]."""

    polarity: float
    emotion: str
    emotions: dict[str, float]
    urgency: float
    distress: float
    negated: list[str] = field(default_factory=list)   # lexicon words a negation turned

    @property
    def intensity(self) -> float:
        return self.emotions.get(self.emotion, 0.0)

    @property
    def label(self) -> str:
        return "positive" if self.polarity >= 0.05 else "negative" if self.polarity <= -0.05 \
            else "neutral"

    def to_dict(self) -> dict:
        return {"polarity": round(self.polarity, 4), "label": self.label, "emotion": self.emotion,
                "emotions": {k: round(v, 4) for k, v in self.emotions.items() if v > 0},
                "urgency": round(self.urgency, 4), "distress": round(self.distress, 4)}


class _Table:
    """Exact entries, prefix (``word*``) entries and phrases of one lexicon section."""

    def __init__(self, entries: dict):
        self.words: dict[str, float] = {}
        self.prefixes: list[tuple[str, float]] = []
        self.phrases: dict[tuple[str, ...], float] = {}
        for key, value in entries.items():
            key = str(key).lower()
            if " " in key:
                self.phrases[tuple(key.split())] = float(value)
            elif key.endswith("*"):
                self.prefixes.append((key[:-1], float(value)))
            else:
                self.words[key] = float(value)
        self.prefixes.sort(key=lambda kv: -len(kv[0]))
        self.max_phrase = max((len(p) for p in self.phrases), default=1)
        self.phrase_first = {p[0] for p in self.phrases}   # most tokens start no phrase
        self._seen: dict[str, float | None] = {}           # token -> word(token)

    def word(self, token: str) -> float | None:
        try:
            return self._seen[token]
        except KeyError:
            pass
        value = self.words.get(token)
        if value is None:
            value = next((v for prefix, v in self.prefixes if token.startswith(prefix)), None)
        if len(self._seen) > 1 << 16:  # bounded: texts bring new words forever
            self._seen.clear()
        self._seen[token] = value
        return value


@dataclass
class _Unit:
    """One scored unit of the message: a word or a matched phrase."""

    text: str
    start: int        # token index of its first token
    end: int          # one past its last token
    caps: bool


@lru_cache(maxsize=1)
def _lexicon() -> dict:
    import yaml

    data = yaml.safe_load((Path(__file__).with_name("sentiment_lexicon.yaml")).read_text("utf-8"))
    return {
        "valence": _Table(data["valence"]),
        "emotions": {name: _Table(words) for name, words in data["emotions"].items()},
        "negations": {str(w).lower() for w in data["negations"]},
        "intensifiers": _Table(data["intensifiers"]),
        "urgency": _Table(data["urgency"]),
    }


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'")
    return _TOKEN.findall(text)


def _match(table: _Table, low: list[str], i: int) -> tuple[float | None, int]:
    """The value of the longest phrase or word of ``table`` starting at token ``i``, and
    how many tokens it spans."""
    if low[i] in table.phrase_first:
        for n in range(min(table.max_phrase, len(low) - i), 1, -1):
            value = table.phrases.get(tuple(low[i:i + n]))
            if value is not None:
                return value, n
    return table.word(low[i]), 1


class SentimentAnalyzer:
    """``analyze(text) -> SentimentResult``."""

    def __init__(self):
        self.lex = _lexicon()

    def _modifiers(self, low: list[str], start: int) -> tuple[bool, float]:
        """(negated, intensity scale) from the up-to-three tokens before ``start``."""
        negated, boost = False, 0.0
        j, seen = start - 1, 0
        while j >= 0 and seen < 3 and low[j] not in _CLAUSE_END:
            tok = low[j]
            if tok in self.lex["negations"]:
                # "not only" and "no doubt" do not negate what follows
                nxt = low[j + 1] if j + 1 < len(low) else ""
                if not (tok == "not" and nxt == "only") and not (tok == "no" and nxt == "doubt"):
                    negated = True
            b, n = _match(self.lex["intensifiers"], low, j)
            if b is not None and n == 1:
                boost += b * (1.0 - 0.05 * seen)
            if j >= 1:  # two-word intensifiers ("a bit", "kind of") end at j
                b2, n2 = _match(self.lex["intensifiers"], low, j - 1)
                if b2 is not None and n2 == 2:
                    boost += b2
                    j -= 1
            j -= 1
            seen += 1
        return negated, max(0.1, 1.0 + boost)

    def analyze(self, text: str) -> SentimentResult:
        raw = _tokens(text)
        low = [t.lower() for t in raw]
        letters = [t for t in raw if t.isalpha()]
        mixed_case = any(t != t.upper() for t in letters)
        valence, emotions, urgency = self.lex["valence"], self.lex["emotions"], self.lex["urgency"]

        # where contrast words sit: what follows the last one counts more
        contrast_at = max((i for i, t in enumerate(low) if t in _CONTRAST), default=-1)
        total = 0.0
        evidence = {name: 0.0 for name in emotions}
        negated_words: list[str] = []
        i = 0
        while i < len(low):
            tok = low[i]
            if tok in _EMOTICONS:
                name, amount, v = _EMOTICONS[tok]
                evidence[name] += amount
                total += v
                i += 1
                continue
            v, n = _match(valence, low, i)
            emo_hits = {}
            span = n if v is not None else 1
            for name, table in emotions.items():
                e, m = _match(table, low, i)
                if e is not None:
                    emo_hits[name] = e
                    span = max(span, m)
            if v is None and not emo_hits:
                i += 1
                continue
            negated, scale = self._modifiers(low, i)
            caps = mixed_case and all(t.isupper() and len(t) > 1 for t in raw[i:i + span]
                                      if t.isalpha()) and any(t.isalpha() for t in raw[i:i + span])
            if caps:
                scale *= 1.4
            if contrast_at >= 0:
                scale *= 1.5 if i > contrast_at else 0.5
            if v is not None:
                value = v * scale
                if negated:
                    value *= _NEGATION_SCALE
                    negated_words.append(" ".join(low[i:i + n]))
                total += value
            if not negated:
                for name, e in emo_hits.items():
                    evidence[name] += e * scale
            i += span

        # punctuation emphasis pushes the sum further from zero
        bangs = min(4, text.count("!"))
        if total and bangs:
            total += math.copysign(0.29 * bangs, total)
        polarity = total / math.sqrt(total * total + _ALPHA)

        # anger and frustration show in shouting too
        caps_words = [t for t in letters if len(t) > 2 and t.isupper()]
        shout = len(caps_words) / len(letters) if letters else 0.0
        if total < 0 and (bangs or shout > 0.3):
            for name in ("anger", "frustration"):
                if evidence[name]:
                    evidence[name] += 0.15 * bangs + 0.5 * shout
        scores = {name: 1.0 - math.exp(-ev) for name, ev in evidence.items()}
        strongest = max(scores, key=scores.get)
        emotion = strongest if scores[strongest] >= 0.2 else "neutral"

        cue = 0.0
        i = 0
        while i < len(low):
            u, n = _match(urgency, low, i)
            if u is not None:
                cue += u
            i += n
        cue += 0.15 * bangs + (0.6 * shout if len(letters) >= 3 else 0.0)
        urgency_score = 1.0 - math.exp(-cue)

        negative = max(scores[n] for n in NEGATIVE_EMOTIONS)
        distress = 1.0 - (1.0 - negative) * (1.0 - 0.6 * max(0.0, -polarity))
        return SentimentResult(polarity=polarity, emotion=emotion, emotions=scores,
                               urgency=urgency_score, distress=distress, negated=negated_words)


_DEFAULT: SentimentAnalyzer | None = None
_LAST: tuple[str, SentimentResult] | None = None


def analyze(text: str) -> SentimentResult:
    """The shared analyzer's result for ``text``. The last text's result is kept: routing
    reads one message twice (the router's signals, the query classifier's features)."""
    global _DEFAULT, _LAST
    last = _LAST
    if last is not None and last[0] == text:
        return last[1]
    if _DEFAULT is None:
        _DEFAULT = SentimentAnalyzer()
    result = _DEFAULT.analyze(text)
    _LAST = (text, result)
    return result
