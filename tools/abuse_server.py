"""Abuse test for ``python -m abi serve`` (issue 17, request limits): oversized bodies and
prompts far longer than the context, sent at once, while a separate process polls /health.
Prints /health's latency (p50, p99, max) during the abuse, the server's RSS before and after,
and how each abusive request was refused (status and error code).

    python tools/abuse_server.py                        # starts its own server
    python tools/abuse_server.py --url http://127.0.0.1:8080 --pid 1234
    python tools/abuse_server.py --bodies 8 --body-mb 10 --burst 40 --bursts 3

Phase 1 sends ``--bodies`` bodies of ``--body-mb`` MB at once (half announced by
Content-Length, half chunked); phase 2 sends ``--bursts`` bursts of ``--burst`` requests whose
prompts fit the body limit but not the context (some refused by their length alone, some
only after tokenising). Every request must be refused with a typed error: 413
``request_too_large`` or 400 ``context_length_exceeded``. Traffic goes only to the loopback
address; every loop is bounded in count and time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test_server import rss_kib  # noqa: E402

MODEL = "smollm2-135m-instruct"
ROUTES = ("/v1/chat/completions", "/v1/completions", "/api/generate", "/api/chat")
EXPECTED = {(413, "request_too_large"), (400, "context_length_exceeded"), (413, "ollama"),
            (400, "ollama")}


def poll_health(url: str, stop, out, period: float) -> None:
    """In its own process: GET /health every ``period`` s on one keep-alive connection,
    until ``stop`` is set; the latencies (s) go to ``out``."""
    latencies, errors = [], 0
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                ok = client.get(url + "/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok
            time.sleep(period)
    out.put((latencies, errors))


def body_for(route: str, text: str, model: str) -> dict:
    if route in ("/v1/chat/completions", "/api/chat"):
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
    else:
        body = {"model": model, "prompt": text}
    if route.startswith("/api/"):
        body["stream"] = False
    else:
        body["max_tokens"] = 1
    return body


def outcome(response: httpx.Response) -> tuple[int, str | None]:
    """(status, error code); Ollama's errors ({"error": "message"}) carry no code."""
    try:
        err = response.json().get("error")
    except ValueError:
        return response.status_code, "not json"
    if isinstance(err, dict):
        return response.status_code, err.get("code")
    return response.status_code, "ollama" if isinstance(err, str) else None


async def send(client: httpx.AsyncClient, url: str, route: str, payload: bytes, chunked: bool):
    headers = {"content-type": "application/json"}
    content = payload
    if chunked:  # no Content-Length: the server only learns the size while reading
        async def pieces():
            step = 256 * 1024
            for i in range(0, len(payload), step):
                yield payload[i:i + step]
        content = pieces()
    t0 = time.perf_counter()
    try:
        r = await client.post(url + route, content=content, headers=headers)
        result = outcome(r)
    except httpx.HTTPError as exc:
        result = (0, type(exc).__name__)
    return result, time.perf_counter() - t0


