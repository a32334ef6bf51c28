"""``python -m abi serve`` through the official ``openai`` client: models, chat (plain,
streamed, logprobs, seeds, logit bias, stop strings), completions, embeddings and errors.
One server per module; generations stay a few tokens long."""
from __future__ import annotations

import base64

import numpy as np
import pytest
import requests

import openai

from serve_helpers import openai_client, serve

pytestmark = pytest.mark.model
MODEL = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
HI = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def server(default_model_path):
    with serve("--model", default_model_path, "--embedding-model", "default") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with openai_client(server) as c:
        yield c


@pytest.fixture(scope="module")
def engine(default_model_path):
    from abi.llm import Engine

    return Engine().load_model(default_model_path)


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL, EMBED]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_is_the_library_generation(client, engine):
    r = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=6, temperature=0)
    want = engine.chat(HI, max_tokens=6, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want
    assert r.choices[0].finish_reason == "length"
    n_prompt = engine.count_chat_tokens(HI)
    assert r.usage.prompt_tokens == n_prompt and r.usage.completion_tokens == 6
    assert r.usage.total_tokens == n_prompt + 6


def test_chat_stream_chunks_usage_and_prefix_cache(client):
    plain = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=6, temperature=0)
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=HI, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == 6
    # the same prompt again: all but its last token come from the slot's cache
    assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1


def test_max_completion_tokens_and_stop(client):
    r = client.chat.completions.create(model=MODEL, messages=HI, max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=8, temperature=0,
                                  stop=[","])
    assert r.choices[0].finish_reason == "stop" and "," not in r.choices[0].text
    assert r.choices[0].text.strip().isdigit()


def test_seed_reproduces_and_n_gives_indexed_choices(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
              max_tokens=6, temperature=1.0, top_p=1.0, seed=1234)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    many = client.chat.completions.create(**{**kw, "n": 3})
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert many.choices[0].message.content == a.choices[0].message.content  # choice 0 keeps the seed
    assert 3 <= many.usage.completion_tokens <= 18  # usage covers every choice


def test_logit_bias_forces_a_token(client, server):
    tid = requests.post(server.url + "/tokenize", json={"content": " banana"}, timeout=10).json()["tokens"]
    assert len(tid) == 1
    r = client.completions.create(model=MODEL, prompt="I like", max_tokens=3, temperature=0,
                                  logit_bias={str(tid[0]): 100})
    assert r.choices[0].text == " banana" * 3


def test_ignore_eos_generates_past_the_end_of_sequence_token(client, default_model_path):
    from abi.gguf import load

    eos = load(default_model_path).metadata["tokenizer.ggml.eos_token_id"]
    forced = dict(model=MODEL, messages=HI, max_tokens=5, temperature=0, logit_bias={str(eos): 100})
    r = client.chat.completions.create(**forced)
    assert r.choices[0].message.content == "" and r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(**forced, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=4, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    assert "".join(e.token for e in content) == r.choices[0].message.content
    for e in content:
        tops = [t.logprob for t in e.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and tops[0] <= 0
        assert e.top_logprobs[0].token == e.token and e.logprob == pytest.approx(tops[0])  # greedy
        assert bytes(e.bytes).decode() == e.token
    bare = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, temperature=0,
                                          logprobs=True)
    assert all(e.top_logprobs == [] for e in bare.choices[0].logprobs.content)


def test_completions_prompts_echo_logprobs(client, engine):
    r = client.completions.create(model=MODEL, prompt=["The sky is", "Water is"], max_tokens=4,
                                  temperature=0, n=2, echo=True, logprobs=2)
    assert r.object == "text_completion" and [c.index for c in r.choices] == [0, 1, 2, 3]
    sky = engine.generate("The sky is", max_tokens=4, temperature=0)
    assert r.choices[0].text == r.choices[1].text == "The sky is" + sky
    assert r.choices[2].text.startswith("Water is")
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == sky and len(lp.token_logprobs) == 4
    assert lp.text_offset[0] == len("The sky is") and all(len(t) <= 2 for t in lp.top_logprobs)
    ids = engine.model.tokenize("The sky is")
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=4, temperature=0)
    assert by_ids.choices[0].text == sky


def test_completions_stream(client):
    chunks = list(client.completions.create(model=MODEL, prompt="The sky is", max_tokens=4,
                                            temperature=0, stream=True))
    plain = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=4, temperature=0)
    assert "".join(c.choices[0].text for c in chunks) == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_embeddings_float_base64_and_dimensions(client, server):
    from abi.embeddings import Encoder

    texts = ["The cat sat on the mat.", "Stock markets fell today."]
    got = client.embeddings.create(model=EMBED, input=texts)  # the client asks for base64
    assert [d.index for d in got.data] == [0, 1] and got.model == EMBED
    vecs = np.array([d.embedding for d in got.data])
    want = Encoder().encode_batch(texts)
    np.testing.assert_allclose(vecs, want, atol=1e-6)
    assert got.usage.prompt_tokens > 0
    as_float = requests.post(server.url + "/v1/embeddings", timeout=30,
                             json={"model": EMBED, "input": texts[0], "encoding_format": "float"}).json()
    np.testing.assert_allclose(as_float["data"][0]["embedding"], want[0], atol=1e-6)
    raw = requests.post(server.url + "/v1/embeddings", timeout=30,
                        json={"model": EMBED, "input": texts[0], "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4")
    np.testing.assert_allclose(decoded, want[0], atol=1e-6)
    short = client.embeddings.create(model=EMBED, input="hello", dimensions=16)
    assert len(short.data[0].embedding) == 16
    assert np.linalg.norm(short.data[0].embedding) == pytest.approx(1.0, abs=1e-5)


def test_errors_in_openai_shape(client, server):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=2)
    assert exc.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt="word " * 9000, max_tokens=2)
    assert exc.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=MODEL, messages=HI, temperature=3)
    assert exc.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=MODEL, messages=HI, logit_bias={"99999999": 5})
    assert exc.value.body["param"] == "logit_bias"
    for name in (MODEL, "text-embedding-3-small"):  # the LLM is not the embedding model
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model=name, input="x")
    bad = requests.post(server.url + "/v1/chat/completions", data=b"{not json",
                        headers={"Content-Type": "application/json"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    missing = requests.get(server.url + "/v1/nothing-here", timeout=10)
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_image_parts_and_empty_prompts_are_refused_by_the_schema(server):
    """What the spec allows, the routes take: content parts are text only and a prompt is
    never empty, so those refusals are schema errors (400) naming the field."""
    import requests

    image = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:,"}}]}]}
    r = requests.post(server.url + "/v1/chat/completions", json=image, timeout=30)
    assert r.status_code == 400 and "type" in r.json()["error"]["message"]
    r = requests.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": ""}, timeout=30)
    assert r.status_code == 400 and "prompt" in r.json()["error"]["message"]
