"""The streaming relay: upstream SSE in, client stream out, one ``Outcome`` for billing.

A producer task reads the upstream body, decodes SSE and JSON, and queues chunks; the consumer (the
client's response, ``app.outbound``) takes them as they come, formats them through the dialect's
``StreamWriter`` and sends heartbeats while the upstream is silent. Events already at hand when the
consumer asks go out together, in one write (a burst costs one write, and nothing waits for it).

The queue is bounded (``RELAY_QUEUE_EVENTS``): when the client reads slower than the upstream writes,
the producer stops reading, and TCP back-pressure reaches the upstream instead of the gateway
buffering the answer in memory.

The relay fills in the request's ``Outcome`` as it goes -- usage when it arrives, output tokens of
every delta delivered to the client (counted once the write carrying it went through, i.e. when the
consumer asks for more, or with the stream's end) -- and marks how the stream ended: ``[DONE]`` or a finish (ok),
upstream EOF, an error event, a read timeout or the total deadline (upstream_*), the client leaving
or stalling, the gateway shutting down, or an exception of its own translating the events (failed:
logged, and the client still gets the stream's closing error event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from app.dialects import StreamWriter
from app.errors import GatewayError, InternalError, UpstreamError, UpstreamTimeout
from app.json import loads_upstream
from app.money.rules import Outcome
from app.money.tokens import TokenUsage, output_tokens
from app.sse import SSEDecoder, SSEError
from app.upstream import UpstreamReadError, UpstreamReadTimeout, UpstreamResponse

log = logging.getLogger("seedgate.relay")

RELAY_QUEUE_EVENTS = 64
_DONE = object()
_WAKE = object()


class UpstreamEvents:
    """Parsed chunks of one upstream SSE response, read by a producer task into a bounded queue."""

    def __init__(self, response: UpstreamResponse, *, deadline: float) -> None:
        self._response = response
        self._deadline = deadline
        self._queue: asyncio.Queue[Any] = asyncio.Queue(RELAY_QUEUE_EVENTS)
        self._final: Any = None  # _DONE or a GatewayError, once the upstream side ended
        self._task = asyncio.create_task(self._produce())

    async def _produce(self) -> None:
        decoder = SSEDecoder()
        final: Any = _DONE
        try:
            async with asyncio.timeout_at(self._deadline):
                async for raw in self._response.aiter_bytes():
                    for event in decoder.feed(raw):
                        if await self._put(event.data):
                            return
                for event in decoder.flush():
                    if await self._put(event.data):
                        return
        except TimeoutError:
            final = UpstreamTimeout("The upstream stream exceeded its deadline.")
        except UpstreamReadTimeout:
            final = UpstreamTimeout("The upstream stream went silent for too long.")
        except (UpstreamReadError, SSEError) as exc:
            log.warning("upstream stream broke: %s", type(exc).__name__)
            final = UpstreamError("The upstream stream broke off.")
        self._end(final)

    def _end(self, final: Any) -> None:
        self._final = final
        with contextlib.suppress(asyncio.QueueFull):  # full: the consumer is not waiting, it will see _final
            self._queue.put_nowait(_WAKE)

    async def _put(self, data: str) -> bool:
        """Queue one event; True once the stream is over (``[DONE]``)."""
        if data == "[DONE]":
            self._end(_DONE)
            return True
        try:
            chunk = orjson.loads(data)  # the usual event, without loads_upstream's call
        except orjson.JSONDecodeError:
            try:
                chunk = loads_upstream(data)  # what only the stdlib reads (half an emoji)
            except ValueError:
                log.warning("skipping a malformed upstream event (%d bytes)", len(data))
                return False
        if isinstance(chunk, dict):
            queue = self._queue
            if queue.full():
                await queue.put((chunk, data))  # the client reads slower: wait here, the upstream waits too
            else:
                queue.put_nowait((chunk, data))
        return False

    async def next(self, wait: float | None) -> Any:
        """The next ``(chunk, data)``, ``_DONE``, or a ``GatewayError``; TimeoutError after ``wait`` seconds.

        An item already queued is taken at once; the ``wait`` timer is armed only when the queue is empty.
        """
        queue = self._queue
        while True:
            if not queue.empty():
                item = queue.get_nowait()
            elif self._final is not None:
                return self._final
            elif wait is None:
                item = await queue.get()
            else:
                async with asyncio.timeout(wait):
                    item = await queue.get()
            if item is not _WAKE:
                return item

    def take(self) -> Any:
        """What ``next`` would return at once, without waiting: an item, the end, or None (nothing yet)."""
        queue = self._queue
        while not queue.empty():
            item = queue.get_nowait()
            if item is not _WAKE:
                return item
        return self._final

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._response.aclose()


def _chunk_error(chunk: dict[str, Any]) -> GatewayError | None:
    err = chunk.get("error")
    if err is None:
        return None
    code = err.get("code") if isinstance(err, dict) else None
    log.warning("upstream sent an error event (code %s)", code)
    return UpstreamError("The upstream service failed while streaming the answer.")


class Relay:
    """Async iterator of client bytes. ``prime`` first; then iterate; ``end`` says how it stopped."""

    def __init__(
        self,
        events: UpstreamEvents,
        writer: StreamWriter,
        outcome: Outcome,
        *,
        heartbeat_interval: float,
        on_complete: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._events = events
        self._on_complete = on_complete  # awaited once the answer is complete, before its last bytes go out
        self._writer = writer
        self.outcome = outcome
        self._heartbeat = heartbeat_interval
        self._pending: list[Any] = []
        self._started = False
        self._ended = False
        self._closed = False
        self._finish_reason: str | None = None
        self._unsent = 0  # output tokens in the bytes handed out but not known to be written yet
        self._flush: Callable[[], bytes] | None = getattr(writer, "flush", None)  # optional, see StreamWriter

    async def prime(self) -> GatewayError | None:
        """Wait for the upstream's first event; an error here can still become an HTTP status."""
        item = await self._events.next(None)
        if isinstance(item, GatewayError):
            return item
        if item is _DONE:
            return UpstreamError("The upstream stream ended before the answer began.")
        if (err := _chunk_error(item[0])) is not None:
            return err
        self._pending.append(item)
        self.outcome.consumed = True  # the upstream is answering: from here on, it bills the operator
        return None

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        self._deliver()  # asked for more: the bytes handed out last were written
        try:
            out = await self._next_bytes()
        except StopAsyncIteration:
            raise
        except Exception:  # a bug in start() or flush() (one in an event's own translation: _consume)
            log.exception("relaying the stream failed")
            out = self._broken()
        if self._ended:
            self._deliver()  # the upstream's end is in these bytes: the whole answer was produced and handed out
        if self.outcome.complete and self._on_complete is not None:
            # e.g. a stored Responses answer: saved before the client, having read its end, can chain to it
            on_complete, self._on_complete = self._on_complete, None
            await on_complete()
        return out

    async def _next_bytes(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            head = self._writer.start()
            if head:
                return head + self._at_hand()
        while True:  # nothing is held back here: every return above and below ends with _at_hand's flush
            if self._pending:
                item = self._pending.pop(0)
            else:
                try:
                    item = await self._events.next(self._heartbeat)
                except TimeoutError:
                    return self._writer.heartbeat()
            out = self._consume(item) + self._at_hand()  # and what the writer held back, with the rest of its burst
            if out:
                return out

    def _at_hand(self) -> bytes:
        """Client bytes of every event already here (primed or queued), to go out in the same write.

        It never waits for the upstream, so it delays nothing: a burst of events (the upstream flushed
        several at once) costs one write instead of one each. At most the queue's bound of events.
        """
        parts = []
        while not self._ended:
            item = self._pending.pop(0) if self._pending else self._events.take()
            if item is None:
                break
            parts.append(self._consume(item))
        if self._flush is not None:
            parts.append(self._flush())
        return b"".join(parts)

    def _consume(self, item: Any) -> bytes:
        try:
            if item is _DONE:
                self._ended = True
                if self._finish_reason is None and self.outcome.usage is None:
                    return self._fail(UpstreamError("The upstream stream ended before the answer was complete."))
                self.outcome.complete = True
                tail = self._writer.done()
                if getattr(self._writer, "failed", False):  # the dialect could not make a whole answer of it
                    self.outcome.status, self.outcome.complete = "upstream_error", False
                return tail
            if isinstance(item, GatewayError):
                self._ended = True
                return self._fail(item)
            chunk, data = item
            if (err := _chunk_error(chunk)) is not None:
                self._ended = True
                return self._fail(err)
            self._account(chunk)
            return self._writer.chunk(chunk, data)
        except Exception:  # the bytes of this write made so far still go out, before the closing event
            log.exception("relaying the stream failed")
            return self._broken()

    def _deliver(self) -> None:
        """Count the output of the bytes handed out as delivered (``outcome.output_tokens`` bills a cut stream)."""
        if self._unsent:
            self.outcome.output_tokens += self._unsent
            self._unsent = 0

    def _broken(self) -> bytes:
        """End the stream after an exception of the gateway's own (status ``failed``, as a whole request's)."""
        self._ended = True
        self.outcome.status = "failed"
        self.outcome.complete = False  # whatever the upstream finished, the client did not get it whole
        try:
            return self._writer.error(InternalError("The gateway failed while relaying the answer."))
        except Exception:
            log.exception("the stream's closing error event failed too")
            return b""

    def _fail(self, error: GatewayError) -> bytes:
        self.outcome.status = "upstream_timeout" if isinstance(error, UpstreamTimeout) else "upstream_error"
        return self._writer.error(error)

    def _account(self, chunk: dict[str, Any]) -> None:
        outcome = self.outcome
        usage = chunk.get("usage")
        if usage:
            outcome.usage = TokenUsage.from_openai(usage) or outcome.usage
        choices = chunk.get("choices")
        for choice in choices if type(choices) is list else ():  # an upstream's "choices": 1 is no choice at all
            if isinstance(choice, dict):
                if choice.get("finish_reason"):
                    self._finish_reason = choice["finish_reason"]
                self._unsent += output_tokens(choice.get("delta"))

    def stop(self, status: str, error: GatewayError | None = None) -> bytes:
        """The gateway or the client ends the stream early: the closing error event, if one is still due."""
        if self._ended:
            return b""
        self._ended = True
        self.outcome.status = status
        if error is None or not self._started:
            return b""
        return self._writer.error(error)

    async def aclose(self) -> None:
        """Close the upstream side. Idempotent; call shielded from cancellation."""
        if self._closed:
            return
        self._closed = True
        if not self._ended and self.outcome.status == "ok":
            self.outcome.status = "incomplete"
        await self._events.aclose()
