"""Typed exceptions. Each class carries its HTTP status and CLI exit code, so the server
and the CLI map errors in one place and never match on message text."""
from __future__ import annotations


class AbiError(Exception):
    """Base of every error abi raises on purpose."""

    http_status = 500
    exit_code = 1
    error_type = "server_error"  # OpenAI's error "type" field


# --- files and models -----------------------------------------------------------------

class GGUFError(AbiError):
    """A GGUF file is malformed. ``offset`` is the byte offset where reading failed."""

    exit_code = 3
    error_type = "invalid_request_error"
    http_status = 400

    def __init__(self, message: str, offset: int | None = None):
        self.offset = offset
        super().__init__(f"{message} (at byte offset {offset})" if offset is not None else message)


class GGUFMagicError(GGUFError):
    """The file does not start with the GGUF magic."""


class GGUFVersionError(GGUFError):
    """The file's GGUF version is not one we read."""


class GGUFTruncatedError(GGUFError):
    """The file ends before a value it announces."""


class GGUFValueError(GGUFError):
    """A header value is impossible: unknown type, oversized count, duplicate key, ..."""


class GGUFTensorError(GGUFError):
    """A tensor's info is impossible: unknown type, bad shape, data out of bounds, overlap."""


class UnsupportedTensorType(AbiError):
    """A kernel was asked for a tensor type it does not implement."""

    exit_code = 3
    http_status = 400
    error_type = "invalid_request_error"


class UnsupportedModelError(AbiError):
    """The model's architecture (or tokenizer) is not one abi runs."""

    exit_code = 3
    http_status = 400
    error_type = "invalid_request_error"


class InvalidModelError(UnsupportedModelError):
    """The file's metadata or tensors contradict its architecture (a shape the
    hyperparameters do not imply, a value out of range, a NaN scale): refused before any
    kernel runs."""


class AdapterError(UnsupportedModelError):
    """A LoRA adapter does not fit its base model or asks for what abi does not run (another
    architecture, a tensor the base lacks or of another shape, an aLoRA, an adapted
    embedding). ``tensor`` names the offending tensor where there is one."""

    def __init__(self, message: str, tensor: str | None = None):
        self.tensor = tensor
        super().__init__(message)


class NonFiniteError(AbiError):
    """A forward pass produced NaN or Inf: the weights or the inputs are broken."""

    exit_code = 3
    http_status = 500


class ModelNotFoundError(AbiError):
    """No model file under the given path or name."""

    exit_code = 4
    http_status = 404
    error_type = "invalid_request_error"


class ModelDownloadError(AbiError):
    """Fetching a model failed (no network, bad package, checksum mismatch)."""

    exit_code = 5
    http_status = 503


class TokenizerError(AbiError):
    """The tokenizer described by the file is unknown or inconsistent."""

    exit_code = 3
    http_status = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(AbiError):
    """A prompt (plus generation) does not fit the model's context."""

    exit_code = 6
    http_status = 400
    error_type = "invalid_request_error"
    code = "context_length_exceeded"


class ConfigError(AbiError):
    """A setting is invalid or missing. ``field`` names it."""

    exit_code = 2
    http_status = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message)


class MemoryBudgetExceeded(AbiError):
    """A model's weights, KV caches and scratch would not fit the memory allowed
    (``--max-memory``) or available; the message lists the numbers."""

    exit_code = 12
    http_status = 507
    error_type = "insufficient_storage"


class BackendUnavailable(AbiError):
    """The requested compute backend (e.g. CUDA) cannot be used on this machine."""

    exit_code = 7
    http_status = 503


class GenerationCancelled(AbiError):
    """A generation was cancelled by its caller."""

    exit_code = 130
    http_status = 499


# --- training, datasets, federated learning -------------------------------------------

class TrainingError(AbiError):
    """Training cannot start or continue (bad model/data combination, diverged, ...)."""

    exit_code = 8
    http_status = 400
    error_type = "invalid_request_error"


class CheckpointError(TrainingError):
    """A checkpoint is missing, corrupt, truncated or of the wrong kind. ``path`` names it."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(message)


class DatasetError(AbiError):
    """A dataset file (TokenBin, WDBX, text) is malformed or unusable."""

    exit_code = 3
    http_status = 400
    error_type = "invalid_request_error"


class BatchInputError(DatasetError):
    """A batch job's input is unusable: a line that is not JSON, a missing or mistyped field,
    a repeated id. ``line`` is its 1-based line (or, in Parquet, its 1-based row)."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(message)


