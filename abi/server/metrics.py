"""Server metrics in the Prometheus text format (version 0.0.4): request counts, token
counts and rates, queue depth and busy slots. Counters are updated from worker threads
and the event loop, so they sit behind one lock."""
from __future__ import annotations

import threading
from collections import Counter

from ..llm.streaming import StreamingStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)) + "}"


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.http = Counter()            # (method, route, status) -> requests
        self.generations = Counter()     # finish_reason -> generations
        self.rejected = 0                # turned away: queue full
        self.prompt_tokens = 0           # prompt tokens computed (cached ones excluded)
        self.cached_tokens = 0           # prompt tokens reused from a slot's cache
        self.generated_tokens = 0
        self.prompt_seconds = 0.0
        self.decode_seconds = 0.0
        self.decode_steps = 0
        self.in_flight = 0               # HTTP requests being handled

    # -- updates -------------------------------------------------------------------------------
    def record_generation(self, stats: StreamingStats) -> None:
        with self._lock:
            self.generations[stats.finish_reason or "unknown"] += 1
            self.prompt_tokens += max(stats.prompt_tokens - stats.cached_tokens, 0)
            self.cached_tokens += stats.cached_tokens
            self.generated_tokens += stats.tokens_generated
            self.prompt_seconds += stats.prefill_time_ns / 1e9
            self.decode_seconds += stats.decode_time_ns / 1e9
            self.decode_steps += stats.decode_steps

    def record_rejected(self) -> None:
        with self._lock:
            self.rejected += 1

    def record_http(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.http[(method, route, int(status))] += 1

    def request_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def request_finished(self) -> None:
        with self._lock:
            self.in_flight -= 1

    # -- the exposition --------------------------------------------------------------------------
    def render(self, *, busy_slots: int, total_slots: int, queue_depth: int, queue_limit: int,
               model_loaded: bool) -> str:
        out: list[str] = []

        def metric(name, kind, help_text, samples, label_names=()):
            out.append(f"# HELP abi_{name} {help_text}")
            out.append(f"# TYPE abi_{name} {kind}")
            for values, value in samples:
                out.append(f"abi_{name}{_labels(label_names, values)} {_number(value)}")

        with self._lock:
            http = sorted(self.http.items())
            gens = sorted(self.generations.items())
            gen_total = sum(self.generations.values())
            prompt_rate = self.prompt_tokens / self.prompt_seconds if self.prompt_seconds else 0.0
            decode_rate = self.decode_steps / self.decode_seconds if self.decode_seconds else 0.0
            metric("http_requests_total", "counter", "HTTP requests answered",
                   [(k, v) for k, v in http], ("method", "route", "status"))
            metric("requests_total", "counter", "generation requests (jobs) finished",
                   [((), gen_total)])
            metric("generations_total", "counter", "generations finished, by finish reason",
                   [((r,), n) for r, n in gens], ("finish_reason",))
            metric("requests_rejected_total", "counter", "requests turned away: queue full",
                   [((), self.rejected)])
            metric("prompt_tokens_total", "counter", "prompt tokens computed (cache hits excluded)",
                   [((), self.prompt_tokens)])
            metric("prompt_tokens_cached_total", "counter", "prompt tokens reused from a slot's cache",
                   [((), self.cached_tokens)])
            metric("generated_tokens_total", "counter", "tokens generated",
                   [((), self.generated_tokens)])
            metric("prompt_seconds_total", "counter", "seconds spent on prompt processing",
                   [((), self.prompt_seconds)])
            metric("generation_seconds_total", "counter", "seconds spent on decode steps",
                   [((), self.decode_seconds)])
            metric("prompt_tokens_per_second", "gauge", "average prompt processing throughput",
                   [((), prompt_rate)])
            metric("tokens_per_second", "gauge", "average generation throughput (decode steps)",
                   [((), decode_rate)])
            metric("requests_in_flight", "gauge", "HTTP requests being handled",
                   [((), self.in_flight)])
        metric("queue_depth", "gauge", "requests waiting for a slot", [((), queue_depth)])
        metric("queue_limit", "gauge", "most requests that may wait", [((), queue_limit)])
        metric("slots_busy", "gauge", "generation slots in use", [((), busy_slots)])
        metric("slots_total", "gauge", "generation slots", [((), total_slots)])
        metric("model_loaded", "gauge", "1 once the model is loaded", [((), int(model_loaded))])
        return "\n".join(out) + "\n"


def _number(value) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
