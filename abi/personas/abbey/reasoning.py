"""Reasoning chains for Abbey's thorough answers.

``plan(question, query_type)`` breaks a question into the steps an answer should walk
through: each part of a multi-part question, each side of a comparison, and the usual arc
of the kind of question (why: short answer, mechanism, example; how does X work: purpose,
parts, process, example ...). The depth bounds the steps: concise 1, balanced 3,
thorough 5.

``run`` generates the answer: concise and balanced in one call, with the steps in the
system prompt; thorough in two, first working notes that follow the steps, then the
answer written from those notes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from abi.personas.config import ResponseDepth
from abi.personas.types import QueryType

MAX_STEPS = {ResponseDepth.CONCISE: 1, ResponseDepth.BALANCED: 3, ResponseDepth.THOROUGH: 5}

_COMPARE = re.compile(r"(?:difference(?:s)? between|compare|comparing)\s+(.+?)\s+(?:and|with|to|vs\.?|versus)\s+(.+?)(?:[?.!]|$)"
                      r"|^(.+?)\s+(?:vs\.?|versus)\s+(.+?)(?:[?.!]|$)", re.IGNORECASE)
_HOW_WORKS = re.compile(r"\bhow (?:does|do|is|are)\s+(.+?)\s+(?:work|works|function|happen)",
                        re.IGNORECASE)
_WHY = re.compile(r"^\s*(?:but\s+)?why\b", re.IGNORECASE)
_SPLIT = re.compile(r"\?\s+|\?$|;\s+|\.\s+(?=(?:also|and|what|how|why|when|can|should)\b)",
                    re.IGNORECASE)


@dataclass
class ReasoningPlan:
    question: str
    depth: ResponseDepth
    steps: list[str] = field(default_factory=list)

    def as_instructions(self) -> str:
        if not self.steps:
            return ""
        lines = "\n".join(f"{i}. {s}" for i, s in enumerate(self.steps, 1))
        return f"Work through these steps in your answer:\n{lines}"


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" ?.!,")


def _parts(question: str) -> list[str]:
    parts = [_clean(p) for p in _SPLIT.split(question) if p and _clean(p)]
    return [p for p in parts if len(p.split()) >= 3]


class ReasoningChain:
    def __init__(self, depth: ResponseDepth | str = ResponseDepth.BALANCED):
        self.depth = ResponseDepth(depth)

    def plan(self, question: str, query_type: QueryType | str | None = None) -> ReasoningPlan:
        steps: list[str] = []
        parts = _parts(question)
        if len(parts) > 1:
            steps += [f"Answer: {p}?" for p in parts]
        m = _COMPARE.search(question)
        if m:
            a, b = [_clean(g) for g in m.groups() if g][:2]
            steps += [f"Explain what {a} is", f"Explain what {b} is",
                      f"Contrast {a} and {b} point by point", "Say when to choose each"]
        elif (m := _HOW_WORKS.search(question)):
            thing = _clean(m.group(1))
            steps += [f"Say what {thing} is for", "Name its main parts",
                      "Walk through how it works, step by step", "Give a concrete example"]
        elif _WHY.match(question):
            steps += ["Give the short answer first", "Explain the mechanism behind it",
                      "Illustrate with an example or analogy"]
        else:
            qt = str(query_type) if query_type is not None else None
            steps += {
                "explanation": ["State the core idea in plain words", "Explain how it works",
                                "Give an example", "Point out common misconceptions"],
                "emotional_support": ["Acknowledge how the user feels",
                                      "Reflect what seems to be going on",
                                      "Offer one or two gentle, practical next steps"],
                "creative": ["Pick an angle or theme", "Write the piece",
                             "Offer a variation the user might like"],
                "code": ["Restate the goal", "Give the solution", "Explain why it works"],
                "factual": ["Give the fact", "Add the context that makes it meaningful"],
            }.get(qt, ["Answer the question directly", "Add the context that helps"])
        seen, unique = set(), []
        for s in steps:
            if s.lower() not in seen:
                seen.add(s.lower())
                unique.append(s)
        return ReasoningPlan(question, self.depth, unique[:MAX_STEPS[self.depth]])

    def run(self, plan: ReasoningPlan, messages: list[dict],
            generate: Callable[[list[dict], int | None], str]) -> tuple[str, dict]:
        """The answer to the conversation ``messages`` (system prompt first), following
        ``plan``; and details (steps, and for thorough answers the working notes).
        ``generate(messages, max_tokens)`` produces one reply."""
        details = {"reasoning_steps": list(plan.steps), "depth": plan.depth.value}
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        rest = messages[1:] if system else messages
        if plan.depth is ResponseDepth.CONCISE:
            guide = "Answer briefly, in a few sentences."
        else:
            guide = plan.as_instructions()
        if plan.depth is not ResponseDepth.THOROUGH:
            return generate([{"role": "system", "content": f"{system}\n\n{guide}".strip()}]
                            + rest, None), details
        notes_prompt = (f"{system}\n\nBefore answering, write short working notes: for each "
                        f"step below, the key points to make.\n{guide}").strip()
        notes = generate([{"role": "system", "content": notes_prompt}] + rest, 256)
        details["notes"] = notes
        answer_prompt = (f"{system}\n\n{guide}\n\nYour working notes (for you; write a "
                         f"complete, well-organised answer from them, not the notes "
                         f"themselves):\n{notes}").strip()
        return generate([{"role": "system", "content": answer_prompt}] + rest, None), details
