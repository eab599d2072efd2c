"""Database engines and transactions.

Two doors, one rule: ``write()`` opens a short write transaction, ``read()`` a read-only one. No
transaction is ever held open across a network await.

SQLite: WAL, ``busy_timeout``, ``synchronous=FULL`` (money must survive power loss) and
``BEGIN IMMEDIATE`` for writes, because a deferred read-then-write transaction fails with
SQLITE_BUSY at once, ignoring busy_timeout. In-process writers queue on a one-connection pool
instead of spinning on the file lock. Postgres: the conditional UPDATEs are safe under READ
COMMITTED; every statement has a ``statement_timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.money.writer import SqliteWriter

SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_STATEMENT_TIMEOUT_MS = 10_000


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.writer: SqliteWriter | None = None  # group-commit path for the hot money writes
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                self.writer = SqliteWriter(parsed.database, busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS)
            self._write_engine = self._sqlite_engine(url, echo=echo, begin="BEGIN IMMEDIATE", pool_size=1)
            self._read_engine = self._sqlite_engine(url, echo=echo, begin="BEGIN", pool_size=8)
        else:
            engine = create_async_engine(
                url,
                echo=echo,
                pool_size=20,
                max_overflow=20,
                pool_pre_ping=True,
                connect_args={"server_settings": {"statement_timeout": str(POSTGRES_STATEMENT_TIMEOUT_MS)}},
            )
            self._write_engine = self._read_engine = engine

    @staticmethod
    def _sqlite_engine(url: str, *, echo: bool, begin: str, pool_size: int) -> AsyncEngine:
        engine = create_async_engine(url, echo=echo, pool_size=pool_size, max_overflow=0, pool_timeout=60)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # take transaction control away from the driver so BEGIN is ours to choose
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        return engine

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._read_engine.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        await self._write_engine.dispose()
        if self._read_engine is not self._write_engine:
            await self._read_engine.dispose()
