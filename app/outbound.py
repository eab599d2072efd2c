"""An ASGI response that drives a ``Relay`` and always finishes it.

Starlette's ``StreamingResponse`` never ``aclose()``s its body iterator and skips ``background=`` when
the client disconnects, so settlement cannot hang off either. Here the pump (relay -> ``send``) and a
watcher (``receive`` -> ``http.disconnect``) run side by side; whichever ends first stops the other,
and ``Relay.aclose`` runs in a shielded scope, so a cancelled request still settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.errors import ServiceUnavailable
from app.relay import Relay

log = logging.getLogger("seedgate.stream")


class RelayResponse(Response):
    def __init__(self, relay: Relay, *, headers: dict[str, str], media_type: str = "text/event-stream") -> None:
        # Response.__init__ is skipped on purpose: it would add a content-length
        self.relay = relay
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        raw = {"content-type": media_type, "cache-control": "no-cache", "x-accel-buffering": "no", **headers}
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in raw.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.create_task(self._pump(send))
        watch = asyncio.create_task(self._watch(receive))
        disconnected = interrupted = False
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            disconnected = watch.done() and not pump.done()
            if pump.done() and not pump.cancelled() and pump.exception() is not None:
                disconnected = isinstance(pump.exception(), OSError)
        except asyncio.CancelledError:
            # the server cancels us when its shutdown grace ran out: end the stream properly
            interrupted = True
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.shield(self._cleanup(pump, watch, send, disconnected=disconnected, interrupted=interrupted))
        current = asyncio.current_task()
        if interrupted and current is not None:
            current.uncancel()

    async def _cleanup(
        self, pump: asyncio.Task[None], watch: asyncio.Task[None], send: Send, *, disconnected: bool, interrupted: bool
    ) -> None:
        results = await asyncio.gather(pump, watch, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, OSError):
                log.error("stream relay failed", exc_info=result)
        if interrupted:
            tail = self.relay.interrupt(ServiceUnavailable("The gateway is shutting down; the answer was cut short."))
            if tail:
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": tail, "more_body": False})
        await self.relay.aclose(client_disconnected=disconnected)

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async for chunk in self.relay:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _watch(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return


class SettleAfterResponse(Response):
    """A JSON answer whose settlement runs right after its last byte is sent, whatever happens.

    Settling first would add a database round trip to every answer's latency; the hold is already
    durable, and the request's in-flight slot is held until ``settle`` returns (graceful shutdown
    waits for it).
    """

    def __init__(self, content: bytes, *, headers: dict[str, str], settle: Callable[[], Awaitable[None]]) -> None:
        super().__init__(content, media_type="application/json", headers=headers)
        self._settle = settle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self._settle())
