"""Server-sent events: the one encoder of ``data:`` events (the server's OpenAI streams use
it too), and the reference's token and completion events."""
from __future__ import annotations

import json

from .streaming import StreamingStats, TokenEvent


def sse_event(payload) -> str:
    """``data: <payload>\n\n``: a str is sent as it is (JSON already, or ``[DONE]``),
    anything else as compact JSON."""
    if not isinstance(payload, str):
        payload = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n"


SSE_DONE = sse_event("[DONE]")  # OpenAI's end of stream


class SSEFormatter:
    @staticmethod
    def format_token_event(event: TokenEvent) -> str:
        """``data: {"token_id":123,"text":"hello","position":5,"is_final":false}\\n\\n``"""
        return sse_event({"token_id": event.token_id, "text": event.text,
                      "position": event.position, "is_final": event.is_final})

    @staticmethod
    def format_completion_event(stats: StreamingStats) -> str:
        """``data: {"event":"complete","tokens_generated":50,"tokens_per_second":25.0}\\n\\n``"""
        return sse_event({"event": "complete", "tokens_generated": stats.tokens_generated,
                      "tokens_per_second": round(float(stats.tokens_per_second()), 3)})
