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


class FederatedError(AbiError):
    """A federated update was rejected (unknown node, wrong shape, NaN/Inf, stale step)."""

    exit_code = 9
    http_status = 400
    error_type = "invalid_request_error"
