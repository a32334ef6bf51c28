"""Code answers: Aviva's replies with code in fenced blocks tagged with their language, and
without filler openers ("Sure! Here is ...").

``format_code_answer`` keeps fenced blocks (tagging untagged ones), and fences runs of
unfenced lines that look like code (two or more lines, or one that is unmistakably code).
"""
from __future__ import annotations

import re

_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|absolutely|okay|ok|great question|good question|"
    r"happy to help|no problem)[!.,]*\s*)+"
    r"|^\s*(?:here(?:'s| is| are)\b[^\n:]*:\s*\n)"
    r"|^\s*(?:as an ai(?: language model)?[^.\n]*[.,]\s*)", re.IGNORECASE)
_FENCE = re.compile(r"^```([\w+#.-]*)[ \t]*$", re.MULTILINE)
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |fn |func |function |import |from \S+ import|#include|const |let |"
    r"var |pub |return\b|if .*[:{]\s*$|for .*[:{]\s*$|while .*[:{]\s*$|else\s*[:{]|elif |"
    r"try\s*[:{]|except\b|catch\s*\(|public |private |static |package |use |"
    r"SELECT |INSERT |UPDATE |DELETE |CREATE |#!/)"
    r"|[;{}]\s*$|^\s*[}\])]+[;,]?\s*$|^\s*\w[\w.]*\s*(?:=|\+=|-=|:=)\s*\S|^\s*\w[\w.]*\(.*\)\s*;?\s*$"
    r"|^\s*(?:\$ |sudo |pip |npm |git |docker |cargo |go |zig )",
)
FENCE_TAGS = {"cpp": "cpp", "csharp": "csharp", "bash": "bash", "dockerfile": "dockerfile"}


def strip_preamble(text: str) -> str:
    """``text`` without a leading filler opener ("Sure! Here's the code:")."""
    out = text
    for _ in range(3):   # "Sure! Great question. Here is ...:" has several
        stripped = _PREAMBLE.sub("", out, count=1)
        if stripped == out:
            break
        out = stripped
    return out.lstrip() if out.strip() else text


def looks_like_code(line: str) -> bool:
    return bool(_CODE_LINE.search(line))


def extract_code_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, code) of each fenced block."""
    return [(m.group(1), m.group(2)) for m in
            re.finditer(r"^```([\w+#.-]*)[ \t]*\n(.*?)^```[ \t]*$", text, re.DOTALL | re.MULTILINE)]


def _tag_fences(text: str, language: str | None) -> str:
    """Add ``language`` to opening fences that have no tag (closing fences keep none)."""
    out, opening = [], True
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if m:
            if opening and not m.group(1) and language:
                line = f"```{FENCE_TAGS.get(language, language)}"
            opening = not opening
        out.append(line)
    return "\n".join(out)


def format_code_answer(text: str, language: str | None = None) -> str:
    """Code in ``text`` as fenced blocks tagged with ``language`` (where they have none)."""
    if "```" in text:
        if text.count("```") % 2:  # an unclosed fence (the answer was cut off): close it
            text = text.rstrip() + "\n```"
        return _tag_fences(text, language)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not looks_like_code(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        j = i
        # a run: code lines, with blank or indented lines inside it
        while j < len(lines) and (looks_like_code(lines[j]) or lines[j].startswith((" ", "\t"))
                                  or (not lines[j].strip() and j + 1 < len(lines)
                                      and looks_like_code(lines[j + 1]))):
            j += 1
        run = lines[i:j]
        if len([ln for ln in run if ln.strip()]) >= 2 or (run and re.search(r"[;{}]\s*$|^\s*def |^\s*#include", run[0])):
            tag = FENCE_TAGS.get(language, language) if language else ""
            out += [f"```{tag}", *[ln for ln in run], "```"]
        else:
            out += run
        i = j
    return "\n".join(out)
