import orjson

from app.dialects.openai_chat import ChatStream
from app.sse import SSEDecoder


def test_multi_line_data_is_re_emitted_one_data_line_per_line() -> None:
    chunk = {"id": "c1", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    data = orjson.dumps(chunk, option=orjson.OPT_INDENT_2).decode()  # an upstream's multi-line data field
    out = ChatStream(include_usage=True).chunk(dict(chunk), data)
    assert out.endswith(b"\n\n")
    assert all(line.startswith(b"data: ") for line in out.rstrip(b"\n").split(b"\n"))
    events = SSEDecoder().feed(out)
    assert [orjson.loads(event.data) for event in events] == [chunk]


def test_single_line_data_passes_through_byte_for_byte() -> None:
    data = '{"id":"c1","choices":[]}'
    assert (
        ChatStream(include_usage=True).chunk({"id": "c1", "choices": []}, data) == b"data: " + data.encode() + b"\n\n"
    )


def test_a_chunk_too_deep_to_re_serialise_is_relayed_as_it_came() -> None:
    deep: object = "x"
    for _ in range(300):
        deep = [deep]
    chunk = {"id": "c1", "choices": [{"index": 0, "delta": {"content": "hi", "x": deep}}], "usage": None}
    data = orjson.dumps({"id": "c1"}).decode()  # what the upstream sent (its exact text is passed on)
    assert ChatStream(include_usage=False).chunk(chunk, data) == b"data: " + data.encode() + b"\n\n"
