"""The relayed response's client side: a client that stops reading is cut after the write timeout, a slow one is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from app.dialects.openai_chat import ChatStream
from app.money.rules import Outcome
from app.outbound import RelayResponse
from app.relay import Relay, UpstreamEvents

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
FINISH = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'


class PacedResponse:
    """An upstream SSE body of ``events`` content chunks, ``pause`` seconds apart, then a finish and [DONE]."""

    def __init__(self, events: int, pause: float = 0.0) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self.events = events
        self.pause = pause

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for _ in range(self.events):
            yield CHUNK
            await asyncio.sleep(self.pause)
        yield FINISH + b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        pass


class Client:
    """ASGI ``send``/``receive`` of a client whose ``n``-th body write takes ``write_seconds[n]`` (default 0)."""

    def __init__(self, write_seconds: dict[int, float] | None = None) -> None:
        self.write_seconds = write_seconds or {}
        self.bodies: list[bytes] = []
        self.settled = False

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await asyncio.sleep(self.write_seconds.get(len(self.bodies), 0))
            self.bodies.append(message["body"])

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never disconnects on its own
        raise AssertionError("unreachable")

    async def then(self) -> None:
        self.settled = True


async def relay_to(client: Client, upstream: PacedResponse, *, write_timeout: float) -> Outcome:
    loop = asyncio.get_running_loop()
    outcome = Outcome()
    relay = Relay(
        UpstreamEvents(upstream, deadline=loop.time() + 30),
        ChatStream(include_usage=False),
        outcome,
        heartbeat_interval=30,
    )
    assert await relay.prime() is None
    response = RelayResponse(relay, headers={}, then=client.then, write_timeout=write_timeout)
    await response({"type": "http"}, client.receive, client.send)  # type: ignore[arg-type]
    assert client.settled
    return outcome


async def test_a_write_blocked_for_the_write_timeout_cuts_the_stream_as_client_stalled() -> None:
    client = Client({3: 60})  # the fourth write never completes
    started = asyncio.get_running_loop().time()
    outcome = await relay_to(client, PacedResponse(10), write_timeout=0.3)
    elapsed = asyncio.get_running_loop().time() - started
    assert outcome.status == "client_stalled"
    assert len(client.bodies) == 3
    assert 0.25 <= elapsed < 1.0


async def test_slow_writes_each_shorter_than_the_write_timeout_are_never_cut() -> None:
    client = Client(dict.fromkeys(range(12), 0.05))  # 0.6 s of writing in all, 0.05 s each
    outcome = await relay_to(client, PacedResponse(10), write_timeout=0.15)
    assert outcome.status == "ok"
    assert outcome.complete
    assert client.bodies[-1] == b""  # the stream ended properly


async def test_a_silent_upstream_does_not_count_against_the_write_timeout() -> None:
    client = Client({4: 0.1})  # one slowish write after a long silence
    outcome = await relay_to(client, PacedResponse(5, pause=0.25), write_timeout=0.15)
    assert outcome.status == "ok"
    assert client.bodies.count(CHUNK) == 5
