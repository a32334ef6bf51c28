"""Every example of the README runs as written: each Python block, and each shell command that
needs no network, against the default models (and, where the README names a remote service,
the fakes of tests/fake_providers.py). A command or block the README adds must be classified
below, so the README cannot drift from the code again (issue 26)."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fake_providers import OPENAI_KEY, FakeOllama, FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
pytestmark = pytest.mark.model


def python_blocks() -> dict[str, str]:
    """Each ```python block, keyed by its first line."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    return {b.splitlines()[0].split("#")[0].strip(): b for b in blocks}


def shell_commands() -> list[str]:
    """Each command of the ```bash blocks: continuation lines joined, trailing comments
    dropped, 'a && b' and 'a ; b' split."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.split(r"\s+#\s", line)[0].strip()
            out += [part for part in re.split(r"\s+(?:&&|;)\s+", line) if part]
    return out


# -- shell commands: how each one is run, or why it is not -----------------------------------
# RUN: as written. A string: the runnable form, for a command whose README text holds a
# placeholder ([OPTIONAL], MODEL, ...). SERVE / CURL: started / sent against a live server.
# Any other value of EXCLUDED is the reason the command is not run here.
RUN, SERVE = "run", "serve"
SHELL = {
    'python -m abi llm generate "Once upon a time"': RUN,
    'python -m abi llm generate "Once upon a time" -n 64 --temperature 0.8 --seed 1 --verbose': RUN,
    'python -m abi llm generate --chat --system "Be brief." "What is a GGUF file?"': RUN,
    'python -m abi llm chat': RUN,                                       # stdin: /exit
    'python -m abi llm bench -p 512 -n 128': RUN,
    'python -m abi llm info [MODEL] [--json]': 'python -m abi llm info {model} --json',
    'python -m abi pull [NAME]': 'python -m abi pull',                   # cached: no fetch
    'python -m abi list': RUN,
    'python -m abi pull all-minilm-l6-v2': RUN,
    # a tiny F16 llama (tests/tiny_models.py) stands for the F16 source model
    'python -m abi quantize model-f16.gguf model-q4km.gguf Q4_K_M': RUN,
    'python -m abi quantize model.gguf out.gguf Q8_0 --allow-requantize':
        'python -m abi quantize model-q4km.gguf out.gguf Q8_0 --allow-requantize',
    # adapter.gguf: a random adapter for the default model, written by test_shell_commands
    'python -m abi llm generate --lora adapter.gguf:0.5 "Once upon a time" -n 32': RUN,
    'python -m abi llm info MODEL.gguf --lora adapter.gguf': 'python -m abi llm info {model} --lora adapter.gguf',
    'python -m abi lora fuse MODEL.gguf adapter.gguf fused.gguf [--type f16|same]':
        'python -m abi lora fuse {model} adapter.gguf fused.gguf --type f16',
    'python -m abi agent': RUN,                                          # stdin: end of file
    'python -m abi agent --backend ollama -m "Hello"': RUN,              # FakeOllama
    'python -m abi agent --backend openai --model gpt-4o-mini --system "Be brief."': RUN,  # FakeOpenAI
    'python -m abi agent --gpu-aware -m "Why is the sea salty?" --max-tokens 64': RUN,
    'python -m abi agent --gpu-aware --workload embedding -m "a sentence to embed"': RUN,
    'python -m abi agent --gpu-stats': RUN,
    'python -m abi serve': SERVE,
    'python -m abi serve --model my.gguf --embedding-model default --parallel 2 --ctx 4096 '
    '--queue 64 --api-key SECRET': SERVE,
    'curl http://127.0.0.1:8080/api/generate -H \'Content-Type: application/json\' -d '
    '\'{"model": "smollm2-135m-instruct", "prompt": "Why is the sky blue?"}\'': SERVE,
    'curl http://127.0.0.1:8080/api/v1/chat -H \'Content-Type: application/json\' -d '
    '\'{"content": "Help me understand memory management in Zig", "user_id": "user-123"}\'': SERVE,
    'python -m abi train run -e 10 -b 32 --optimizer adamw --lr-schedule warmup_cosine '
    '--checkpoint-interval 100 --checkpoint-path ./checkpoints/model.ckpt '
    '[--mixed-precision fp16|bf16] [--on-save-error retry]':
        'python -m abi train run -e 10 -b 32 --optimizer adamw --lr-schedule warmup_cosine '
        '--checkpoint-interval 100 --checkpoint-path ./checkpoints/model.ckpt '
        '--mixed-precision bf16 --on-save-error retry --no-progress',
    'python -m abi train info | help | resume ./checkpoints/model.ckpt':
        'python -m abi train info && python -m abi train help && '
        'python -m abi train resume ./checkpoints/model.ckpt',
    'python -m abi convert tokenize --model MODEL.gguf --input text.txt --output data.bin':
        'python -m abi convert tokenize --model {model} --input text.txt --output data.bin',
    'python -m abi convert dataset --input data.bin --output data.wdbx --format to-wdbx': RUN,
    # the inputs are written by test_shell_commands (_batch_inputs)
    'python -m abi batch embed sentences.txt --out vectors.parquet': RUN,
    'python -m abi batch embed docs.jsonl --out docs.parquet --text-field body --id-field doc_id': RUN,
    'python -m abi batch generate prompts.jsonl --out answers.jsonl --chat -n 64 --temperature 0 '
    '--json': RUN,
    'python -m abi batch generate chats.jsonl --out replies.parquet --messages-field messages '
    '-n 64 --seed 1': RUN,
    'python -m abi batch embed sentences.txt --out vectors.parquet --resume': RUN,
    'python -m abi batch embed sentences.txt --out ray-vectors.parquet --ray --workers 2': RUN,
}
EXCLUDED = {
    'pip install -e .': "installs the package: CI's own set-up (.ci/run) runs it",
    'pip install -e ".[test]"': "installs the package: CI's own set-up (.ci/run) runs it",
    'python -m pytest': "the suite itself",
    'python tools/bench_vs_llamacpp.py': "needs llama.cpp (ABI_LLAMACPP_PYTHON), a development tool",
    'python tools/fidelity.py MODEL': "needs llama.cpp (ABI_LLAMACPP_PYTHON), a development tool",
    'ABI_LLAMACPP_BIN=DIR python tools/quant_fidelity.py': "needs llama.cpp's binaries",
    'python tools/make_reference.py all': "needs llama.cpp (ABI_LLAMACPP_PYTHON)",
    'python tools/bench_kernels.py --json': "a benchmark of minutes, run by hand",
    'python tools/bench_kernels.py --prompt 64': "a benchmark of minutes, run by hand",
    'python tools/bench_batch.py -n 10000': "a benchmark of a minute or more, run by hand",
    'python -m abi batch embed sentences.txt --out vectors.parquet --ray auto':
        "needs an existing Ray cluster (--ray alone, which starts one, is run)",
    'python -m abi quantize model-f16.gguf out.gguf Q4_K_M --imatrix imatrix.gguf':
        "needs llama-imatrix output (test_quantize.py covers --imatrix)",
    'python -m abi convert hf-to-gguf HF_DIR --outtype f16 -o model.gguf':
        "needs a Hugging Face folder (pulling all-minilm-l6-v2 runs the same conversion)",
    'python tools/bench_embeddings.py --st-python /path/to/venv/bin/python [--join 24]':
        "needs an interpreter with torch and sentence-transformers",
    'python -m abi train llm --data data.bin --vocab-from MODEL.gguf --n-layer 2 --n-embd 64 '
    '--n-head 4 --n-ff 128 --steps 200 --batch-size 8 --seq-len 64 --learning-rate 3e-3 '
    '--log-dir runs --tensorboard --wandb --export-gguf tiny.gguf --export-type q8_0':
        "about 7 minutes (test_training_llm.py trains the same way, smaller)",
    'python -m abi train llm --data data.bin --init MODEL.gguf --steps 20 ...':
        "about 8 minutes and 2.8 GB (test_training_llm.py fine-tunes a tiny model)",
    'python -m abi train lora --model smollm2-135m-instruct --data chats.jsonl --out adapter.gguf '
    '--steps 100 --rank 8 --alpha 16 --targets q,k,v,o --lora-layers 8 --lr 1e-4 --batch-size 4 '
    '--grad-accum 1 --max-seq-len 512 --val-split 0.1 --val-every 20 --checkpoint-dir ck/run '
    '--checkpoint-interval 20 --log-dir runs --tensorboard':
        "minutes on 2 cores (test_lora_training.py runs the same options on a tiny model, "
        "test_lora_demo.py trains SmolLM2)",
    'python -m abi train lora --model MODEL.gguf --data chats.jsonl --out adapter.gguf --resume ck/run':
        "needs the run above (test_lora_training.py resumes bit for bit)",
}
STDIN = {'python -m abi llm chat': "/exit\n",
         'python -m abi agent --backend openai --model gpt-4o-mini --system "Be brief."': "Hello\n"}


