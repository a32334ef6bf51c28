"""GpuAgent on this machine: backend discovery, real runs through the engine, the Encoder and
the trainers (a tiny random model, plus one short run of the default model), the CLI."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from abi.agents import GpuAgent, GpuRequest, gpu_cli
from abi.agents import cli as agent_cli
from abi.agents.backends_discovery import (BLAS_WORKLOADS, ENGINE_WORKLOADS, CpuLoadMeter,
                                           CudaDevice, cpu_count, discover_backends,
                                           host_free_mb, host_memory_mb)
from abi.agents.gpu_agent import default_state_path
from abi.agents.gpu_workloads import LocalExecutor
from abi.errors import BackendUnavailable, InsufficientMemory, InvalidRequestError
from abi.gguf import GGMLType
from abi.llm.backend import cuda_problem
from tiny_models import write_tiny_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu_agent") / "tiny-llama.gguf"
    write_tiny_model(path, "llama", GGMLType.Q8_0)
    return str(path)


def test_discovers_this_machines_backends():
    backends = discover_backends()
    names = [b.name for b in backends]
    assert len(names) == len(set(names))
    threads = sorted({b.n_threads for b in backends if b.device == "cpu"})
    assert threads == sorted({t for t in (1, 2, cpu_count()) if t <= cpu_count()})
    cpu = [b for b in backends if b.device == "cpu"]
    assert all(b.memory_limit_mb == host_memory_mb() > 0 for b in cpu)
    assert 0 < host_free_mb() <= host_memory_mb()
    for w in ENGINE_WORKLOADS:
        assert {b.n_batch for b in backends if b.serves(w)} == {32, 512}
    # CUDA configurations exist exactly when a CUDA device is usable
    assert any(b.device == "cuda" for b in backends) == (cuda_problem() is None)


def test_discovery_on_a_described_machine():
    backends = discover_backends(n_cpus=16, host_mb=65536,
                                 cuda=[CudaDevice(0, "H100", 81559)], embedding_available=False)
    by_name = {b.name: b for b in backends}
    assert {b.n_threads for b in backends if b.device == "cpu"} == {1, 2, 16}
    gpu = [b for b in backends if b.device == "cuda"]
    assert [b.name for b in gpu] == ["cuda:0:b32", "cuda:0:b512"]
    assert all(b.memory_limit_mb == 81559 and b.workloads == ENGINE_WORKLOADS for b in gpu)
    assert by_name["cpu:16t"].workloads == ("training", "fine_tuning")  # no embedding model
    assert by_name["cpu:1t:b32"].memory_limit_mb == 65536
    one_core = discover_backends(n_cpus=1, host_mb=1000, cuda=[])
    assert [b.name for b in one_core] == ["cpu:1t:b32", "cpu:1t:b512", "cpu:1t"]
    assert one_core[2].workloads == BLAS_WORKLOADS


def test_cpu_load_meter_reads_other_processes():
    meter = CpuLoadMeter(min_window_s=0.3)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        meter.snapshot()
        loaded = meter.load()
    finally:
        busy.kill()
        busy.wait()
    # one busy process is at least half a core's worth of the machine's CPUs
    assert loaded >= 0.4 / cpu_count()
    assert 0.0 <= loaded <= 1.0


def test_state_file_lives_in_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("ABI_GPU_AGENT_STATE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_state_path() == Path.home() / ".cache" / "abi" / "gpu_agent.json"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_state_path() == tmp_path / "abi" / "gpu_agent.json"
    monkeypatch.setenv("ABI_GPU_AGENT_STATE", str(tmp_path / "x.json"))
    assert default_state_path() == tmp_path / "x.json"


def test_real_workloads_on_a_tiny_model(tiny_llama, tmp_path):
    state = tmp_path / "state.json"
    agent = GpuAgent(model=tiny_llama, state_path=state, temperature=0.0)
    engine_arms = {b.name for b in agent.backends if b.serves("inference")}
    blas_arms = {b.name for b in agent.backends if b.serves("training")}

    r = agent.process(GpuRequest("hello there", max_tokens=5))
    assert r.gpu_backend_used in engine_arms and 1 <= r.tokens <= 5
    assert isinstance(r.content, str) and r.latency_ms > 0 and r.reward < 0

    r = agent.process(GpuRequest("first line\n\nsecond line", workload_type="batch_inference",
                                 max_tokens=3))
    assert r.gpu_backend_used in engine_arms
    assert len(r.result) == 2 and r.content == "\n\n".join(r.result) and r.tokens <= 6

    r = agent.process(GpuRequest("any", workload_type="training", max_tokens=64))
    assert r.gpu_backend_used in blas_arms and r.tokens == 64
    assert r.result.steps == 2 and "final loss" in r.content

    r = agent.process(GpuRequest("the quick brown fox jumps over the lazy dog " * 3,
                                 workload_type="fine_tuning", max_tokens=64))
    assert r.gpu_backend_used in blas_arms
    assert len(r.result.losses) == r.tokens // 32 and np.all(np.isfinite(r.result.losses))
    with pytest.raises(InvalidRequestError, match="at least 3 tokens"):
        agent.process(GpuRequest("a", workload_type="fine_tuning"))

    with pytest.raises(InsufficientMemory, match="fits no backend"):
        agent.process(GpuRequest("hi", memory_hint_mb=host_memory_mb() * 4.0))

    stats = agent.get_gpu_stats()
    assert stats.episodes == 4 and stats.failures == 0
    assert stats.episodes_per_workload == {"batch_inference": 1, "fine_tuning": 1,
                                           "inference": 1, "training": 1}
    saved = json.loads(state.read_text())
    assert saved["stats"]["episodes"] == 4
    assert GpuAgent(model=tiny_llama, state_path=state).get_gpu_stats().episodes == 4


def test_engines_are_cached_per_configuration(tiny_llama):
    executor = LocalExecutor(model=tiny_llama)
    arm = next(b for b in executor.backends if b.serves("inference"))
    request = GpuRequest("hi", max_tokens=2)
    first = executor.run(request, arm)
    again = executor.run(request, arm)
    assert first.setup_s > 0 and again.setup_s == 0.0
    assert len(executor._engines) == 1


def test_embedding_without_a_local_model_is_refused(tiny_llama, tmp_path):
    agent = GpuAgent(model=tiny_llama, embedding_model=str(tmp_path / "missing.gguf"),
                     persist=False)
    assert not any(b.serves("embedding") for b in agent.backends)
    with pytest.raises(BackendUnavailable, match="no embedding model in the model cache"):
        agent.process(GpuRequest("text", workload_type="embedding"))


@pytest.mark.model
def test_embedding_with_the_cached_model(tmp_path, embedding_model_path):
    agent = GpuAgent(persist=False)
    r = agent.process(GpuRequest("a sentence\nanother one", workload_type="embedding"))
    assert r.result.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(r.result, axis=1), 1.0, rtol=1e-5)
    assert r.gpu_backend_used.startswith("cpu:") and r.tokens > 4


def test_default_model_inference(default_model_path, tmp_path):
    agent = GpuAgent(model=default_model_path, state_path=tmp_path / "s.json", temperature=0.0)
    r = agent.process(GpuRequest("What is 2+2?", max_tokens=4, priority="high"))
    assert r.content.strip() and 1 <= r.tokens <= 4
    assert r.gpu_backend_used in {b.name for b in agent.backends if b.serves("inference")}
    assert r.reward < 0 and r.latency_ms > 0


def test_cli_gpu_aware_message_and_stats(tiny_llama, tmp_path, capsys, monkeypatch):
    state = str(tmp_path / "cli.json")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    rc = agent_cli.main(["--gpu-aware", "--model", tiny_llama, "--gpu-state", state,
                         "--max-tokens", "3", "--priority", "critical", "--message", "hello"])
    out = capsys.readouterr().out
    assert rc == 0
    answer, info = out.rstrip("\n").rsplit("\n", 1)
    assert info.startswith("[backend: cpu:") and "latency: " in info
    # the printed latency includes model loading; the work part is what --gpu-stats averages
    latency = float(info.split("latency: ")[1].split(" ms")[0])
    work = float(info.split("(work ")[1].split(" ms)")[0])
    assert 0 < work <= latency
    assert answer  # the tiny model's words, whatever they are
    rc = agent_cli.main(["--gpu-stats", "--gpu-state", state])
    out = capsys.readouterr().out
    assert rc == 0 and "episodes: 1\n" in out and f"state file: {state}\n" in out
    used = info.split()[1]
    assert f"  {used}" in out and f"1 choices, avg work {work:.1f} ms" in out

    # without --message: one request a line, errors reported and the next line taken
    out, err = io.StringIO(), io.StringIO()
    args = agent_cli.build_parser().parse_args(
        ["--gpu-aware", "--model", tiny_llama, "--gpu-state", state, "--max-tokens", "2",
         "--memory-hint-mb", str(host_memory_mb() * 8)])
    assert gpu_cli.main(args, stdin=io.StringIO("one\n"), out=out, err=err) == 0
    assert "fits no backend" in err.getvalue() and out.getvalue() == ""


def test_cli_gpu_stats_as_a_command(tmp_path):
    env = dict(os.environ, ABI_GPU_AGENT_STATE=str(tmp_path / "none.json"))
    p = subprocess.run([sys.executable, "-m", "abi", "agent", "--gpu-stats"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "episodes: 0" in p.stdout and "cpu:1t:b32" in p.stdout


def test_bench_tool_runs(tmp_path):
    """tools/bench_gpu_agent.py end to end on its cheapest workload (figures: the report)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu_agent",
                                                  REPO / "tools" / "bench_gpu_agent.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--workloads", "training", "--episodes", "6", "--repeats", "1",
                       "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert sum(result["choices"].values()) == 6
    assert set(result["median_ms"]) == {b.name for b in discover_backends()
                                        if b.serves("training")}
    assert result["fastest"] in result["fast_set"]
