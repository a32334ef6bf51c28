"""Query classification: code, factual, explanation, emotional_support, creative or
chit_chat, by a logistic-regression model on n-gram features plus sentiment scores and
cue-lexicon counts (``cues.yaml``),
trained at first use on ``personas/data/queries.yaml`` (about a second, deterministic)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from abi.personas.abi.cues import cue_features
from abi.personas.abi.sentiment import analyze as analyze_sentiment
from abi.personas.data import load_examples
from abi.personas.textmodel import TextClassifier
from abi.personas.types import QueryType

L2 = 1e-3


def sentiment_features(text: str) -> dict[str, float]:
    """Lexicon evidence the n-grams cannot see: how negative, how emotional, how urgent."""
    s = analyze_sentiment(text)
    feats = {"neg": max(0.0, -s.polarity), "pos": max(0.0, s.polarity),
             "distress": s.distress, "urgency": s.urgency}
    for name, value in s.emotions.items():
        feats[f"emo_{name}"] = value
    return feats


def query_features(text: str) -> dict[str, float]:
    return {**sentiment_features(text), **cue_features(text)}


@dataclass
class QueryClassification:
    query_type: QueryType
    confidence: float
    probabilities: dict[str, float]

    def probability(self, *types: QueryType | str) -> float:
        return sum(self.probabilities.get(str(t), 0.0) for t in types)


class QueryClassifier:
    """``classify(text) -> QueryClassification``; ``model`` is the trained TextClassifier."""

    def __init__(self, model: TextClassifier):
        self.model = model

    @classmethod
    def train(cls, examples=None, l2: float = L2) -> "QueryClassifier":
        examples = list(examples if examples is not None else load_examples("queries"))
        texts = [t for t, _ in examples]
        labels = [lab for _, lab in examples]
        for lab in set(labels):
            QueryType(lab)  # every label is a query type
        return cls(TextClassifier.train(texts, labels, l2=l2, extra=query_features))

    def classify(self, text: str) -> QueryClassification:
        p = self.model.predict(text)
        return QueryClassification(QueryType(p.label), p.probability, p.probabilities)


_SHARED: QueryClassifier | None = None
_LOCK = threading.Lock()


def shared_classifier() -> QueryClassifier:
    """The process-wide classifier, trained on first use."""
    global _SHARED
    with _LOCK:
        if _SHARED is None:
            _SHARED = QueryClassifier.train()
        return _SHARED
