import json
import subprocess
import sys

import pytest


def _run(*args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, **kw)


def test_import_is_fast_and_light():
    code = ("import sys, time; t = time.perf_counter(); import abi, abi.ai; "
            "dt = time.perf_counter() - t; "
            "print(dt, 'numba' in sys.modules, 'cupy' in sys.modules, 'numpy' in sys.modules)")
    best = min(float(_run("-c", code).stdout.split()[0]) for _ in range(3))
    out = _run("-c", code).stdout.split()
    assert best < 0.5
    assert out[1:] == ["False", "False", "False"]


def test_ai_namespace_aliases_the_same_modules():
    import abi
    import abi.ai.gguf
    import abi.gguf
    from abi.ai.gguf.reader import load as alias_load
    from abi.gguf.reader import load

    assert abi.ai.gguf is abi.gguf
    assert alias_load is load
    assert abi.ai.gguf.__spec__.name == "abi.gguf"
    assert abi.errors is sys.modules["abi.errors"]


def test_llm_info_json_on_default_model(default_model_path):
    proc = _run("-m", "abi", "llm", "info", default_model_path, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    for key in ("architecture", "name", "n_params", "file_size", "context_length", "n_layers",
                "n_heads", "n_kv_heads", "n_embd", "tokenizer_model", "tokenizer_pre",
                "vocab_size", "has_chat_template", "tensor_count", "tensor_types"):
        assert key in info
    assert info["architecture"] == "llama" and info["n_layers"] == 30
    assert info["tensor_count"] == 272
    assert {k: v["count"] for k, v in info["tensor_types"].items()} == \
        {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert info["n_heads"] == 9 and info["n_kv_heads"] == 3 and info["n_embd"] == 576
    assert info["tokenizer_model"] == "gpt2" and info["tokenizer_pre"] == "smollm"
    assert info["vocab_size"] == 49152 and info["has_chat_template"] is True
    assert info["file_size"] == 98362432 and info["n_params"] == 134515008


def test_llm_info_text(default_model_path):
    proc = _run("-m", "abi", "llm", "info", default_model_path)
    assert proc.returncode == 0
    assert "architecture       llama" in proc.stdout and "Q4_1" in proc.stdout


def test_cli_errors_are_one_line_unless_debug(tmp_path):
    missing = str(tmp_path / "missing.gguf")
    proc = _run("-m", "abi", "llm", "info", missing)
    assert proc.returncode == 4
    assert proc.stderr.strip().count("\n") == 0 and "no model file" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(32))
    proc = _run("-m", "abi", "--debug", "llm", "info", str(bad))
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "GGUFMagicError" in proc.stderr


def test_cli_usage_and_unknown_command():
    assert _run("-m", "abi").returncode == 0
    proc = _run("-m", "abi", "frobnicate")
    assert proc.returncode == 2 and "unknown command" in proc.stderr
