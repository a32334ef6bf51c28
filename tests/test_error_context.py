"""ErrorContext: the reference's factories and its log line."""
from __future__ import annotations

import logging

from abi.errors import (
    AbiError, AgentError, AuthenticationError, ConfigError, ConnectionRefused, ErrorContext,
    HttpRequestFailed, ModelNotFound, ModelNotFoundError, RateLimited, Timeout,
)


def test_api_error_line_is_the_reference_example(caplog):
    ctx = ErrorContext.api_error(HttpRequestFailed("x"), "openai",
                                 "/v1/chat/completions", 500, "gpt-4")
    with caplog.at_level(logging.ERROR, logger="abi.agents"):
        line = ctx.log()
    assert line == "AgentError: HttpRequestFailed during API request [backend=openai] [model=gpt-4]"
    assert caplog.records[-1].getMessage() == line and caplog.records[-1].levelno == logging.ERROR
    assert (ctx.endpoint, ctx.http_status) == ("/v1/chat/completions", 500)
    assert ctx.format(verbose=True) == (line + " [endpoint=/v1/chat/completions] [http_status=500]")


def test_other_factories():
    assert ErrorContext.config_error("ConfigError", "temperature must be between 0 and 2",
                                     field="temperature").format() == (
        "AgentError: ConfigError during configuration validation - temperature must be "
        "between 0 and 2")
    assert ErrorContext.generation_error(Timeout, "local", "smollm2", "took too long").format() == (
        "AgentError: Timeout during response generation [backend=local] [model=smollm2] "
        "- took too long")
    assert ErrorContext.retry_error(ConnectionRefused("no"), "ollama", "/api/chat", 2, 5).format() \
        == "AgentError: ConnectionRefused during API request [backend=ollama] [attempt=2/5]"
    assert str(ErrorContext.api_error("RateLimited", "huggingface")) == (
        "AgentError: RateLimited during API request [backend=huggingface]")


def test_error_hierarchy():
    for cls in (Timeout, ConnectionRefused, HttpRequestFailed, RateLimited, AuthenticationError,
                ModelNotFound):
        assert issubclass(cls, AgentError) and issubclass(cls, AbiError)
    assert issubclass(ModelNotFound, ModelNotFoundError)  # caught by the local-model handlers too
    assert (RateLimited.http_status, AuthenticationError.http_status, ModelNotFound.http_status,
            Timeout.http_status) == (429, 401, 404, 504)
    e = RateLimited("slow", retry_after=3.0, status=429)
    assert (e.retry_after, e.status, e.context) == (3.0, 429, None)
    assert ConfigError("x", field="f").field == "f"
