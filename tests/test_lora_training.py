"""train_lora on a tiny model: data formats and their errors, the loss falls, validation,
bit-identical resume, the adapter file, the CLI."""
import json

import numpy as np
import pytest

from abi.errors import ConfigError, DatasetError
from abi.gguf import GGMLType, load
from abi.training.lora_data import Encoder, LengthBatcher, load_examples, read_jsonl
from abi.gguf.lora_adapter import read_lora_adapter
from abi.training.lora_trainer import LoraConfig, train_lora
from tests.tiny_models import write_tiny_model

DIMS = {"n_embd": 32, "n_ff": 64, "n_head": 4, "n_kv": 2, "n_layer": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("lora")
    path = d / "llama.gguf"
    write_tiny_model(path, "llama", GGMLType.Q8_0, seed=3, dims=DIMS)
    rows = [{"messages": [{"role": "user", "content": f"color {i}?"},
                          {"role": "assistant", "content": "blue" if i % 2 else "red"}]}
            for i in range(12)]
    rows += [{"prompt": "say", "completion": " ok"}, {"text": "plain text here"}]
    data = d / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path), str(data)


def _cfg(tiny, tmp_path, **kw):
    model, data = tiny
    base = dict(model=model, data=data, out=str(tmp_path / "a.gguf"), rank=4, alpha=8.0, steps=6,
                batch_size=3, learning_rate=1e-2, lr_schedule="constant", max_seq_len=128,
                targets=("q", "v", "down"))
    base.update(kw)
    return LoraConfig(**base)


def test_masks_follow_the_formats(tiny):
    model, data = tiny
    gf = load(model)
    enc = Encoder(gf)
    ex = enc.encode({"messages": [{"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "yo"}]}, "x")
    text = enc.tok.decode([int(t) for t, m in zip(ex.ids, ex.mask) if m])
    assert text.startswith("yo") and "hi" not in text          # the assistant's tokens, and its end
    plain = enc.encode({"text": "abc"}, "x")
    assert plain.mask[1:].all() and not plain.mask[0]
    examples, cut = load_examples(data, gf, max_seq_len=54)
    assert len(examples) == 14 and cut > 0 and all(len(e) <= 55 for e in examples)
    with pytest.raises(DatasetError, match=":1: no loss tokens"):   # cut before the answer
        load_examples(data, gf, max_seq_len=8)


@pytest.mark.parametrize("line,match", [
    ("{not json", "line|JSON"), ('{"text": ""}', "non-empty"), ('{"prompt": "a"}', "completion"),
    ('{"messages": [{"role": "user", "content": "a"}]}', "assistant"),
    ('{"messages": [{"role": "bot", "content": "a"}]}', "role"), ('{"foo": 1}', "exactly one")])
def test_bad_lines_are_named(tmp_path, line, match):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DatasetError, match=match) as e:
        read_jsonl(p)
    assert ":2:" in str(e.value)


def test_length_batcher_groups_by_length():
    lengths = list(range(100))
    b = LengthBatcher(list(range(100)), lengths, 10)
    rng = np.random.default_rng(0)
    batches = [b.next(rng) for _ in range(10)]
    assert sorted(i for batch in batches for i in batch) == list(range(100))
    assert all(max(x) - min(x) == 9 for x in batches)   # one run of 500 > 100: sorted globally


def test_trains_validates_and_writes_adapter(tiny, tmp_path):
    r = train_lora(_cfg(tiny, tmp_path, steps=12, val_split=0.25, val_every=4, threads=1,
                        log_dir=str(tmp_path / "logs"), enable_tensorboard=True))
    assert list((tmp_path / "logs").rglob("events.out.tfevents*"))
    assert r.losses[-1] < r.losses[0]
    assert [s for s, _ in r.val_losses] == [4, 8, 12] and r.n_val == 4
    alpha, pairs = read_lora_adapter(r.out, arch="llama")
    assert alpha == 8.0 and set(pairs) == {f"blk.{i}.{t}.weight" for i in range(2)
                                           for t in ("attn_q", "attn_v", "ffn_down")}
    a, b = pairs["blk.1.attn_q.weight"]
    np.testing.assert_array_equal(b, r.model.params["blk.1.attn_q.weight.lora_b"])
    assert np.abs(b).max() > 0


def test_resume_is_bit_identical(tiny, tmp_path):
    full = train_lora(_cfg(tiny, tmp_path, out=str(tmp_path / "full.gguf"), dropout=0.1, lora_layers=1))
    ck = str(tmp_path / "ck" / "run")
    train_lora(_cfg(tiny, tmp_path, out=None, dropout=0.1, lora_layers=1, steps=6,
                    checkpoint_dir=ck, checkpoint_interval=3))
    import glob
    first = sorted(glob.glob(ck + "*"))[0]
    resumed = train_lora(_cfg(tiny, tmp_path, out=str(tmp_path / "res.gguf"), dropout=0.1, lora_layers=1),
                         resume_from=first)
    assert resumed.losses == full.losses
    for k, v in full.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[k], v)
    with pytest.raises(ConfigError, match="rank"):
        train_lora(_cfg(tiny, tmp_path, rank=2, lora_layers=1, dropout=0.1), resume_from=first)


def test_cli(tiny, tmp_path, capsys):
    from abi.cli import main
    model, data = tiny
    out = tmp_path / "cli.gguf"
    rc = main(["train", "lora", "--model", model, "--data", data, "--out", str(out), "--steps", "2",
               "--rank", "2", "--max-seq-len", "128", "--targets", "q,gate", "--lora-layers", "1", "--no-progress"])
    assert rc == 0 and out.exists()
    assert "adapter:" in capsys.readouterr().out
    assert set(read_lora_adapter(out)[1]) == {"blk.1.attn_q.weight", "blk.1.ffn_gate.weight"}


@pytest.mark.parametrize("bad,field", [({"targets": ("qq",)}, "targets"), ({"val_every": 2}, "val_every"),
                                       ({"rank": 0}, "rank"), ({"lora_layers": 3}, "lora_layers"),
                                       ({"max_seq_len": 4096}, "max_seq_len")])
def test_refuses_bad_settings(tiny, tmp_path, bad, field):
    with pytest.raises(ConfigError) as e:
        train_lora(_cfg(tiny, tmp_path, **bad))
    assert e.value.field == field