async def abuse(args, url: str, props: dict) -> dict:
    limits = httpx.Limits(max_connections=args.burst + args.bodies)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        # phase 1: huge bodies at once
        big_text = "a" * int(args.body_mb * 1_000_000)
        tasks = []
        for i in range(args.bodies):
            route = ROUTES[i % len(ROUTES)]
            payload = json.dumps(body_for(route, big_text, args.model)).encode()
            tasks.append(send(client, url, route, payload, chunked=bool(i % 2)))
        t0 = time.perf_counter()
        phase1 = await asyncio.gather(*tasks)
        t_bodies = time.perf_counter() - t0
        # phase 2: bursts of prompts that fit the body limit but not the context
        room = props["max_body_bytes"] - 4096
        sizes = [int(room * (0.1 + 0.9 * i / max(args.burst - 1, 1))) for i in range(args.burst)]
        phase2, t_bursts = [], []
        for b in range(args.bursts):
            tasks = []
            for i, n in enumerate(sizes):
                route = ROUTES[(i + b) % len(ROUTES)]
                text = ("the quick brown fox jumps over the lazy dog " * (n // 44 + 1))[:n]
                payload = json.dumps(body_for(route, text, args.model)).encode()
                tasks.append(send(client, url, route, payload, chunked=False))
            t0 = time.perf_counter()
            phase2 += await asyncio.gather(*tasks)
            t_bursts.append(time.perf_counter() - t0)
    return {"bodies": phase1, "bursts": phase2, "t_bodies": t_bodies, "t_bursts": t_bursts}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server (default: start one)")
    p.add_argument("--pid", type=int, default=None, help="the running server's pid, for its RSS")
    p.add_argument("--model", default=MODEL)
    p.add_argument("--bodies", type=int, default=8, help="oversized bodies sent at once")
    p.add_argument("--body-mb", type=float, default=10.0)
    p.add_argument("--burst", type=int, default=40, help="long-prompt requests per burst")
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--period", type=float, default=0.01, help="seconds between /health polls")
    p.add_argument("--settle", type=float, default=3.0, help="seconds to wait before the last RSS")
    args = p.parse_args(argv)

    proc = None
    if args.url is None:
        from load_test_server import start_server

        ns = argparse.Namespace(parallel=1, queue=64, model=None)
        proc, url, log = start_server(ns)
        pid = proc.pid
        print(f"server pid {pid}, log {log}")
    else:
        url, pid = args.url.rstrip("/"), args.pid
    try:
        props = httpx.get(url + "/props", timeout=30).json()
        # one real request first, so the baseline includes a warmed-up server
        httpx.post(url + "/v1/completions", timeout=120,
                   json={"model": args.model, "prompt": "Hello", "max_tokens": 2}).raise_for_status()
        rss_before = rss_kib(pid) if pid else 0
        print(f"n_ctx {props['n_ctx']}, body limit {props['max_body_bytes']} bytes")

        ctx = mp.get_context("spawn")
        stop, out = ctx.Event(), ctx.Queue()
        poller = ctx.Process(target=poll_health, args=(url, stop, out, args.period), daemon=True)
        poller.start()
        time.sleep(1.0)  # the poller's own start-up is not the server's latency
        t0 = time.perf_counter()
        result = asyncio.run(abuse(args, url, props))
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)
        stop.set()
        latencies, health_errors = out.get(timeout=60)
        poller.join(timeout=10)
        time.sleep(args.settle)
        rss_after = rss_kib(pid) if pid else 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)

    ms = [x * 1000 for x in latencies]
    print(f"abuse: {args.bodies} x {args.body_mb:g} MB bodies in {result['t_bodies']:.2f} s; "
          f"{args.bursts} bursts of {args.burst} long prompts in "
          + ", ".join(f"{t:.2f}" for t in result["t_bursts"]) + f" s; {elapsed:.1f} s in all")
    for name in ("bodies", "bursts"):
        counts = Counter(r for r, _ in result[name])
        slowest = max((t for _, t in result[name]), default=0.0)
        print(f"  {name}: " + ", ".join(f"{s} {c}: {n}" for (s, c), n in sorted(counts.items(), key=str))
              + f" (slowest refusal {slowest:.2f} s)")
    print(f"/health during abuse: {len(ms)} polls, {health_errors} failed; p50 {pct(ms, 0.5):.1f} ms, "
          f"p99 {pct(ms, 0.99):.1f} ms, max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms")
    if pid:
        growth = (rss_after - rss_before) / rss_before * 100
        print(f"server RSS: before {rss_before / 1024:.0f} MiB, after {rss_after / 1024:.0f} MiB "
              f"({growth:+.1f} %)")
    untyped = [r for r, _ in result["bodies"] + result["bursts"] if r not in EXPECTED]
    ok = not untyped and health_errors == 0
    if untyped:
        print(f"FAIL: {len(untyped)} requests were not refused with a typed error: {Counter(untyped)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
