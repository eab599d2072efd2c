"""The load generator's measurements against a tiny loopback server whose answers we control exactly."""

# ruff: noqa: S101 -- pytest asserts (the repository's per-file ignore covers tests/ only)

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from bench.loadgen import Job, build_request, percentile, run

Answer = Callable[[asyncio.StreamWriter], None]


def _json(writer: asyncio.StreamWriter) -> None:
    body = b'{"choices":[{"message":{"content":"hi"}}]}'
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)


def _stream(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for event in (b'data: {"delta":{"role":"assistant","content":""}}\n\n', b'data: {"delta":{"content":"A"}}\n\n'):
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
    writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")


def _responses_stream(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    events = (
        b'event: response.created\ndata: {"type":"response.created"}\n\n',
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"A"}\n\n',
        b'event: response.completed\ndata: {"type":"response.completed","response":{"output":[]}}\n\n',
    )
    for event in events:
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
    writer.write(b"0\r\n\r\n")


def _stream_cut(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    event = b'data: {"delta":{"content":"A"}}\n\n'
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))


def _refuse(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 2\r\n\r\n{}")


@asynccontextmanager
async def server(answer: Answer) -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(100_000):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                answer(writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


def _job(port: int, *, stream: bool, requests: int = 20, concurrency: int = 2) -> Job:
    request = build_request("127.0.0.1", port, "/v1/chat/completions", b'{"model":"m"}', {"authorization": "Bearer k"})
    return Job("127.0.0.1", port, request, stream, concurrency, duration=5.0, max_requests=requests, timeout=5.0)


async def test_request_budget_bounds_a_run_and_every_answer_is_timed() -> None:
    async with server(_json) as port:
        result = await run(_job(port, stream=False, requests=20))
    assert result.ok == 20
    assert not result.errors
    assert all(0 < latency < 5 for latency in result.latencies)
    assert result.ttfb == []


async def test_stream_time_to_first_content_skips_the_empty_role_chunk() -> None:
    async with server(_stream) as port:
        result = await run(_job(port, stream=True, requests=6))
    assert result.ok == 6
    assert len(result.ttfb) == 6
    assert all(t <= latency for t, latency in zip(result.ttfb, result.latencies, strict=True))
    assert result.events == 6 * 3  # role, content and [DONE] per stream


async def test_stream_without_done_counts_as_an_error_not_a_success() -> None:
    async with server(_stream_cut) as port:
        result = await run(_job(port, stream=True, requests=4, concurrency=1))
    assert result.ok == 0
    assert result.errors == {"stream_without_done": 4}


async def test_non_200_answers_are_counted_by_status() -> None:
    async with server(_refuse) as port:
        result = await run(_job(port, stream=False, requests=3, concurrency=1))
    assert result.ok == 0
    assert result.errors == {"http_429": 3}


async def test_refused_connections_are_errors_and_the_run_still_ends() -> None:
    async with server(_json) as port:
        pass  # closed again: nothing listens on this port now
    result = await run(_job(port, stream=False, requests=3, concurrency=1))
    assert result.ok == 0
    assert sum(result.errors.values()) == 3


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0


async def test_a_responses_api_stream_ends_with_response_completed_and_times_its_first_delta() -> None:
    async with server(_responses_stream) as port:
        result = await run(_job(port, stream=True, requests=4, concurrency=1))
    assert result.ok == 4
    assert not result.errors
    assert len(result.ttfb) == 4
