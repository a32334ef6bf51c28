"""A child Python process stopped at a known point, then killed outright (SIGKILL): how the
crash-safety tests make a writer die mid-write."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager


@contextmanager
def killed_at(code: str, *args: str, ready: str):
    """Run ``code`` with ``args``; yield once it prints the line ``ready``; SIGKILL it on
    leaving the block (the block checks what it left mid-way)."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == ready
        yield proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
