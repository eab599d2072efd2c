from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.sse import SSEDecoder, SSEError, SSEEvent


def decode_all(*chunks: bytes, **options: int) -> list[SSEEvent]:
    decoder = SSEDecoder(**options)
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def decode_without_flush(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_style_dispatches_events(ending: bytes) -> None:
    stream = b"data: one" + ending + ending + b"event: named" + ending + b"data: two" + ending + ending
    assert decode_without_flush(stream) == [SSEEvent(None, "one"), SSEEvent("named", "two")]


def test_cr_at_chunk_end_and_lf_at_next_chunk_start_are_one_line_ending() -> None:
    # Counted as two endings, the "\r" + "\n" would form a blank line and split the event in two.
    assert decode_without_flush(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [SSEEvent(None, "a\nb")]


def test_cr_then_lf_across_chunks_at_a_blank_line_dispatches_once() -> None:
    assert decode_without_flush(b"data: a\r\n\r", b"\ndata: b\r\n\r\n") == [SSEEvent(None, "a"), SSEEvent(None, "b")]


def test_comment_lines_are_ignored() -> None:
    assert decode_without_flush(b": keepalive\n\n:another\ndata: x\n: mid\n\n") == [SSEEvent(None, "x")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode_without_flush(b"data: first\ndata:\ndata: third\n\n") == [SSEEvent(None, "first\n\nthird")]


def test_only_one_space_after_the_colon_is_dropped() -> None:
    events = decode_without_flush(b"data:nospace\n\ndata:  two spaces\n\ndata:\ttab\n\n")
    assert [event.data for event in events] == ["nospace", " two spaces", "\ttab"]


def test_data_value_keeps_further_colons() -> None:
    assert decode_without_flush(b'data: {"a": "b:c"}\n\n') == [SSEEvent(None, '{"a": "b:c"}')]


def test_field_without_colon_is_an_empty_data_line() -> None:
    assert decode_without_flush(b"data\n\n") == [SSEEvent(None, "")]


def test_event_name_applies_to_one_event_only() -> None:
    events = decode_without_flush(b"event: error\ndata: x\n\ndata: y\n\n")
    assert events == [SSEEvent("error", "x"), SSEEvent(None, "y")]


def test_event_without_data_is_not_dispatched_and_its_name_is_forgotten() -> None:
    events = decode_without_flush(b"event: ping\n\ndata: y\n\n")
    assert events == [SSEEvent(None, "y")]


def test_id_retry_and_unknown_fields_are_ignored() -> None:
    events = decode_without_flush(b"id: 7\nretry: 1000\nfoo: bar\ndata: x\n\n")
    assert events == [SSEEvent(None, "x")]


def test_initial_bom_is_dropped_even_when_split() -> None:
    assert decode_without_flush(b"\xef\xbb", b"\xbfdata: x\n\n") == [SSEEvent(None, "x")]


def test_bom_is_only_dropped_at_stream_start() -> None:
    events = decode_without_flush(b"data: a\n\n\xef\xbb\xbfdata: b\n\n")
    # The second line's field name is "\ufeffdata", an unknown field: ignored.
    assert events == [SSEEvent(None, "a")]


def test_utf8_characters_split_across_chunks_decode_intact() -> None:
    stream = "data: 你好, héllo 🎉\n\n".encode()
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert decode_without_flush(*chunks) == [SSEEvent(None, "你好, héllo 🎉")]


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert decode_without_flush(b"data: a\xff\xfeb\n\n") == [SSEEvent(None, "a\ufffd\ufffdb")]


def test_flush_dispatches_a_final_event_without_blank_line() -> None:
    assert decode_all(b"data: one\n\ndata: [DONE]") == [SSEEvent(None, "one"), SSEEvent(None, "[DONE]")]


def test_flush_of_a_cleanly_ended_stream_returns_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n\n") == [SSEEvent(None, "one")]
    assert decoder.flush() == []


def test_single_line_beyond_the_limit_raises() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 50)
    with pytest.raises(SSEError):
        decoder.feed(b"x" * 60)


def test_many_data_lines_beyond_the_limit_raise() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(SSEError):
        decoder.feed(b"data: 0123456789\n" * 20)


def test_limit_applies_per_event_not_per_stream() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    events = decoder.feed(b"data: 0123456789012345678901234567890123456789\n\n" * 50)
    assert len(events) == 50


def test_non_positive_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="max_event_bytes"):
        SSEDecoder(max_event_bytes=0)


_line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
_events = st.lists(
    st.tuples(
        st.none() | _line_text.filter(bool),
        st.lists(_line_text, min_size=1, max_size=3),
        st.booleans(),  # precede the event by a comment line
    ),
    max_size=6,
)


def _encode(events: list[tuple[str | None, list[str], bool]], ending: bytes, bom: bool) -> bytes:
    out = bytearray(b"\xef\xbb\xbf" if bom else b"")
    for name, lines, comment in events:
        if comment:
            out += b": comment" + ending
        if name is not None:
            out += b"event: " + name.encode() + ending
        for line in lines:
            # Without a space separator a value starting with a space would lose it: always write one.
            out += b"data: " + line.encode() + ending
        out += ending
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(
    events=_events,
    ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_random_chunking_decodes_the_original_events(
    events: list[tuple[str | None, list[str], bool]], ending: bytes, bom: bool, cuts: list[int]
) -> None:
    stream = _encode(events, ending, bom)
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    expected = [SSEEvent(name, "\n".join(lines)) for name, lines, _ in events]
    assert decode_all(*chunks) == expected
