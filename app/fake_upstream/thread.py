"""`FakeUpstreamThread`: the fake upstream on its own event loop in a background thread.

For synchronous tests that drive a gateway subprocess. `start()` returns once the socket listens;
`stop()` stops the server and joins the thread. The script/request methods are safe to call from any
thread because they only touch the lock-guarded `State`.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from app.fake_upstream.script import Script
from app.fake_upstream.server import FakeUpstream
from app.fake_upstream.state import RecordedRequest


class FakeUpstreamThread:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        echo: bool = False,
        default: Script | dict[str, Any] | None = None,
        record_requests: bool = True,
    ) -> None:
        self._upstream = FakeUpstream(host, port, echo=echo, default=default, record_requests=record_requests)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return self._upstream.url

    @property
    def port(self) -> int:
        return self._upstream.port

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._upstream.requests

    def enqueue(self, *scripts: Script | dict[str, Any]) -> None:
        self._upstream.enqueue(*scripts)

    def enqueue_for_model(self, model: str, *scripts: Script | dict[str, Any]) -> None:
        self._upstream.enqueue_for_model(model, *scripts)

    def set_named(self, name: str, script: Script | dict[str, Any]) -> None:
        self._upstream.set_named(name, script)

    def reset(self) -> None:
        self._upstream.reset()

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("FakeUpstreamThread already started")
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"fake upstream did not start within {timeout} s")
        if self._failure is not None:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError("fake upstream failed to start") from self._failure

    def stop(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"fake upstream thread did not stop within {timeout} s")
        self._ready.clear()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self._upstream.start()
        except BaseException as exc:  # handed to start() in the caller's thread
            self._failure = exc
            return
        finally:
            self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self._upstream.stop()

    def __enter__(self) -> FakeUpstreamThread:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
