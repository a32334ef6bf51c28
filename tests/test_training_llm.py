"""LLM training: llama forward/backward against finite differences, learning, resumable
checkpoints, TensorBoard/W&B logs read back with their own libraries, GGUF export/import."""
from __future__ import annotations

import glob
import struct

import numpy as np
import pytest

from abi.cli import main as cli_main
from abi.errors import CheckpointError, ConfigError, DatasetError, UnsupportedModelError
from abi.gguf import GGMLType, GGUFValueType, GGUFWriter
from abi.gguf import load as load_gguf
from abi.training import LlmTrainingConfig, load_checkpoint, load_llm_checkpoint
from abi.training.datasets import write_tokenbin
from abi.training.gguf_export import export_gguf, load_llama_gguf
from abi.training.llama import LlamaConfig, LlamaModel, init_params, param_shapes
from abi.training.llm_trainer import evaluate_loss, train_llm

N_VOCAB = 64


@pytest.fixture(scope="module")
def vocab_gguf(tmp_path_factory):
    """A GGUF holding only a 64-token tokenizer (what --vocab-from reads)."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.gguf"
    w = GGUFWriter(path)
    w.add_metadata("general.architecture", "llama")
    w.add_metadata("tokenizer.ggml.model", "gpt2")
    w.add_metadata("tokenizer.ggml.tokens", [f"t{i}" for i in range(N_VOCAB)])
    w.add_metadata("tokenizer.ggml.token_type", [1] * N_VOCAB, GGUFValueType.INT32)
    w.add_metadata("tokenizer.ggml.bos_token_id", 1, GGUFValueType.UINT32)
    w.write()
    return str(path)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """A learnable stream: groups of 4 tokens, three of them determined by the first."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 8, 3000)
    seq = np.stack([a, a + 8, a + 16, (a * 3) % 8 + 24], axis=1).reshape(-1)
    return str(write_tokenbin(tmp_path_factory.mktemp("data") / "toy.bin", seq))


def _small(vocab, data, **kw):
    base = dict(data_path=data, vocab_from=vocab, n_layer=2, n_embd=32, n_head=4, n_head_kv=2,
                seq_len=16, batch_size=4, steps=30, learning_rate=3e-3)
    base.update(kw)
    return LlmTrainingConfig(**base)


# --- the model ------------------------------------------------------------------------------

@pytest.mark.parametrize("tie,n_head_kv", [(False, 2), (True, 4), (False, 1)])
def test_llama_gradients_match_finite_differences(tie, n_head_kv):
    cfg = LlamaConfig(n_vocab=11, n_embd=8, n_layer=2, n_head=4, n_head_kv=n_head_kv, n_ff=12,
                      context_length=8, rope_freq_base=100.0, tie_embeddings=tie)
    rng = np.random.default_rng(1)
    params = {k: v.astype(np.float64) + rng.standard_normal(v.shape) * 0.3
              for k, v in init_params(cfg, rng).items()}
    model = LlamaModel(cfg, params)
    x, y = rng.integers(0, 11, (2, 5)), rng.integers(0, 11, (2, 5))
    loss, grads = model.loss_and_grads(x, y)
    assert loss == pytest.approx(model.loss(x, y), rel=1e-12)
    eps = 1e-6
    for name, p in params.items():
        flat = p.reshape(-1)
        # every entry of small tensors, a sample of the larger ones
        idx = range(flat.size) if flat.size <= 48 else rng.choice(flat.size, 48, replace=False)
        for i in idx:
            old = flat[i]
            flat[i] = old + eps
            lp = model.loss(x, y)
            flat[i] = old - eps
            lm = model.loss(x, y)
            flat[i] = old
            num = (lp - lm) / (2 * eps)
            assert grads[name].reshape(-1)[i] == pytest.approx(num, rel=1e-5, abs=1e-8), (name, i)


def test_rope_rotates_adjacent_pairs_like_llama_cpp_normal_mode():
    # one head, hd=4, position 1: pair (x0, x1) turns by theta_0 = 1, (x2, x3) by base^(-1/2)
    from abi.training.llama import _rope, rope_tables

    cfg = LlamaConfig(n_vocab=4, n_embd=4, n_layer=1, n_head=1, n_head_kv=1, n_ff=4,
                      rope_freq_base=100.0)
    cos, sin = rope_tables(cfg, 2, np.float64)
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4).repeat(2, axis=2)
    out = _rope(x, cos, sin)[0, 0]
    np.testing.assert_allclose(out[0], [1, 2, 3, 4])  # position 0 is unrotated
    t0, t1 = 1.0, 100.0 ** -0.5
    expect = [np.cos(t0) - 2 * np.sin(t0), np.sin(t0) + 2 * np.cos(t0),
              3 * np.cos(t1) - 4 * np.sin(t1), 3 * np.sin(t1) + 4 * np.cos(t1)]
    np.testing.assert_allclose(out[1], expect, rtol=1e-12)
    np.testing.assert_allclose(_rope(_rope(x, cos, sin), cos, sin, inverse=True), x, atol=1e-12)


