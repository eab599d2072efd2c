"""The relay's upstream side: a bounded queue, so a slow client slows the upstream instead of filling memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from app.errors import GatewayError, UpstreamError, UpstreamTimeout
from app.money.rules import Outcome
from app.relay import RELAY_QUEUE_EVENTS, Relay, UpstreamEvents
from app.upstream import UpstreamReadError, UpstreamReadTimeout


class CountingResponse:
    """An upstream SSE body of ``events`` events that counts how many were read."""

    def __init__(self, events: int, *, fail: Exception | None = None) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self.events = events
        self.read = 0
        self.fail = fail
        self.closed = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for index in range(self.events):
            self.read += 1
            yield f'data: {{"n": {index}}}\n\n'.encode()
            await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        self.closed = True


def deadline(seconds: float = 10) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_an_unread_stream_stops_reading_the_upstream_at_the_queue_bound() -> None:
    response = CountingResponse(10_000)
    events = UpstreamEvents(response, deadline=deadline())
    await asyncio.sleep(0.2)  # the client reads nothing meanwhile
    assert RELAY_QUEUE_EVENTS <= response.read <= RELAY_QUEUE_EVENTS + 2
    first = await events.next(1)
    assert first[0] == {"n": 0}
    await events.aclose()
    assert response.closed


async def test_every_event_then_the_end_arrive_in_order() -> None:
    events = UpstreamEvents(CountingResponse(200), deadline=deadline())
    seen = []
    while True:
        item = await events.next(1)
        if not isinstance(item, tuple):
            break
        seen.append(item[0]["n"])
    assert seen == list(range(200))
    assert not isinstance(item, Exception)  # [DONE]
    await events.aclose()


async def test_a_break_after_a_full_queue_is_still_reported_after_the_queued_events() -> None:
    response = CountingResponse(RELAY_QUEUE_EVENTS, fail=UpstreamReadError("reset"))
    events = UpstreamEvents(response, deadline=deadline())
    await asyncio.sleep(0.1)
    items = [await events.next(1) for _ in range(RELAY_QUEUE_EVENTS + 1)]
    assert all(isinstance(item, tuple) for item in items[:-1])
    assert isinstance(items[-1], UpstreamError)
    await events.aclose()


async def test_an_idle_timeout_becomes_an_upstream_timeout() -> None:
    events = UpstreamEvents(CountingResponse(1, fail=UpstreamReadTimeout()), deadline=deadline())
    assert isinstance(await events.next(1), tuple)
    assert isinstance(await events.next(1), UpstreamTimeout)
    await events.aclose()


class HeadedWriter:
    """A ``StreamWriter`` with a head whose chunks print their ``n`` (the first, ``n`` 0, prints nothing)."""

    def start(self) -> bytes:
        return b"head;"

    def chunk(self, chunk: dict[str, Any], data: str) -> bytes:
        return f"{chunk['n']};".encode() if chunk["n"] else b""

    def done(self) -> bytes:
        return b"done;"

    def error(self, error: GatewayError) -> bytes:
        return b"error;"

    def heartbeat(self) -> bytes:
        return b"beat;"


async def test_the_head_goes_out_with_every_event_already_at_hand() -> None:
    events = UpstreamEvents(CountingResponse(3), deadline=deadline())
    relay = Relay(events, HeadedWriter(), Outcome(), heartbeat_interval=1)
    assert await relay.prime() is None
    await asyncio.sleep(0.05)  # the upstream's other events, and its end, are queued meanwhile
    assert await relay.__anext__() == b"head;1;2;error;"  # event 0 printed nothing; no finish: incomplete
    assert [part async for part in relay] == []
    await relay.aclose()


class WordsResponse(CountingResponse):
    """``events`` content deltas of one word each, released ``burst`` at a time, then a finish and ``[DONE]``."""

    def __init__(self, events: int, *, burst: int) -> None:
        super().__init__(events)
        self.burst = burst
        self.release = asyncio.Event()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for index in range(self.events):
            if index % self.burst == 0:
                await self.release.wait()
                self.release.clear()
            delta = '{"content": "word"}'
            yield f'data: {{"n": {index + 1}, "choices": [{{"index": 0, "delta": {delta}}}]}}\n\n'.encode()
        await self.release.wait()
        yield b'data: {"n": 0, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'


async def first_burst_queued(
    response: WordsResponse, writer: Any = None, *, heartbeat_interval: float = 1
) -> tuple[Relay, Outcome]:
    """A primed relay over ``response`` whose first burst has been released and is queued."""
    outcome = Outcome()
    events = UpstreamEvents(response, deadline=deadline())
    relay = Relay(events, writer or HeadedWriter(), outcome, heartbeat_interval=heartbeat_interval)
    response.release.set()
    assert await relay.prime() is None
    await asyncio.sleep(0.05)
    return relay, outcome


async def test_a_burst_of_events_already_here_is_one_write_and_counts_once_written() -> None:
    response = WordsResponse(6, burst=3)
    relay, outcome = await first_burst_queued(response)
    first = await relay.__anext__()
    assert first == b"head;1;2;3;"  # one write for the burst, not one per event
    assert outcome.output_tokens == 0, "counted before the client's write of them had gone through"
    response.release.set()
    second = await relay.__anext__()  # asking for more: the first write went through
    assert outcome.output_tokens == 3
    assert second.startswith(b"4;")
    response.release.set()
    rest = [part async for part in relay]
    assert (second + b"".join(rest)).endswith(b"done;")
    assert outcome.output_tokens == 6
    assert outcome.complete
    await relay.aclose()


async def test_output_in_a_write_that_never_went_through_is_not_counted() -> None:
    response = WordsResponse(4, burst=2)
    relay, outcome = await first_burst_queued(response)
    assert await relay.__anext__() == b"head;1;2;"
    response.release.set()
    await asyncio.sleep(0.05)
    assert await relay.__anext__() == b"3;4;"  # the first write went through
    relay.stop("client_disconnected")  # the second did not: the client left
    assert outcome.output_tokens == 2
    assert outcome.status == "client_disconnected"
    await relay.aclose()


class FinishingResponse(CountingResponse):
    """``events`` events, the last with a finish reason, then ``[DONE]``: a complete answer."""

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for index in range(self.events):
            finish = '"stop"' if index == self.events - 1 else "null"
            yield f'data: {{"n": {index}, "choices": [{{"index": 0, "finish_reason": {finish}}}]}}\n\n'.encode()
            await asyncio.sleep(0)
        yield b"data: [DONE]\n\n"


async def test_the_completion_hook_runs_once_before_the_last_bytes_go_out() -> None:
    sent: list[bytes] = []
    calls: list[list[bytes]] = []

    async def on_complete() -> None:
        calls.append(list(sent))  # what the client had been given when the answer was complete

    relay = Relay(
        UpstreamEvents(FinishingResponse(3), deadline=deadline()),
        HeadedWriter(),
        Outcome(),
        heartbeat_interval=1,
        on_complete=on_complete,
    )
    assert await relay.prime() is None
    async for part in relay:
        sent.append(part)
    assert sent[-1].endswith(b"done;")
    assert len(calls) == 1
    assert not any(b"done;" in part for part in calls[0]), "the hook ran after the end went out"
    await relay.aclose()


async def test_an_incomplete_stream_never_runs_the_completion_hook() -> None:
    calls: list[None] = []

    async def on_complete() -> None:
        calls.append(None)

    relay = Relay(
        UpstreamEvents(CountingResponse(3), deadline=deadline()),
        HeadedWriter(),
        Outcome(),
        heartbeat_interval=1,
        on_complete=on_complete,
    )
    assert await relay.prime() is None
    assert [part async for part in relay][-1] == b"error;"
    assert calls == []
    await relay.aclose()


async def test_the_output_of_the_last_write_counts_even_if_the_client_leaves_right_after_it() -> None:
    response = WordsResponse(3, burst=3)
    relay, outcome = await first_burst_queued(response)
    response.release.set()  # the finish and [DONE] too
    await asyncio.sleep(0.05)
    assert (await relay.__anext__()).endswith(b"done;")  # the whole answer in one write, its end included
    relay.stop("client_disconnected")  # a client that closes as soon as it has the end: nothing more asked
    assert outcome.output_tokens == 3
    assert outcome.complete
    await relay.aclose()


class HoldingWriter(HeadedWriter):
    """Holds every chunk back until ``flush``, as the Responses writer holds text pieces."""

    def __init__(self) -> None:
        self.held: list[str] = []

    def chunk(self, chunk: dict[str, Any], data: str) -> bytes:
        self.held.append(f"{chunk['n']};")
        return b""

    def flush(self) -> bytes:
        out, self.held = "".join(self.held).encode(), []
        return out


async def test_held_bytes_go_out_with_their_write_and_never_wait_for_the_upstream() -> None:
    response = WordsResponse(4, burst=2)
    relay, _ = await first_burst_queued(response, HoldingWriter(), heartbeat_interval=5)
    assert await relay.__anext__() == b"head;1;2;"  # the burst, flushed at the end of its write
    response.release.set()
    # one event at a time now: each is flushed before the relay waits for the next, not held until then
    assert await asyncio.wait_for(relay.__anext__(), 1) in (b"3;", b"3;4;")
    await relay.aclose()


async def test_a_burst_after_a_wait_is_one_write_with_a_writer_that_holds_back() -> None:
    response = WordsResponse(6, burst=3)
    relay, _ = await first_burst_queued(response, HoldingWriter(), heartbeat_interval=5)
    assert await relay.__anext__() == b"head;1;2;3;"
    waiting = asyncio.ensure_future(relay.__anext__())  # the relay waits for the upstream now
    await asyncio.sleep(0.05)
    response.release.set()  # 4, 5 and 6 arrive together
    assert await asyncio.wait_for(waiting, 1) == b"4;5;6;"  # not "4;" then "5;6;": the held piece waits for its burst
    await relay.aclose()


class ScriptedResponse(CountingResponse):
    """An upstream SSE body of the given ``data:`` payloads, then ``[DONE]``."""

    def __init__(self, *payloads: str) -> None:
        super().__init__(0)
        self.payloads = payloads

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for payload in self.payloads:
            yield f"data: {payload}\n\n".encode()
        yield b"data: [DONE]\n\n"


async def test_choices_that_are_not_a_list_count_for_nothing_and_the_stream_still_ends_properly() -> None:
    response = ScriptedResponse('{"n": 1, "choices": 1}', '{"n": 2, "choices": "ab", "usage": {"prompt_tokens": 3}}')
    outcome = Outcome()
    relay = Relay(UpstreamEvents(response, deadline=deadline()), HeadedWriter(), outcome, heartbeat_interval=1)
    assert await relay.prime() is None
    assert b"".join([part async for part in relay]) == b"head;1;2;error;"  # no finish: cut, with its error event
    assert outcome.output_tokens == 0
    await relay.aclose()


class BrokenWriter(HeadedWriter):
    """Raises on the chunk numbered ``n`` (a translator's bug)."""

    def chunk(self, chunk: dict[str, Any], data: str) -> bytes:
        if chunk["n"] == 2:
            raise KeyError("n")
        return super().chunk(chunk, data)


async def test_a_writer_that_raises_ends_the_stream_with_its_error_event_and_status_failed() -> None:
    outcome = Outcome()
    relay = Relay(
        UpstreamEvents(CountingResponse(4), deadline=deadline()), BrokenWriter(), outcome, heartbeat_interval=1
    )
    assert await relay.prime() is None
    await asyncio.sleep(0.05)
    parts = [part async for part in relay]
    assert parts == [b"head;1;error;"]  # what the write had made before the exception, then the closing event
    assert outcome.status == "failed"
    assert not outcome.complete
    await relay.aclose()
    assert outcome.status == "failed"  # closing does not make it "incomplete"


class BrokenEndWriter(HeadedWriter):
    def done(self) -> bytes:
        raise RuntimeError("a translator's bug at the end")

    def error(self, error: GatewayError) -> bytes:
        raise RuntimeError("and in its error event too")


async def test_a_writer_that_fails_at_the_end_even_in_its_error_event_still_ends_the_stream() -> None:
    outcome = Outcome()
    finished = '{"n": 1, "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]}'
    events = UpstreamEvents(ScriptedResponse(finished), deadline=deadline())
    relay = Relay(events, BrokenEndWriter(), outcome, heartbeat_interval=1)
    assert await relay.prime() is None
    parts = [part async for part in relay]
    assert b"".join(parts) == b"head;1;"  # no closing event could be made: the stream simply ends
    assert (outcome.status, outcome.complete) == ("failed", False)  # not billed as a whole answer
    await relay.aclose()


class BrokenFlushWriter(HoldingWriter):
    def flush(self) -> bytes:
        raise RuntimeError("a translator's bug when writing what it held")


async def test_a_writer_that_fails_in_flush_ends_the_stream_with_its_error_event() -> None:
    outcome = Outcome()
    relay = Relay(
        UpstreamEvents(CountingResponse(3), deadline=deadline()), BrokenFlushWriter(), outcome, heartbeat_interval=1
    )
    assert await relay.prime() is None
    assert [part async for part in relay] == [b"error;"]
    assert outcome.status == "failed"
    await relay.aclose()