def test_every_readme_example_is_classified():
    found = shell_commands()
    assert set(found) == set(SHELL) | set(EXCLUDED), (
        "README shell commands changed; classify them in tests/test_readme.py: "
        f"new {sorted(set(found) - set(SHELL) - set(EXCLUDED))}, "
        f"gone {sorted((set(SHELL) | set(EXCLUDED)) - set(found))}")
    assert not set(SHELL) & set(EXCLUDED)
    assert set(python_blocks()) == set(PY_BLOCKS)


def test_one_public_namespace():
    """The examples use abi.<part>; abi.ai (the reference's alias) is shown once, in one
    paragraph, and is what it says."""
    import abi.agents
    import abi.ai

    assert not [b for b in python_blocks().values() if "abi.ai" in b]
    paragraphs = [p for p in README.split("\n\n") if "abi.ai" in p]
    assert len(paragraphs) == 1, paragraphs
    assert abi.ai.agents is abi.agents and abi.ai.GpuAgent is abi.agents.GpuAgent


@pytest.fixture(scope="module")
def fakes():
    openai, ollama = FakeOpenAI(), FakeOllama()
    yield openai, ollama
    openai.close()
    ollama.close()


@pytest.fixture
def workdir(tmp_path, monkeypatch, fakes, default_model_path):
    """A fresh current directory and the environment the examples need: the remote services
    are the fakes, the GPU agent's state is kept here."""
    openai, ollama = fakes
    # the examples run from the repository root: a folder that links its top-level entries
    # gives them the same relative paths while what they write stays out of the checkout
    for entry in ROOT.iterdir():
        if not entry.name.startswith("."):
            (tmp_path / entry.name).symlink_to(entry)
    monkeypatch.chdir(tmp_path)
    env = {"ABI_OPENAI_BASE_URL": openai.url + "/v1", "ABI_OPENAI_API_KEY": OPENAI_KEY,
           "ABI_OLLAMA_HOST": ollama.url, "ABI_GPU_AGENT_STATE": str(tmp_path / "gpu.json"),
           "ABI_AGENT_BACKEND": "local"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return tmp_path


def _run(command: str, cwd: Path, model: str, stdin: str = "", timeout: float = 300):
    command = command.replace("{model}", shlex.quote(model))
    command = re.sub(r"(^|&& )python ", lambda m: m.group(1) + shlex.quote(sys.executable) + " ",
                     command)
    proc = subprocess.run(command, shell=True, cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, f"{command}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _tiny_f16(path: Path) -> None:
    from abi.gguf import GGMLType
    from tiny_models import write_tiny_model

    write_tiny_model(path, "llama", GGMLType.F16)


def _batch_inputs(root: Path) -> None:
    (root / "sentences.txt").write_text("A cat sat on the mat.\n\nGGUF files hold weights.\n")
    lines = {"docs.jsonl": [{"doc_id": "d1", "body": "Retrieval needs vectors."},
                            {"doc_id": "d2", "body": "Shards are written whole."}],
             "prompts.jsonl": [{"prompt": "Name a colour."}],
             "chats.jsonl": [{"messages": [{"role": "user", "content": "Hi!"}]}]}
    for name, records in lines.items():
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.slow  # ~30 subprocesses, some generating 256 tokens: about a minute on 2 cores
def test_shell_commands(workdir, default_model_path):
    """The commands that need neither a server nor the network, in README order (later ones
    use what earlier ones wrote: checkpoints, data.bin, model-q4km.gguf)."""
    _tiny_f16(workdir / "model-f16.gguf")
    _batch_inputs(workdir)
    from random_adapters import write_random_adapter

    write_random_adapter(default_model_path, workdir / "adapter.gguf")
    (workdir / "text.txt").write_text("Once upon a time there was a GGUF file. " * 40)
    ran = []
    for command in shell_commands():
        how = SHELL.get(command)
        if how is None or how == SERVE:
            continue
        proc = _run(command if how == RUN else how, workdir, default_model_path,
                    STDIN.get(command, ""))
        ran.append((command, proc))
    out = {c: p.stdout for c, p in ran}
    assert json.loads(out['python -m abi llm info [MODEL] [--json]'])["architecture"] == "llama"
    assert (workdir / "out.gguf").is_file() and (workdir / "data.wdbx").is_file()
    assert (workdir / "fused.gguf").is_file()
    assert "LoRA adapter" in out['python -m abi llm info MODEL.gguf --lora adapter.gguf']
    assert "the run is complete" in out['python -m abi train info | help | resume ./checkpoints/model.ckpt']
    assert (workdir / "vectors.parquet" / "part-000000.parquet").is_file()
    assert "(0 written, 1 already there)" in out[
        'python -m abi batch embed sentences.txt --out vectors.parquet --resume']
    assert "You said: Hello" in out['python -m abi agent --backend openai --model gpt-4o-mini --system "Be brief."']
    assert len(ran) == len([c for c, h in SHELL.items() if h != SERVE])


@pytest.mark.slow  # two server start-ups
def test_server_commands_and_client_blocks(workdir, default_model_path):
    """Both serve commands, the curl requests against the first and the official clients'
    block against the second (which wants the key SECRET); 8080 becomes the port given."""
    from serve_helpers import serve

    plain, keyed = [c for c in shell_commands() if c.startswith("python -m abi serve")]
    assert plain == "python -m abi serve"
    args = shlex.split(keyed)[4:]
    args[args.index("my.gguf")] = default_model_path
    with serve() as server:
        for command in (c for c in shell_commands() if c.startswith("curl ")):
            proc = _run(command.replace("http://127.0.0.1:8080", server.url) + " --fail -sS",
                        workdir, default_model_path)
            assert proc.stdout.strip()
    with serve(*args) as server:
        code = python_blocks()["from openai import OpenAI"].replace("http://127.0.0.1:8080", server.url)
        exec(compile(code, "README.md (server clients)", "exec"), {})


def test_python_block(workdir, name, capsys):
    code = python_blocks()[name]
    namespace: dict = {}
    exec(compile(code, f"README.md ({name})", "exec"), namespace)
    if "print(" in code:
        assert capsys.readouterr().out.strip()
    assert set(namespace) - {"__builtins__"}    # it bound the names it shows


# the Python blocks; those run by another test are marked so
PY_BLOCKS = {
    "import abi.llm": RUN,
    "from abi.agents import Agent": RUN,                     # backend openai: FakeOpenAI
    "from abi.agents import GpuAgent, GpuRequest": RUN,
    "from abi.embeddings import Encoder": RUN,
    "from openai import OpenAI": SERVE,                      # test_server_commands_and_client_blocks
    "from abi.personas import MultiPersonaSystem, MultiPersonaConfig, PersonaRequest": RUN,
    "from abi import training": RUN,
}


def pytest_generate_tests(metafunc):
    if "name" in metafunc.fixturenames:
        metafunc.parametrize("name", [n for n, how in PY_BLOCKS.items() if how == RUN])
