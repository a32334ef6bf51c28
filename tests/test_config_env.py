"""abi.config: environment accessors and YAML loading."""
from __future__ import annotations

import pytest

from abi import config
from abi.errors import ConfigError


def test_env(monkeypatch):
    monkeypatch.delenv("ABI_TEST_X", raising=False)
    assert config.env("ABI_TEST_X", "dflt") == "dflt"
    monkeypatch.setenv("ABI_TEST_X", "  ")
    assert config.env("ABI_TEST_X", "dflt") == "dflt"  # blank counts as unset
    monkeypatch.setenv("ABI_TEST_X", " 12 ")
    assert config.env("ABI_TEST_X", cast=int) == 12
    monkeypatch.setenv("ABI_TEST_X", "twelve")
    with pytest.raises(ConfigError) as ei:
        config.env("ABI_TEST_X", cast=int)
    assert ei.value.field == "ABI_TEST_X" and "'twelve'" in str(ei.value)


def test_required_and_secret(monkeypatch):
    monkeypatch.delenv("ABI_TEST_KEY", raising=False)
    with pytest.raises(ConfigError) as ei:
        config.env("ABI_TEST_KEY", required=True, hint="an API key")
    assert ei.value.field == "ABI_TEST_KEY"
    assert str(ei.value) == "ABI_TEST_KEY is not set: an API key"
    monkeypatch.setenv("ABI_TEST_KEY", "s3cret-value")
    with pytest.raises(ConfigError) as ei:
        config.env("ABI_TEST_KEY", cast=int, secret=True)
    assert "s3cret-value" not in str(ei.value)


def test_env_bool(monkeypatch):
    for raw, want in (("1", True), ("Yes", True), ("off", False), ("FALSE", False)):
        monkeypatch.setenv("ABI_TEST_B", raw)
        assert config.env_bool("ABI_TEST_B") is want
    monkeypatch.setenv("ABI_TEST_B", "maybe")
    with pytest.raises(ConfigError):
        config.env_bool("ABI_TEST_B")


def test_load_yaml(tmp_path):
    good = tmp_path / "a.yaml"
    good.write_text("agent:\n  name: x\n  temperature: 0.5\n")
    assert config.load_yaml(good) == {"agent": {"name": "x", "temperature": 0.5}}
    empty = tmp_path / "e.yaml"
    empty.write_text("")
    assert config.load_yaml(empty) == {}
    for text in ("- a\n- b\n", "a: [unclosed\n"):
        bad = tmp_path / "b.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError):
            config.load_yaml(bad)
    with pytest.raises(ConfigError):
        config.load_yaml(tmp_path / "missing.yaml")
