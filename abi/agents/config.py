"""AgentConfig: an agent's settings, validated on creation and on every change."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from abi.errors import ConfigError, ErrorContext

BACKENDS = ("echo", "local", "openai", "ollama", "huggingface")

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.0, 2.0
MIN_TOP_P, MAX_TOP_P = 0.0, 1.0
MAX_TOKENS_LIMIT = 128_000
MAX_NAME_LENGTH = 128
DEFAULT_MAX_HISTORY = 64


def _config_error(message: str, field: str) -> ConfigError:
    err = ConfigError(message, field=field)
    err.context = ErrorContext.config_error(err, message, field=field)
    return err


def check_range(field: str, value, low: float, high: float) -> float:
    """``value`` as a float in [low, high], else ConfigError naming the field and range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _config_error(f"{field} must be a number between {low:g} and {high:g}, "
                            f"got {value!r}", field)
    if not low <= value <= high:
        raise _config_error(f"{field} must be between {low:g} and {high:g}, got {value:g}", field)
    return float(value)


def check_int(field: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _config_error(f"{field} must be an integer between {low} and {high}, "
                            f"got {value!r}", field)
    if not low <= value <= high:
        raise _config_error(f"{field} must be between {low} and {high}, got {value}", field)
    return value


@dataclass
class AgentConfig:
    """What an agent is and how it samples.

    name: required identifier (1-128 printable characters).
    backend: where replies come from: ``echo`` (tests), ``local`` (the embedded runtime),
        ``openai``, ``ollama``, ``huggingface``.
    model: the backend's model (None: the backend's default).
    max_history: messages kept (oldest dropped first); what is sent is also trimmed to fit
        the model's context (``context_length``, for local the model's own).
    context_length: tokens the model accepts; None: the local model's, unknown elsewhere.
    base_url: overrides the backend's server (openai, ollama, huggingface).
    tools: Python callables or (definition, callable) pairs the model may call (local,
        openai and ollama backends); ``max_tool_steps`` bounds the call -> result rounds of
        one ``chat``, after which the model answers without tools.
    lora: LoRA adapters the local backend runs on its model, unmerged: paths or
        ``(path, scale)`` pairs (``abi.llm.load_model``'s ``lora``).
    """

    name: str
    enable_history: bool = True
    temperature: float = 0.7
    top_p: float = 0.9
    backend: str = "echo"
    model: str | None = None
    system_prompt: str | None = None
    max_history: int = DEFAULT_MAX_HISTORY
    max_tokens: int = 1024
    context_length: int | None = None
    base_url: str | None = None
    tools: list | None = None
    max_tool_steps: int = 8
    lora: tuple = ()

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise _config_error("name is required: a non-empty string", "name")
        if len(self.name) > MAX_NAME_LENGTH:
            raise _config_error(f"name must be at most {MAX_NAME_LENGTH} characters, "
                                f"got {len(self.name)}", "name")
        if not self.name.isprintable():
            raise _config_error("name must not contain control characters", "name")
        if not isinstance(self.enable_history, bool):
            raise _config_error("enable_history must be True or False", "enable_history")
        self.temperature = check_range("temperature", self.temperature, MIN_TEMPERATURE,
                                       MAX_TEMPERATURE)
        self.top_p = check_range("top_p", self.top_p, MIN_TOP_P, MAX_TOP_P)
        if self.backend not in BACKENDS:
            raise _config_error(f"backend must be one of {', '.join(BACKENDS)}; "
                                f"got {self.backend!r}", "backend")
        for name in ("model", "system_prompt", "base_url"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise _config_error(f"{name} must be a string or None", name)
        if self.model is not None and not self.model.strip():
            raise _config_error("model must not be empty (use None for the default)", "model")
        check_int("max_history", self.max_history, 0, 1_000_000)
        check_int("max_tokens", self.max_tokens, 1, MAX_TOKENS_LIMIT)
        if self.context_length is not None:
            check_int("context_length", self.context_length, 16, 10_000_000)
        check_int("max_tool_steps", self.max_tool_steps, 1, 100)
        if self.lora:
            if self.backend != "local":
                raise _config_error(f"lora: adapters run on the local backend, not {self.backend!r}", "lora")
            from ..llm.lora import lora_specs

            self.lora = tuple(lora_specs(self.lora))
        if self.tools is not None and not isinstance(self.tools, (list, tuple)):
            raise _config_error("tools must be a list of callables or (definition, callable) "
                                "pairs", "tools")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