def test_causal_attention_ignores_the_future():
    cfg = LlamaConfig(n_vocab=20, n_embd=16, n_layer=2, n_head=2, n_head_kv=1, n_ff=24,
                      context_length=8)
    model = LlamaModel(cfg, init_params(cfg, np.random.default_rng(0)))
    a = model.forward(np.array([[1, 2, 3, 4, 5]]))
    b = model.forward(np.array([[1, 2, 3, 9, 9]]))
    np.testing.assert_allclose(a[0, :3], b[0, :3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[0, 3], b[0, 3])


def test_model_rejects_bad_tokens_and_shapes():
    cfg = LlamaConfig(n_vocab=10, n_embd=8, n_layer=1, n_head=2, n_head_kv=2, n_ff=8,
                      context_length=4)
    model = LlamaModel(cfg, init_params(cfg, np.random.default_rng(0)))
    with pytest.raises(ConfigError, match="token ids"):
        model.forward(np.array([[1, 10]]))
    with pytest.raises(ConfigError, match="context length"):
        model.forward(np.zeros((1, 5), int))
    with pytest.raises(ConfigError):
        LlamaConfig(n_vocab=10, n_embd=9, n_layer=1, n_head=2, n_head_kv=2, n_ff=8).validate()
    bad = init_params(cfg, np.random.default_rng(0))
    bad.pop("output.weight")
    with pytest.raises(ConfigError, match="missing"):
        LlamaModel(cfg, bad)


# --- training -------------------------------------------------------------------------------

def test_loss_falls_from_scratch(vocab_gguf, toy_data):
    from abi.training.datasets import read_tokenbin

    cfg = _small(vocab_gguf, toy_data, steps=40)
    r = train_llm(cfg)
    assert r.steps == 40 and len(r.losses) == 40
    assert r.losses[0] == pytest.approx(np.log(N_VOCAB), rel=0.05)  # starts near uniform
    assert r.final_loss < 0.6 * r.losses[0]
    assert r.perplexity == pytest.approx(np.exp(r.final_loss))
    assert r.tokens_per_second > 0 and r.n_params == r.model.n_params
    held = read_tokenbin(toy_data).tokens[-400:]
    assert evaluate_loss(r.model, held, 16) < 0.7 * np.log(N_VOCAB)


def test_gradient_accumulation_and_every_optimizer(vocab_gguf, toy_data):
    for opt, lr in [("sgd", 0.3), ("adam", 3e-3)]:
        r = train_llm(_small(vocab_gguf, toy_data, steps=12, optimizer=opt, learning_rate=lr,
                             gradient_accumulation_steps=2, lr_schedule="cosine"))
        assert np.mean(r.losses[-3:]) < r.losses[0]


def test_llm_resume_is_bit_identical(vocab_gguf, toy_data, tmp_path):
    kw = dict(steps=9, checkpoint_interval=3, max_checkpoints=5, tie_embeddings=True)
    full = train_llm(_small(vocab_gguf, toy_data, checkpoint_path=str(tmp_path / "a/m.ckpt"), **kw))
    assert len(full.checkpoints) == 3

    class Stop(Exception):
        pass

    def stop(step, metrics):
        if step == 5:
            raise Stop

    with pytest.raises(Stop):
        train_llm(_small(vocab_gguf, toy_data, checkpoint_path=str(tmp_path / "b/m.ckpt"), **kw),
                  on_step=stop)
    ck = load_llm_checkpoint(tmp_path / "b/m.ckpt")
    assert ck.step == 3 and ck.model_config.tie_embeddings
    assert set(ck.optimizer_state[0]) == {f"{s}/{k}" for s in ("m", "v") for k in ck.weights}
    resumed = train_llm(resume_from=str(tmp_path / "b/m.ckpt"))
    assert resumed.resumed_from.endswith("m-00000003.ckpt")
    assert resumed.losses == full.losses
    for k, v in full.model.params.items():
        assert resumed.model.params[k].tobytes() == v.tobytes(), k
    with pytest.raises(CheckpointError, match="load_checkpoint"):
        load_llm_checkpoint(_mlp_checkpoint(tmp_path))
    with pytest.raises(CheckpointError, match="load_llm_checkpoint"):
        load_checkpoint(ck.path)


def _mlp_checkpoint(tmp_path):
    from abi.training import TrainingConfig, train

    r = train(TrainingConfig(epochs=1, sample_count=32, checkpoint_path=str(tmp_path / "mlp.ckpt")))
    return r.checkpoints[-1]


def test_bad_llm_inputs_are_clear_errors(vocab_gguf, toy_data, tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        train_llm(LlmTrainingConfig(data_path=toy_data))
    with pytest.raises(ConfigError, match="log_dir"):
        train_llm(_small(vocab_gguf, toy_data, enable_tensorboard=True))
    short = write_tokenbin(tmp_path / "short.bin", [1, 2, 3])
    with pytest.raises(DatasetError, match="seq_len"):
        train_llm(_small(vocab_gguf, str(short)))
    wide = write_tokenbin(tmp_path / "wide.bin", np.arange(100) + 1000)
    with pytest.raises(DatasetError, match="vocabulary"):
        train_llm(_small(vocab_gguf, str(wide)))
    with pytest.raises(ConfigError, match="context"):
        train_llm(_small(vocab_gguf, toy_data, context_length=8, seq_len=16))


# --- logging, read back with the libraries' own readers ----------------------------------

def test_tensorboard_scalars_read_back(vocab_gguf, toy_data, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator
    r = train_llm(_small(vocab_gguf, toy_data, steps=6, log_dir=str(tmp_path / "logs"),
                         enable_tensorboard=True))
    acc = event_accumulator.EventAccumulator(str(tmp_path / "logs"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/perplexity", "train/tokens_per_second", "train/grad_norm",
            "train/lr"} <= tags
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 7))
    np.testing.assert_allclose([e.value for e in loss], r.losses, rtol=1e-6)
    ppl = acc.Scalars("train/perplexity")
    np.testing.assert_allclose([e.value for e in ppl], np.exp(r.losses), rtol=1e-5)


def _wandb_records(path):
    """Records of a W&B ``.wandb`` file: a 7-byte W&B header, then the LevelDB log framing
    (32 KiB blocks of [crc32c u32, length u16, type u8] chunks) around protobuf ``Record``s,
    decoded with wandb's own protobuf classes. (wandb no longer ships a Python reader.)"""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, out, partial = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack_from("<IHB", data, pos)
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            out.append(partial + chunk)
    records = []
    for raw in out:
        rec = pb.Record()
        rec.ParseFromString(raw)
        records.append(rec)
    return records


def test_wandb_offline_run_files(vocab_gguf, toy_data, tmp_path):
    import json

    r = train_llm(_small(vocab_gguf, toy_data, steps=4, log_dir=str(tmp_path / "logs"),
                         enable_wandb=True))
    runs = glob.glob(str(tmp_path / "logs" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(runs) == 1
    history = [rec.history for rec in _wandb_records(runs[0]) if rec.HasField("history")]
    logged = []
    for h in history:
        items = {it.key or "/".join(it.nested_key): json.loads(it.value_json) for it in h.item}
        if "train/loss" in items:
            logged.append((items["_step"], items["train/loss"]))
    assert [s for s, _ in logged] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in logged], r.losses, rtol=1e-6)


# --- GGUF export and import -----------------------------------------------------------------

def test_export_f32_round_trips_exactly(vocab_gguf, toy_data, tmp_path):
    r = train_llm(_small(vocab_gguf, toy_data, steps=3,
                         export_gguf_path=str(tmp_path / "m.gguf")))
    gf = load_gguf(r.export_path)
    assert gf.architecture == "llama"
    md = gf.metadata
    assert md["llama.embedding_length"] == 32 and md["llama.block_count"] == 2
    assert md["llama.attention.head_count"] == 4 and md["llama.attention.head_count_kv"] == 2
    assert md["llama.feed_forward_length"] == 128 and md["llama.rope.dimension_count"] == 8
    assert md["llama.context_length"] == 16 and md["general.file_type"] == 0
    assert md["tokenizer.ggml.tokens"] == [f"t{i}" for i in range(N_VOCAB)]
    assert gf.metadata_types["tokenizer.ggml.token_type"] == (GGUFValueType.ARRAY,
                                                              GGUFValueType.INT32)
    assert set(gf.tensors) == set(param_shapes(r.model.config))
    assert gf.tensors["blk.1.ffn_down.weight"].shape == (32, 128)
    model, _ = load_llama_gguf(r.export_path)
    assert model.config == r.model.config
    for k, v in r.model.params.items():
        np.testing.assert_array_equal(model.params[k], v)


@pytest.mark.parametrize("kind,tol", [("f16", 2e-3), ("q8_0", 2e-2)])
def test_export_f16_and_q8_0(vocab_gguf, tmp_path, kind, tol):
    cfg = LlamaConfig(n_vocab=N_VOCAB, n_embd=64, n_layer=1, n_head=4, n_head_kv=4, n_ff=96,
                      context_length=32)
    model = LlamaModel(cfg, init_params(cfg, np.random.default_rng(0)))
    path = export_gguf(tmp_path / f"m-{kind}.gguf", model, vocab_gguf, kind)
    gf = load_gguf(path)
    want = {"f16": GGMLType.F16, "q8_0": GGMLType.Q8_0}[kind]
    assert gf.tensors["blk.0.attn_q.weight"].ggml_type == want
    assert gf.tensors["blk.0.attn_norm.weight"].ggml_type == GGMLType.F32
    if kind == "q8_0":  # rows of 96 are 3 blocks; no fallback needed
        assert gf.tensors["blk.0.ffn_down.weight"].ggml_type == GGMLType.Q8_0
        assert gf.metadata["general.file_type"] == 7
    back, _ = load_llama_gguf(path)
    for k, v in model.params.items():
        np.testing.assert_allclose(back.params[k], v, atol=tol * np.abs(v).max())
    x = np.random.default_rng(1).integers(0, N_VOCAB, (1, 12))
    np.testing.assert_allclose(back.forward(x), model.forward(x), atol=5e-3)


def test_export_checks_the_vocabulary(vocab_gguf, tmp_path):
    cfg = LlamaConfig(n_vocab=N_VOCAB + 1, n_embd=8, n_layer=1, n_head=2, n_head_kv=2, n_ff=8)
    model = LlamaModel(cfg, init_params(cfg, np.random.default_rng(0)))
    with pytest.raises(ConfigError, match="tokens"):
        export_gguf(tmp_path / "x.gguf", model, vocab_gguf)
    with pytest.raises(ConfigError):
        export_gguf(tmp_path / "x.gguf", model, vocab_gguf, "q4_0")


def test_fine_tune_from_an_exported_gguf(vocab_gguf, toy_data, tmp_path):
    first = train_llm(_small(vocab_gguf, toy_data, steps=10, export_gguf_path=str(tmp_path / "a.gguf")))
    tuned = train_llm(LlmTrainingConfig(data_path=toy_data, init_gguf=first.export_path,
                                        steps=10, seq_len=16, batch_size=4, learning_rate=3e-3,
                                        lr_schedule="constant",
                                        export_gguf_path=str(tmp_path / "b.gguf")))
    # it continues from the exported weights, not from scratch
    assert tuned.losses[0] < first.losses[0] - 0.3
    assert np.mean(tuned.losses[-3:]) < np.mean(first.losses[-3:])
    assert load_gguf(tuned.export_path).metadata["tokenizer.ggml.tokens"][5] == "t5"


def test_non_llama_gguf_is_refused(vocab_gguf, tmp_path):
    w = GGUFWriter(tmp_path / "bert.gguf")
    w.add_metadata("general.architecture", "bert")
    w.write()
    with pytest.raises(UnsupportedModelError, match="llama"):
        load_llama_gguf(tmp_path / "bert.gguf")


def test_train_llm_cli_with_tensorboard_checkpoints_and_export(vocab_gguf, toy_data, tmp_path,
                                                              capsys):
    args = ["train", "llm", "--data", toy_data, "--vocab-from", vocab_gguf, "--n-layer", "1",
            "--n-embd", "32", "--n-head", "4", "--n-ff", "64", "--steps", "4", "--batch-size",
            "2", "--seq-len", "8", "--learning-rate", "0.003", "--log-dir", str(tmp_path / "tb"),
            "--tensorboard", "--checkpoint-path", str(tmp_path / "ck" / "llm.ckpt"),
            "--checkpoint-interval", "2", "--export-gguf", str(tmp_path / "out.gguf"),
            "--export-type", "f16", "--no-progress"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "steps: 4" in out and "exported GGUF" in out
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    assert load_gguf(tmp_path / "out.gguf").tensors["token_embd.weight"].ggml_type == GGMLType.F16
    ck = load_llm_checkpoint(tmp_path / "ck" / "llm.ckpt")
    assert ck.step == 4 and ck.model_config.n_ff == 64
    # train resume on an LLM checkpoint continues it
    assert cli_main(["train", "resume", str(tmp_path / "ck" / "llm.ckpt"), "--steps", "6",
                     "--no-progress"]) == 0
    assert "steps: 6" in capsys.readouterr().out
    assert cli_main(["train", "llm", "--data", toy_data, "--steps", "1"]) == 2  # no model source
