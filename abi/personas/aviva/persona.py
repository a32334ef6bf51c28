"""Aviva, the direct expert: classifies the technical task, retrieves passages from her
document store, answers concisely (code in tagged fences), then checks the answer's
claims against the store and cites the documents that support them."""
from __future__ import annotations

import re

from abi.personas.aviva.classifier import analyze_query
from abi.personas.aviva.code import format_code_answer, strip_preamble
from abi.personas.aviva.facts import FactCheck, FactChecker
from abi.personas.aviva.knowledge import KnowledgeStore, SearchHit
from abi.personas.base import PersonaHandler, PersonaReply, TurnContext
from abi.personas.config import AvivaConfig
from abi.personas.types import Persona

SYSTEM_PROMPT = ("You are Aviva, a direct technical expert. Answer precisely and concisely, "
                 "with no filler. Say so when you are not sure.")
NO_PREAMBLE = "Start with the answer itself: no greeting, no restating the question."
CODE_TASKS = {"write", "debug", "convert", "optimize", "review", "howto"}
TASK_GUIDANCE = {
    "write": "Give the code in one fenced block with its language tag, then at most three "
             "sentences on how it works.",
    "debug": "Name the cause of the problem first, then give the corrected code in a fenced "
             "block.",
    "convert": "Give the converted code in a fenced block, then note any behaviour that "
               "differs.",
    "optimize": "Say what is slow and why, then give the faster code in a fenced block.",
    "review": "List the problems you find, most serious first, each with its fix.",
    "howto": "Give the shortest correct way to do it, as a command or code in a fenced block.",
    "explain": "Explain what the code does, step by step, briefly.",
    "lookup": "Give the fact first, in one sentence, then any essential context.",
}


def _cite(answer: str, checks: list[FactCheck]) -> tuple[str, list[dict]]:
    """The answer with [n] after each supported claim and a source list; the sources."""
    numbers: dict[str, int] = {}
    sources: list[dict] = []
    for check in checks:
        if check.verdict != "supported" or check.source is None:
            continue
        doc = check.source.doc_id
        if doc not in numbers:
            numbers[doc] = len(numbers) + 1
            sources.append({"n": numbers[doc], **check.source.citation()})
        claim = check.claim
        marked = (f"{claim[:-1]} [{numbers[doc]}]{claim[-1]}" if claim[-1] in ".!"
                  else f"{claim} [{numbers[doc]}]")
        answer = answer.replace(claim, marked, 1)
    if sources:
        lines = [f"[{s['n']}] {s['title']}" + (f" ({s['source']})" if s['source'] else "")
                 for s in sources]
        answer = f"{answer}\n\nSources:\n" + "\n".join(lines)
    return answer, sources


class AvivaPersona(PersonaHandler):
    persona = Persona.AVIVA
    role = "Direct Expert"
    description = "Concise, factual, technically rigorous responses."
    characteristics = ("query classification", "knowledge retrieval", "code answers",
                       "fact checking", "concise")

    def __init__(self, config: AvivaConfig | None = None, store: KnowledgeStore | None = None):
        self.config = config or AvivaConfig()
        if store is None:
            store = KnowledgeStore(self.config.retrieval, self.config.embedding_model)
            for path in self.config.knowledge_paths:
                store.add_path(path)
        self.store = store

    def _context(self, hits: list[SearchHit]) -> str:
        if not hits:
            return ""
        blocks = [f"[{i}] {h.passage.title}: {h.passage.text}" for i, h in enumerate(hits, 1)]
        return ("Reference documents (rely on them where they apply; they win over your own "
                "memory):\n" + "\n\n".join(blocks))

    def respond(self, ctx: TurnContext) -> PersonaReply:
        cfg = self.config
        query_type = ctx.analysis.query.query_type
        task = analyze_query(ctx.text, query_type)
        hits = self.store.search(ctx.text, cfg.top_k) if len(self.store) else []
        parts = [SYSTEM_PROMPT]
        if cfg.skip_preamble:
            parts.append(NO_PREAMBLE)
        if task.kind in TASK_GUIDANCE:
            parts.append(TASK_GUIDANCE[task.kind])
        if task.language:
            parts.append(f"The language is {task.language}.")
        context = self._context(hits)
        system = " ".join(parts) + (f"\n\n{context}" if context else "")
        answer = ctx.generate(ctx.messages(system), temperature=cfg.temperature).strip()
        if cfg.skip_preamble:
            answer = strip_preamble(answer)
        if task.kind in CODE_TASKS or task.has_code or str(query_type) == "code":
            answer = format_code_answer(answer, task.language)

        checks: list[FactCheck] = []
        if cfg.fact_check and len(self.store):
            checks = FactChecker(self.store).check_text(answer)
        sources: list[dict] = []
        if cfg.cite_sources:
            answer, sources = _cite(answer, checks)
        contradicted = [c for c in checks if c.verdict == "contradicted"]
        if contradicted:
            notes = [f'- "{c.claim}" disagrees with {c.source.title}: "{c.evidence}"'
                     for c in contradicted if c.source is not None]
            answer = f"{answer}\n\nFact check:\n" + "\n".join(notes)
        details = {
            "task": task.to_dict(),
            "retrieval": self.store.method() if len(self.store) else None,
            "retrieved": [{**h.passage.citation(), "score": round(h.score, 4),
                           "method": h.method} for h in hits],
            "fact_checks": [c.to_dict() for c in checks],
        }
        if self.store.embedding_error:
            details["embedding_error"] = self.store.embedding_error
        return PersonaReply(re.sub(r"\n{3,}", "\n\n", answer), sources=sources, details=details)
