"""HuggingFace Inference API connector: text generation (plain and streamed) and feature
extraction (embeddings).

Token from ``ABI_HF_API_TOKEN``; base URL from ``ABI_HF_BASE_URL`` (default: HuggingFace's
serverless inference). A model that is still loading answers 503 with ``estimated_time``;
that is retried like a Retry-After. The base URL may also be one text-generation-inference
(TGI) server or Inference Endpoint; then the token is optional.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence
from urllib.parse import quote

import numpy as np
import requests

from abi import config
from abi.connectors.http import (
    HttpClient, RateLimiter, RetryPolicy, Timeouts, drop_none, parse_retry_after,
)
from abi.errors import ConfigError, ErrorContext, HttpRequestFailed, InvalidRequestError, \
    MalformedResponse

DEFAULT_BASE_URL = "https://router.huggingface.co/hf-inference"
BACKEND = "huggingface"


class _LoadingAwareLimiter(RateLimiter):
    """Retry-After, else the ``estimated_time`` HuggingFace gives while a model loads."""

    def retry_after(self, response: requests.Response) -> float | None:
        hinted = parse_retry_after(response.headers.get("Retry-After"))
        if hinted is not None or response.status_code != 503:
            return hinted
        try:
            est = response.json().get("estimated_time")
        except (ValueError, AttributeError, requests.RequestException):
            return None
        return float(est) if isinstance(est, (int, float)) and est >= 0 else None


@dataclass
class TextGeneration:
    generated_text: str
    details: dict | None = None  # finish_reason, generated_tokens, ... when asked for

    @property
    def text(self) -> str:
        return self.generated_text


@dataclass
class TextGenerationToken:
    """One streamed token. On the last one ``generated_text`` holds the whole text."""

    text: str
    id: int | None = None
    special: bool = False
    generated_text: str | None = None
    details: dict | None = field(default=None, repr=False)


class HuggingFaceClient:
    def __init__(self, token: str | None = None, base_url: str | None = None, *,
                 model: str | None = None, wait_for_model: bool = True,
                 timeouts: Timeouts | None = None, retry: RetryPolicy | None = None):
        base_url = base_url or config.env("ABI_HF_BASE_URL", DEFAULT_BASE_URL)
        own_api = base_url.rstrip("/") == DEFAULT_BASE_URL
        token = token or config.env("ABI_HF_API_TOKEN", required=own_api, secret=True,
                                    hint="set it to a HuggingFace access token")
        self.base_url = base_url
        self.model = model or config.env("ABI_HF_MODEL")
        self.wait_for_model = wait_for_model
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = HttpClient(base_url, backend=BACKEND, headers=headers, secrets=[token],
                               timeouts=timeouts, retry=retry, rate_limiter=_LoadingAwareLimiter())

    def __repr__(self) -> str:
        return f"HuggingFaceClient(base_url={self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self.http.close()

    def _model(self, model: str | None) -> str:
        model = model or self.model
        if not model:
            raise ConfigError("no HuggingFace model given: pass model=... or set ABI_HF_MODEL",
                              field="ABI_HF_MODEL")
        return model

    @staticmethod
    def _path(model: str, task: str | None = None) -> str:
        path = "/models/" + quote(model, safe="/")
        return path + f"/pipeline/{task}" if task else path

    def _generation_body(self, prompt, stream, max_new_tokens, temperature, top_p, top_k, stop,
                         seed, do_sample, return_full_text, repetition_penalty, details) -> dict:
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequestError("text generation needs a non-empty prompt string")
        params = drop_none({"max_new_tokens": max_new_tokens, "temperature": temperature,
                            "top_p": top_p, "top_k": top_k, "stop": list(stop) if stop else None,
                            "seed": seed, "do_sample": do_sample,
                            "return_full_text": return_full_text,
                            "repetition_penalty": repetition_penalty, "details": details})
        body: dict[str, Any] = {"inputs": prompt, "parameters": params}
        if stream:
            body["stream"] = True
        if self.wait_for_model:
            body["options"] = {"wait_for_model": True}
        return body

    def text_generation(self, prompt: str, model: str | None = None, *,
                        max_new_tokens: int | None = None, temperature: float | None = None,
                        top_p: float | None = None, top_k: int | None = None,
                        stop: Sequence[str] | None = None, seed: int | None = None,
                        do_sample: bool | None = None, return_full_text: bool = False,
                        repetition_penalty: float | None = None,
                        details: bool | None = None) -> TextGeneration:
        model = self._model(model)
        body = self._generation_body(prompt, False, max_new_tokens, temperature, top_p, top_k,
                                     stop, seed, do_sample, return_full_text, repetition_penalty,
                                     details)
        path = self._path(model)
        obj = self.http.json("POST", path, json_body=body, model=model)
        # serverless answers [{"generated_text": ...}], a TGI server {"generated_text": ...}
        item = obj[0] if isinstance(obj, list) and obj else obj
        if not isinstance(item, dict) or not isinstance(item.get("generated_text"), str):
            raise self._malformed(f"text generation reply has no generated_text: "
                                  f"{json.dumps(obj)[:120]}", path, model)
        return TextGeneration(generated_text=item["generated_text"], details=item.get("details"))

    def text_generation_stream(self, prompt: str, model: str | None = None, *,
                               max_new_tokens: int | None = None,
                               temperature: float | None = None, top_p: float | None = None,
                               top_k: int | None = None, stop: Sequence[str] | None = None,
                               seed: int | None = None, do_sample: bool | None = None,
                               repetition_penalty: float | None = None,
                               ) -> Iterator[TextGenerationToken]:
        """Tokens as they come (TGI's SSE format); the last carries ``generated_text``."""
        model = self._model(model)
        body = self._generation_body(prompt, True, max_new_tokens, temperature, top_p, top_k,
                                     stop, seed, do_sample, False, repetition_penalty, None)
        return self._stream(self._path(model), body, model)

    def _stream(self, path: str, body: dict, model: str) -> Iterator[TextGenerationToken]:
        for event in self.http.stream_sse("POST", path, json_body=body, model=model,
                                          headers={"Accept": "text/event-stream"}):
            try:
                obj = json.loads(event.data)
            except ValueError:
                raise self._malformed(f"stream event is not JSON: {event.data[:120]!r}", path,
                                      model) from None
            if not isinstance(obj, dict):
                raise self._malformed("stream event is not an object", path, model)
            if "error" in obj:
                err = HttpRequestFailed(
                    f"huggingface stream reported an error: {self.http.redact(str(obj['error']))}")
                err.context = ErrorContext.api_error(err, BACKEND, path, None, model)
                raise err
            tok = obj.get("token")
            if not isinstance(tok, dict) or not isinstance(tok.get("text"), str):
                raise self._malformed("stream event has no token text", path, model)
            final = obj.get("generated_text")
            yield TextGenerationToken(text=tok["text"], id=tok.get("id"),
                                      special=bool(tok.get("special", False)),
                                      generated_text=final if isinstance(final, str) else None,
                                      details=obj.get("details"))
            if isinstance(final, str):
                return
        raise self.http.interrupted(path, "the stream ended before its final event "
                                          "(the one with generated_text)", model)

    def feature_extraction(self, inputs: str | Sequence[str], model: str | None = None, *,
                           normalize: bool | None = None, truncate: bool | None = None,
                           prompt_name: str | None = None) -> np.ndarray:
        """Embeddings as float32: (dim,) for one sentence-embedding input, (n, dim) for a list;
        models without pooling give per-token vectors, one axis more."""
        model = self._model(model)
        if isinstance(inputs, str):
            if not inputs:
                raise InvalidRequestError("feature extraction needs non-empty input")
        elif not inputs or not all(isinstance(t, str) for t in inputs):
            raise InvalidRequestError("feature extraction needs a string or a list of strings")
        body = {"inputs": inputs if isinstance(inputs, str) else list(inputs),
                **({"normalize": normalize} if normalize is not None else {}),
                **({"truncate": truncate} if truncate is not None else {}),
                **({"prompt_name": prompt_name} if prompt_name is not None else {})}
        if self.wait_for_model:
            body["options"] = {"wait_for_model": True}
        path = self._path(model, "feature-extraction")
        obj = self.http.json("POST", path, json_body=body, model=model)
        try:
            arr = np.asarray(obj, dtype=np.float32)
        except (TypeError, ValueError):
            raise self._malformed("feature extraction reply is not a rectangular array of "
                                  "numbers", path, model) from None
        if arr.ndim == 0 or arr.size == 0:
            raise self._malformed("feature extraction reply is empty", path, model)
        return arr

    def _malformed(self, what: str, path: str, model: str | None) -> MalformedResponse:
        return self.http.malformed(path, what, model)
