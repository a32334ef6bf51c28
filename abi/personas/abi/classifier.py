"""Query classification: code, factual, explanation, emotional_support, creative or
chit_chat, trained at first use on ``personas/data/queries.yaml``: a calibrated classifier
on the sentence embedding plus sentiment scores and cue-lexicon counts (``cues.yaml``,
``semantic.py``), or, when the embedding model cannot be loaded, a logistic regression on
n-grams and the same lexical features (``textmodel.py``)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from abi.personas.abi.cues import cue_features
from abi.personas.abi.semantic import LEXICAL_MODEL, Embedder, SemanticClassifier, load_embedder
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
    """``classify(text) -> QueryClassification``. ``kind``: "semantic" or "lexical"."""

    def __init__(self, model: TextClassifier | SemanticClassifier):
        self.model = model
        self.kind = "semantic" if isinstance(model, SemanticClassifier) else "lexical"

    @staticmethod
    def _examples(examples) -> list[tuple[str, str]]:
        examples = list(examples if examples is not None else load_examples("queries"))
        for _, lab in examples:
            QueryType(lab)  # every label is a query type
        return examples

    @classmethod
    def train(cls, examples=None, l2: float = L2) -> "QueryClassifier":
        """The lexical classifier (n-grams and lexicon features)."""
        examples = cls._examples(examples)
        return cls(TextClassifier.train([t for t, _ in examples], [lab for _, lab in examples],
                                        l2=l2, extra=query_features))

    @classmethod
    def train_semantic(cls, embedder: Embedder, examples=None,
                       store: bool = True) -> "QueryClassifier":
        """The embedding classifier (sentence embedding and lexicon features)."""
        return cls(SemanticClassifier.train("queries", embedder, cls._examples(examples),
                                            query_features, store=store))

    def classify(self, text: str) -> QueryClassification:
        if self.kind == "semantic":
            probs = self.model.predict(text)
        else:
            probs = self.model.predict(text).probabilities
        label = max(probs, key=probs.get)
        return QueryClassification(QueryType(label), probs[label], probs)


_SHARED: dict[str, QueryClassifier] = {}
_LOCK = threading.Lock()


def shared_classifier(embedding_model: str | None = None) -> QueryClassifier:
    """The process-wide classifier for ``embedding_model`` (None: the default embedding
    model; "lexical": none), trained on first use; lexical when embeddings cannot load."""
    key = embedding_model or ""
    with _LOCK:
        if key not in _SHARED:
            embedder = None if embedding_model == LEXICAL_MODEL else load_embedder(embedding_model)
            _SHARED[key] = (QueryClassifier.train_semantic(embedder) if embedder is not None
                            else QueryClassifier.train())
        return _SHARED[key]
