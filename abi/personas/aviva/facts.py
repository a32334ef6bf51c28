"""Fact checking of claims against Aviva's document store.

A claim (a declarative sentence of an answer) is compared with the sentences of the
passages retrieved for it. The best-matching sentence gives the verdict:
- supported: it covers at least ``support_threshold`` of the claim's terms, and every
  number in the claim appears in it, and both are negated or neither;
- contradicted: it covers at least ``contradict_overlap`` of the claim's terms but states
  different numbers, or the opposite polarity ("is" vs "is not");
- unverified: otherwise (the store says nothing clear about it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from abi.personas.aviva.knowledge import KnowledgeStore, Passage, terms

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)*")
_NEGATION = re.compile(r"\b(not|never|no|cannot|can't|isn't|aren't|wasn't|weren't|doesn't|"
                       r"don't|didn't|won't|neither|nor)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def numbers(text: str) -> set[str]:
    out = set()
    for m in _NUMBER.finditer(text):
        n = m.group().replace(",", "")
        out.add(n.rstrip("0").rstrip(".") if "." in n else n)
    return out


def sentences(text: str) -> list[str]:
    text = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)  # code is not a claim
    out = []
    for block in re.split(r"\n\s*\n|\n(?=\s*[-*\d]+[.)]?\s)", text):
        for s in _SENTENCE.split(block.strip()):
            s = re.sub(r"^\s*(?:[-*]|\d+[.)])\s+", "", s).strip()
            if s:
                out.append(s)
    return out


@dataclass
class FactCheck:
    claim: str
    verdict: str                  # supported, contradicted, unverified
    score: float                  # share of the claim's terms the evidence covers
    source: Passage | None = None
    evidence: str | None = None   # the passage sentence the verdict rests on
    reason: str = ""

    def to_dict(self) -> dict:
        return {"claim": self.claim, "verdict": self.verdict, "score": round(self.score, 4),
                "source": self.source.citation() if self.source else None,
                "evidence": self.evidence, "reason": self.reason}


class FactChecker:
    def __init__(self, store: KnowledgeStore, support_threshold: float = 0.6,
                 contradict_overlap: float = 0.5, candidates: int = 3):
        self.store = store
        self.support_threshold = support_threshold
        self.contradict_overlap = contradict_overlap
        self.candidates = candidates

    @staticmethod
    def claims(text: str) -> list[str]:
        """The checkable statements of ``text``: declarative sentences with at least three
        content terms (questions, headings and code are skipped)."""
        out = []
        for s in sentences(text):
            if s.endswith("?") or s.startswith("#") or s.lower().startswith("sources"):
                continue
            if len(set(terms(s))) >= 3:
                out.append(s)
        return out

    def check(self, claim: str) -> FactCheck:
        claim_terms = set(terms(claim))
        if not claim_terms:
            return FactCheck(claim, "unverified", 0.0, reason="nothing to check")
        best: tuple[float, Passage, str] | None = None
        for hit in self.store.search(claim, self.candidates):
            for sent in sentences(hit.passage.text) or [hit.passage.text]:
                overlap = len(claim_terms & set(terms(sent))) / len(claim_terms)
                if best is None or overlap > best[0]:
                    best = (overlap, hit.passage, sent)
        if best is None:
            return FactCheck(claim, "unverified", 0.0, reason="no passage shares its terms")
        overlap, passage, sent = best
        claim_nums, sent_nums = numbers(claim), numbers(sent)
        claim_neg, sent_neg = bool(_NEGATION.search(claim)), bool(_NEGATION.search(sent))
        if overlap >= self.contradict_overlap:
            if claim_nums and sent_nums and not claim_nums <= sent_nums:
                return FactCheck(claim, "contradicted", overlap, passage, sent,
                                 f"the source gives {', '.join(sorted(sent_nums))}, the claim "
                                 f"{', '.join(sorted(claim_nums))}")
            if claim_neg != sent_neg:
                return FactCheck(claim, "contradicted", overlap, passage, sent,
                                 "the source states the opposite")
        if overlap >= self.support_threshold and claim_nums <= sent_nums:
            return FactCheck(claim, "supported", overlap, passage, sent,
                             f"{overlap:.0%} of its terms in the source")
        return FactCheck(claim, "unverified", overlap, passage, sent,
                         f"only {overlap:.0%} of its terms in the closest source")

    def check_text(self, text: str, limit: int = 20) -> list[FactCheck]:
        return [self.check(c) for c in self.claims(text)[:limit]]
