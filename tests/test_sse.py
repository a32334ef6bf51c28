from abi.llm import SSEFormatter, StreamingStats, TokenEvent


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
