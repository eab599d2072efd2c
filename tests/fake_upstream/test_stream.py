"""The fake upstream's SSE streams: exact event shape and order, and every injected fault."""

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from app.fake_upstream import FakeUpstream

CHAT = "/chat/completions"
UNICODE = "héllo 世界 🙂"


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=5.0) as http:
        yield http


def stream_body(include_usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x" * 40}]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


async def raw_stream(client: httpx.AsyncClient, include_usage: bool = True) -> bytes:
    async with client.stream("POST", CHAT, json=stream_body(include_usage)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return await response.aread()


async def read_into(client: httpx.AsyncClient, pieces: list[bytes]) -> None:
    async with client.stream("POST", CHAT, json=stream_body()) as response:
        async for piece in response.aiter_raw():
            pieces.append(piece)


def data_lines(raw: bytes) -> list[str]:
    """The `data:` payloads of a stream in order, whatever its line endings."""
    text = raw.decode().replace("\r\n", "\n").replace("\r", "\n")
    return [line.removeprefix("data: ") for line in text.split("\n") if line.startswith("data: ")]


def chunks(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data_lines(raw) if line != "[DONE]"]


async def test_stream_events_come_in_protocol_order_with_usage_last(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    fake.enqueue(
        {"reasoning_chunks": ["Let ", "me think"], "content_chunks": ["Hel", "lo"], "usage": {"total_tokens": 9}}
    )
    raw = await raw_stream(client)
    assert raw.endswith(b"data: [DONE]\n\n")
    events = chunks(raw)
    assert {(e["id"], e["created"], e["model"]) for e in events} == {(events[0]["id"], events[0]["created"], "m")}
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    deltas = [(e["choices"][0]["delta"], e["choices"][0]["finish_reason"]) for e in events[:-1]]
    assert deltas == [
        ({"role": "assistant", "content": ""}, None),
        ({"reasoning_content": "Let "}, None),
        ({"reasoning_content": "me think"}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo"}, None),
        ({}, "stop"),
    ]
    assert all(e["usage"] is None and e["choices"][0]["logprobs"] is None for e in events[:-1])
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": (5 + 12) // 4,
        "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 12 // 4},
    }


async def test_stream_without_include_usage_has_no_usage_at_all(client: httpx.AsyncClient) -> None:
    events = chunks(await raw_stream(client, include_usage=False))
    assert all("usage" not in e and len(e["choices"]) == 1 for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == "Hello from the fake upstream."


async def test_tool_calls_stream_as_indexed_fragments(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    calls = [
        {"id": "call_a", "name": "read", "arguments_chunks": ['{"pa', 'th":"/a"}']},
        {"id": "call_b", "name": "list", "arguments": "{}"},
    ]
    fake.enqueue({"content": "", "tool_calls": calls})
    events = chunks(await raw_stream(client))
    fragments = [d["tool_calls"] for e in events if e["choices"] and "tool_calls" in (d := e["choices"][0]["delta"])]
    assert fragments == [
        [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "read", "arguments": ""}}],
        [{"index": 0, "function": {"arguments": '{"pa'}}],
        [{"index": 0, "function": {"arguments": 'th":"/a"}'}}],
        [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "list", "arguments": ""}}],
        [{"index": 1, "function": {"arguments": "{}"}}],
    ]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_reset_after_events_is_a_transport_error_without_done(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    fake.enqueue({"reset_after_events": 2})
    pieces: list[bytes] = []
    with pytest.raises(httpx.ReadError):
        await read_into(client, pieces)
    received = b"".join(pieces)
    # Linux hands over bytes that arrived before the RST, so exactly the scripted events got through.
    assert len(data_lines(received)) == 2
    assert b"[DONE]" not in received


async def test_malformed_event_is_written_and_the_stream_continues(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    fake.enqueue({"malformed_after_events": 1})
    lines = data_lines(await raw_stream(client))
    assert lines[1] == "{not json"
    assert orjson.loads(lines[2])["choices"][0]["delta"] == {"content": "Hello "}
    assert lines[-1] == "[DONE]"


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
async def test_every_line_ends_with_the_scripted_line_ending(
    fake: FakeUpstream, client: httpx.AsyncClient, ending: str
) -> None:
    fake.enqueue({"line_ending": ending, "comment_every": 2})
    raw = (await raw_stream(client)).decode()
    assert raw.endswith("data: [DONE]" + ending * 2)
    assert (": keepalive" + ending * 2) in raw
    without_endings = raw.replace(ending, "")
    assert "\r" not in without_endings
    assert "\n" not in without_endings
    blocks = raw.split(ending * 2)
    assert blocks[-1] == ""
    assert all(block.startswith(("data: {", "data: [DONE]", ": keepalive")) for block in blocks[:-1])


async def test_comments_come_after_every_n_events(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.enqueue({"comment_every": 3})
    blocks = (await raw_stream(client)).decode().split("\n\n")[:-1]
    comment_positions = [i for i, block in enumerate(blocks) if block == ": keepalive"]
    assert comment_positions
    assert comment_positions == [3 + 4 * k for k in range(len(comment_positions))]


async def test_byte_by_byte_splits_utf8_characters_across_writes(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.enqueue({"content": UNICODE, "byte_by_byte": True})
    pieces: list[bytes] = []
    await read_into(client, pieces)
    assert {len(piece) for piece in pieces} == {1}
    undecodable = 0
    for piece in pieces:
        try:
            piece.decode()
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable >= len(UNICODE.encode()) - len(UNICODE)
    events = chunks(b"".join(pieces))
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == UNICODE


async def test_no_done_ends_the_stream_cleanly_without_done(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.enqueue({"no_done": True})
    lines = data_lines(await raw_stream(client))
    assert "[DONE]" not in lines
    assert orjson.loads(lines[-1])["choices"] == []


async def test_stream_error_follows_the_content_and_ends_the_stream(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    error = {"message": "overloaded", "type": "server_error", "param": None, "code": "ServerOverloaded"}
    fake.enqueue({"content_chunks": ["par", "tial"], "stream_error": error})
    lines = data_lines(await raw_stream(client))
    assert orjson.loads(lines[-1]) == {"error": error}
    assert orjson.loads(lines[-2])["choices"][0]["delta"] == {"content": "tial"}
    assert all(orjson.loads(line)["choices"][0]["finish_reason"] is None for line in lines[:-1])


async def test_event_delay_spaces_out_events(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    fake.enqueue({"content_chunks": ["a", "b"], "event_delay": 0.05})
    started = time.monotonic()
    lines = data_lines(await raw_stream(client))
    assert time.monotonic() - started >= 0.05 * (len(lines) - 1)


async def test_openai_sdk_reads_the_stream_and_raises_on_stream_error(fake: FakeUpstream) -> None:
    fake.enqueue({"content_chunks": ["Hi", " there"]}, {"stream_error": {"message": "boom", "type": "x"}})
    async with openai.AsyncOpenAI(base_url=fake.url, api_key="k", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}], stream=True, stream_options={"include_usage": True}
        )
        parts = [chunk async for chunk in stream]
        assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == "Hi there"
        assert parts[-1].usage is not None
        with pytest.raises(openai.APIError, match="boom"):
            async for _ in await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "q"}], stream=True
            ):
                pass
