"""``python -m abi train``: run / info / resume / help with the reference's options."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from abi.cli import main as cli_main
from abi.errors import CheckpointError
from abi.training.cli import _train_parser


def test_run_defaults_are_the_references():
    a = _train_parser().parse_args([])
    assert (a.epochs, a.batch_size, a.model_size, a.learning_rate, a.optimizer) == \
        (10, 32, 512, 0.001, "adamw")
    a = _train_parser().parse_args(["-e", "5", "-b", "16", "--lr", "0.01", "--mixed-precision"])
    assert (a.epochs, a.batch_size, a.learning_rate, a.mixed_precision) == (5, 16, 0.01, "fp16")
    a = _train_parser().parse_args(["--learning-rate", "0.2", "--mixed-precision", "bf16"])
    assert a.learning_rate == 0.2 and a.mixed_precision == "bf16"


def test_info_and_help(capsys):
    assert cli_main(["train", "info"]) == 0
    out = capsys.readouterr().out
    for line in ("epochs", "batch_size", "model_size", "learning_rate", "adamw", "data_path",
                 "export_type"):
        assert line in out
    assert cli_main(["train", "help"]) == 0
    out = capsys.readouterr().out
    for opt in ("-e, --epochs", "-b, --batch-size", "--model-size", "--lr, --learning-rate",
                "--optimizer", "--lr-schedule", "--checkpoint-interval", "--checkpoint-path",
                "--mixed-precision", "--vocab-from", "--export-type", "--tensorboard", "--wandb"):
        assert opt in out, opt
    assert cli_main(["train"]) == 0
    assert cli_main(["train", "bogus"]) == 2


def test_run_with_options_then_resume(tmp_path, capsys):
    ckpt = tmp_path / "ck" / "model.ckpt"
    args = ["train", "run", "-e", "3", "-b", "16", "--sample-count", "128", "--model-size", "256",
            "--lr", "0.01", "--optimizer", "adam", "--lr-schedule", "warmup_cosine",
            "--checkpoint-interval", "8", "--checkpoint-path", str(ckpt), "--max-checkpoints",
            "2", "--mixed-precision", "bf16", "--json"]
    assert cli_main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 24 and len(report["loss_per_epoch"]) == 3
    assert report["parameter_count"] <= 256 and report["loss_scale"] is not None
    assert len(report["checkpoints"]) == 3 and report["checkpoints"][-1].endswith("00000024.ckpt")
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["model-00000016.ckpt",
                                                           "model-00000024.ckpt"]
    # resume a finished run for more epochs from the run's base path
    assert cli_main(["train", "resume", str(ckpt), "--epochs", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "model-00000024.ckpt" in out and "epoch   4" in out


def test_resume_from_a_damaged_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["train", "run", "-e", "1", "--sample-count", "64", "--checkpoint-path",
                     str(tmp_path / "m.ckpt"), "--no-progress"]) == 0
    (good,) = tmp_path.glob("m-*.ckpt")
    good.write_bytes(good.read_bytes()[:-100])
    capsys.readouterr()
    assert cli_main(["train", "resume", str(good)]) == CheckpointError.exit_code
    assert "corrupt or truncated" in capsys.readouterr().err
    (tmp_path / "x.ckpt").write_bytes(b"ABICKPT\0" + b"\0" * 100)
    assert cli_main(["train", "resume", str(tmp_path / "x.ckpt")]) == CheckpointError.exit_code
    assert "format version 0" in capsys.readouterr().err


def test_progress_bar_shows_loss_and_rate():
    res = subprocess.run([sys.executable, "-m", "abi", "train", "run", "-e", "2",
                          "--sample-count", "64"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "loss=" in res.stderr and "step/s" in res.stderr
    assert "epoch   2" in res.stdout


@pytest.mark.parametrize("argv", [["train", "run", "--optimizer", "lion"],
                                  ["train", "run", "-e", "0"],
                                  ["train", "run", "--checkpoint-interval", "3"]])
def test_bad_options_fail_cleanly(argv, capsys):
    assert cli_main(argv) == 2
    assert capsys.readouterr().err


def test_checkpoint_count_and_resuming_a_finished_run(tmp_path, capsys):
    ckpt = tmp_path / "m.ckpt"
    assert cli_main(["train", "run", "-e", "2", "-b", "16", "--sample-count", "64",
                     "--checkpoint-interval", "2", "--max-checkpoints", "2", "--checkpoint-path",
                     str(ckpt), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints written: 4 (2 kept)" in out
    listed = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert [os.path.basename(p) for p in listed] == ["m-00000006.ckpt", "m-00000008.ckpt"]
    # a finished run is reported complete, not replayed
    assert cli_main(["train", "resume", str(ckpt), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "the run is complete (epoch 2 of 2, step 8)" in out and "epoch   1" not in out


def test_an_unwritable_checkpoint_path_is_a_clean_error_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code = cli_main(["train", "run", "-e", "1", "--sample-count", "64", "--on-save-error",
                     "retry", "--checkpoint-path", str(tmp_path / "file" / "m.ckpt")])
    assert code == CheckpointError.exit_code
    assert "is not writable" in capsys.readouterr().err
