"""Streaming types of the reference API: configuration, token events, statistics, state."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..errors import ConfigError


class StreamingState(str, enum.Enum):
    IDLE = "idle"
    PREFILLING = "prefilling"
    GENERATING = "generating"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


@dataclass
class StreamingConfig:
    """Every option of the reference with its default, plus the usual extras."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    stop_tokens: Optional[list] = None        # None: the model's end-of-generation set
    initial_buffer_capacity: int = 256
    decode_tokens: bool = True
    generation_timeout_ns: int = 0            # 0: no timeout
    on_token: Optional[Callable] = None
    on_complete: Optional[Callable] = None
    # beyond the reference
    stop: list = field(default_factory=list)  # stop strings, never emitted
    seed: Optional[int] = None
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_window: int = 64
    logit_bias: Optional[dict] = None
    logprobs: int = 0                         # top-N log-probabilities per token (0: off)
    # constrained output: an abi.llm.Grammar, or grammar text (GBNF, or Lark with a start rule)
    grammar: Optional[Any] = None
    # render control tokens' text (tool-call markers, gpt-oss's harmony channels)
    special_text: bool = False

    def __post_init__(self):
        if not isinstance(self.max_tokens, int) or self.max_tokens < 0:
            raise ConfigError(f"max_tokens must be a non-negative integer, got {self.max_tokens!r}",
                              field="max_tokens")
        if self.generation_timeout_ns < 0:
            raise ConfigError("generation_timeout_ns must be >= 0", field="generation_timeout_ns")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError("stop strings must be non-empty strings", field="stop")
        if not 0 <= self.logprobs <= 20:
            raise ConfigError(f"logprobs must be in [0, 20], got {self.logprobs}", field="logprobs")
        if self.grammar is not None:
            from .constrain import as_grammar

            self.grammar = as_grammar(self.grammar)


@dataclass
class TokenEvent:
    token_id: int
    text: Optional[str]          # None when decode_tokens is False
    position: int                # index of this token in the sequence (prompt included)
    timestamp_ns: int
    is_final: bool = False
    logprobs: Optional[dict] = None


@dataclass
class StreamingStats:
    tokens_generated: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    time_to_first_token_ns: int = 0
    total_time_ns: int = 0
    prefill_time_ns: int = 0
    decode_time_ns: int = 0
    decode_steps: int = 0
    finish_reason: Optional[str] = None  # stop, length, cancelled, timeout
    # with a grammar: whether the output is a complete match (False when the length limit or
    # a stop string cut it), and the decode time spent on token masks
    constraint_complete: Optional[bool] = None
    constraint_time_ns: int = 0

    def prefill_tokens_per_second(self) -> float:
        n = self.prompt_tokens - self.cached_tokens
        return n / (self.prefill_time_ns / 1e9) if self.prefill_time_ns > 0 else 0.0

    def tokens_per_second(self) -> float:
        """Decode rate: tokens produced by decode steps per second spent in them."""
        return self.decode_steps / (self.decode_time_ns / 1e9) if self.decode_time_ns > 0 else 0.0