class BatchWorkerError(AbiError):
    """A batch job's worker died on the same shards until their retries ran out. ``shards``
    names them; the shards already written stay, so the job resumes once they are fixed."""

    exit_code = 12
    http_status = 500

    def __init__(self, message: str, shards: list[int]):
        self.shards = shards
        super().__init__(message)


class FederatedError(AbiError):
    """A federated update was rejected (unknown node, wrong shape, NaN/Inf, stale step)."""

    exit_code = 9
    http_status = 400
    error_type = "invalid_request_error"


# --- agents and connectors (remote model providers, Discord) ---------------------------

class AgentError(AbiError):
    """A backend or connector call failed. ``context`` is its ErrorContext (backend, endpoint,
    status, model, attempt); ``status`` the HTTP status when there was one."""

    exit_code = 10
    http_status = 502

    def __init__(self, message: str, *, context: "ErrorContext | None" = None,
                 status: int | None = None):
        self.context = context
        self.status = status
        super().__init__(message)


class Timeout(AgentError):
    """Connecting to, or reading from, a provider took longer than its timeout."""

    http_status = 504


class ConnectionRefused(AgentError):
    """The provider could not be reached (refused, unreachable host, unknown name)."""

    http_status = 503


class HttpRequestFailed(AgentError):
    """The provider answered with an error status, or its connection dropped."""


class RateLimited(HttpRequestFailed):
    """HTTP 429 after every retry. ``retry_after``: seconds the server asked us to wait."""

    http_status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class AuthenticationError(HttpRequestFailed):
    """HTTP 401/403: the API key or token is missing, wrong or lacks permission."""

    http_status = 401
    error_type = "authentication_error"


class ModelNotFound(HttpRequestFailed, ModelNotFoundError):
    """The provider does not know the requested model (a remote ModelNotFoundError)."""

    exit_code = 4
    http_status = 404
    error_type = "invalid_request_error"


class MalformedResponse(HttpRequestFailed):
    """The provider's reply does not follow its wire format (bad JSON, bad stream chunk)."""


class StreamInterrupted(HttpRequestFailed):
    """A streamed reply ended (or the connection dropped) before its end marker."""


class GenerationFailed(AgentError):
    """A backend produced no usable response (no choices, engine failure)."""


class InvalidRequestError(AbiError):
    """An argument to a call is unusable (empty message, over a provider's size limit)."""

    exit_code = 2
    http_status = 400
    error_type = "invalid_request_error"


class SignatureError(AbiError):
    """A signed request (Discord interaction) is forged, malformed or too old."""

    exit_code = 2
    http_status = 401
    error_type = "authentication_error"


class ErrorContext:
    """Where an agent or connector error happened, for logs (the reference's ErrorContext).

    ``format()``/``log()`` give the reference's line, e.g.
    ``AgentError: HttpRequestFailed during API request [backend=openai] [model=gpt-4]``.
    Endpoint and HTTP status are kept as attributes and shown only by ``format(verbose=True)``
    (the reference's line omits them, and an endpoint may carry a webhook token).
    """

    API_REQUEST = "API request"
    CONFIGURATION = "configuration validation"
    GENERATION = "response generation"

    def __init__(self, error, operation: str, *, backend: str | None = None,
                 endpoint: str | None = None, http_status: int | None = None,
                 model: str | None = None, message: str | None = None,
                 retry_attempt: int | None = None, max_retries: int | None = None,
                 field: str | None = None):
        # error: an exception, an exception class or a name ("HttpRequestFailed")
        if isinstance(error, BaseException):
            error = type(error).__name__
        elif isinstance(error, type):
            error = error.__name__
        self.error = str(error)
        self.operation = operation
        self.backend = None if backend is None else str(getattr(backend, "value", backend))
        self.endpoint = endpoint
        self.http_status = http_status
        self.model = model
        self.message = message
        self.retry_attempt = retry_attempt
        self.max_retries = max_retries
        self.field = field

    @classmethod
    def api_error(cls, err, backend, endpoint: str | None = None, status: int | None = None,
                  model: str | None = None) -> "ErrorContext":
        return cls(err, cls.API_REQUEST, backend=backend, endpoint=endpoint,
                   http_status=status, model=model)

    @classmethod
    def config_error(cls, err, message: str, *, field: str | None = None,
                     backend=None) -> "ErrorContext":
        return cls(err, cls.CONFIGURATION, backend=backend, message=message, field=field)

    @classmethod
    def generation_error(cls, err, backend, model: str | None = None,
                         message: str | None = None) -> "ErrorContext":
        return cls(err, cls.GENERATION, backend=backend, model=model, message=message)

    @classmethod
    def retry_error(cls, err, backend, endpoint: str | None, attempt: int, max_attempts: int,
                    *, model: str | None = None, status: int | None = None) -> "ErrorContext":
        return cls(err, cls.API_REQUEST, backend=backend, endpoint=endpoint, model=model,
                   http_status=status, retry_attempt=attempt, max_retries=max_attempts)

    def format(self, verbose: bool = False) -> str:
        parts = [f"AgentError: {self.error} during {self.operation}"]
        if self.backend is not None:
            parts.append(f" [backend={self.backend}]")
        if self.model is not None:
            parts.append(f" [model={self.model}]")
        if verbose and self.endpoint is not None:
            parts.append(f" [endpoint={self.endpoint}]")
        if verbose and self.http_status is not None:
            parts.append(f" [http_status={self.http_status}]")
        if self.retry_attempt is not None and self.max_retries is not None:
            parts.append(f" [attempt={self.retry_attempt}/{self.max_retries}]")
        if self.message:
            parts.append(f" - {self.message}")
        return "".join(parts)

    __str__ = format

    def __repr__(self) -> str:
        return f"ErrorContext({self.format(verbose=True)!r})"

    def log(self, logger=None) -> str:
        """Log the line at ERROR level (to stderr when logging is not configured); return it."""
        import logging

        line = self.format()
        (logger or logging.getLogger("abi.agents")).error("%s", line)
        return line


