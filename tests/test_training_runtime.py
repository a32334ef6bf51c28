"""Training against the real runtime and the default model: tokenising with the model's
tokenizer, exported GGUFs that abi.llm runs (same logits, generated text), and fine-tuning
a dequantised copy of the default model."""
from __future__ import annotations

import numpy as np
import pytest

from abi.cli import main as cli_main
from abi.training import LlmTrainingConfig
from abi.training.datasets import read_tokenbin
from abi.training.gguf_export import load_llama_gguf
from abi.training.llm_trainer import train_llm

pytestmark = pytest.mark.model

TEXT = ("The quick brown fox jumps over the lazy dog. "
        "Pack my box with five dozen liquor jugs. "
        "How vexingly quick daft zebras jump!\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, default_model_path):
    d = tmp_path_factory.mktemp("corpus")
    (d / "text.txt").write_text(TEXT * 3, encoding="utf-8")
    assert cli_main(["convert", "tokenize", "--model", default_model_path, "--input",
                     str(d / "text.txt"), "--output", str(d / "data.bin")]) == 0
    return d


def test_convert_tokenize_uses_the_models_tokenizer(corpus, default_model_path):
    import abi.gguf
    from abi.llm.tokenizer import Tokenizer

    tb = read_tokenbin(corpus / "data.bin")
    assert tb.dtype == np.uint16  # 49152-token vocabulary fits 16 bits
    tok = Tokenizer.from_gguf(abi.gguf.load(default_model_path))
    assert tb.tokens.tolist() == tok.encode(TEXT * 3)
    assert tok.decode(tb.tokens.tolist()) == TEXT * 3


@pytest.fixture(scope="module")
def memorised(corpus, default_model_path):
    """A tiny model trained from scratch until it has memorised the corpus, exported."""
    cfg = LlmTrainingConfig(data_path=str(corpus / "data.bin"), vocab_from=default_model_path,
                            n_layer=2, n_embd=64, n_head=4, n_ff=128, seq_len=16,
                            context_length=64, batch_size=4, steps=80, learning_rate=1e-2,
                            tie_embeddings=True, export_gguf_path=str(corpus / "m-f32.gguf"))
    return train_llm(cfg)


def test_abi_runtime_computes_what_the_trainer_computes(memorised, corpus):
    import abi.llm

    model = abi.llm.load_model(memorised.export_path)
    ids = [int(i) for i in read_tokenbin(corpus / "data.bin").tokens[:20]]
    ours = memorised.model.forward(np.array([ids]))[0]
    theirs = model.logits(ids)
    np.testing.assert_allclose(theirs, ours, atol=1e-4 * np.abs(ours).max())


@pytest.mark.parametrize("export_type", ["f32", "q8_0"])
def test_exported_model_generates_the_learned_text_in_abi(memorised, corpus, default_model_path,
                                                         export_type):
    import abi.llm
    from abi.training.gguf_export import export_gguf

    path = export_gguf(corpus / f"m-{export_type}.gguf", memorised.model, default_model_path,
                       export_type)
    assert memorised.final_loss < 0.5, memorised.losses[-5:]
    out = abi.llm.load_model(str(path)).generate("The quick brown fox", max_tokens=8,
                                                 temperature=0)
    assert out.startswith(" jumps over the lazy dog"), out


def test_fine_tune_the_default_model(tmp_path, default_model_path, corpus):
    toks = read_tokenbin(corpus / "data.bin").tokens[:17]
    from abi.training.datasets import write_tokenbin

    data = write_tokenbin(tmp_path / "one.bin", toks)  # one window: every step sees it
    base, _ = load_llama_gguf(default_model_path)
    assert base.config.n_layer == 30 and base.config.tie_embeddings
    before = base.loss(np.array([toks[:-1]]), np.array([toks[1:]]))
    r = train_llm(LlmTrainingConfig(data_path=str(data), init_gguf=default_model_path, steps=2,
                                    seq_len=16, batch_size=1, optimizer="sgd",
                                    learning_rate=0.05, lr_schedule="constant"))
    assert r.losses[0] == pytest.approx(before, rel=1e-5)  # starts from the model itself
    assert r.model.loss(np.array([toks[:-1]]), np.array([toks[1:]])) < r.losses[1] < r.losses[0]
