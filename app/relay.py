"""The streaming relay: upstream SSE in, client stream out, one outcome for billing.

A producer task reads the upstream body, decodes SSE and JSON, and queues chunks; the consumer (the
client's response) takes them as they come, formats them through a ``Dialect`` (OpenAI passthrough or
Anthropic translation) and sends heartbeats while the upstream is silent. Nothing is buffered beyond
one network read.

The relay owns one rule: ``finish`` runs exactly once, whatever ends the stream (``[DONE]``, upstream
EOF, an upstream error event, a read timeout, the total deadline, or the client going away), and hands
the ``StreamOutcome`` to the pipeline's settle callback. Callers must call ``aclose`` in a
cancellation-shielded ``finally``; it is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from app.errors import GatewayError, UpstreamError, UpstreamTimeout
from app.money.tokens import TokenUsage, text_tokens
from app.sse import SSEDecoder, SSEError
from app.upstream import UpstreamReadError, UpstreamReadTimeout, UpstreamResponse

log = logging.getLogger("seedgate.relay")

_DONE = object()


class Dialect(Protocol):
    def start(self) -> bytes: ...
    def chunk(self, chunk: dict[str, Any], data: str) -> bytes: ...
    def done(self) -> bytes: ...
    def error(self, error: GatewayError) -> bytes: ...
    def heartbeat(self) -> bytes: ...


@dataclass(slots=True)
class StreamOutcome:
    status: str = "ok"  # ok | upstream_error | upstream_timeout | client_disconnected | incomplete
    usage: TokenUsage | None = None
    output_tokens: int = 0  # counted from forwarded deltas, for when usage never arrived
    finish_reason: str | None = None
    chunks: int = 0
    error: GatewayError | None = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return self.status == "ok"


class UpstreamEvents:
    """Parsed chunks of one upstream SSE response, read by a producer task into a queue."""

    def __init__(self, response: UpstreamResponse, *, deadline: float) -> None:
        self._response = response
        self._deadline = deadline
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task = asyncio.create_task(self._produce())

    async def _produce(self) -> None:
        decoder = SSEDecoder()
        try:
            async with asyncio.timeout_at(self._deadline):
                async for raw in self._response.aiter_bytes():
                    for event in decoder.feed(raw):
                        self._put(event.data)
                for event in decoder.flush():
                    self._put(event.data)
            self._queue.put_nowait(_DONE)
        except TimeoutError:
            self._queue.put_nowait(UpstreamTimeout("The upstream stream exceeded its deadline."))
        except UpstreamReadTimeout:
            self._queue.put_nowait(UpstreamTimeout("The upstream stream went silent for too long."))
        except (UpstreamReadError, SSEError) as exc:
            log.warning("upstream stream broke: %s", type(exc).__name__)
            self._queue.put_nowait(UpstreamError("The upstream stream broke off."))

    def _put(self, data: str) -> None:
        if data == "[DONE]":
            self._queue.put_nowait(_DONE)
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("skipping a malformed upstream event (%d bytes)", len(data))
            return
        if isinstance(chunk, dict):
            self._queue.put_nowait((chunk, data))

    async def next(self, wait: float | None) -> Any:
        """The next ``(chunk, data)``, ``_DONE``, or a ``GatewayError``; raises TimeoutError after ``wait`` seconds."""
        if wait is None:
            return await self._queue.get()
        async with asyncio.timeout(wait):
            return await self._queue.get()

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
    """Async iterator of client bytes; see the module docstring for its lifecycle."""

    def __init__(
        self,
        events: UpstreamEvents,
        dialect: Dialect,
        *,
        on_finish: Callable[[StreamOutcome], Awaitable[None]],
        heartbeat_interval: float,
    ) -> None:
        self._events = events
        self._dialect = dialect
        self._on_finish = on_finish
        self._heartbeat = heartbeat_interval
        self.outcome = StreamOutcome()
        self._pending: list[Any] = []
        self._started = False
        self._ended = False
        self._closed = False

    async def prime(self) -> GatewayError | None:
        """Wait for the upstream's first event; an error here can still become an HTTP status."""
        item = await self._events.next(None)
        if isinstance(item, GatewayError):
            return item
        if isinstance(item, tuple) and (err := _chunk_error(item[0])) is not None:
            return err
        self._pending.append(item)
        return None

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        if not self._started:
            self._started = True
            head = self._dialect.start()
            if head:
                return head
        while True:
            if self._pending:
                item = self._pending.pop(0)
            else:
                try:
                    item = await self._events.next(self._heartbeat)
                except TimeoutError:
                    return self._dialect.heartbeat()
            out = self._consume(item)
            if out is not None:
                return out

    def _consume(self, item: Any) -> bytes | None:
        if item is _DONE:
            self._ended = True
            if self.outcome.finish_reason is None and self.outcome.usage is None:
                return self._fail(UpstreamError("The upstream stream ended before the answer was complete."))
            return self._dialect.done()
        if isinstance(item, GatewayError):
            self._ended = True
            return self._fail(item)
        chunk, data = item
        if (err := _chunk_error(chunk)) is not None:
            self._ended = True
            return self._fail(err)
        self._account(chunk)
        return self._dialect.chunk(chunk, data) or None

    def _fail(self, error: GatewayError) -> bytes:
        self.outcome.status = "upstream_timeout" if isinstance(error, UpstreamTimeout) else "upstream_error"
        self.outcome.error = error
        return self._dialect.error(error)

    def _account(self, chunk: dict[str, Any]) -> None:
        outcome = self.outcome
        outcome.chunks += 1
        usage = chunk.get("usage")
        if usage:
            outcome.usage = TokenUsage.from_openai(usage) or outcome.usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                outcome.finish_reason = choice["finish_reason"]
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            for key in ("content", "reasoning_content"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    outcome.output_tokens += text_tokens(text)
            for call in delta.get("tool_calls") or ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    outcome.output_tokens += text_tokens(fn["arguments"])

    def interrupt(self, error: GatewayError) -> bytes:
        """The gateway itself stops the stream (shutdown): the closing error event, if still due."""
        if self._ended or not self._started:
            return b""
        self._ended = True
        self.outcome.status = "interrupted"
        self.outcome.error = error
        return self._dialect.error(error)

    async def aclose(self, *, client_disconnected: bool = False) -> None:
        """Close the upstream and settle, once. Call shielded from cancellation."""
        if self._closed:
            return
        self._closed = True
        if client_disconnected and not self._ended:
            self.outcome.status = "client_disconnected"
        elif not self._ended and self.outcome.status == "ok":
            self.outcome.status = "incomplete"
        try:
            await self._events.aclose()
        finally:
            await self._on_finish(self.outcome)
