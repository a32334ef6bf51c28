"""Fake provider servers for connector and agent tests: real HTTP on 127.0.0.1 (port 0),
speaking each provider's wire format (OpenAI, Ollama, HuggingFace, Discord), with faults
on demand: error statuses, 429 + Retry-After, streams cut mid-way or stalled, malformed
chunks. Nothing in the client is mocked."""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from abi.llm.sse import SSE_DONE, sse_event  # the fakes speak SSE through abi's one encoder


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict      # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (read-timeout tests)


@dataclass
class Stream:
    """A streamed body. ``pieces`` go out as HTTP chunks (``split`` re-cuts the whole byte
    stream into pieces of that many bytes). ``cut``: drop the connection after ``cut``
    bytes with no terminating chunk. ``stall``: after sending, wait this long before ending.
    ``bad_framing``: send a chunk-size line that is not hex."""

    pieces: list
    content_type: str = "text/event-stream"
    split: int | None = None
    cut: int | None = None
    stall: float = 0.0
    bad_framing: bool = False
    status: int = 200
    headers: dict = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args):  # keep test output clean
        pass

    def setup(self):
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK
        # add 40 ms to every reply
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        rec = Recorded(self.command, parts.path, parse_qs(parts.query),
                       {k.lower(): v for k, v in self.headers.items()}, body)
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(rec)
            scripted = fake.script.pop(0) if fake.script else None
        reply = scripted or fake.handle(rec)
        if isinstance(reply, Stream):
            self._stream(reply)
        else:
            self._reply(reply)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

    def _reply(self, r: Reply):
        if r.delay:
            time.sleep(r.delay)
        body = json.dumps(r.json).encode() if r.json is not None else r.body
        self.send_response(r.status)
        if r.json is not None:
            self.send_header("Content-Type", "application/json")
        for k, v in r.headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, s: Stream):
        self.send_response(s.status)
        self.send_header("Content-Type", s.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in s.headers.items():
            self.send_header(k, str(v))
        self.end_headers()
        data = b"".join(p if isinstance(p, bytes) else p.encode() for p in s.pieces)
        pieces = ([data[i:i + s.split] for i in range(0, len(data), s.split)] if s.split
                  else [p if isinstance(p, bytes) else p.encode() for p in s.pieces])
        sent = 0
        for piece in pieces:
            if s.cut is not None and sent + len(piece) >= s.cut:
                piece = piece[:s.cut - sent]
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                self._drop()
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            sent += len(piece)
        if s.bad_framing:
            self.wfile.write(b"zz-not-hex\r\nxx\r\n")
            self.wfile.flush()
            self._drop()
            return
        if s.stall:
            time.sleep(s.stall)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: "FakeServer"

    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # a bug in a fake: show it


class FakeServer:
    """Base: records every request; ``script`` holds replies served before ``handle``."""

    def __init__(self):
        self.requests: list[Recorded] = []
        self.script: list = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, reply, times: int = 1) -> None:
        with self.lock:
            self.script.extend([reply] * times)

    def close(self):
        self._server.shutdown()
        self._server.server_close()

    def handle(self, rec: Recorded):
        return Reply(404, json={"error": "not found"})


