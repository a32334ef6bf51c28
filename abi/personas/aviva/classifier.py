"""Aviva's query analysis: on top of the query type (code, factual ...), what kind of
technical task a message is (write, debug, explain, review, convert, optimize, how-to,
lookup), which programming language it is about, and whether it carries code.

Language and task come from weighted cue lexicons: every cue found adds its weight to its
language (or task); the best-scoring one wins when it scores at least 1.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from abi.personas.types import QueryType

# language -> {cue: weight}; cues are lowercase words, or regexes when they start with "re:"
LANGUAGE_CUES: dict[str, dict[str, float]] = {
    "python": {"python": 3, "py": 2, "pip": 2, "pandas": 2, "numpy": 2, "django": 2, "flask": 2,
               "fastapi": 2, "pytest": 2, "def": 1, "elif": 2, "self": 0.5,
               "re:\\bdef \\w+\\(": 2, "re:\\bimport \\w+$|^from \\w+ import": 1.5,
               "re:print\\(": 1, "re:\\.py\\b": 2, "venv": 1.5, "virtualenv": 1.5, "f-strings": 1},
    "javascript": {"javascript": 3, "js": 2, "node": 2, "nodejs": 2, "npm": 2, "react": 2,
                   "jest": 2, "vue": 2, "re:console\\.log": 2, "re:=>": 1, "const": 0.5,
                   "let": 0.3, "re:\\.js\\b": 2, "fetch": 0.5, "promise": 1, "promises": 1,
                   "async": 0.3, "debounce": 0.5, "dom": 1},
    "typescript": {"typescript": 3, "ts": 2, "re:\\.ts\\b": 2, "interface": 0.5,
                   "re::\\s*(string|number|boolean)\\b": 1.5},
    "rust": {"rust": 3, "cargo": 2, "crate": 2, "impl": 1.5, "re:\\bfn \\w+": 1.5,
             "re:let mut": 2, "borrow": 1.5, "borrowed": 1.5, "re:&str|vec<|option<": 2,
             "re:\\.rs\\b": 2},
    "zig": {"zig": 3, "comptime": 2.5, "re:@import": 2.5, "allocator": 1, "arraylist": 1,
            "re:\\.zig\\b": 2},
    "go": {"golang": 3, "go": 1.5, "re:\\bfunc \\w+\\(": 2, "re::=": 1, "re:fmt\\.": 2,
           "goroutine": 2.5, "re:package main": 2.5},
    "c": {"re:#include": 2, "printf": 1.5, "malloc": 2, "re:\\bint main\\b": 1.5,
          "segmentation": 1, "segfault": 1, "re:\\bc\\b(?!\\+|#)": 1.5, "gcc": 1.5,
          "pointer": 0.5, "re:\\.c\\b": 1.5, "gets": 1},
    "cpp": {"re:c\\+\\+": 3, "cpp": 3, "re:std::": 2.5, "cout": 2, "re:template\\s*<": 2,
            "re:\\.cpp\\b": 2},
    "java": {"java": 3, "re:system\\.out": 2, "re:public static void": 2.5, "jvm": 2,
             "spring": 1.5, "nullpointerexception": 2.5, "junit": 2, "maven": 1.5,
             "gradle": 1},
    "csharp": {"re:c#": 3, "csharp": 3, "re:\\.net\\b": 2, "linq": 2},
    "kotlin": {"kotlin": 3},
    "haskell": {"haskell": 3, "monad": 1},
    "ruby": {"ruby": 3, "rails": 2},
    "php": {"php": 3},
    "swift": {"swift": 3, "swiftui": 3},
    "sql": {"sql": 3, "postgres": 2, "postgresql": 2, "mysql": 2, "sqlite": 2, "select": 1,
            "re:\\bfrom \\w+ where\\b": 2, "join": 1, "query": 1, "index": 0.5, "table": 0.5,
            "column": 1, "migration": 1},
    "bash": {"bash": 3, "shell": 2, "re:#!/bin": 3, "grep": 2, "sed": 1.5, "awk": 2,
             "chmod": 2, "cron": 2, "one-liner": 1.5, "re:\\$\\w+": 0.5, "command": 0.5,
             "terminal": 1, "script": 0.3},
    "html": {"html": 3, "div": 1, "re:<\\w+>": 1},
    "css": {"css": 3, "flexbox": 2.5, "grid": 0.5, "animation": 0.5},
    "dockerfile": {"dockerfile": 3, "docker": 1.5, "compose": 1},
    "yaml": {"yaml": 3, "kubernetes": 1, "helm": 1},
    "nginx": {"nginx": 3},
    "makefile": {"makefile": 3},
}
TASK_CUES: dict[str, dict[str, float]] = {
    "debug": {"fix": 2, "error": 1.5, "bug": 2, "bugs": 2, "exception": 1.5, "crash": 2,
              "crashes": 2, "fails": 1.5, "failing": 1.5, "wrong": 1.5, "broken": 1.5,
              "re:why (does|is|do) my": 2, "re:doesn'?t work|not working": 2, "debug": 2,
              "traceback": 2, "segfault": 2, "undefined": 1, "throws": 1.5, "raises": 1},
    "write": {"write": 2, "implement": 2, "create": 1.5, "generate": 1.5, "code": 1,
              "build": 1, "make": 0.5, "script": 1, "function": 0.5, "program": 1},
    "explain": {"explain": 2.5, "re:what does this": 2, "re:how does this": 2,
                "understand": 1.5},
    "review": {"review": 2.5, "re:is this (code )?(safe|correct|thread safe|right)": 2.5,
               "improve": 1.5, "feedback": 1.5},
    "convert": {"convert": 2.5, "translate": 2, "port": 1.5, "rewrite": 1.5,
                "re:\\bto (python|javascript|rust|go|java|typescript|c\\+\\+|zig)\\b": 1},
    "optimize": {"optimize": 2.5, "faster": 2, "slow": 1.5, "performance": 2, "speed": 1.5,
                 "profile": 1.5, "vectorize": 2, "efficient": 1.5, "memoize": 1.5},
    "howto": {"re:^how (do|can|should) (i|we|you)\\b": 2, "re:^how to\\b": 2,
              "re:what'?s the (command|syntax|way)": 2, "re:what is the (command|syntax)": 2},
}
_FENCE = re.compile(r"```")
_CODE_LINE = re.compile(r"[;{}]\s*$|^\s*(def|class|fn|func|function|import|#include|const|let|"
                        r"var|return|for|while|if)\b.*[:({=]|\w+\(.*\)|=>|::")


def _score(table: dict[str, dict[str, float]], text: str) -> tuple[str | None, float]:
    low = text.lower()
    words = set(re.findall(r"[a-z0-9_#+.-]+", low))
    best, best_score = None, 0.0
    for name, cues in table.items():
        s = 0.0
        for cue, w in cues.items():
            if cue.startswith("re:"):
                if re.search(cue[3:], low, re.MULTILINE):
                    s += w
            elif cue in words:
                s += w
        if s > best_score:
            best, best_score = name, s
    return (best, best_score) if best_score >= 1.0 else (None, best_score)


@dataclass
class TechnicalQuery:
    """kind: debug, write, explain, review, convert, optimize, howto, or lookup (facts);
    language: the programming language (None when none is clear); has_code: the message
    holds code; needs_retrieval: the answer should rest on the document store."""

    kind: str
    language: str | None
    has_code: bool
    needs_retrieval: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def detect_language(text: str) -> str | None:
    return _score(LANGUAGE_CUES, text)[0]


def has_code(text: str) -> bool:
    if _FENCE.search(text) or "`" in text:
        return True
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return any(_CODE_LINE.search(ln) for ln in lines)


def analyze_query(text: str, query_type: QueryType | str | None = None) -> TechnicalQuery:
    qt = str(query_type) if query_type is not None else None
    task, _ = _score(TASK_CUES, text)
    if qt == "factual":
        kind = "lookup"
    elif task is not None:
        kind = task
    else:
        kind = "write" if qt == "code" else "lookup" if qt is None else qt
    return TechnicalQuery(kind=kind, language=detect_language(text), has_code=has_code(text),
                          needs_retrieval=qt in ("factual", "explanation") or kind == "lookup")
