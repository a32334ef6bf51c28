from abi.llm import SSEFormatter, StreamingStats, TokenEvent
from abi.llm.sse import SSE_DONE, sse_event


def test_token_event_bytes_match_reference():
    event = TokenEvent(token_id=123, text="hello", position=5, timestamp_ns=1, is_final=False)
    assert SSEFormatter.format_token_event(event) == \
        'data: {"token_id":123,"text":"hello","position":5,"is_final":false}\n\n'


def test_completion_event_bytes_match_reference():
    stats = StreamingStats(tokens_generated=50, decode_steps=25, decode_time_ns=1_000_000_000)
    assert SSEFormatter.format_completion_event(stats) == \
        'data: {"event":"complete","tokens_generated":50,"tokens_per_second":25.0}\n\n'


def test_text_is_json_escaped_and_null_when_not_decoded():
    e = TokenEvent(1, 'a "q"\n✓', 0, 0, True)
    assert SSEFormatter.format_token_event(e) == \
        'data: {"token_id":1,"text":"a \\"q\\"\\n✓","position":0,"is_final":true}\n\n'
    assert '"text":null' in SSEFormatter.format_token_event(TokenEvent(1, None, 0, 0))


def test_one_encoder_for_every_data_event():
    """The reference's events, the server's OpenAI chunks (JSON already) and [DONE]."""
    assert sse_event({"a": "é", "b": [1, 2]}) == 'data: {"a":"é","b":[1,2]}\n\n'
    assert sse_event('{"id":"x"}') == 'data: {"id":"x"}\n\n'
    assert SSE_DONE == "data: [DONE]\n\n"
