"""Abi, the router and moderator: analyses a message (policy, sentiment, query type) and
decides which persona answers, with what confidence, and why.

Order of decisions:
1. a policy block goes to Abi and a policy redirect to its target, whatever was asked
   (moderation is enforced before any rule and cannot be routed around);
2. a persona the request names answers (confidence 1);
3. with dynamic routing, the rules engine decides; a decision below the confidence
   threshold, or no matching rule, falls back to the default persona;
4. without dynamic routing, the default persona answers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from abi.personas.abi.classifier import QueryClassification, QueryClassifier, shared_classifier
from abi.personas.abi.policy import PolicyChecker, PolicyResult
from abi.personas.abi.rules import RulesEngine
from abi.personas.abi.sentiment import SentimentResult, analyze as analyze_sentiment
from abi.personas.config import MultiPersonaConfig
from abi.personas.types import Persona, RoutingDecision


@dataclass
class Analysis:
    """Everything Abi learned about one message. ``text`` is the message with PII masked."""

    text: str
    sentiment: SentimentResult
    policy: PolicyResult
    query: QueryClassification
    signals: dict[str, Any]

    def to_dict(self) -> dict:
        return {"sentiment": self.sentiment.to_dict(), "policy": self.policy.to_dict(),
                "query_type": self.query.query_type.value,
                "query_confidence": round(self.query.confidence, 4),
                "query_probabilities": {k: round(v, 4) for k, v in
                                        self.query.probabilities.items()}}


class AbiRouter:
    def __init__(self, config: MultiPersonaConfig | None = None, *,
                 rules: RulesEngine | None = None, classifier: QueryClassifier | None = None,
                 policy: PolicyChecker | None = None):
        self.config = config or MultiPersonaConfig()
        self.rules = rules or RulesEngine.from_yaml(self.config.rules, self.config.routing_mode)
        self._classifier = classifier
        self.policy = policy or PolicyChecker(self.config.policy,
                                              embedding_model=self.config.embedding_model)

    @property
    def classifier(self) -> QueryClassifier:
        if self._classifier is None:
            self._classifier = shared_classifier(self.config.embedding_model)
        return self._classifier

    def warm_up(self) -> None:
        """Train (or fetch the trained) classifiers now."""
        _ = self.classifier
        if self.policy.config.enabled:
            _ = self.policy.model

    def analyze(self, text: str, session: Any = None) -> Analysis:
        policy = self.policy.check(text)
        clean = policy.text
        sentiment = analyze_sentiment(clean)
        query = self.classifier.classify(clean)
        signals: dict[str, Any] = {
            "policy_action": policy.action, "policy_category": policy.category,
            "policy_score": policy.score,
            "redirect_to": policy.redirect_to.value if policy.redirect_to else None,
            "polarity": sentiment.polarity, "emotion": sentiment.emotion,
            "emotion_intensity": sentiment.intensity, "urgency": sentiment.urgency,
            "distress": sentiment.distress, "query_type": query.query_type.value,
            "query_confidence": query.confidence, "words": len(clean.split()),
            "session_turns": getattr(session, "turns", 0),
            "previous_persona": getattr(session, "last_persona", None),
        }
        for name, p in query.probabilities.items():
            signals[f"p_{name}"] = p
        return Analysis(clean, sentiment, policy, query, signals)

    def route(self, analysis: Analysis, requested: Persona | None = None) -> RoutingDecision:
        cfg = self.config
        policy = analysis.policy
        if policy.action == "block":
            return RoutingDecision(Persona.ABI, policy.score,
                                   f"policy: {policy.category} (score {policy.score:.2f}) "
                                   "blocked; Abi answers", rule="policy")
        if policy.action == "redirect" and policy.redirect_to is not None:
            return RoutingDecision(policy.redirect_to, policy.score,
                                   f"policy: {policy.category} (score {policy.score:.2f}) "
                                   f"redirected to {policy.redirect_to.value}", rule="policy")
        if requested is not None:
            return RoutingDecision(requested, 1.0, f"persona {requested.value} requested",
                                   rule="requested", scores={requested.value: 1.0})
        default = cfg.default_persona
        if not cfg.enable_dynamic_routing:
            return RoutingDecision(default, 1.0, "dynamic routing disabled; default persona",
                                   rule="default")
        decision = self.rules.evaluate(analysis.signals)
        if decision is None:
            return RoutingDecision(default, 0.0, "no routing rule matched; default persona",
                                   rule=None, fallback=True)
        if decision.confidence < cfg.routing_confidence_threshold:
            return RoutingDecision(
                default, decision.confidence,
                f"{decision.reason}, below threshold {cfg.routing_confidence_threshold:.2f} "
                f"(would be {decision.persona.value}); default persona",
                rule=decision.rule, scores=decision.scores, fallback=True)
        return decision
