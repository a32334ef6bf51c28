"""Starting ``python -m abi serve`` on 127.0.0.1 for a test module (and the load script)."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import requests


@contextlib.contextmanager
def openai_client(server: "Server"):
    """The official openai client on the server's /v1 (no retries: a failure shows at once)."""
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    try:
        yield client
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: str

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def metrics(self, headers=None) -> dict[str, float]:
        """The /metrics samples without labels, by name (labelled ones summed)."""
        text = requests.get(self.url + "/metrics", headers=headers, timeout=10).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                name = name.split("{", 1)[0]
                out[name] = out.get(name, 0.0) + float(value)
        return out


@contextlib.contextmanager
def serve(*args: str, env: dict | None = None, timeout: float = 180.0):
    """Run the server with ``args`` until /health says ok; stop it afterwards."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="abi-serve-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "abi", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    server = Server(f"http://127.0.0.1:{port}", proc, log.name)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"abi serve exited {proc.returncode}: {server.log()[-3000:]}")
            try:
                if requests.get(server.url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"abi serve was not healthy within {timeout:.0f} s: "
                                   f"{server.log()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        os.unlink(log.name)