class ConversionError(AbiError):
    """A model cannot be converted to GGUF: missing, malformed or unsupported source files."""

    exit_code = 3
    http_status = 400
    error_type = "invalid_request_error"


class QuantizeError(AbiError):
    """``python -m abi quantize`` cannot do what was asked: unknown target type, output path
    equal to the input, a bad importance matrix, a tensor type it cannot read."""

    exit_code = 3
    http_status = 400
    error_type = "invalid_request_error"


class RequantizeError(QuantizeError):
    """An already-quantised tensor would be quantised again without ``allow_requantize``
    (each round loses quality). ``tensor`` and ``ggml_type`` name the first one met."""

    def __init__(self, message: str, tensor: str = "", ggml_type: str = ""):
        self.tensor = tensor
        self.ggml_type = ggml_type
        super().__init__(message)


class KernelInputError(AbiError, ValueError):
    """An array handed to a kernel does not fit its tensor type and shape (size, dtype, rank)."""

    exit_code = 3
    http_status = 400
    error_type = "invalid_request_error"


# --- the HTTP server (python -m abi serve) ---------------------------------------------

class ServerBusy(AbiError):
    """Every generation slot is busy and the waiting queue is full: retry later."""

    http_status = 429
    error_type = "rate_limit_error"
    code = "queue_full"


class ModelLoading(AbiError):
    """The server is still loading its model."""

    http_status = 503
    error_type = "unavailable_error"
    code = "model_loading"


class UnknownModel(ModelNotFoundError):
    """A request names a model this server does not serve."""

    code = "model_not_found"


class Unauthorized(AbiError):
    """A request lacks the server's API key (``Authorization: Bearer <key>``)."""

    exit_code = 2
    http_status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class NotSupported(AbiError):
    """A request asks for a feature this server does not offer (or was not started with)."""

    exit_code = 2
    http_status = 400
    error_type = "invalid_request_error"
    code = "not_supported"


class GrammarError(ConfigError):
    """A response format, JSON schema or grammar the constraint engine cannot enforce: the
    message names the unsupported or malformed part. Never a silently unconstrained run."""

    code = "invalid_grammar"


class ToolCallError(ConfigError):
    """Tools or a tool choice that cannot be honoured (an unknown tool, a malformed
    definition, a tool_choice naming no given tool)."""

    code = "invalid_tools"


class RequestTooLarge(AbiError):
    """A request body is over the server's size limit."""

    exit_code = 2
    http_status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


# --- GPU-aware scheduling -------------------------------------------------------------

class SchedulingError(AbiError):
    """The GPU-aware agent could not run a request: every eligible backend failed, or a
    saved scheduler state is unusable."""

    exit_code = 11
    http_status = 503


class InsufficientMemory(SchedulingError):
    """A request's memory hint fits none of the machine's backends."""

    http_status = 400
    error_type = "invalid_request_error"
