"""Emotion detection for Abbey: the message's emotions (from the sentiment lexicon model),
and how the user's mood moves across the conversation (a running, decaying level of
negative affect kept in the session)."""
from __future__ import annotations

from dataclasses import dataclass

from abi.personas.abi.sentiment import NEGATIVE_EMOTIONS, SentimentAnalyzer, SentimentResult

DECAY = 0.6          # weight of the running level against the new message
TREND_STEP = 0.15    # a change smaller than this is "steady"


@dataclass
class EmotionReading:
    """primary/secondary: the strongest emotions (``neutral`` when none is clear);
    intensity: the primary's strength in [0, 1]; level: the conversation's running negative
    affect; trend: rising, easing, steady, or new (first message)."""

    primary: str
    intensity: float
    secondary: str | None
    polarity: float
    distress: float
    level: float
    trend: str

    @property
    def negative(self) -> bool:
        return self.primary in NEGATIVE_EMOTIONS

    def to_dict(self) -> dict:
        return {"primary": self.primary, "intensity": round(self.intensity, 4),
                "secondary": self.secondary, "polarity": round(self.polarity, 4),
                "distress": round(self.distress, 4), "level": round(self.level, 4),
                "trend": self.trend}


class EmotionDetector:
    def __init__(self, analyzer: SentimentAnalyzer | None = None):
        self.analyzer = analyzer or SentimentAnalyzer()

    def detect(self, text: str, state: dict | None = None,
               sentiment: SentimentResult | None = None) -> EmotionReading:
        """The reading of ``text``; ``state`` (a session's dict) carries the running level
        between messages and is updated in place."""
        s = sentiment or self.analyzer.analyze(text)
        ranked = sorted(((v, k) for k, v in s.emotions.items() if v >= 0.2), reverse=True)
        primary = ranked[0][1] if ranked else "neutral"
        secondary = ranked[1][1] if len(ranked) > 1 else None
        intensity = ranked[0][0] if ranked else 0.0
        if state is None:
            state = {}
        previous = state.get("level")
        level = s.distress if previous is None else DECAY * previous + (1 - DECAY) * s.distress
        if previous is None:
            trend = "new"
        elif s.distress - previous > TREND_STEP:
            trend = "rising"
        elif previous - s.distress > TREND_STEP:
            trend = "easing"
        else:
            trend = "steady"
        state["level"] = level
        state.setdefault("emotions", []).append(primary)
        del state["emotions"][:-10]
        return EmotionReading(primary, intensity, secondary, s.polarity, s.distress, level, trend)
