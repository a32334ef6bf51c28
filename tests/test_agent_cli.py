"""``python -m abi agent``: one message or an interactive session, streamed or not."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest

from abi.agents import cli
from fake_providers import OPENAI_KEY, FakeOpenAI, with_server


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def run(monkeypatch, capsys, argv, stdin=""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_message(monkeypatch, capsys):
    rc, out, _ = run(monkeypatch, capsys, ["--backend", "echo", "--message", "Hello, how are you?"])
    assert (rc, out) == (0, "Echo: Hello, how are you?\n")


def test_message_from_stdin_no_stream(monkeypatch, capsys):
    rc, out, _ = run(monkeypatch, capsys, ["--backend", "echo", "--no-stream", "-m", "-"],
                     stdin="piped text")
    assert (rc, out) == (0, "Echo: piped text\n")


def test_interactive_keeps_history(monkeypatch, capsys):
    script = "first\n\n/history\n/clear\n/history\nsecond\n/exit\nnever sent\n"
    rc, out, err = run(monkeypatch, capsys, ["--backend", "echo"], stdin=script)
    assert rc == 0
    assert out.splitlines() == ["Echo: first", "user: first", "assistant: Echo: first",
                                "(2 messages)", "(0 messages)", "Echo: second"]
    assert "history cleared" in err and "never sent" not in out


def test_interactive_prompts_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", FakeTTY("hi\n"))
    assert cli.main(["--backend", "echo", "--name", "helper"]) == 0
    out, err = capsys.readouterr()
    assert out == "Echo: hi\n" and "you> " in err and "'helper'" in err


def test_streams_as_it_goes(monkeypatch):
    writes = []

    class Out(io.StringIO):
        def write(self, s):
            writes.append(s)
            return super().write(s)

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr(sys, "stdout", Out())
    cli.main(["--backend", "echo", "-m", "several words in this one"])
    assert writes[:3] == ["Echo:", " several", " words"]  # piece by piece, not at the end


def test_invalid_settings_exit_code():
    for args, words in ((["--temperature", "3"], "temperature"), (["--top-p", "2"], "top_p")):
        r = subprocess.run([sys.executable, "-m", "abi", "agent", "--backend", "echo",
                            "-m", "x", *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and words in r.stderr and "between" in r.stderr


def test_backend_and_options_reach_the_server(monkeypatch, capsys):
    monkeypatch.setenv("ABI_OPENAI_API_KEY", OPENAI_KEY)
    for fake in with_server(FakeOpenAI):
        rc, out, _ = run(monkeypatch, capsys, [
            "--backend", "openai", "--base-url", fake.url + "/v1", "--model", "gpt-4",
            "--system", "Be brief.", "--temperature", "0.3", "--max-tokens", "20", "-m", "hey"])
        assert (rc, out) == (0, "You said: hey\n")
        sent = fake.requests[-1].json
        assert sent["model"] == "gpt-4" and sent["temperature"] == 0.3
        assert sent["max_tokens"] == 20 and sent["stream"] is True
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


def test_interactive_reports_errors_and_goes_on(monkeypatch, capsys):
    monkeypatch.setenv("ABI_OPENAI_API_KEY", OPENAI_KEY)
    for fake in with_server(FakeOpenAI):
        rc, out, err = run(monkeypatch, capsys, [
            "--backend", "openai", "--base-url", fake.url + "/v1", "--model", "nope"],
            stdin="one\ntwo\n")
        assert rc == 0 and err.count("abi: error:") == 2 and "nope" in err


def test_subprocess_entry_point():
    r = subprocess.run([sys.executable, "-m", "abi", "agent", "--backend", "echo", "-m", "hi"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "Echo: hi\n")
    r = subprocess.run([sys.executable, "-m", "abi", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert "agent" in r.stdout


@pytest.mark.parametrize("missing", ["ABI_OPENAI_API_KEY"])
def test_missing_key_names_the_variable(monkeypatch, missing):
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in (missing, "ABI_OPENAI_BASE_URL")}
    r = subprocess.run([sys.executable, "-m", "abi", "agent", "--backend", "openai", "-m", "x"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and missing in r.stderr
