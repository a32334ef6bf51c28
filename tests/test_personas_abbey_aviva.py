"""Abbey (emotion, empathy, reasoning) and Aviva (query analysis, knowledge store, code
formatting, fact checks)."""
from __future__ import annotations

import numpy as np
import pytest

from abi.personas.abbey.emotion import EmotionDetector
from abi.personas.abbey.empathy import EmpathyInjector
from abi.personas.abbey.reasoning import ReasoningChain
from abi.personas.aviva.classifier import analyze_query, detect_language, has_code
from abi.personas.aviva.code import extract_code_blocks, format_code_answer, strip_preamble
from abi.personas.aviva.facts import FactChecker
from abi.personas.aviva.knowledge import BM25Index, KnowledgeStore, chunk, terms
from abi.personas.config import ResponseDepth

# --- Abbey -----------------------------------------------------------------------------


def test_emotion_reading_and_trend_across_a_session():
    det, state = EmotionDetector(), {}
    first = det.detect("How do I set up a python virtualenv?", state)
    assert first.primary == "neutral" and first.trend == "new"
    second = det.detect("It still doesn't work and I'm so frustrated, nothing works!!", state)
    assert second.primary == "frustration" and second.trend == "rising"
    assert second.level > first.level
    third = det.detect("ok it works now, thank you!", state)
    assert third.trend == "easing" and third.primary == "gratitude"
    assert state["emotions"] == ["neutral", "frustration", "gratitude"]


def test_empathy_framing_by_level():
    reading = EmotionDetector().detect("I'm really frustrated, my build keeps failing")
    low, medium, high = (EmpathyInjector(level) for level in ("low", "medium", "high"))
    assert low.frame("Answer.", reading) == "Answer."
    assert medium.frame("Answer.", reading) == "That sounds frustrating.\n\nAnswer."
    framed = high.frame("Answer.", reading)
    assert framed.startswith("That sounds really frustrating") and framed.endswith(
        "work through the next step together.")
    # no second acknowledgement when the model already gave one
    assert medium.frame("That sounds hard. Answer.", reading) == "That sounds hard. Answer."
    assert "frustrated" in high.system_prompt(reading)
    neutral = EmotionDetector().detect("what is a monad")
    assert high.frame("Answer.", neutral) == "Answer."


def test_reasoning_plans():
    thorough = ReasoningChain("thorough")
    plan = thorough.plan("What's the difference between TCP and UDP?", "explanation")
    assert plan.steps[:3] == ["Explain what TCP is", "Explain what UDP is",
                              "Contrast TCP and UDP point by point"]
    plan = thorough.plan("How does a hash table work?", "explanation")
    assert plan.steps[0] == "Say what a hash table is for"
    plan = ReasoningChain("balanced").plan("Why is the sky blue?", "explanation")
    assert plan.steps == ["Give the short answer first", "Explain the mechanism behind it",
                          "Illustrate with an example or analogy"]
    assert len(ReasoningChain("concise").plan("Explain recursion", "explanation").steps) == 1
    multi = thorough.plan("What is a mutex? And how is it different from a semaphore?")
    assert multi.steps[0].startswith("Answer: What is a mutex")


def test_thorough_chain_generates_notes_then_answer():
    calls = []

    def generate(messages, max_tokens):
        calls.append((messages, max_tokens))
        return "NOTES" if len(calls) == 1 else "ANSWER"

    chain = ReasoningChain(ResponseDepth.THOROUGH)
    plan = chain.plan("How does DNS work?", "explanation")
    answer, details = chain.run(plan, [{"role": "system", "content": "SYS"},
                                       {"role": "user", "content": "How does DNS work?"}],
                                generate)
    assert answer == "ANSWER" and details["notes"] == "NOTES"
    assert len(calls) == 2 and calls[0][1] == 256
    assert "working notes" in calls[0][0][0]["content"]
    assert "NOTES" in calls[1][0][0]["content"] and calls[1][0][-1]["content"] == "How does DNS work?"
    calls.clear()
    balanced = ReasoningChain("balanced")
    answer, details = balanced.run(balanced.plan("How does DNS work?"),
                                   [{"role": "user", "content": "q"}], generate)
    assert len(calls) == 1 and "Work through these steps" in calls[0][0][0]["content"]


# --- Aviva: query analysis and code ---------------------------------------------------


@pytest.mark.parametrize("text,language", [
    ("how do I read a file in rust with let mut buf", "rust"),
    ("const std = @import(\"std\"); how do I print in zig", "zig"),
    ("def f(x): return x  # python", "python"),
    ("SELECT name FROM users WHERE id = 3 is slow in postgres", "sql"),
    ("console.log prints undefined in my node script", "javascript"),
    ("what is the capital of France", None),
])
def test_language_detection(text, language):
    assert detect_language(text) == language


@pytest.mark.parametrize("text,query_type,kind", [
    ("fix this error: KeyError 'id'", "code", "debug"),
    ("write a function that reverses a list", "code", "write"),
    ("convert this python to go", "code", "convert"),
    ("this loop is slow, can you optimize it", "code", "optimize"),
    ("how do I list docker containers", "code", "howto"),
    ("when was unix created", "factual", "lookup"),
])
def test_task_kinds(text, query_type, kind):
    assert analyze_query(text, query_type).kind == kind


def test_has_code():
    assert has_code("why does `x = 1` fail")
    assert has_code("for (int i = 0; i < n; i++) {")
    assert not has_code("how do I learn to program")


def test_strip_preamble():
    assert strip_preamble("Sure! Here's the code:\nprint(1)") == "print(1)"
    assert strip_preamble("Certainly. Great question! Paris is the capital.") == \
        "Paris is the capital."
    assert strip_preamble("Paris is the capital.") == "Paris is the capital."
    assert strip_preamble("Sure!") == "Sure!"   # nothing would be left


