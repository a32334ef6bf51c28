"""Per-user conversation state: the turns of each (user, session), which persona answered
last, and Abbey's running emotional state. Bounded: at most ``max_sessions`` sessions
(least recently used dropped first), each forgotten after ``ttl_s`` idle seconds, each
keeping at most ``max_messages`` messages."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

DEFAULT_SESSION = "default"


@dataclass
class Session:
    user_id: str
    session_id: str
    messages: deque = field(default_factory=deque)    # {"role", "content", "persona"}
    turns: int = 0
    last_persona: str | None = None
    state: dict[str, Any] = field(default_factory=dict)   # per-persona state (emotions ...)
    created_at: float = 0.0
    last_seen: float = 0.0

    def history(self) -> list[dict]:
        """The conversation as chat messages (role and content only)."""
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]

    def add_turn(self, user: str, reply: str, persona: str) -> None:
        self.messages.append({"role": "user", "content": user, "persona": persona})
        self.messages.append({"role": "assistant", "content": reply, "persona": persona})
        # the deque's maxlen drops the oldest; a conversation restarts on a user turn
        while self.messages and self.messages[0]["role"] != "user":
            self.messages.popleft()
        self.turns += 1
        self.last_persona = persona


class SessionStore:
    def __init__(self, max_sessions: int = 10_000, ttl_s: float = 3600.0,
                 max_messages: int = 20, clock: Callable[[], float] = time.monotonic):
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self.max_messages = max_messages
        self.clock = clock
        self._sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def get(self, user_id: str, session_id: str | None = None) -> Session:
        """The session, created when new or expired; marks it as just used."""
        key = (user_id, session_id or DEFAULT_SESSION)
        now = self.clock()
        with self._lock:
            s = self._sessions.get(key)
            if s is not None and now - s.last_seen > self.ttl_s:
                del self._sessions[key]
                s = None
            if s is None:
                s = Session(user_id, key[1], deque(maxlen=self.max_messages), created_at=now)
                self._sessions[key] = s
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            s.last_seen = now
            self._sessions.move_to_end(key)
            return s

    def peek(self, user_id: str, session_id: str | None = None) -> Session | None:
        with self._lock:
            return self._sessions.get((user_id, session_id or DEFAULT_SESSION))

    def end(self, user_id: str, session_id: str | None = None) -> bool:
        with self._lock:
            return self._sessions.pop((user_id, session_id or DEFAULT_SESSION), None) is not None

    def expire(self) -> int:
        """Drop every idle-expired session; how many were dropped."""
        now = self.clock()
        with self._lock:
            old = [k for k, s in self._sessions.items() if now - s.last_seen > self.ttl_s]
            for k in old:
                del self._sessions[k]
            return len(old)
