"""Settings from the environment (``ABI_*`` and provider variables) and from YAML files.

Every accessor raises ``ConfigError`` naming the variable (``field``) when a required value
is missing or a value does not parse. Values of secret variables never appear in messages.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, TypeVar

from abi.errors import ConfigError

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


def env(name: str, default: T | None = None, *, required: bool = False,
        cast: Callable[[str], T] = str, secret: bool = False, hint: str | None = None) -> T | None:
    """The environment variable ``name`` converted by ``cast``; ``default`` when unset or empty.

    ``required=True`` turns an unset variable into a ConfigError that says what to set;
    ``secret=True`` keeps the value out of error messages.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        if required:
            raise ConfigError(f"{name} is not set" + (f": {hint}" if hint else ""), field=name)
        return default
    raw = raw.strip()
    try:
        return cast(raw)
    except (TypeError, ValueError) as exc:
        kind = "true/false" if cast is parse_bool else getattr(cast, "__name__", "value")
        if secret:  # the parser's own message may quote the value
            raise ConfigError(f"{name} is not a valid {kind}", field=name) from None
        raise ConfigError(f"{name}={raw!r} is not a valid {kind} ({exc})", field=name) from None


def env_bool(name: str, default: bool = False) -> bool:
    return env(name, default, cast=parse_bool)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML config file as a dict (an empty file gives {}); anything else is a ConfigError."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}",
                          field=str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}", field=str(p)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level, "
                          f"not a {type(data).__name__}", field=str(p))
    return data
