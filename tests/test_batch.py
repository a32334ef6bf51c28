"""Batch jobs on the local path: inputs read with typed errors naming the line, results equal
to the library's own calls, shards written atomically, and --resume after an interruption
computing exactly the missing shards. Tiny models built here (no download) except where a
test is marked ``model``."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abi.batch import JobSpec, read_items, read_results, run_job
from abi.batch import work
from abi.cli import main as cli_main
from abi.errors import BatchInputError, ConfigError
from abi.gguf import GGMLType
from test_embeddings_tiny import make_hf_dir
from tiny_models import write_tiny_model

TEXTS = ["the quick brown fox", "hello world", "a lazy dog", "the fox jumps over the dog",
         "hello", "world ! ?", "the brown dog jumped"]
PROMPTS = ["Once upon", "the cat sat", "in a land", "hello there", "xyz"]


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


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- inputs --------------------------------------------------------------------------------

def test_text_input_skips_blank_lines_and_numbers_rows(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("first\n\nsecond\r\n  \nthird\n")
    items = read_items(path, "text")
    assert items == [{"row": 0, "id": "0", "text": "first"}, {"row": 1, "id": "1", "text": "second"},
                     {"row": 2, "id": "2", "text": "third"}]


@pytest.mark.parametrize("line, kind, message", [
    ("{not json", "text", "not valid JSON"),
    ("[1, 2]", "text", "must be a JSON object"),
    ('{"other": "x"}', "text", "no 'text' field"),
    ('{"text": 3}', "text", "must be a string"),
    ('{"text": [{"role": "user"}]}', "messages", r"text\[0\] must be an object"),
    ('{"text": []}', "messages", "non-empty list"),
])
def test_a_bad_jsonl_line_is_named(tmp_path, line, kind, message):
    path = tmp_path / "in.jsonl"
    good = {"text": "fine"} if kind == "text" else {"text": [{"role": "user", "content": "hi"}]}
    path.write_text(json.dumps(good) + "\n\n" + line + "\n")
    with pytest.raises(BatchInputError, match=message) as err:
        read_items(path, "text", kind)
    assert err.value.line == 3 and f"{path}:3:" in str(err.value)


def test_ids_come_from_the_id_field_and_must_be_unique(tmp_path):
    path = _jsonl(tmp_path / "in.jsonl", [{"text": "a", "key": 7}, {"text": "b", "key": "x"}])
    assert [i["id"] for i in read_items(path, "text", id_field="key")] == ["7", "x"]
    path = _jsonl(tmp_path / "dup.jsonl", [{"text": "a", "key": 1}, {"text": "b", "key": 1}])
    with pytest.raises(BatchInputError, match="repeats line 1") as err:
        read_items(path, "text", id_field="key")
    assert err.value.line == 2


def test_parquet_input_and_its_errors(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": ["x", None], "n": [1, 2]}), path)
    with pytest.raises(BatchInputError, match="no column 'text'"):
        read_items(path, "text")
    with pytest.raises(BatchInputError, match=r":2: no 'body' field") as err:
        read_items(path, "body")
    assert err.value.line == 2
    pq.write_table(pa.table({"body": ["x", "y"]}), path)
    assert [i["body"] for i in read_items(path, "body")] == ["x", "y"]


def test_plain_text_cannot_hold_chats_and_an_empty_input_is_refused(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("a\n")
    with pytest.raises(ConfigError, match="JSONL or Parquet"):
        read_items(path, "messages", "messages")
    path.write_text("\n\n")
    with pytest.raises(ConfigError, match="no items"):
        run_job(JobSpec("embed", "text"), path, tmp_path / "out", progress=False)


def test_cli_reports_a_bad_line_as_a_typed_error(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n{"txt": "b"}\n')
    assert cli_main(["batch", "embed", str(path), "--out", str(tmp_path / "o")]) == BatchInputError.exit_code
    assert f"{path}:2: no 'text' field" in capsys.readouterr().err


def test_cli_refuses_options_that_would_be_ignored(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a", "messages": [{"role": "user", "content": "a"}]}\n')
    for argv in (["embed", "--workers", "4"], ["embed", "--max-retries", "2"],
                 ["generate", "--messages-field", "messages", "--system", "x"],
                 ["embed", "--ray", "--workers", "0"]):
        assert cli_main(["batch", argv[0], str(path), "--out", str(tmp_path / "o"), *argv[1:]]) \
            == ConfigError.exit_code
    assert not (tmp_path / "o").exists()


# -- embeddings ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_embed_equals_the_encoder(tmp_path, tiny_bert, fmt):
    from abi.embeddings import Encoder

    path = _jsonl(tmp_path / "in.jsonl", [{"t": t, "k": f"doc{i}"} for i, t in enumerate(TEXTS)])
    spec = JobSpec("embed", "t", model=tiny_bert, model_opts={"batch_size": 2})
    report = run_job(spec, path, tmp_path / f"out.{fmt}", id_field="k", shard_size=3, progress=False)
    assert (report.shards, report.written, report.processed) == (3, 3, len(TEXTS))
    assert sorted(p.name for p in (tmp_path / f"out.{fmt}").iterdir()) == \
        ["_job.json"] + [f"part-{k:06d}.{fmt}" for k in range(3)]
    rows = read_results(tmp_path / f"out.{fmt}")
    expected = Encoder(tiny_bert).encode_batch(TEXTS)
    assert [r["row"] for r in rows] == list(range(len(TEXTS)))
    assert [r["id"] for r in rows] == [f"doc{i}" for i in range(len(TEXTS))]
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-6)
    assert {r["model"] for r in rows} == {tiny_bert}
    assert json.loads(rows[0]["settings"])["batch_size"] == 2


def test_an_interrupted_job_resumes_without_losing_or_repeating(tmp_path, tiny_bert, monkeypatch):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    spec = JobSpec("embed", "text", model=tiny_bert)
    real_run, calls, interrupt = work.Runner.run, [], [True]

    def dies_on_the_third_shard(self, items, on_done=None):
        calls.append(items[0]["row"])
        if len(calls) == 3 and interrupt.pop():
            raise KeyboardInterrupt
        return real_run(self, items, on_done)

    monkeypatch.setattr(work.Runner, "run", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        run_job(spec, path, out, shard_size=2, progress=False)
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    assert sorted(written) == ["part-000000.parquet", "part-000001.parquet"]
    assert not list(out.glob("*.tmp*"))  # the interrupted shard left no part behind
    with pytest.raises(ConfigError, match="--resume"):
        run_job(spec, path, out, shard_size=2, progress=False)
    calls.clear()
    report = run_job(spec, path, out, shard_size=2, resume=True, progress=False)
    assert calls == [4, 6] and (report.skipped, report.written, report.processed) == (2, 2, 3)
    assert {n: (out / n).stat().st_mtime_ns for n in written} == written  # not rewritten
    monkeypatch.undo()
    rows = read_results(out)
    assert [r["row"] for r in rows] == list(range(len(TEXTS)))
    assert [r["embedding"] for r in rows] == [r["embedding"] for r in read_results(
        run_job(spec, path, tmp_path / "whole.parquet", shard_size=2, progress=False).out)]


def test_resume_refuses_another_job(tmp_path, tiny_bert):
    path = tmp_path / "in.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.parquet"
    run_job(JobSpec("embed", "text", model=tiny_bert), path, out, shard_size=4, progress=False)
    with pytest.raises(ConfigError, match="its settings was"):
        run_job(JobSpec("embed", "text", model=tiny_bert, model_opts={"normalize": False}), path,
                out, shard_size=4, resume=True, progress=False)
    path.write_text("\n".join(TEXTS[:-1]) + "\n")
    with pytest.raises(ConfigError, match="its input_rows was"):
        run_job(JobSpec("embed", "text", model=tiny_bert), path, out, shard_size=4, resume=True,
                progress=False)


# -- generation ----------------------------------------------------------------------------

@pytest.mark.parametrize("slots", [1, 3])
def test_generate_equals_the_engine(tmp_path, tiny_llama, slots):
    from abi.llm import Engine

    path = _jsonl(tmp_path / "in.jsonl", [{"prompt": p} for p in PROMPTS])
    options = {"max_tokens": 6, "temperature": 0.8, "seed": 11}
    # with several slots the items decode together, through the runtime's scheduler
    report = run_job(JobSpec("generate", "prompt", model=tiny_llama, options=options,
                             model_opts={"n_slots": slots}), path,
                     tmp_path / "out.jsonl", shard_size=2, progress=False)
    assert report.written == 3
    rows = read_results(tmp_path / "out.jsonl")
    engine = Engine().load_model(tiny_llama)
    for i, (row, prompt) in enumerate(zip(rows, PROMPTS)):
        response = engine.create_streaming_response(prompt, **{**options, "seed": 11 + i})
        for _ in response:
            pass
        stats = response.get_stats()
        assert (row["text"], row["finish_reason"], row["prompt_tokens"], row["completion_tokens"]) \
            == (response.text, stats.finish_reason, stats.prompt_tokens, stats.tokens_generated)
    assert json.loads(rows[0]["settings"])["seed"] == 11


@pytest.mark.model
def test_cli_generates_json_for_chats(tmp_path, default_model_path):
    path = _jsonl(tmp_path / "chats.jsonl", [
        {"id": "q1", "chat": [{"role": "user", "content": "Give a name and an age."}]},
        {"id": "q2", "chat": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Describe a cat."}]}])
    out = tmp_path / "answers.parquet"
    assert cli_main(["batch", "generate", str(path), "--out", str(out), "--messages-field", "chat",
                     "--id-field", "id", "--json", "-n", "24", "--temperature", "0",
                     "--no-progress"]) == 0
    rows = read_results(out)
    assert [r["id"] for r in rows] == ["q1", "q2"]
    for r in rows:
        assert r["completion_tokens"] > 0 and r["finish_reason"] in ("stop", "length")
        if r["finish_reason"] == "stop":
            assert isinstance(json.loads(r["text"]), dict)
        assert json.loads(r["settings"])["grammar"]["kind"] == "json_object"


def test_structured_output_flags_are_those_of_llm_generate(tmp_path):
    """batch generate and llm generate share one parser: each flag gives its grammar."""
    import argparse

    from abi.errors import GrammarError
    from abi.llm.cli import _add_structured_args, _structured_options

    p = argparse.ArgumentParser()
    _add_structured_args(p)
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "properties": {"a": {"type": "integer"}}}')
    cases = {("--json",): ("json_object", '{"type": "object"}'),
             ("--json-schema", str(schema)): ("json_schema", json.dumps(json.loads(schema.read_text()))),
             ("--regex", "[0-9]+"): ("regex", "[0-9]+"),
             ("--grammar", 'root ::= "yes" | "no"'): ("gbnf", 'root ::= "yes" | "no"')}
    for argv, (kind, source) in cases.items():
        grammar = _structured_options(p.parse_args(list(argv)))["grammar"]
        assert (grammar.kind, grammar.source) == (kind, source)
    assert _structured_options(p.parse_args([])) == {}
    with pytest.raises(SystemExit):
        p.parse_args(["--json", "--regex", "x"])  # one at a time
    with pytest.raises(GrammarError, match="not valid JSON"):
        _structured_options(p.parse_args(["--json-schema", "{nope"]))
