"""The whole gateway in process: the ASGI app over an in-process upstream ``Transport``.

``ScriptedTransport`` plugs into the upstream seam (``app.upstream.Transport``) and answers every POST
from the fake upstream's scripts (``app.fake_upstream.script.Script``: the same language as the
loopback fake), so the pipeline, the relay and the money paths run in one event loop with no sockets.
``Harness`` starts the app's lifespan on a migrated SQLite file and hands out an httpx client over
``httpx.ASGITransport``, plus the services for checking the books.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.fake_upstream.completion import ChatRequest, completion_body, stream_payloads
from app.fake_upstream.script import DEFAULT_CONTENT, Script
from app.fake_upstream.stream import data_lines
from app.main import create_app
from app.migrate import upgrade
from app.services import Services
from app.settings import Settings, UpstreamSettings
from app.upstream import UpstreamReadError, UpstreamReadTimeout, UpstreamResponse, UpstreamSilent, UpstreamUnreachable
from tests.support.gateway import MASTER_KEY, base_config, deep_merge


class ScriptedResponse:
    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        chunks: list[bytes],
        *,
        delay: float = 0.0,
        reset_after: int | None = None,
        read_timeout: float = 60.0,
    ) -> None:
        self.status = status
        self.headers = dict(headers)
        self._chunks = chunks
        self._delay = delay
        self._reset_after = reset_after
        self._read_timeout = read_timeout
        self.closed = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for index, chunk in enumerate(self._chunks):
            if index and self._delay:
                if self._delay > self._read_timeout:
                    await asyncio.sleep(self._read_timeout)
                    raise UpstreamReadTimeout
                await asyncio.sleep(self._delay)
            if self._reset_after is not None and index >= self._reset_after:
                raise UpstreamReadError("ConnectionResetError")
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


class ScriptedTransport:
    """Answers each request with the next queued script (a default short answer when none is queued)."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self.scripts: deque[Script] = deque()
        self.requests: list[dict[str, Any]] = []
        self.responses: list[ScriptedResponse] = []
        self.unreachable = 0  # the next N requests never reach the upstream

    def enqueue(self, *scripts: Script | dict[str, Any]) -> None:
        self.scripts.extend(Script.coerce(s) for s in scripts)

    async def post(self, body: bytes, *, read_timeout: float) -> UpstreamResponse:
        if self.unreachable:
            self.unreachable -= 1
            raise UpstreamUnreachable("ClientConnectorError")
        request = orjson.loads(body)
        self.requests.append(request)
        script = self.scripts.popleft() if self.scripts else Script()
        if script.hang or script.delay_before_headers > read_timeout:
            await asyncio.sleep(read_timeout)
            raise UpstreamSilent
        if script.delay_before_headers:
            await asyncio.sleep(script.delay_before_headers)
        if script.status != 200:
            return ScriptedResponse(script.status, script.headers, [orjson.dumps(script.error_body)])
        chat = ChatRequest.from_body(request)
        content = script.content if script.content is not None else DEFAULT_CONTENT
        if not chat.stream:
            response = ScriptedResponse(200, script.headers, [completion_body(script, chat, content)])
        else:
            payloads = stream_payloads(script, chat, content)
            events = [data_lines(payload, script.multiline_data) + b"\n\n" for payload in payloads]
            if script.malformed_after_events is not None:
                events.insert(script.malformed_after_events, b"data: {not json\n\n")
            response = ScriptedResponse(
                200,
                {"content-type": "text/event-stream", **script.headers},
                events,
                delay=script.event_delay,
                reset_after=script.reset_after_events,
                read_timeout=read_timeout,
            )
        self.responses.append(response)
        return response

    async def aclose(self) -> None:
        return None


def inprocess_settings(db_path: Path, overrides: dict[str, Any] | None = None) -> Settings:
    config = deep_merge(base_config("http://upstream.invalid/v1", f"sqlite+aiosqlite:///{db_path}"), overrides or {})
    return Settings(**config)


class Harness:
    """The app, its lifespan and an httpx client over ASGI; ``upstream`` is the ``ark`` transport."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.transports: dict[str, ScriptedTransport] = {}
        self.app = create_app(settings, transport=self._transport)
        self._lifespan: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._started: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.state: dict[str, Any] = {}

    def _transport(self, settings: UpstreamSettings) -> ScriptedTransport:
        transport = self.transports[settings.name] = ScriptedTransport(settings)
        return transport

    @property
    def upstream(self) -> ScriptedTransport:
        return self.transports["ark"]

    @property
    def services(self) -> Services:
        services: Services = self.state["services"]
        return services

    async def __aenter__(self) -> Harness:
        await asyncio.to_thread(upgrade, self.settings.database.url)
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}

        async def receive() -> dict[str, Any]:
            return await self._events.get()

        async def send(message: dict[str, Any]) -> None:
            await self._started.put(message)

        self._lifespan = asyncio.create_task(self.app(scope, receive, send))  # type: ignore[arg-type]
        await self._events.put({"type": "lifespan.startup"})
        message = await self._started.get()
        assert message["type"] == "lifespan.startup.complete", message
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._events.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._started.get(), timeout=30)
        if self._lifespan is not None:
            await self._lifespan

    def client(self, key: str | None = None, **headers: str) -> httpx.AsyncClient:
        if key is not None:
            headers = {"authorization": f"Bearer {key}", **headers}
        transport = httpx.ASGITransport(app=self._with_state, client=("127.0.0.1", 40000))  # type: ignore[arg-type]
        return httpx.AsyncClient(transport=transport, base_url="http://gateway.test", headers=headers, timeout=30)

    async def _with_state(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # what uvicorn does: each request gets a copy of the lifespan state
        scope["state"] = dict(self.state)
        await self.app(scope, receive, send)

    def admin(self) -> httpx.AsyncClient:
        return self.client(MASTER_KEY)

    async def create_key(self, balance_usd: str = "10", **fields: Any) -> tuple[str, str]:
        async with self.admin() as admin:
            response = await admin.post("/admin/keys", json={"name": "test", "balance_usd": balance_usd, **fields})
            response.raise_for_status()
            body = response.json()
            return body["id"], body["key"]

    async def key(self, key_id: str) -> dict[str, Any]:
        async with self.admin() as admin:
            response = await admin.get(f"/admin/keys/{key_id}")
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    async def usage(self, key_id: str) -> list[dict[str, Any]]:
        async with self.admin() as admin:
            response = await admin.get("/admin/usage", params={"key_id": key_id})
            response.raise_for_status()
            rows: list[dict[str, Any]] = response.json()["data"]
            return rows

    async def ledger_balanced(self) -> bool:
        async with self.admin() as admin:
            totals = (await admin.get("/admin/ledger")).json()
        return bool(totals["balanced"]) and totals["held"] == 0
