"""The ASGI responses of billed requests: they send the answer, then always run its settlement.

Starlette's ``StreamingResponse`` never ``aclose()``s its body iterator and skips ``background=`` when
the client disconnects, so settlement cannot hang off either. Here:

- ``AnswerResponse`` sends a whole JSON answer, then runs ``then`` (the pipeline's settlement) shielded
  from cancellation, however the send ended.
- ``RelayResponse`` runs the pump (relay -> ``send``) and a watcher (``receive`` -> ``http.disconnect``)
  side by side; whichever ends first stops the other. A client that stops reading for
  ``write_timeout`` seconds is cut (``client_stalled``); a cancelled response (shutdown grace over)
  ends with the error event (``interrupted``). Then the relay closes and ``then`` runs, shielded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.errors import ServiceUnavailable
from app.relay import Relay

log = logging.getLogger("seedgate.stream")

Then = Callable[[], Awaitable[None]]
TAIL_WRITE_SECONDS = 1.0


class Gauge(Protocol):
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...


class AnswerResponse(Response):
    def __init__(self, content: bytes, *, headers: dict[str, str], then: Then, write_timeout: float) -> None:
        super().__init__(content, media_type="application/json", headers=headers)
        self._then = then
        self._write_timeout = write_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with asyncio.timeout(self._write_timeout):
                await super().__call__(scope, receive, send)
        except TimeoutError:
            log.warning("a client stopped reading its answer; the connection is dropped")
        finally:
            await asyncio.shield(self._then())


class RelayResponse(Response):
    def __init__(
        self,
        relay: Relay,
        *,
        headers: dict[str, str],
        then: Then,
        write_timeout: float,
        open_streams: Gauge | None = None,
    ) -> None:
        # Response.__init__ is skipped on purpose: it would add a content-length
        self.relay = relay
        self._open_streams = open_streams  # seedgate_open_streams, up while this response runs
        self.status_code = 200
        self.media_type = "text/event-stream"
        self.background = None
        self._then = then
        self._write_timeout = write_timeout
        raw = {"content-type": self.media_type, "cache-control": "no-cache", "x-accel-buffering": "no", **headers}
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in raw.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._open_streams is not None:
            self._open_streams.inc()
        try:
            await self._relay(receive, send)
        finally:
            if self._open_streams is not None:
                self._open_streams.dec()

    async def _relay(self, receive: Receive, send: Send) -> None:
        pump = asyncio.create_task(self._pump(send))
        watch = asyncio.create_task(self._watch(receive))
        ended = None
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            ended = self._why(pump, watch)
        except asyncio.CancelledError:
            ended = "interrupted"  # the server's shutdown grace ran out: end the stream properly
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.shield(self._finish(pump, watch, send, ended))
        current = asyncio.current_task()
        if ended == "interrupted" and current is not None:
            current.uncancel()

    @staticmethod
    def _why(pump: asyncio.Task[None], watch: asyncio.Task[None]) -> str | None:
        if not pump.done():
            return "client_disconnected"
        error = None if pump.cancelled() else pump.exception()
        if isinstance(error, TimeoutError):
            return "client_stalled"
        if isinstance(error, OSError):
            return "client_disconnected"
        return None

    async def _finish(self, pump: asyncio.Task[None], watch: asyncio.Task[None], send: Send, ended: str | None) -> None:
        for result in await asyncio.gather(pump, watch, return_exceptions=True):
            if isinstance(result, Exception) and not isinstance(result, OSError | TimeoutError):
                log.error("stream relay failed", exc_info=result)
        try:
            if ended == "interrupted":
                tail = self.relay.stop(ended, ServiceUnavailable("The gateway is shutting down; the answer was cut."))
                if tail:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(TAIL_WRITE_SECONDS):
                            await send({"type": "http.response.body", "body": tail, "more_body": False})
            elif ended is not None:
                self.relay.stop(ended)
            await self.relay.aclose()
        finally:
            await self._then()

    async def _pump(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as writing:
            watchdog = WriteWatchdog(writing, self._write_timeout)
            try:
                watchdog.writing_since = loop.time()
                await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
                watchdog.writing_since = None
                async for chunk in self.relay:
                    watchdog.writing_since = loop.time()
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    watchdog.writing_since = None
                watchdog.writing_since = loop.time()  # the last send waits for the buffers to drain too
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                watchdog.stop()

    @staticmethod
    async def _watch(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return


class WriteWatchdog:
    """Expires ``writing`` once one write has been in progress for ``timeout`` seconds.

    The pump only stamps when a write starts (``writing_since``) and clears it when the write is done;
    one timer per ``timeout`` period checks the stamp, instead of arming and disarming a timer around
    every write. Invariant: the timer is always due at or before the stamped write's start + ``timeout``
    (it re-arms at that moment, or ``timeout`` from now when idle), so a stalled write is cut exactly
    ``timeout`` after it began, and time between writes (the upstream being slow) never counts.
    """

    def __init__(self, writing: asyncio.Timeout, timeout: float) -> None:
        self.writing_since: float | None = None
        self._writing = writing
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(self._loop.time() + timeout, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        since = self.writing_since
        if since is not None and now - since >= self._timeout:
            self._timer = None
            self._writing.reschedule(now)  # the pump's write raises TimeoutError
            return
        self._timer = self._loop.call_at((now if since is None else since) + self._timeout, self._check)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
