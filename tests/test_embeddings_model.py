"""The real all-MiniLM-L6-v2 (fetched and converted on first use) against reference vectors
made once by tools/make_embedding_reference.py: sentence-transformers on the Hugging Face
model, and llama.cpp on the GGUF our converter writes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from abi.embeddings import Encoder
from abi.errors import ConfigError, ContextLengthExceeded, InvalidRequestError

pytestmark = pytest.mark.model

FIXTURES = Path(__file__).parent / "fixtures" / "embeddings"
MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def reference():
    record = json.loads((FIXTURES / "minilm_reference.json").read_text(encoding="utf-8"))
    vectors = np.load(FIXTURES / "minilm_reference.npz")
    return record, vectors["sentence_transformers"], vectors["llamacpp"]


@pytest.fixture(scope="module")
def encoder():
    return Encoder()  # the default model, all-minilm-l6-v2


def test_default_model_is_minilm(encoder):
    assert encoder.path.endswith("all-minilm-l6-v2.gguf")
    assert encoder.dimension == 384 and encoder.pooling == "mean" and encoder.normalize


def test_token_ids_match_the_hf_tokenizer(encoder, reference):
    record, _, _ = reference
    assert encoder.tokenize(record["sentences"]) == record["hf_ids"]


@pytest.fixture(scope="module")
def reference_vectors(encoder, reference):
    return encoder.encode_batch(reference[0]["sentences"])


def test_fidelity_against_sentence_transformers(reference_vectors, reference):
    record, st, _ = reference
    cos = np.sum(reference_vectors * st, axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= MIN_COSINE, (cos.min(), record["sentences"][worst])


def test_fidelity_against_llama_cpp(reference_vectors, reference):
    record, _, lc = reference
    # llama.cpp tokenises two sentences differently by design (no 100-character word limit,
    # "[SEP]" typed in text stays text): compare where the ids agree, and require that
    # those two are the only ones left out
    same = [i for i, (a, b) in enumerate(zip(record["hf_ids"], record["llamacpp_ids"])) if a == b]
    assert len(same) == len(record["sentences"]) - 2
    cos = np.sum(reference_vectors[same] * lc[same], axis=1)
    assert cos.min() >= MIN_COSINE


def test_encode_matches_encode_batch_and_batch_sizes(encoder, reference, reference_vectors):
    record, _, _ = reference
    texts = record["sentences"][:12]
    batch = reference_vectors[:12]
    small = Encoder(encoder.path, batch_size=5).encode_batch(texts)
    np.testing.assert_allclose(small, batch, atol=1e-5)
    one = encoder.encode(texts[3])
    assert one.shape == (384,) and one.dtype == np.float32
    np.testing.assert_allclose(one, batch[3], atol=1e-5)


def test_semantics(encoder):
    a, b, c = encoder.encode_batch(["A man is eating food.", "A man is eating a piece of bread.",
                                    "The stock market fell sharply on Monday."])
    assert a @ b > 0.6 > a @ c


def test_unnormalized_and_pooling_override(encoder):
    raw = Encoder(encoder.path, normalize=False).encode("Hello, world!")
    assert abs(np.linalg.norm(raw) - 1) > 0.05
    np.testing.assert_allclose(raw / np.linalg.norm(raw), encoder.encode("Hello, world!"), atol=1e-5)
    cls = Encoder(encoder.path, pooling="cls").encode("Hello, world!")
    assert abs(cls @ encoder.encode("Hello, world!")) < 0.999


def test_truncation_is_never_silent(encoder):
    long_text = "word " * 600
    with pytest.raises(ContextLengthExceeded, match="truncate=True"):
        encoder.encode(long_text)
    trunc = Encoder(encoder.path, truncate=True)
    ids = trunc.tokenize([long_text])[0]
    assert len(ids) == 512 and ids[0] == 101 and ids[-1] == 102
    short = Encoder(encoder.path, truncate=True, max_tokens=256)
    assert len(short.tokenize([long_text])[0]) == 256
    v = trunc.encode(long_text)
    assert np.isfinite(v).all() and abs(np.linalg.norm(v) - 1) < 1e-5


def test_bad_arguments(encoder):
    with pytest.raises(InvalidRequestError):
        encoder.encode(["not", "a", "str"])
    with pytest.raises(InvalidRequestError):
        encoder.encode_batch("a single string")
    with pytest.raises(InvalidRequestError):
        encoder.encode_batch(["ok", 3])
    with pytest.raises(ConfigError):
        Encoder(encoder.path, batch_size=0)
    with pytest.raises(ConfigError):
        Encoder(encoder.path, pooling="max")
    with pytest.raises(ConfigError):
        Encoder(encoder.path, max_tokens=513)
    empty = encoder.encode("")
    assert np.isfinite(empty).all()


def test_decoder_model_serves_embeddings(default_model_path):
    texts = ["The cat sat.", "Rates rose."]
    enc = Encoder(default_model_path, normalize=False)
    model = enc._backend.model
    assert enc.pooling == "mean" and enc.dimension == model.args.n_embd
    hidden = [model.hidden_states(model.tokenize(t)) for t in texts]  # (T, D) each
    # mean and last-token pooling of the model's own final-norm states, in text order
    np.testing.assert_allclose(enc.encode_batch(texts), [h.mean(axis=0) for h in hidden], atol=1e-4)
    enc.pooling = "last"
    np.testing.assert_allclose(enc.encode_batch(texts), [h[-1] for h in hidden], atol=1e-4)
