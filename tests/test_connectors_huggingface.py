"""HuggingFace Inference API connector against a fake (real HTTP, TGI-style streams)."""
from __future__ import annotations

import numpy as np
import pytest

from abi.connectors.http import RetryPolicy
from abi.connectors.huggingface import HuggingFaceClient
from abi.errors import (
    AuthenticationError, ConfigError, HttpRequestFailed, InvalidRequestError, ModelNotFound,
    StreamInterrupted,
)
from fake_providers import HF_TOKEN, FakeHuggingFace, with_server

FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02, retry_after_max=1.0)
GEN = "HuggingFaceTB/SmolLM2-1.7B-Instruct"
EMB = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def fake():
    yield from with_server(FakeHuggingFace)


@pytest.fixture
def client(fake):
    return HuggingFaceClient(token=HF_TOKEN, base_url=fake.url, retry=FAST)


def test_text_generation(client, fake):
    r = client.text_generation("User: hi\n\nAssistant:", GEN, max_new_tokens=50,
                               temperature=0.5, top_p=0.9, stop=["\nUser:"], do_sample=True)
    assert r.generated_text == " I heard: hi\nUser:"  # the stop text stays, as with TGI
    sent = fake.requests[-1]
    assert sent.path == f"/models/{GEN}"
    assert sent.json == {"inputs": "User: hi\n\nAssistant:",
                         "parameters": {"max_new_tokens": 50, "temperature": 0.5, "top_p": 0.9,
                                        "stop": ["\nUser:"], "do_sample": True,
                                        "return_full_text": False},
                         "options": {"wait_for_model": True}}


def test_text_generation_stream(client):
    toks = list(client.text_generation_stream("User: yo\n\nAssistant:", GEN, stop=["\nUser:"]))
    assert "".join(t.text for t in toks) == toks[-1].generated_text == " I heard: yo\nUser:"
    assert all(t.generated_text is None for t in toks[:-1]) and len(toks) > 2


def test_model_loading_503_is_waited_out(client, fake):
    fake.loading_times = 2
    assert client.text_generation("x", GEN).generated_text.startswith(" I heard")
    assert len(fake.requests) == 3


def test_feature_extraction(client, fake):
    one = client.feature_extraction("abc", EMB)
    assert one.dtype == np.float32 and one.tolist() == [3.0, 1.0, -2.0]
    many = client.feature_extraction(["a", "abcd"], EMB)
    assert many.shape == (2, 3) and many[:, 0].tolist() == [1.0, 4.0]
    assert fake.requests[-1].path == f"/models/{EMB}/pipeline/feature-extraction"
    with pytest.raises(InvalidRequestError):
        client.feature_extraction([], EMB)


def test_errors(client, fake):
    with pytest.raises(ModelNotFound):
        client.text_generation("x", "nobody/nothing")
    bad = HuggingFaceClient(token="hf_wrongwrongwrong123", base_url=fake.url, retry=FAST)
    with pytest.raises(AuthenticationError) as ei:
        bad.text_generation("x", GEN)
    assert "hf_wrongwrongwrong123" not in str(ei.value)
    fake.stream_mode = "error"
    with pytest.raises(HttpRequestFailed) as ei:
        list(client.text_generation_stream("x", GEN))
    assert "Input validation error" in str(ei.value)
    fake.stream_mode = "no_final"
    with pytest.raises(StreamInterrupted):
        list(client.text_generation_stream("x", GEN))


def test_configuration(monkeypatch, fake):
    monkeypatch.delenv("ABI_HF_API_TOKEN", raising=False)
    monkeypatch.delenv("ABI_HF_BASE_URL", raising=False)
    monkeypatch.delenv("ABI_HF_MODEL", raising=False)
    with pytest.raises(ConfigError) as ei:
        HuggingFaceClient()
    assert ei.value.field == "ABI_HF_API_TOKEN"
    monkeypatch.setenv("ABI_HF_API_TOKEN", HF_TOKEN)
    monkeypatch.setenv("ABI_HF_BASE_URL", fake.url)
    c = HuggingFaceClient(retry=FAST)
    with pytest.raises(ConfigError) as ei:
        c.text_generation("x")
    assert ei.value.field == "ABI_HF_MODEL"
    monkeypatch.setenv("ABI_HF_MODEL", GEN)
    assert HuggingFaceClient(retry=FAST).text_generation("x").text
    assert HF_TOKEN not in repr(c)
