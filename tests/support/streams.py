"""Client streams read in threads, and what the database holds once a gateway has exited (shutdown tests)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.gateway import GatewayProcess, api_client, chat_body, sqlite_path, sse_data

CONTENT_DELTA = b'"delta":{"content":'  # a content chunk; the role chunk's delta starts with "role"


@dataclass
class StreamRead:
    """One client stream read in a thread: what arrived and how it ended."""

    first_content: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    body: bytes = b""
    error: BaseException | None = None

    def read(self, gateway: GatewayProcess, key: str) -> None:
        try:
            with (
                api_client(gateway, key, timeout=20) as http,
                http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as response,
            ):
                self.status = response.status_code
                for piece in response.iter_raw():
                    self.body += piece
                    if CONTENT_DELTA in self.body:
                        self.first_content.set()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.first_content.set()

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    @property
    def complete(self) -> bool:
        return sse_data(self.text)[-1:] == ["[DONE]"]


@dataclass
class Stored:
    """What the database says after the process exited."""

    usage: list[dict[str, Any]]
    open_holds: int
    key_held: int


def stored(gateway: GatewayProcess, key_id: str) -> Stored:
    url: str = gateway.config["database"]["url"]
    usage_sql = "SELECT status, partial, completion_tokens, cost FROM usage WHERE key_id = :k ORDER BY id"
    holds_sql = "SELECT COUNT(*) FROM holds WHERE status = 'held'"
    key_sql = "SELECT held FROM api_keys WHERE id = :k"
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(gateway))) as db:
            db.row_factory = sqlite3.Row
            usage = [dict(row) for row in db.execute(usage_sql, {"k": key_id})]
            (open_holds,) = db.execute(holds_sql).fetchone()
            (key_held,) = db.execute(key_sql, {"k": key_id}).fetchone()
        return Stored(usage, open_holds, key_held)
    return asyncio.run(_stored_on_server(url, usage_sql, holds_sql, key_sql, key_id))


async def _stored_on_server(url: str, usage_sql: str, holds_sql: str, key_sql: str, key_id: str) -> Stored:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            usage = [dict(row._mapping) for row in await conn.execute(text(usage_sql), {"k": key_id})]
            open_holds = (await conn.execute(text(holds_sql))).scalar_one()
            key_held = (await conn.execute(text(key_sql), {"k": key_id})).scalar_one()
    finally:
        await engine.dispose()
    return Stored(usage, open_holds, key_held)


def refused(gateway: GatewayProcess, method: str, path: str, **kwargs: Any) -> int | None:
    """The status of a request sent now, or None when the connection was refused or dropped."""
    try:
        with httpx.Client(base_url=gateway.base_url, timeout=5) as http:
            return http.request(method, path, **kwargs).status_code
    except httpx.TransportError:
        return None