def free_port() -> int:
    """A port with nothing listening on it (for connection-refused tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def split_text(text: str, n: int = 3) -> list[str]:
    return [text[i:i + n] for i in range(0, len(text), n)] or [""]


# --- OpenAI -----------------------------------------------------------------------------

OPENAI_KEY = "sk-test-0123456789abcdefXYZ"


class FakeOpenAI(FakeServer):
    """/v1/chat/completions (plain, SSE stream, tools), /v1/embeddings, /v1/models.
    Replies ``You said: <last user message>``; with tools, calls the first tool with
    ``{"query": <last user message>}``; after a tool result, ``Tool said: <result>``."""

    models = ("gpt-4o-mini", "gpt-4")

    def __init__(self, key: str | None = OPENAI_KEY):
        self.key = key
        self.stream_mode: str | None = None  # None | "cut" | "malformed" | "no_done" | "stall"
        self.split: int | None = None
        super().__init__()

    def handle(self, rec: Recorded):
        if self.key and rec.headers.get("authorization") != f"Bearer {self.key}":
            presented = rec.headers.get("authorization", "").removeprefix("Bearer ")
            return Reply(401, json={"error": {
                "message": f"Incorrect API key provided: {presented}.",
                "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
        if rec.method == "GET" and rec.path == "/v1/models":
            return Reply(json={"object": "list", "data": [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "openai"}
                for m in self.models]})
        if rec.method == "POST" and rec.path == "/v1/embeddings":
            return self._embeddings(rec.json)
        if rec.method == "POST" and rec.path == "/v1/chat/completions":
            return self._chat(rec.json)
        return Reply(404, json={"error": {"message": f"Unknown request URL: {rec.path}",
                                          "type": "invalid_request_error"}})

    def _model_error(self, model):
        return Reply(404, json={"error": {
            "message": f"The model `{model}` does not exist or you do not have access to it.",
            "type": "invalid_request_error", "param": None, "code": "model_not_found"}})

    def _embeddings(self, body):
        if body.get("model") not in ("text-embedding-3-small",):
            return self._model_error(body.get("model"))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i,
                 "embedding": [float(len(t)), float(sum(map(ord, t)) % 97), 0.5, -1.0]}
                for i, t in enumerate(inputs)]
        return Reply(json={"object": "list", "data": list(reversed(data)),
                           "model": body["model"],
                           "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})

    def _chat(self, body):
        model = body.get("model")
        if model not in self.models:
            return self._model_error(model)
        msgs = body.get("messages") or []
        if not msgs:
            return Reply(400, json={"error": {"message": "messages must not be empty",
                                              "type": "invalid_request_error"}})
        last = msgs[-1]
        tool_call = None
        if last["role"] == "tool":
            text = f"Tool said: {last['content']}"
        elif body.get("tools") and body.get("tool_choice") != "none":
            fn = body["tools"][0]["function"]["name"]
            tool_call = {"id": "call_abc123", "type": "function",
                         "function": {"name": fn,
                                      "arguments": json.dumps({"query": last["content"]})}}
            text = None
        else:
            text = f"You said: {last['content']}"
        if body.get("stream"):
            return self._chat_stream(body, model, text, tool_call)
        message = {"role": "assistant", "content": text, "refusal": None}
        if tool_call:
            message["tool_calls"] = [tool_call]
        return Reply(json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
            "model": model, "system_fingerprint": "fp_test",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if tool_call else "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}})

    def _chat_stream(self, body, model, text, tool_call):
        def chunk(delta, finish=None, usage=None, choices=True):
            obj = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                   "created": 1700000000, "model": model, "system_fingerprint": "fp_test",
                   "choices": ([{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}] if choices else [])}
            if usage is not None:
                obj["usage"] = usage
            return sse_event(obj)

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if tool_call:
            args = tool_call["function"]["arguments"]
            events.append(chunk({"tool_calls": [{"index": 0, "id": tool_call["id"],
                                                 "type": "function", "function": {
                                                     "name": tool_call["function"]["name"],
                                                     "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]})
                       for a in split_text(args, 5)]
            events.append(chunk({}, "tool_calls"))
        else:
            events += [chunk({"content": piece}) for piece in split_text(text)]
            events.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk(None, usage={"prompt_tokens": 9, "completion_tokens": 4,
                                             "total_tokens": 13}, choices=False))
        mode = self.stream_mode
        if mode == "malformed":
            events.insert(2, "data: {\"id\": \"chatcmpl-1\", \"choi\n\n")
        if mode not in ("no_done", "stall"):  # a stall comes before the end marker
            events.append(SSE_DONE)
        data = "".join(events).encode()
        if mode == "cut":
            return Stream([data], cut=len(data) // 2)
        return Stream([data] if self.split else events, split=self.split,
                      stall=5.0 if mode == "stall" else 0.0)


# --- Ollama -----------------------------------------------------------------------------

class FakeOllama(FakeServer):
    """/api/chat, /api/generate (NDJSON streams by default, as Ollama), /api/embed,
    /api/tags."""

    models = ("gpt-oss:latest", "llama3.2:latest")

    def __init__(self):
        self.stream_mode: str | None = None  # None | "cut" | "malformed" | "error" | "no_done"
        super().__init__()

    def _known(self, model):
        return model in self.models or f"{model}:latest" in self.models

    def handle(self, rec: Recorded):
        body = rec.json or {}
        if rec.method == "GET" and rec.path == "/api/tags":
            return Reply(json={"models": [
                {"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 1234,
                 "digest": "sha256:" + "0" * 64,
                 "details": {"format": "gguf", "family": "llama", "parameter_size": "1B",
                             "quantization_level": "Q4_K_M"}} for m in self.models]})
        if rec.method != "POST" or rec.path not in ("/api/chat", "/api/generate", "/api/embed"):
            return Reply(404, body=b"404 page not found")
        model = body.get("model")
        if not self._known(model):
            return Reply(404, json={"error": f"model \"{model}\" not found, try pulling it first"})
        if rec.path == "/api/embed":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            return Reply(json={"model": model, "embeddings": [[0.1 * len(t), 0.2, -0.3]
                                                               for t in inputs],
                               "total_duration": 1000, "load_duration": 10,
                               "prompt_eval_count": len(inputs)})
        chat = rec.path == "/api/chat"
        if chat:
            last = body["messages"][-1]
            text = f"You said: {last['content']}"
        else:
            text = f"Completing: {body['prompt']}"
        tool_calls = None
        if chat and body.get("tools"):
            tool_calls = [{"function": {"name": body["tools"][0]["function"]["name"],
                                        "arguments": {"query": last["content"]}}}]
            text = ""
        final_stats = {"done_reason": "stop", "total_duration": 5000, "load_duration": 100,
                       "prompt_eval_count": 7, "prompt_eval_duration": 300, "eval_count": 5,
                       "eval_duration": 900}

        def obj(piece, done, calls=None):
            o = {"model": model, "created_at": "2025-01-01T00:00:00.000Z"}
            if chat:
                o["message"] = {"role": "assistant", "content": piece}
                if calls:
                    o["message"]["tool_calls"] = calls
            else:
                o["response"] = piece
            o["done"] = done
            if done:
                o.update(final_stats)
                if not chat:
                    o["context"] = [1, 2, 3]
            return o

        if not body.get("stream", True):
            return Reply(json=obj(text, True, tool_calls))
        lines = [json.dumps(obj(p, False)) + "\n" for p in split_text(text)] if text else []
        if tool_calls:
            lines.append(json.dumps(obj("", False, tool_calls)) + "\n")
        mode = self.stream_mode
        if mode == "error":
            lines.insert(1, json.dumps({"error": "an error was encountered while running "
                                                 "the model: unexpected EOF"}) + "\n")
        if mode == "malformed":
            lines.insert(1, '{"model": "gpt-oss", "message": {"role": \n')
        if mode != "no_done":
            lines.append(json.dumps(obj("", True)) + "\n")
        data = "".join(lines).encode()
        if mode == "cut":
            return Stream([data], content_type="application/x-ndjson", cut=len(data) // 2)
        return Stream(lines, content_type="application/x-ndjson")


# --- HuggingFace --------------------------------------------------------------------------

HF_TOKEN = "hf_testTOKEN0123456789"


class FakeHuggingFace(FakeServer):
    """POST /models/<model> (text generation, TGI SSE when stream) and
    /models/<model>/pipeline/feature-extraction. The reply runs on into a made-up next user
    turn, so ``stop`` matters; like TGI, the stop text itself stays in the output."""

    models = ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "sentence-transformers/all-MiniLM-L6-v2")

    def __init__(self):
        self.loading_times = 0  # answer 503 "loading" this many times first
        self.stream_mode: str | None = None
        super().__init__()

    def handle(self, rec: Recorded):
        if rec.headers.get("authorization") != f"Bearer {HF_TOKEN}":
            return Reply(401, json={"error": "Invalid credentials in Authorization header"})
        m = re.fullmatch(r"/models/(.+?)(/pipeline/feature-extraction)?", rec.path)
        if rec.method != "POST" or not m:
            return Reply(404, json={"error": "Not Found"})
        model, features = m.group(1), m.group(2)
        if model not in self.models:
            return Reply(404, json={"error": f"Model {model} does not exist"})
        if self.loading_times > 0:
            self.loading_times -= 1
            return Reply(503, json={"error": f"Model {model} is currently loading",
                                    "estimated_time": 0.05})
        body = rec.json
        if features:
            inputs = body["inputs"]
            vec = lambda t: [float(len(t)), 1.0, -2.0]  # noqa: E731
            return Reply(json=vec(inputs) if isinstance(inputs, str) else [vec(t) for t in inputs])
        prompt = body["inputs"]
        users = re.findall(r"^User: (.*)$", prompt, re.M)
        text = f" I heard: {users[-1] if users else prompt}\nUser: and another thing"
        params = body.get("parameters") or {}
        for stop in params.get("stop") or []:
            if stop in text:
                text = text[:text.index(stop) + len(stop)]
        if params.get("max_new_tokens"):
            text = text[:params["max_new_tokens"] * 4]
        if not body.get("stream"):
            if params.get("return_full_text", True):
                text = prompt + text
            return Reply(json=[{"generated_text": text}])
        pieces = split_text(text, 4)
        events = []
        for i, p in enumerate(pieces):
            final = i == len(pieces) - 1
            events.append(sse_event({"index": i + 1, "token": {"id": 100 + i, "text": p,
                                                         "logprob": -0.5, "special": False},
                               "generated_text": text if final else None,
                               "details": {"finish_reason": "stop_sequence",
                                           "generated_tokens": len(pieces)} if final else None}))
        if self.stream_mode == "no_final":
            events.pop()
        if self.stream_mode == "error":
            events.insert(1, sse_event({"error": "Input validation error", "error_type": "validation"}))
        return Stream(events)


# --- Discord ------------------------------------------------------------------------------

DISCORD_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GxYzAb.discord-test-token-value"
WEBHOOK_TOKEN = "webhookSECRET-token_0123456789"


class FakeDiscord(FakeServer):
    """Bot messages and webhooks under /api/v10 with per-(bucket, channel) rate limits: at
    most ``limit`` calls per ``window`` seconds, with Discord's X-RateLimit-* headers and
    429s (JSON retry_after) when exceeded."""

    def __init__(self, limit: int = 5, window: float = 0.3):
        self.limit, self.window = limit, window
        self.messages: dict[str, dict] = {}
        self.next_id = 1000
        self.windows: dict[tuple, tuple[float, int]] = {}
        self.rate_limited = 0
        self.global_once = False
        super().__init__()

    def _rate(self, bucket: str, major: str):
        now = time.monotonic()
        start, used = self.windows.get((bucket, major), (now, 0))
        if now - start >= self.window:
            start, used = now, 0
        reset_after = max(0.0, self.window - (now - start))
        if used >= self.limit:
            self.rate_limited += 1
            return Reply(429, json={"message": "You are being rate limited.",
                                    "retry_after": round(reset_after, 3), "global": False},
                         headers={"Retry-After": str(int(reset_after) + 1),
                                  "X-RateLimit-Limit": self.limit, "X-RateLimit-Remaining": 0,
                                  "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                                  "X-RateLimit-Bucket": bucket, "X-RateLimit-Scope": "user"})
        used += 1
        self.windows[(bucket, major)] = (start, used)
        return {"X-RateLimit-Limit": self.limit, "X-RateLimit-Remaining": self.limit - used,
                "X-RateLimit-Reset-After": f"{reset_after:.3f}", "X-RateLimit-Bucket": bucket}

    def _msg(self, channel_id, content, webhook_id=None, embeds=None):
        self.next_id += 1
        msg = {"id": str(self.next_id), "channel_id": channel_id, "content": content or "",
               "author": {"id": "42", "username": "bot", "bot": True},
               "timestamp": "2025-01-01T00:00:00.000000+00:00", "edited_timestamp": None,
               "embeds": embeds or [], "type": 0}
        if webhook_id:
            msg["webhook_id"] = webhook_id
        self.messages[msg["id"]] = msg
        return msg

    def handle(self, rec: Recorded):
        if self.global_once:
            self.global_once = False
            self.rate_limited += 1
            return Reply(429, json={"message": "You are being rate limited.",
                                    "retry_after": 0.1, "global": True},
                         headers={"Retry-After": "1", "X-RateLimit-Global": "true",
                                  "X-RateLimit-Scope": "global"})
        p = re.sub(r"^/api(/v\d+)?", "", rec.path)  # webhook URLs come unversioned
        body = rec.json or {}
        m = re.fullmatch(r"/channels/(\d+)/messages(?:/(\d+))?", p)
        if m:
            if rec.headers.get("authorization") != f"Bot {DISCORD_TOKEN}":
                return Reply(401, json={"message": "401: Unauthorized", "code": 0})
            channel, mid = m.groups()
            bucket = "msgs" + ("-one" if mid else "")
            limits = self._rate(bucket, channel)
            if isinstance(limits, Reply):
                return limits
            if rec.method == "POST" and not mid:
                if not body.get("content") and not body.get("embeds"):
                    return Reply(400, json={"message": "Cannot send an empty message",
                                            "code": 50006}, headers=limits)
                return Reply(json=self._msg(channel, body.get("content"),
                                            embeds=body.get("embeds")), headers=limits)
            msg = self.messages.get(mid or "")
            if msg is None or msg["channel_id"] != channel:
                return Reply(404, json={"message": "Unknown Message", "code": 10008},
                             headers=limits)
            if rec.method == "GET":
                return Reply(json=msg, headers=limits)
            if rec.method == "PATCH":
                msg.update(content=body.get("content", msg["content"]),
                           edited_timestamp="2025-01-01T00:01:00.000000+00:00")
                return Reply(json=msg, headers=limits)
            if rec.method == "DELETE":
                del self.messages[mid]
                return Reply(204, headers=limits)
        m = re.fullmatch(r"/webhooks/(\d+)/([^/]+)(?:/messages/(\d+|@original))?", p)
        if m:
            wid, token, mid = m.groups()
            if token != WEBHOOK_TOKEN:
                return Reply(401, json={"message": "Invalid Webhook Token", "code": 50027})
            limits = self._rate("webhook", wid)
            if isinstance(limits, Reply):
                return limits
            if rec.method == "POST" and not mid:
                msg = self._msg("777", body.get("content"), webhook_id=wid,
                                embeds=body.get("embeds"))
                wait = rec.query.get("wait", ["false"])[0] == "true"
                return Reply(json=msg, headers=limits) if wait else Reply(204, headers=limits)
            msg = self.messages.get(mid or "")
            if msg is None or msg.get("webhook_id") != wid:
                return Reply(404, json={"message": "Unknown Message", "code": 10008},
                             headers=limits)
            if rec.method == "PATCH":
                msg.update(content=body.get("content", msg["content"]))
                return Reply(json=msg, headers=limits)
            if rec.method == "DELETE":
                del self.messages[mid]
                return Reply(204, headers=limits)
        return Reply(404, json={"message": "404: Not Found", "code": 0})


def with_server(cls: Callable[..., FakeServer], *args, **kwargs):
    """A pytest fixture body: start, yield, close."""
    server = cls(*args, **kwargs)
    try:
        yield server
    finally:
        server.close()
