"""Load test for ``python -m abi serve``: rounds of concurrent streaming clients, some of which
disconnect early, against a server on 127.0.0.1. Checks that every request completes (its
stream ends properly) or is cancelled, that no slot stays busy or queued afterwards, and
that the server's memory stays flat from round to round.

    python tools/load_test_server.py                      # starts its own server
    python tools/load_test_server.py --url http://127.0.0.1:8080 --pid 1234
    python tools/load_test_server.py --clients 32 --rounds 3 --parallel 2 --max-tokens 32

``--bench``: throughput against llama.cpp's ``llama-server`` in the same run. For 1, 2, 4 and 8
concurrent streaming clients (each server started with ``--parallel N``, the same threads and
the same context per slot; all servers up at once and ``--rounds`` rounds taking them in turn,
the round of median aggregate reported, since this host's speed drifts by 10-20% from one
minute to the next), the aggregate tokens/s, per-stream tokens/s, time to first token p50/p99
and inter-token latency p99, and the ratios the serving issue asks for:

    python tools/load_test_server.py --bench --llama-server /work/llamacpp/build/bin/llama-server \
        --threads 2 --max-tokens 128

Traffic goes only to the loopback address; every loop is bounded in count and time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

TOPICS = ["the sea", "cats", "mountains", "the moon", "bread", "rivers", "trains", "music",
          "winter", "bees", "clocks", "forests", "salt", "glass", "paper", "storms"]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc, url: str, log_name: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); log: {log_name}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not become healthy within {seconds:.0f} s; log: {log_name}")


def start_server(args) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="abi-load-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "abi", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--parallel", str(args.parallel), "--queue", str(args.queue)]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(proc, url, log.name, 180)
    return proc, url, log.name


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def metric_values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def one_request(client: httpx.AsyncClient, i: int, round_no: int, args, leave_after: int | None):
    """One streaming request; returns a record of how it ended."""
    topic = TOPICS[(i + round_no) % len(TOPICS)]
    content = f"Write a few sentences about {topic} (request {round_no}.{i})."
    ollama = i % 2 == 1  # half the clients speak Ollama's NDJSON, half OpenAI's SSE
    if ollama:
        path = "/api/chat"
        body = {"model": args.model_id, "messages": [{"role": "user", "content": content}],
                "options": {"num_predict": args.max_tokens, "temperature": 0.7, "seed": i}}
    else:
        path = "/v1/chat/completions"
        body = {"model": args.model_id, "messages": [{"role": "user", "content": content}],
                "max_tokens": args.max_tokens, "temperature": 0.7, "seed": i, "stream": True}
    rec = {"client": i, "api": "ollama" if ollama else "openai", "status": None, "outcome": None,
           "chunks": 0, "ttfb_s": None, "total_s": None, "error": None}
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", path, json=body, timeout=args.timeout) as r:
            rec["status"] = r.status_code
            if r.status_code != 200:
                rec["outcome"], rec["error"] = "error", (await r.aread()).decode()[:200]
                return rec
            ended = False
            async for line in r.aiter_lines():
                if not line:
                    continue
                if rec["chunks"] == 0:
                    rec["ttfb_s"] = time.perf_counter() - t0
                rec["chunks"] += 1
                if ollama:
                    obj = json.loads(line)
                    if "error" in obj:
                        rec["outcome"], rec["error"] = "error", obj["error"]
                        return rec
                    ended = bool(obj.get("done"))
                else:
                    if line == "data: [DONE]":
                        ended = True
                    elif '"error"' in line:
                        rec["outcome"], rec["error"] = "error", line[:200]
                        return rec
                if leave_after is not None and rec["chunks"] >= leave_after and not ended:
                    rec["outcome"] = "left"  # leaving the block closes the connection
                    return rec
            rec["outcome"] = "completed" if ended else "truncated"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        rec["outcome"], rec["error"] = "error", f"{type(exc).__name__}: {exc}"
    finally:
        rec["total_s"] = time.perf_counter() - t0
    return rec


async def wait_idle(client: httpx.AsyncClient, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    h = {}
    while time.monotonic() < deadline:
        h = (await client.get("/health", timeout=10)).json()
        if h.get("slots_processing") == 0 and h.get("queue_depth") == 0:
            return h
        await asyncio.sleep(0.1)
    return h


async def run(args, url: str, pid: int | None) -> dict:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.clients + 8, max_keepalive_connections=args.clients + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:
        models = (await client.get("/v1/models", timeout=30)).json()
        args.model_id = models["data"][0]["id"]
        # warm-up: one request per slot, so the first round's figures are not load effects
        await asyncio.gather(*(one_request(client, i, -1, args, None) for i in range(args.parallel)))
        await wait_idle(client)
        rss = [rss_kib(pid)] if pid else []
        before = metric_values((await client.get("/metrics")).text)
        records, leaks, t_start = [], [], time.perf_counter()
        probe_latencies: list[float] = []
        stop_probe = asyncio.Event()

        async def probe():  # /health and /metrics must answer while generations run
            while not stop_probe.is_set():
                for path in ("/health", "/metrics"):
                    t0 = time.perf_counter()
                    await client.get(path, timeout=30)
                    probe_latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.25)

        prober = asyncio.create_task(probe())
        n_leave = round(args.clients * args.disconnect_fraction)
        for round_no in range(args.rounds):
            # clients 0, 4, 8 ... leave after two chunks (a quarter of them by default)
            step = max(args.clients // max(n_leave, 1), 1)
            leavers = set(range(0, args.clients, step)[:n_leave])
            batch = await asyncio.gather(*(
                one_request(client, i, round_no, args, 2 if i in leavers else None)
                for i in range(args.clients)))
            for rec in batch:
                rec["round"] = round_no
            records += batch
            h = await wait_idle(client)
            leaks.append({"round": round_no, "slots_processing": h.get("slots_processing"),
                          "queue_depth": h.get("queue_depth")})
            if pid:
                rss.append(rss_kib(pid))
            print(f"round {round_no}: " + ", ".join(f"{k} {sum(r['outcome'] == k for r in batch)}"
                  for k in ("completed", "left", "truncated", "error"))
                  + (f"; server RSS {rss[-1] / 1024:.1f} MiB" if pid else ""), flush=True)
        wall = time.perf_counter() - t_start
        stop_probe.set()
        await prober
        after = metric_values((await client.get("/metrics")).text)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    completed = [r for r in records if r["outcome"] == "completed"]
    ttfb = sorted(r["ttfb_s"] for r in completed if r["ttfb_s"] is not None)
    return {
        "clients": args.clients, "rounds": args.rounds, "requests": len(records),
        "slots": args.parallel, "max_tokens": args.max_tokens,
        "completed": len(completed),
        "left_early": sum(r["outcome"] == "left" for r in records),
        "truncated": sum(r["outcome"] == "truncated" for r in records),
        "errors": sum(r["outcome"] == "error" for r in records),
        "error_samples": [r["error"] for r in records if r["outcome"] == "error"][:5],
        "server_generations": {k.split('"')[1]: int(v) for k, v in delta.items()
                               if k.startswith("abi_generations_total{")},
        "server_rejected": int(delta.get("abi_requests_rejected_total", 0)),
        "generated_tokens": int(delta.get("abi_generated_tokens_total", 0)),
        "wall_s": round(wall, 1),
        "tokens_per_s_overall": round(delta.get("abi_generated_tokens_total", 0) / wall, 1),
        "ttfb_p50_s": round(statistics.median(ttfb), 2) if ttfb else None,
        "ttfb_p95_s": round(ttfb[int(0.95 * (len(ttfb) - 1))], 2) if ttfb else None,
        "health_metrics_probes": len(probe_latencies),
        "health_metrics_latency_p50_ms": round(1000 * statistics.median(probe_latencies), 1)
        if probe_latencies else None,
        "health_metrics_latency_max_ms": round(1000 * max(probe_latencies), 1) if probe_latencies else None,
        "after_each_round": leaks,
        "slot_leaks": sum(1 for x in leaks if x["slots_processing"] or x["queue_depth"]),
        "rss_mib": [round(x / 1024, 1) for x in rss],
    }


# -- the throughput bench ------------------------------------------------------------------------

def start_bench_server(kind: str, n: int, args) -> tuple[subprocess.Popen, str]:
    """abi or llama-server with N slots, ``args.threads`` threads and ``args.ctx`` per slot."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix=f"bench-{kind}-", suffix=".log", delete=False)
    if kind == "abi":
        cmd = [sys.executable, "-m", "abi", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--parallel", str(n), "--threads", str(args.threads), "--ctx", str(args.ctx),
               "--model", args.model_path]
    else:   # llama-server splits -c over its slots
        cmd = [args.llama_server, "-m", args.model_path, "--host", "127.0.0.1", "--port", str(port),
               "--parallel", str(n), "--threads", str(args.threads), "-c", str(args.ctx * n)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(proc, url, log.name)
    return proc, url


LONG_PROMPT = "Summarise this report. " + " ".join(
    f"Section {i}: the {TOPICS[i % len(TOPICS)]} survey found {i * 7 % 100} items of note." for i in range(130))


async def bench_stream(client: httpx.AsyncClient, i: int, args, content: str | None = None,
                       max_tokens: int | None = None) -> dict:
    """One streaming chat completion: its token arrival times."""
    content = content or f"Write a long story about {TOPICS[i % len(TOPICS)]}."
    # ignore_eos (both servers take it): every stream answers max_tokens tokens, so both do the
    # same work whatever their samplers draw
    body = {"model": args.model_id, "max_tokens": max_tokens or args.max_tokens, "temperature": 0.7,
            "seed": i, "stream": True, "ignore_eos": True, "messages": [{"role": "user", "content": content}]}
    t0 = time.perf_counter()
    times = []
    async with client.stream("POST", "/v1/chat/completions", json=body, timeout=args.timeout) as r:
        if r.status_code != 200:
            raise SystemExit(f"bench request failed: {r.status_code} {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            for choice in obj.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    times.append(time.perf_counter() - t0)
    return {"start": t0, "times": times}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def bench_round(url: str, n: int, args, rnd: int = 0) -> dict:
    # a connection per request: llama-server drops a kept-alive connection after a streamed
    # answer, and the next request sent on it failed with "Server disconnected"
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        if rnd == 0:
            await bench_stream(client, 999, args)   # warm-up
        t0 = time.perf_counter()
        # each round its own topics, so no round finds its prompts cached whole
        streams = await asyncio.gather(*(bench_stream(client, i + n * rnd, args) for i in range(n)))
        wall = time.perf_counter() - t0
        stall = long_ttft = None
        if args.long_prompt and n > 1 and rnd == args.rounds - 1:
            # n - 1 streams decoding (4x longer answers, so they outlast the prompt), then a
            # ~2,000-token prompt arrives: their worst gap from its arrival to its first token
            async def arrive():
                await asyncio.sleep(args.long_prompt_delay)
                return await bench_stream(client, 0, args, LONG_PROMPT, max_tokens=1)

            run = await asyncio.gather(arrive(), *(bench_stream(client, i, args, max_tokens=4 * args.max_tokens)
                                                   for i in range(1, n)))
            lo = run[0]["start"]
            hi = lo + (run[0]["times"][0] if run[0]["times"] else float("inf"))
            window = [b - a for s in run[1:] for a, b in zip(s["times"], s["times"][1:]) if s["start"] + b > lo
                      and s["start"] + a < hi]
            stall = 1000 * max(window) if window else None
            long_ttft = hi - lo
    tokens = sum(len(s["times"]) for s in streams)
    ttft = [s["times"][0] for s in streams if s["times"]]
    gaps = [b - a for s in streams for a, b in zip(s["times"], s["times"][1:])]
    per_stream = [(len(s["times"]) - 1) / (s["times"][-1] - s["times"][0])
                  for s in streams if len(s["times"]) > 1]
    return {"streams": n, "tokens": tokens, "aggregate_tok_s": tokens / wall,
            "per_stream_tok_s": statistics.mean(per_stream) if per_stream else float("nan"),
            "ttft_p50_s": _pct(ttft, 0.5), "ttft_p99_s": _pct(ttft, 0.99),
            "itl_p99_ms": 1000 * _pct(gaps, 0.99), "itl_max_long_prompt_ms": stall,
            "long_prompt_ttft_s": long_ttft}


def bench(args) -> dict:
    kinds = ["abi"] + (["llama-server"] if args.llama_server else [])
    keys = [(kind, n) for n in args.streams for kind in kinds]
    servers: dict[tuple[str, int], tuple[subprocess.Popen, str]] = {}
    runs: dict[tuple[str, int], list[dict]] = {key: [] for key in keys}
    try:
        # every server up at once, the rounds taking them in turn: this host's speed drifts by
        # 10-20% from one minute to the next, and a configuration measured only in a slow
        # minute would move the ratios by that much
        for kind, n in keys:
            servers[kind, n] = start_bench_server(kind, n, args)
        for rnd in range(args.rounds):
            for key in keys:
                runs[key].append(asyncio.run(bench_round(servers[key][1], key[1], args, rnd)))
    finally:
        for proc, _ in servers.values():
            stop_server(proc)
    rows: dict[str, list[dict]] = {k: [] for k in kinds}
    for kind, n in keys:
        done = runs[kind, n]
        # the round of median aggregate
        r = dict(sorted(done, key=lambda x: x["aggregate_tok_s"])[(len(done) - 1) // 2])
        r["round_aggregates"] = [x["aggregate_tok_s"] for x in done]
        r["itl_max_long_prompt_ms"], r["long_prompt_ttft_s"] = done[-1]["itl_max_long_prompt_ms"], done[-1]["long_prompt_ttft_s"]
        rows[kind].append(r)
        print(f"{kind:>12} {n} streams: {r['tokens']:4d} tokens, aggregate {r['aggregate_tok_s']:6.1f} "
              f"tok/s (median of {', '.join(f'{a:.1f}' for a in r['round_aggregates'])}), per stream {r['per_stream_tok_s']:5.1f} tok/s, TTFT p50 {r['ttft_p50_s']:.2f} s "
              f"p99 {r['ttft_p99_s']:.2f} s, inter-token p99 {r['itl_p99_ms']:.0f} ms"
              + ("" if not args.long_prompt or n < 2 else
                 f", worst gap while a long prompt prefills {r['itl_max_long_prompt_ms']:.0f} ms"
                 f" (its first token after {r['long_prompt_ttft_s']:.1f} s)"
                 if r["itl_max_long_prompt_ms"] is not None else ", no stream ran while the long prompt prefilled"),
              flush=True)
    ratios = {}
    ours = {r["streams"]: r for r in rows["abi"]}
    theirs = {r["streams"]: r for r in rows.get("llama-server", [])}
    for n in args.streams:
        if n in (4, 8) and 1 in ours:
            ratios[f"abi {n} streams / abi 1 stream (target >= 2.5)"] = \
                ours[n]["aggregate_tok_s"] / ours[1]["aggregate_tok_s"]
        if n in (4, 8) and n in theirs:
            ratios[f"abi / llama-server aggregate at {n} (target >= 1.2)"] = \
                ours[n]["aggregate_tok_s"] / theirs[n]["aggregate_tok_s"]
            ratios[f"abi / llama-server TTFT p99 at {n} (target <= 1)"] = \
                ours[n]["ttft_p99_s"] / theirs[n]["ttft_p99_s"]
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    return {"rows": rows, "ratios": ratios, "threads": args.threads, "ctx": args.ctx,
            "max_tokens": args.max_tokens}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", action="store_true", help="throughput vs llama-server (see above)")
    p.add_argument("--llama-server", default=None, help="llama-server binary for --bench")
    p.add_argument("--streams", default="1,2,4,8", help="--bench: concurrent clients per round")
    p.add_argument("--threads", type=int, default=2, help="--bench: threads of both servers")
    p.add_argument("--ctx", type=int, default=4096, help="--bench: context per slot")
    p.add_argument("--long-prompt", action="store_true",
                   help="--bench: also let a ~2,000-token prompt arrive beside N-1 running streams "
                        "and report their worst inter-token gap")
    p.add_argument("--long-prompt-delay", type=float, default=3.0,
                   help="--bench: seconds after the streams start that the long prompt arrives")
    p.add_argument("--url", help="a running server (default: start one)")
    p.add_argument("--pid", type=int, help="the running server's pid (for its RSS)")
    p.add_argument("--model", default=None, help="model for the server this script starts")
    p.add_argument("--api-key", default=os.environ.get("ABI_API_KEY"))
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of clients; --bench: measured rounds per server and stream count, "
                        "the round of median aggregate reported")
    p.add_argument("--disconnect-fraction", type=float, default=0.25)
    p.add_argument("--parallel", type=int, default=2, help="slots of the server this script starts")
    p.add_argument("--queue", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args(argv)
    if args.bench:
        from abi.models_hub import resolve_model

        if args.rounds < 1:
            raise SystemExit("--rounds must be at least 1")

        args.model_path = str(resolve_model(args.model))
        args.model_id = os.path.splitext(os.path.basename(args.model_path))[0]
        args.streams = [int(x) for x in args.streams.split(",")]
        result = bench(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        return 0
    if args.url and not re.match(r"^http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$", args.url):
        raise SystemExit("--url must be a loopback address (127.x.x.x, localhost, [::1])")
    proc = None
    if args.url:
        url, pid = args.url.rstrip("/"), args.pid
    else:
        proc, url, log = start_server(args)
        pid = proc.pid
        print(f"server pid {pid} at {url} (log {log})", flush=True)
    try:
        result = asyncio.run(run(args, url, pid))
    finally:
        if proc is not None:
            stop_server(proc)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    ok = (result["errors"] == 0 and result["truncated"] == 0 and result["slot_leaks"] == 0
          and result["completed"] + result["left_early"] == result["requests"])
    print("OK: every request completed or was cancelled; no slot leaks" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
