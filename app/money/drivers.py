"""Running a money transaction (``app.money.transactions``) on a database: two drivers, one contract.

- ``WriterDriver``: SQLite files. The transaction runs on the group-commit writer thread
  (``app.money.writer``) against a stdlib ``sqlite3`` connection: tens of microseconds of CPU, no
  thread hop per statement. ``durable`` says whether the caller waits for the fsync covering it.
- ``SqlDriver``: Postgres (and in-memory SQLite) through SQLAlchemy, one short transaction per call.

Both turn a failure into an exception and leave the transaction rolled back; retrying is the
ledger's business.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause

from app.db import Database
from app.money.transactions import Query, Tx
from app.money.writer import SqliteWriter

T = TypeVar("T")
TxFactory = Callable[[], Tx[T]]


class Driver(Protocol):
    async def run(self, make: TxFactory[T], *, durable: bool = True) -> T: ...

    async def flush(self) -> None: ...


def sqlite_timestamp(value: datetime) -> str:
    """A datetime as SQLAlchemy's SQLite ``DateTime`` writes it (UTC, no offset, microseconds), so both
    paths read -- and compare -- each other's rows."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


# The writer's stdlib connection turns datetime parameters into text through this adapter, inside
# sqlite3's C code: no Python pass over every parameter of every statement (that pass was ~10 % of
# the writer's CPU per request). SQLAlchemy's own SQLite statements format datetimes before they
# reach sqlite3, so they never meet it.
sqlite3.register_adapter(datetime, sqlite_timestamp)


def _sqlite_params(params: dict[str, Any]) -> dict[str, Any]:
    return {name: sqlite_timestamp(v) if isinstance(v, datetime) else v for name, v in params.items()}


def run_on_sqlite(conn: sqlite3.Connection, tx: Tx[T]) -> T:
    """Drive ``tx`` to its end on a connection already inside a transaction."""
    try:
        query = next(tx)
        while True:
            query = tx.send(_execute_sqlite(conn, query))
    except StopIteration as stop:
        result: T = stop.value
        return result


def _execute_sqlite(conn: sqlite3.Connection, query: Query) -> Any:
    if isinstance(query.params, list):
        return conn.executemany(query.sql, query.params).rowcount
    cursor = conn.execute(query.sql, query.params)
    return cursor.fetchall() if query.rows else cursor.rowcount


class WriterDriver:
    def __init__(self, writer: SqliteWriter) -> None:
        self._writer = writer

    async def run(self, make: TxFactory[T], *, durable: bool = True) -> T:
        return await self._writer.run(lambda conn: run_on_sqlite(conn, make()), durable=durable)

    async def flush(self) -> None:
        await self._writer.barrier()


class SqlDriver:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._sqlite = db.is_sqlite
        self._lock_suffix = "" if db.is_sqlite else " FOR UPDATE"  # SQLite: BEGIN IMMEDIATE already locks
        self._compiled: dict[str, TextClause] = {}

    def _text(self, query: Query) -> TextClause:
        sql = query.sql + self._lock_suffix if query.lock else query.sql
        clause = self._compiled.get(sql)
        if clause is None:
            clause = self._compiled[sql] = text(sql)
        return clause

    async def run(self, make: TxFactory[T], *, durable: bool = True) -> T:
        async with self._db.write() as conn:
            tx = make()
            try:
                query = next(tx)
                while True:
                    query = tx.send(await self._execute(conn, query))
            except StopIteration as stop:
                result: T = stop.value
                return result

    async def _execute(self, conn: AsyncConnection, query: Query) -> Any:
        params = query.params
        if self._sqlite:
            params = [_sqlite_params(p) for p in params] if isinstance(params, list) else _sqlite_params(params)
        result = await conn.execute(self._text(query), params)
        if query.rows:
            return [tuple(row) for row in result.all()]
        return result.rowcount

    async def flush(self) -> None:
        return None  # every transaction is durable when it returns
