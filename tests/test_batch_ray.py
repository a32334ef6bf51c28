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
import pytest

import ray  # noqa: E402  (the "ray" extra; CI installs it)

from abi.batch import JobSpec, RayOptions, read_results, run_job  # noqa: E402
from abi.cli import main as cli_main  # noqa: E402
from abi.gguf import GGMLType  # noqa: E402
from test_batch import PROMPTS, TEXTS  # noqa: E402
from test_embeddings_tiny import make_hf_dir  # noqa: E402
from tiny_models import write_tiny_model  # noqa: E402

WORKER_TITLE = "ray::MapWorker(MapBatches(ShardWorker))"  # the process title Ray gives our actors


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from abi.embeddings.convert import convert_hf_to_gguf

    d = tmp_path_factory.mktemp("bert")
    return str(convert_hf_to_gguf(make_hf_dir(d / "hf"), d / "bert.gguf", "f32"))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama") / "llama.gguf"
    write_tiny_model(path, "llama", GGMLType.Q8_0)
    return str(path)


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
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
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
