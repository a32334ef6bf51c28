"""Load test for ``python -m abi serve``: rounds of concurrent streaming clients, some of which
disconnect early, against a server on 127.0.0.1. Checks that every request completes (its
stream ends properly) or is cancelled, that no slot stays busy or queued afterwards, and
that the server's memory stays flat from round to round.

    python tools/load_test_server.py                      # starts its own server
    python tools/load_test_server.py --url http://127.0.0.1:8080 --pid 1234
    python tools/load_test_server.py --clients 32 --rounds 3 --parallel 2 --max-tokens 32

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


def start_server(args) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="abi-load-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "abi", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--parallel", str(args.parallel), "--queue", str(args.queue)]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); log: {log.name}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, log.name
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become healthy within 180 s")


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server (default: start one)")
    p.add_argument("--pid", type=int, help="the running server's pid (for its RSS)")
    p.add_argument("--model", default=None, help="model for the server this script starts")
    p.add_argument("--api-key", default=os.environ.get("ABI_API_KEY"))
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--disconnect-fraction", type=float, default=0.25)
    p.add_argument("--parallel", type=int, default=2, help="slots of the server this script starts")
    p.add_argument("--queue", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args(argv)
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
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
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
