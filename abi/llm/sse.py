"""Server-sent-event lines for token and completion events, in the reference's format."""
from __future__ import annotations

import json

from .streaming import StreamingStats, TokenEvent


def _line(obj: dict) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


class SSEFormatter:
    @staticmethod
    def format_token_event(event: TokenEvent) -> str:
        """``data: {"token_id":123,"text":"hello","position":5,"is_final":false}\\n\\n``"""
        return _line({"token_id": event.token_id, "text": event.text,
                      "position": event.position, "is_final": event.is_final})

    @staticmethod
    def format_completion_event(stats: StreamingStats) -> str:
        """``data: {"event":"complete","tokens_generated":50,"tokens_per_second":25.0}\\n\\n``"""
        return _line({"event": "complete", "tokens_generated": stats.tokens_generated,
                      "tokens_per_second": round(float(stats.tokens_per_second()), 3)})
