"""Empathy injection: what Abbey's system prompt says about the user's feelings, and how
her answer is framed (an acknowledgement before, an invitation after), by empathy level.

low: a warm tone, nothing added to the answer; medium: a short acknowledgement when an
emotion is clear (intensity >= 0.4); high: an acknowledgement whenever an emotion shows
(>= 0.2), and an invitation to go on after answers to negative feelings.
"""
from __future__ import annotations

import re

from abi.personas.abbey.emotion import EmotionReading
from abi.personas.config import EmpathyLevel

OPENERS = {
    "frustration": ("That sounds frustrating.",
                    "That sounds really frustrating, and it's completely understandable to feel "
                    "worn down by it."),
    "anger": ("I can hear that you're upset.",
              "I can hear how angry you are, and that reaction makes sense."),
    "sadness": ("I'm sorry you're going through this.",
                "I'm so sorry you're going through this. That's a lot to carry."),
    "fear": ("It makes sense to feel anxious about this.",
             "It makes complete sense to feel anxious about this; you're not alone in it."),
    "confusion": ("Let's untangle this together.",
                  "This trips up a lot of people, so you're in good company. Let's untangle it "
                  "together, step by step."),
    "joy": ("That's great to hear!", "That's wonderful to hear, I'm really happy for you!"),
    "gratitude": ("You're welcome!", "You're very welcome, I'm glad it helped!"),
}
CLOSERS = {
    "frustration": "If it's still not working, tell me what you see and we'll work through "
                   "the next step together.",
    "anger": "If you want to talk through what happened, I'm here to listen.",
    "sadness": "I'm here if you want to keep talking.",
    "fear": "If it helps, we can go through it one small step at a time.",
    "confusion": "If any step is still unclear, ask and I'll explain it another way.",
}
GUIDANCE = {
    "frustration": "The user is frustrated. Acknowledge it briefly, then be practical and "
                   "clear; don't blame them.",
    "anger": "The user is angry. Stay calm and respectful, validate the feeling without "
             "escalating, then help.",
    "sadness": "The user is sad. Be gentle and warm; listen before advising, and don't rush "
               "to fix things.",
    "fear": "The user is anxious or afraid. Be reassuring and steady; break things into "
            "small, manageable steps.",
    "confusion": "The user is confused. Explain patiently from the basics, with an example.",
    "joy": "The user is happy. Share their enthusiasm.",
    "gratitude": "The user is thankful. Respond graciously.",
}
_ACKNOWLEDGED = re.compile(r"^\s*(i'?m (so |really |very )?sorry|that sounds|i can hear|"
                           r"it makes (complete )?sense|you'?re (very )?welcome|that'?s "
                           r"(great|wonderful))", re.IGNORECASE)


class EmpathyInjector:
    def __init__(self, level: EmpathyLevel | str = EmpathyLevel.MEDIUM):
        self.level = EmpathyLevel(level)

    def _threshold(self) -> float | None:
        return {EmpathyLevel.LOW: None, EmpathyLevel.MEDIUM: 0.4, EmpathyLevel.HIGH: 0.2}[self.level]

    def shows(self, reading: EmotionReading) -> bool:
        t = self._threshold()
        return t is not None and reading.primary in OPENERS and reading.intensity >= t

    def system_prompt(self, reading: EmotionReading) -> str:
        """What to add to Abbey's system prompt for this reading."""
        parts = []
        if self.level is EmpathyLevel.HIGH:
            parts.append("Lead with empathy: notice how the user feels and respond to the "
                         "person as well as the question.")
        elif self.level is EmpathyLevel.MEDIUM:
            parts.append("Be warm and attentive to how the user feels.")
        else:
            parts.append("Be kind, but keep the focus on the answer.")
        if reading.primary in GUIDANCE and reading.intensity >= 0.2:
            parts.append(GUIDANCE[reading.primary])
            if reading.trend == "rising":
                parts.append("Their distress has been growing over this conversation; slow "
                             "down and check in with them.")
        return " ".join(parts)

    def frame(self, answer: str, reading: EmotionReading) -> str:
        """The answer with an acknowledgement before it and, at high empathy after a
        negative feeling, an invitation after it."""
        if not self.shows(reading):
            return answer
        strong = 1 if self.level is EmpathyLevel.HIGH else 0
        out = answer
        if not _ACKNOWLEDGED.match(answer):
            out = f"{OPENERS[reading.primary][strong]}\n\n{answer}"
        if self.level is EmpathyLevel.HIGH and reading.primary in CLOSERS:
            out = f"{out}\n\n{CLOSERS[reading.primary]}"
        return out