def test_code_fences_are_tagged_and_unfenced_code_is_fenced():
    tagged = format_code_answer("Use this:\n```\nprint(1)\n```\nDone.", "python")
    assert extract_code_blocks(tagged) == [("python", "print(1)\n")]
    assert "```python" in format_code_answer("```\nx\n```", "python")
    assert format_code_answer("```rust\nfn main() {}\n```", "python").startswith("```rust")
    wrapped = format_code_answer("Here:\ndef add(a, b):\n    return a + b\nThat adds.", "python")
    assert extract_code_blocks(wrapped) == [("python", "def add(a, b):\n    return a + b\n")]
    assert wrapped.startswith("Here:") and wrapped.endswith("That adds.")
    assert format_code_answer("Paris is the capital of France.", "python") == \
        "Paris is the capital of France."
    assert format_code_answer("```\ncut off", None).endswith("\n```")


# --- Aviva: knowledge store -------------------------------------------------------------

DOCS = {
    "everest": "# Mount Everest\n\nMount Everest is 8,849 metres tall. It lies in the "
               "Himalayas on the border of Nepal and China.",
    "python": "# Python\n\nPython was created by Guido van Rossum and first released in 1991. "
              "Python uses indentation to delimit blocks.",
    "tcp": "# TCP\n\nTCP is a reliable, connection-oriented transport protocol. TCP does not "
           "preserve message boundaries.",
}


def _store(**kwargs) -> KnowledgeStore:
    store = KnowledgeStore(retrieval=kwargs.pop("retrieval", "bm25"), **kwargs)
    for doc_id, text in DOCS.items():
        store.add_document(text, doc_id=doc_id, source=f"{doc_id}.md")
    return store


def test_chunking_and_terms():
    text = "# A\n\npara one.\n\n# B\n\n" + " ".join(f"word{i}." for i in range(300))
    pieces = chunk(text, max_words=50)
    assert pieces[0].startswith("# A") and all(len(p.split()) <= 52 for p in pieces)
    assert terms("The Towers are 8,849 metres") == ["tower", "8849", "metre"]


def test_bm25_ranks_the_matching_passage_first():
    idx = BM25Index()
    for t in ("cats purr when happy", "dogs bark at strangers", "cats and dogs are pets"):
        idx.add(t)
    s = idx.scores("why do cats purr")
    assert max(s, key=s.get) == 0 and 1 not in s


def test_store_search_and_add_path(tmp_path):
    store = _store()
    hits = store.search("how tall is everest", 2)
    assert hits[0].passage.doc_id == "everest" and hits[0].method == "bm25"
    assert store.search("quantum chromodynamics") == []
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "zig.md").write_text("# Zig\n\nZig has comptime.")
    (tmp_path / "notes.txt").write_text("Rust has a borrow checker.")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    other = KnowledgeStore(retrieval="bm25")
    assert other.add_path(tmp_path) == 2 and other.documents == 2
    assert other.search("comptime")[0].passage.title == "Zig"
    with pytest.raises(Exception):
        other.add_path(tmp_path / "missing")


class FakeEncoder:
    """Bag-of-concepts vectors: synonyms share a dimension, so only embeddings see them."""

    VOCAB = [["tall", "height", "high"], ["python", "language"], ["tcp", "protocol"],
             ["everest", "mountain", "peak"]]

    def encode_batch(self, texts):
        out = np.zeros((len(texts), len(self.VOCAB)), np.float32)
        for i, t in enumerate(texts):
            words = set(terms(t)) | set(t.lower().split())
            for j, group in enumerate(self.VOCAB):
                out[i, j] = sum(w in words for w in group)
        return out


def test_hybrid_search_finds_what_bm25_misses():
    store = _store(retrieval="hybrid", encoder=FakeEncoder())
    assert store.method() == "hybrid"
    assert KnowledgeStore(retrieval="bm25").search("peak height") == []
    hits = store.search("peak height")
    assert hits and hits[0].passage.doc_id == "everest" and hits[0].method == "hybrid"


def test_embedding_failure_falls_back_to_bm25():
    class Broken:
        def encode_batch(self, texts):
            raise RuntimeError("no model")

    store = _store(retrieval="hybrid", encoder=Broken())
    hits = store.search("everest tall")
    assert hits[0].method == "bm25" and "no model" in store.embedding_error
    assert store.method() == "bm25"


def test_auto_retrieval_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setenv("ABI_MODEL_DIR", str(tmp_path))   # an empty model cache
    store = _store(retrieval="auto")
    assert store.method() == "bm25"
    assert store.search("everest")[0].method == "bm25"


@pytest.mark.model
def test_embedding_search_with_the_default_embedding_model(embedding_model_path):
    store = _store(retrieval="embedding")
    hits = store.search("Which peak is the highest on Earth?")
    assert hits[0].passage.doc_id == "everest" and hits[0].method == "embedding"
    assert store.embedding_error is None


# --- Aviva: fact checks -----------------------------------------------------------------


def test_fact_checks():
    fc = FactChecker(_store())
    ok = fc.check("Mount Everest is 8849 metres tall.")
    assert ok.verdict == "supported" and ok.source.doc_id == "everest"
    wrong = fc.check("Mount Everest is 9100 metres tall.")
    assert wrong.verdict == "contradicted" and "8849" in wrong.reason
    neg = fc.check("TCP preserves message boundaries.")
    assert neg.verdict == "contradicted"
    unknown = fc.check("Bananas are rich in potassium and grow in bunches.")
    assert unknown.verdict == "unverified"
    assert fc.claims("Is it tall? Python was created by Guido. ```x = 1```") == \
        ["Python was created by Guido."]
