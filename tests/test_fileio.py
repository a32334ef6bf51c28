"""abi.fileio.atomic_write, the one way abi replaces a file: whole or not at all, even when
the writing process is killed mid-write."""
from __future__ import annotations

import os
import textwrap
import threading

import pytest

from abi.fileio import atomic_write, remove_stale_temps, write_text
from kill_helpers import killed_at


def _temps(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


def test_streamed_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as fh:
        for i in range(4):
            fh.write(bytes([i]) * 1000)
        assert target.read_bytes() == b"old"   # nothing visible before the block ends
        assert len(_temps(tmp_path)) == 1
    assert target.read_bytes() == b"".join(bytes([i]) * 1000 for i in range(4))
    write_text(tmp_path / "t.json", "{\"ok\": \"✓\"}")
    assert (tmp_path / "t.json").read_text(encoding="utf-8") == "{\"ok\": \"✓\"}"
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("exc", [ValueError("bad data"), KeyboardInterrupt()])
def test_an_error_mid_write_keeps_the_old_file(tmp_path, exc):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(type(exc)):
        with atomic_write(target) as fh:
            fh.write(b"new, half")
            raise exc
    assert target.read_bytes() == b"old" and _temps(tmp_path) == []
    with pytest.raises(ValueError, match="whole files"):
        with atomic_write(target, "ab"):
            pass


def test_threads_writing_one_path_do_not_collide(tmp_path):
    target, errors = tmp_path / "f.txt", []
    gate = threading.Barrier(4)

    def write(i):
        try:
            with atomic_write(target, "w") as fh:
                gate.wait(timeout=10)        # all four temporaries open at once
                fh.write(str(i) * 100)
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.read_text() in {str(i) * 100 for i in range(4)}
    assert _temps(tmp_path) == []


_CHILD = textwrap.dedent("""
    import sys, time
    from abi.fileio import atomic_write

    with atomic_write(sys.argv[1]) as fh:
        fh.write(b"N" * (1 << 20))
        fh.flush()
        print("MIDWRITE", flush=True)
        time.sleep(60)
        fh.write(b"END")
""")


@pytest.mark.parametrize("existing", [True, False])
def test_sigkill_mid_write_leaves_the_old_file_or_none(tmp_path, existing):
    target = tmp_path / "state.bin"
    if existing:
        target.write_bytes(b"old contents")
    with killed_at(_CHILD, str(target), ready="MIDWRITE"):
        (temp,) = _temps(tmp_path)
        assert (tmp_path / temp).stat().st_size == 1 << 20
        remove_stale_temps(tmp_path, "state\\.bin")   # its writer is alive: kept
        assert _temps(tmp_path) == [temp]
    if existing:
        assert target.read_bytes() == b"old contents"
    else:
        assert not target.exists()
    assert _temps(tmp_path) == [temp]               # a killed writer cannot clean up ...
    with atomic_write(target) as fh:                 # ... the next write of the path does
        fh.write(b"next")
    assert target.read_bytes() == b"next" and _temps(tmp_path) == []


def test_the_writers_of_abi_go_through_it(tmp_path):
    """GGUF files, checkpoints, token files and the GPU agent's state all fail the same way:
    a write whose final rename fails (here: the target is a directory) leaves no temporary."""
    import numpy as np

    from abi.agents.scheduler.state import save_state
    from abi.errors import CheckpointError
    from abi.gguf import GGUFWriter
    from abi.training.checkpoint import save_checkpoint
    from abi.training.datasets import write_tokenbin

    names = ["m.gguf", "t.bin", "s.json", "c.ckpt"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep").write_text("x")   # a non-empty directory: no rename over it
    w = GGUFWriter(str(tmp_path / "m.gguf"))
    w.add_tensor("t", np.zeros(4, np.float32))
    with pytest.raises(OSError):
        w.write()
    with pytest.raises(OSError):
        write_tokenbin(tmp_path / "t.bin", [1, 2])
    with pytest.raises(OSError):
        save_state(tmp_path / "s.json", {"arms": {}})
    with pytest.raises(CheckpointError, match="c.ckpt"):
        save_checkpoint(tmp_path / "c.ckpt", {"w": np.zeros(2, np.float32)}, {})
    assert sorted(os.listdir(tmp_path)) == sorted(names)
