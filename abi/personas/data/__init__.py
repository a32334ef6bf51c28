"""Training data shipped with the personas (never the evaluation set, which lives in
tests/data/). Each YAML file maps a label to a block of examples, one per line."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


def parse_examples(data: dict) -> list[tuple[str, str]]:
    """(text, label) pairs from ``{label: "line\\nline..."}``; ``\\n`` in a line is a break."""
    out = []
    for label, block in data.items():
        for line in str(block or "").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append((line.replace("\\n", "\n"), str(label)))
    return out


@lru_cache(maxsize=None)
def load_examples(name: str) -> tuple[tuple[str, str], ...]:
    """The (text, label) pairs of the shipped training file ``name`` (e.g. "queries")."""
    import yaml

    data = yaml.safe_load(Path(__file__).with_name(f"{name}.yaml").read_text("utf-8"))
    return tuple(parse_examples(data))
