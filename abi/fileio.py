"""Crash-safe file replacement: the one way abi writes a file that a reader may open.

``atomic_write(path)`` yields a file object on a temporary file beside ``path``
(``<name>.tmp<pid>-<n>``, so on the same file system, one per write). When the block ends normally the file is
flushed and fsynced, renamed over ``path`` and the directory fsynced; a reader sees the old
file or the complete new one, never a part. When the block raises (Ctrl-C included) the
temporary file is removed and ``path`` is untouched.

A process killed outright (SIGKILL, power loss) cannot clean up: it leaves its
``<name>.tmp<pid>-<n>``. The next ``atomic_write`` of the same ``path`` removes those of processes
no longer alive, and ``remove_stale_temps`` does the same for a family of names
(``CheckpointManager`` uses it for its numbered files).
"""
from __future__ import annotations

import itertools
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

_TEMP = re.compile(r"\.tmp(?P<pid>\d+)-\d+")
_SERIAL = itertools.count()  # threads of one process writing one path get distinct temps


def _temp_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp{os.getpid()}-{next(_SERIAL)}")


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb",
                 encoding: str | None = None) -> Iterator[IO]:
    """Write ``path`` through a temporary file that replaces it only when complete."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes whole files: mode 'wb' or 'w', not {mode!r}")
    path = Path(path)
    remove_stale_temps(path.parent, re.escape(path.name))
    tmp = _temp_path(path)
    try:
        with open(tmp, mode, encoding=encoding if mode == "w" else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)


def remove_stale_temps(directory: str | os.PathLike, name_pattern: str) -> None:
    """Remove the ``<name>.tmp<pid>-<n>`` files in ``directory`` whose name matches the
    regular expression ``name_pattern`` and whose writing process is no longer alive."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return  # no directory yet: nothing to clean
    family = re.compile(f"(?:{name_pattern})" + _TEMP.pattern)
    for entry in entries:
        m = family.fullmatch(entry.name)
        if m is None:
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid() or _pid_alive(pid):
            continue  # a live writer (this process's other threads included)
        try:
            os.unlink(entry.path)
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    except OverflowError:
        return False  # not a pid at all
    return True


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (POSIX); where a directory cannot be opened or
    fsynced, the rename is still atomic, only not yet on disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
