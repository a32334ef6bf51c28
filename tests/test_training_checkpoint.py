"""Checkpoints: atomic, checksummed, pruned, resumable bit for bit, and crash-safe."""
from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

from abi.errors import CheckpointError, ConfigError
from abi.training import TrainingConfig, load_checkpoint, train
from abi.training.checkpoint import (CheckpointManager, read_checkpoint, resolve_checkpoint,
                                     save_checkpoint)
from kill_helpers import killed_at


def test_round_trip_and_metadata(tmp_path):
    tensors = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, 2], np.int64),
               "c": np.float16([0.5, -2.0]), "empty": np.zeros((0, 3), np.float32)}
    meta = {"step": 7, "rng": {"state": 2 ** 100 + 3}, "name": "ü"}
    path = save_checkpoint(tmp_path / "x.ckpt", tensors, meta)
    f = read_checkpoint(path)
    assert f.meta == meta
    for k, v in tensors.items():
        assert f.tensors[k].dtype == v.dtype and f.tensors[k].shape == v.shape
        np.testing.assert_array_equal(f.tensors[k], v)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("damage", ["truncate", "flip", "trailer", "empty"])
def test_damaged_checkpoint_is_a_clear_error_and_the_previous_one_stays_usable(tmp_path, damage):
    m = CheckpointManager(tmp_path / "run.ckpt", max_checkpoints=5)
    m.save(1, {"w": np.ones(1000, np.float32)}, {"step": 1})
    p2 = m.save(2, {"w": np.full(1000, 2.0, np.float32)}, {"step": 2})
    blob = bytearray(p2.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob[len(blob) // 2] ^= 0x40
    elif damage == "trailer":
        blob = blob[:-1]
    else:
        blob = bytearray()
    p2.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
        read_checkpoint(p2)
    assert info.value.path == str(p2)
    with pytest.warns(RuntimeWarning, match="skipping damaged"):
        good = m.latest_valid()
    assert good.meta["step"] == 1 and good.tensors["w"][0] == 1.0
    with pytest.warns(RuntimeWarning):
        assert resolve_checkpoint(tmp_path / "run.ckpt").meta["step"] == 1


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "x.ckpt"
    p.write_bytes(b"hello world" * 10)
    with pytest.raises(CheckpointError, match="not an abi checkpoint"):
        read_checkpoint(p)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_max_checkpoints_are_kept(tmp_path):
    cfg = TrainingConfig(epochs=2, sample_count=128, checkpoint_interval=2, max_checkpoints=3,
                         checkpoint_path=str(tmp_path / "model.ckpt"))
    r = train(cfg)
    assert r.steps == 8 and r.checkpoints_written == 4
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["model-00000004.ckpt", "model-00000006.ckpt", "model-00000008.ckpt"]
    ck = load_checkpoint(tmp_path / "model.ckpt")  # the base path resolves to the newest
    assert ck.step == 8 and ck.epoch == 2
    for k, v in r.weights.items():
        np.testing.assert_array_equal(ck.weights[k], v)
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    assert ck.logits(x).shape == (3, 4)


@pytest.mark.parametrize("mixed", [False, "fp16"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, mixed):
    kw = dict(epochs=3, batch_size=16, sample_count=100, gradient_accumulation_steps=2,
              lr_schedule="warmup_cosine", checkpoint_interval=3, max_checkpoints=10,
              mixed_precision=mixed, loss_scale_growth_interval=4)
    full = train(TrainingConfig(checkpoint_path=str(tmp_path / "a" / "m.ckpt"), **kw))

    class Crash(Exception):
        pass

    def crash(step, loss):
        if step == 7:  # mid-epoch (4 steps per epoch), one step after the step-6 checkpoint
            raise Crash

    cfg = TrainingConfig(checkpoint_path=str(tmp_path / "b" / "m.ckpt"), **kw)
    with pytest.raises(Crash):
        train(cfg, on_step=crash)
    assert load_checkpoint(tmp_path / "b" / "m.ckpt").step == 6
    resumed = train(resume_from=str(tmp_path / "b" / "m.ckpt"))
    assert resumed.resumed_from.endswith("m-00000006.ckpt")
    assert resumed.steps == full.steps
    assert resumed.loss_per_epoch == full.loss_per_epoch
    assert resumed.loss_scale == full.loss_scale
    for k in full.weights:
        assert resumed.weights[k].tobytes() == full.weights[k].tobytes(), k


def test_llm_checkpoint_is_not_a_training_checkpoint(tmp_path):
    p = save_checkpoint(tmp_path / "x.ckpt", {}, {"kind": "llm"})
    with pytest.raises(CheckpointError, match="load_llm_checkpoint"):
        load_checkpoint(p)


_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import abi.training.checkpoint as ck

    m = ck.CheckpointManager(sys.argv[1], max_checkpoints=2)
    m.save(1, {"w": np.full(1 << 20, 1.0, np.float32)}, {"step": 1})
    real = ck._write_all
    calls = 0

    def slow_write(fh, hasher, data):
        global calls
        calls += 1
        real(fh, hasher, data)
        if calls == 2:  # header and the first tensor bytes are on disk; stall mid-file
            fh.flush()
            print("MIDSAVE", flush=True)
            time.sleep(60)

    ck._write_all = slow_write
    m.save(2, {"w": np.full(1 << 20, 2.0, np.float32), "v": np.zeros(1 << 20, np.float32)},
           {"step": 2})
    print("FINISHED", flush=True)
""")


def test_process_killed_mid_save_loses_nothing_already_saved(tmp_path):
    base = tmp_path / "run.ckpt"
    with killed_at(_CHILD, str(base), ready="MIDSAVE"):
        temps = [p for p in tmp_path.iterdir() if ".tmp" in p.name]
        assert len(temps) == 1 and temps[0].stat().st_size > 0
    m = CheckpointManager(base, max_checkpoints=2)
    assert [s for s, _ in m.list()] == [1]          # the half-written step 2 never appeared
    good = m.latest_valid()
    assert good.meta["step"] == 1 and np.all(good.tensors["w"] == 1.0)
    # the next save clears the dead process's temporary file
    m.save(3, {"w": np.zeros(4, np.float32)}, {"step": 3})
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert [s for s, _ in m.list()] == [1, 3]


def test_resume_refuses_a_config_that_breaks_continuity(tmp_path):
    from abi.errors import ConfigError

    r = train(TrainingConfig(epochs=1, sample_count=64, checkpoint_path=str(tmp_path / "m.ckpt")))
    with pytest.raises(ConfigError, match="batch_size"):
        train(TrainingConfig(epochs=2, sample_count=64, batch_size=16), resume_from=r.checkpoints[-1])
    more = train(TrainingConfig(epochs=2, sample_count=64), resume_from=r.checkpoints[-1])
    assert more.steps == 4 and len(more.loss_per_epoch) == 2


# --- a checkpoint that cannot be written (issue 17) ---------------------------------------

def _small(tmp_path, **kw):
    return TrainingConfig(epochs=2, batch_size=16, sample_count=64, model_size=128,
                          checkpoint_path=str(tmp_path / "ck" / "m.ckpt"), **kw)


def test_an_unwritable_checkpoint_directory_fails_before_training(tmp_path):
    # a path under a regular file: unwritable even for root, where chmod stops nothing
    (tmp_path / "file").write_text("x")
    steps = []
    cfg = _small(tmp_path)
    cfg.checkpoint_path = str(tmp_path / "file" / "ck" / "m.ckpt")
    with pytest.raises(CheckpointError, match="not writable") as info:
        train(cfg, on_step=lambda step, loss: steps.append(step))
    assert steps == [] and info.value.path == cfg.checkpoint_path


def _failing_saves(monkeypatch, fail_steps):
    """Make ``save_checkpoint`` fail (ENOSPC, as a full disk does) for the given steps."""
    import errno

    from abi import fileio
    from abi.training import checkpoint as ck

    real_open, calls = open, []

    def save(path, tensors, meta):
        calls.append(meta["step"])
        if meta["step"] in fail_steps:
            def no_space(*a, **k):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            monkeypatch.setattr(fileio, "open", no_space, raising=False)
        try:
            return real_save(path, tensors, meta)
        finally:
            monkeypatch.setattr(fileio, "open", real_open, raising=False)

    real_save = ck.save_checkpoint
    monkeypatch.setattr(ck, "save_checkpoint", save)
    return calls


def test_a_failed_save_aborts_with_the_path_and_reason_and_keeps_earlier_ones(tmp_path, monkeypatch):
    calls = _failing_saves(monkeypatch, {6})
    cfg = _small(tmp_path, checkpoint_interval=2)
    with pytest.raises(CheckpointError) as info:
        train(cfg)
    assert "m-00000006.ckpt" in str(info.value) and os.strerror(28) in str(info.value)
    assert info.value.path.endswith("m-00000006.ckpt") and calls == [2, 4, 6]
    kept = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert kept == ["m-00000002.ckpt", "m-00000004.ckpt"]   # no temporary file left behind
    assert load_checkpoint(cfg.checkpoint_path).step == 4


def test_retry_keeps_the_run_when_an_interval_save_fails(tmp_path, monkeypatch, caplog):
    calls = _failing_saves(monkeypatch, {4})
    report = train(_small(tmp_path, checkpoint_interval=2, on_save_error="retry"))
    assert calls == [2, 4, 6, 8] and report.steps == 8
    assert [os.path.basename(p) for p in report.checkpoints] == [
        "m-00000002.ckpt", "m-00000006.ckpt", "m-00000008.ckpt"]
    assert "m-00000004.ckpt" in caplog.text and "next checkpoint tries again" in caplog.text
    # the continuation equals an uninterrupted run: nothing was lost to the failed save
    plain = train(_small(tmp_path / "plain"))
    for name, w in plain.weights.items():
        np.testing.assert_array_equal(report.weights[name], w)


def test_retry_tries_the_final_save_again_then_gives_up_with_the_error(tmp_path, monkeypatch):
    calls = _failing_saves(monkeypatch, {8})
    cfg = _small(tmp_path, on_save_error="retry", save_retries=2, save_retry_delay=0)
    with pytest.raises(CheckpointError, match="m-00000008.ckpt"):
        train(cfg)
    assert calls == [8, 8, 8]


def test_retry_succeeds_when_the_final_save_works_again(tmp_path, monkeypatch):
    from abi.training import checkpoint as ck

    real_save, calls = ck.save_checkpoint, []

    def flaky(path, tensors, meta):   # the disk has room again on the second try
        calls.append(meta["step"])
        if len(calls) == 1:
            raise CheckpointError(f"could not save checkpoint {str(path)!r}: full", str(path))
        return real_save(path, tensors, meta)

    monkeypatch.setattr(ck, "save_checkpoint", flaky)
    report = train(_small(tmp_path, on_save_error="retry", save_retry_delay=0))
    assert calls == [8, 8] and report.checkpoints[-1].endswith("m-00000008.ckpt")


def test_on_save_error_is_validated():
    with pytest.raises(ConfigError, match="on_save_error"):
        TrainingConfig(on_save_error="ignore").validate()
