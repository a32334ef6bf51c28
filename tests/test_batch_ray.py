"""Batch jobs on a local Ray cluster (started here, two CPUs, once for the module): the same
results as the local path, and every input exactly once in the output when an actor is
killed in the middle of a job."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ray  # noqa: E402  (the "ray" extra; CI installs it)

from abi.batch import JobSpec, RayOptions, on_ray, read_results, run_job  # noqa: E402
from abi.cli import main as cli_main  # noqa: E402
from abi.errors import BatchInputError, BatchWorkerError  # noqa: E402
from test_batch import PROMPTS, TEXTS, tiny_bert, tiny_llama  # noqa: E402,F401  (shared fixtures)

WORKER_TITLE = "ray::MapWorker(MapBatches(ShardWorker))"  # the process title Ray gives our actors


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "embedding"} for r in rows]


def test_embeddings_on_ray_equal_the_local_path(tmp_path, tiny_bert):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(TEXTS * 3) + "\n")
    local, on_ray = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert cli_main(["batch", "embed", str(path), "--out", str(local), "--model", tiny_bert,
                     "--shard-size", "4", "--no-progress"]) == 0
    assert cli_main(["batch", "embed", str(path), "--out", str(on_ray), "--model", tiny_bert,
                     "--shard-size", "4", "--no-progress", "--ray", "--workers", "2"]) == 0
    a, b = read_results(local), read_results(on_ray)
    assert [r["row"] for r in b] == list(range(len(TEXTS) * 3))
    assert _strip(a) == _strip(b)
    np.testing.assert_allclose(np.array([r["embedding"] for r in b]),
                               np.array([r["embedding"] for r in a]), atol=1e-6)


@pytest.mark.parametrize("options", [{"temperature": 0.0}, {"temperature": 0.9, "seed": 5}],
                         ids=["greedy", "seeded"])
def test_generations_on_ray_equal_the_local_path(tmp_path, tiny_llama, options):
    path = tmp_path / "in.parquet"  # text and JSONL are read on Ray in the other tests
    pq.write_table(pa.table({"prompt": PROMPTS, "other": list(range(len(PROMPTS)))}), path)
    spec = JobSpec("generate", "prompt", model=tiny_llama, options={"max_tokens": 8, **options})
    run_job(spec, path, tmp_path / "local.jsonl", shard_size=2, progress=False)
    report = run_job(spec, path, tmp_path / "ray.jsonl", shard_size=2, progress=False,
                     ray=RayOptions(workers=2))
    assert report.written == 3
    assert read_results(tmp_path / "ray.jsonl") == read_results(tmp_path / "local.jsonl")


def _worker_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    title = fh.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(WORKER_TITLE):
                pids.append(int(entry))
    return pids


def test_an_actor_killed_mid_job_loses_and_repeats_nothing(tmp_path, tiny_llama):
    n = 24
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{PROMPTS[i % 5]} {i}", "id": f"p{i}"}) + "\n"
                            for i in range(n)))
    spec = JobSpec("generate", "prompt", model=tiny_llama,
                   options={"max_tokens": 48, "temperature": 0.0, "stop_tokens": []})
    out = tmp_path / "ray.parquet"
    result = {}
    job = threading.Thread(target=lambda: result.update(report=run_job(
        spec, path, out, id_field="id", shard_size=2, progress=False,
        ray=RayOptions(workers=2))))
    job.start()
    deadline = time.monotonic() + 120
    while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    victims = _worker_pids()
    shards_before = len(list(out.glob("part-*.parquet")))
    # each actor is handed shards while any remain, so with most still to do, the one killed
    # dies holding a batch (Ray logs that it retries the task)
    assert victims and shards_before < n // 2, "the job ended before an actor could be killed"
    os.kill(victims[0], signal.SIGKILL)
    job.join(timeout=300)
    assert not job.is_alive() and "report" in result
    assert victims[0] not in _worker_pids()  # that actor was killed, and the job still finished
    rows = read_results(out)
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(n)]  # each input exactly once
    run_job(spec, path, tmp_path / "local.parquet", id_field="id", shard_size=2, progress=False)
    assert rows == read_results(tmp_path / "local.parquet")
    assert not list(out.glob("*.tmp*"))


def test_a_bad_line_read_on_ray_is_named(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n\n{"txt": "b"}\n')
    with pytest.raises(BatchInputError, match="no 'text' field") as err:
        run_job(JobSpec("embed", "text"), path, tmp_path / "out", progress=False,
                ray=RayOptions(workers=1))
    assert type(err.value) is BatchInputError and err.value.line == 3
    assert str(err.value) == f"{path}:3: no 'text' field"
    assert not (tmp_path / "out").exists()  # checked before any output or model


def test_a_shard_that_kills_its_worker_every_time_fails_the_job(tmp_path, tiny_bert, monkeypatch):
    n, size, retries = 8, 2, 1
    path = tmp_path / "in.txt"
    texts = [TEXTS[i % len(TEXTS)] for i in range(n - 1)] + ["POISON"]  # in the last shard
    path.write_text("\n".join(texts) + "\n")

    class Poisoned(on_ray.ShardWorker):  # defined here, so Ray ships it to the actors by value
        def run(self, items):
            if any(it["text"] == "POISON" for it in items):
                os.kill(os.getpid(), signal.SIGKILL)  # as a crash in native code would
            return super().run(items)

    healthy = on_ray.ShardWorker
    monkeypatch.setattr(on_ray, "ShardWorker", Poisoned)
    out, result = tmp_path / "out.parquet", {}

    def job():
        try:
            run_job(JobSpec("embed", "text", model=tiny_bert), path, out, shard_size=size,
                    progress=False, ray=RayOptions(workers=2, max_retries=retries))
        except Exception as exc:  # noqa: BLE001  (the test looks at it)
            result["error"] = exc

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    thread.join(timeout=240)
    assert not thread.is_alive(), "a poisoned shard was retried without limit"
    err = result.get("error")
    assert isinstance(err, BatchWorkerError), err
    assert err.shards == [3] and f"shard 3 (rows 6..7, ids 6..7) killed its worker on each of " \
        f"{retries + 1} tries" in str(err)
    assert sorted(int(p.name[5:11]) for p in out.glob("part-*.parquet")) == [0, 1, 2]
    # the shards written stay: --resume (here with a worker that survives it) computes the last
    monkeypatch.setattr(on_ray, "ShardWorker", healthy)
    report = run_job(JobSpec("embed", "text", model=tiny_bert), path, out, shard_size=size,
                     progress=False, resume=True, ray=RayOptions(workers=2))
    assert (report.skipped, report.written) == (3, 1)
    assert [r["row"] for r in read_results(out)] == list(range(n))
    assert not list(out.glob("*.attempts"))


def test_cli_exits_with_one_line_when_the_retries_run_out(tmp_path, tiny_bert, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise BatchWorkerError("shard 3 (rows 6..7, ids 6..7) killed its worker on each of 2 tries", [3])

    monkeypatch.setattr(on_ray, "run_on_ray", fail)
    path = tmp_path / "in.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    assert cli_main(["batch", "embed", str(path), "--out", str(tmp_path / "o"), "--model", tiny_bert,
                     "--shard-size", "2", "--no-progress", "--ray", "--max-retries", "1"]) \
        == BatchWorkerError.exit_code != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("abi: error: shard 3")
