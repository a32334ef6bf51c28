"""The scheduler's state file: JSON written with ``abi.fileio.atomic_write``, so a crash
mid-write leaves the previous state, never half of one."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ...errors import SchedulingError
from ...fileio import atomic_write

log = logging.getLogger("abi.agents")

FORMAT = "abi-gpu-agent"
VERSION = 1


def save_state(path: str | os.PathLike, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)


def load_state(path: str | os.PathLike) -> dict | None:
    """The saved state, or None when there is no file. A file that is not ours, or that is
    damaged, raises SchedulingError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SchedulingError(f"cannot read the GPU agent state {str(path)!r}: {exc}") from exc
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise SchedulingError(f"the GPU agent state {str(path)!r} is not valid JSON ({exc}); "
                              "delete it to start learning afresh") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SchedulingError(f"{str(path)!r} is not a GPU agent state file")
    if state.get("version") != VERSION:
        raise SchedulingError(f"{str(path)!r} has state version {state.get('version')!r}; this "
                              f"abi reads version {VERSION}; delete it to start afresh")
    return state
