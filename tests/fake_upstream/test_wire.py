"""HTTP/1.1 framing of the fake upstream, driven over raw loopback sockets: keep-alive, close, chunked bodies."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from app.fake_upstream import FakeUpstream


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def client(fake: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=5.0) as http:
        yield http


def chat_body(text: str = "hi") -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def chat_request() -> bytes:
    body = orjson.dumps(chat_body())
    return b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(length)


async def test_keep_alive_serves_two_requests_on_one_connection(fake: FakeUpstream) -> None:
    request = chat_request()
    reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
    try:
        writer.write(request)
        first_head, first = await read_response(reader)
        writer.write(request)
        _, second = await read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    assert b"connection: close" not in first_head.lower()
    assert orjson.loads(first)["id"] != orjson.loads(second)["id"]
    assert len(fake.requests) == 2


async def test_close_connection_says_so_and_closes(fake: FakeUpstream) -> None:
    fake.enqueue({"close_connection": True})
    request = chat_request()
    reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
    try:
        writer.write(request)
        head, _ = await read_response(reader)
        trailing = await asyncio.wait_for(reader.read(), timeout=2)
    finally:
        writer.close()
        await writer.wait_closed()
    assert b"connection: close" in head.lower()
    assert trailing == b""


async def test_chunked_request_body_is_read(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    encoded = orjson.dumps(chat_body("chunked please"))

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(encoded), 10):
            yield encoded[start : start + 10]

    response = await client.post("/chat/completions", content=pieces(), headers={"content-type": "application/json"})
    assert response.status_code == 200
    record = fake.requests[0]
    assert record["headers"]["transfer-encoding"] == "chunked"
    assert record["body"] == chat_body("chunked please")


async def test_malformed_request_line_is_answered_400_and_closed(fake: FakeUpstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
    try:
        writer.write(b"NONSENSE\r\n\r\n")
        head, body = await read_response(reader)
        trailing = await asyncio.wait_for(reader.read(), timeout=2)
    finally:
        writer.close()
        await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"bad request line" in body
    assert trailing == b""
