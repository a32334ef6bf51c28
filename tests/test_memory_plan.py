"""Memory planning before loading: weights + KV caches (ctx x slots, per dtype) + scratch
from the GGUF metadata; refusal with the numbers, or a shrunk context with --fit; caches
held from start-up when preallocating."""
import numpy as np
import pytest

import abi.llm
from abi.errors import ConfigError, MemoryBudgetExceeded
from abi.gguf import GGMLType, load
from abi.llm import Engine
from abi.llm.memory import check_plan, parse_size, plan_memory
from tiny_models import write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "tiny.gguf"
    write_tiny_model(path, "llama", GGMLType.Q8_0, seed=3, name="llama_q8_0")
    return path


@pytest.mark.parametrize("kv", ["f32", "f16", "q8_0"])
def test_plan_matches_the_file_and_the_caches_it_makes(tiny, kv):
    f = load(tiny)
    plan = plan_memory(f, n_ctx=128, n_slots=3, kv_dtype=kv)
    assert plan.weights == sum(t.nbytes for t in f.tensors.values())
    model = abi.llm.load_model(tiny, n_ctx=128, kv_dtype=kv)
    cache = model.new_cache()
    cache.reserve(128)
    assert plan.kv_per_token * 128 == cache.k.nbytes + cache.v.nbytes
    assert plan.kv == 3 * plan.kv_per_token * 128
    assert plan.total == plan.weights + plan.kv + plan.scratch and plan.scratch > 0
    assert kv in plan.describe() and "3 slot" in plan.describe()


def test_sizes_parse():
    assert parse_size("4GiB") == 4 * 2**30 and parse_size("512MiB") == 512 * 2**20
    assert parse_size("2G") == 2 * 10**9 and parse_size("1000") == 1000
    with pytest.raises(ConfigError):
        parse_size("lots")


def test_over_the_limit_is_refused_with_the_numbers(tiny):
    plan = plan_memory(load(tiny), n_ctx=256, n_slots=2)
    with pytest.raises(MemoryBudgetExceeded) as exc:
        check_plan(plan, max_memory=plan.total - 1, available=None)
    assert "--max-memory" in str(exc.value) and "KV cache" in str(exc.value)
    with pytest.raises(MemoryBudgetExceeded, match="available memory"):
        check_plan(plan, max_memory=None, available=plan.total // 2)
    assert check_plan(plan, max_memory=plan.total, available=None) is plan


def test_engine_refuses_or_fits_and_preallocates(tiny):
    plan = plan_memory(load(tiny), n_ctx=256, n_slots=2)
    limit = plan.weights + plan.scratch + plan.kv // 2   # room for half the context
    with pytest.raises(MemoryBudgetExceeded):
        Engine(n_slots=2, backend="cpu", n_ctx=256, max_memory=limit).load_model(tiny)
    engine = Engine(n_slots=2, backend="cpu", n_ctx=256, max_memory=limit, fit=True,
                    preallocate=True).load_model(tiny)
    assert engine.model.n_ctx == engine.memory_plan.n_ctx < 256
    assert engine.memory_plan.total <= limit
    for slot in engine.slots:   # held from the start, not grown mid-request
        assert slot.cache.capacity == engine.model.n_ctx
    assert engine.generate("hello", max_tokens=3, temperature=0)


def test_server_start_up_refuses_a_small_max_memory(tiny):
    from abi.server.state import ServeOptions, ServerState

    state = ServerState(ServeOptions(model=str(tiny), max_memory=parse_size("64KiB"), backend="cpu"))
    state.load()
    assert state.status == "error" and isinstance(state.error, MemoryBudgetExceeded)
    assert "64.00 KiB" in str(state.error)
    state.close()
