"""Database fixtures: a fresh, migrated database per test (SQLite file, or Postgres on the second pass),
ledgers on each money path, and ``Books`` to read rows and check the ledger invariant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, select

from app.accounts import KeyCreate, create_key, ledger_totals
from app.catalog import Catalog
from app.db import Database
from app.migrate import upgrade
from app.money.drivers import SqlDriver
from app.money.ledger import Ledger
from app.settings import Settings
from app.tables import api_keys, holds
from tests.support.backends import database_url, on_postgres

OWNER = "test-instance"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def make_catalog() -> Catalog:
    settings = Settings(
        upstreams=[{"name": "ark", "base_url": "http://127.0.0.1:9/api/v3"}],
        models=[
            {
                "id": "doubao-seed-2.0-pro",
                "upstream": "ark",
                "aliases": ["claude-opus-4-1"],
                "price": {"input": "0.47", "output": "2.37", "cached_input": "0.09"},
            },
            {"id": "doubao-seed-2.0-mini", "upstream": "ark", "price": {"input": "0.14", "output": "0.69"}},
        ],
    )
    return Catalog.from_settings(settings)


class Books:
    """Make keys, read their rows, and check the ledger invariant on one database."""

    def __init__(self, db: Database, catalog: Catalog) -> None:
        self.db = db
        self.catalog = catalog

    async def new_key(self, balance_usd: str | Decimal = "0", **fields: Any) -> str:
        created = await create_key(self.db, self.catalog, KeyCreate(name="test key", balance_usd=balance_usd, **fields))
        key_id: str = created["id"]
        return key_id

    async def settled(self) -> None:
        """Wait for the SQLite writer thread's early-acknowledged writes to commit, so reads see them."""
        if self.db.writer is not None:
            await self.db.writer.barrier()

    async def key(self, key_id: str) -> Any:
        await self.settled()
        async with self.db.read() as conn:
            return (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).one()

    async def rows(self, table: Table, **where: Any) -> list[Any]:
        query = select(table).where(*(table.c[name] == value for name, value in where.items()))
        await self.settled()
        async with self.db.read() as conn:
            return list((await conn.execute(query)).all())

    async def check(self) -> dict[str, int]:
        """Assert the money invariants; return the totals."""
        await self.settled()
        totals = await ledger_totals(self.db)
        assert totals["topups"] == totals["available"] + totals["held"] + totals["charges"], totals
        assert totals["spent"] == totals["charges"], totals
        open_holds = (
            select(holds.c.key_id, func.sum(holds.c.amount).label("held"))
            .where(holds.c.status == "held")
            .group_by(holds.c.key_id)
        )
        async with self.db.read() as conn:
            keys = (await conn.execute(select(api_keys))).all()
            held_by_key = {row.key_id: int(row.held) for row in (await conn.execute(open_holds)).all()}
        for key in keys:
            assert key.available >= 0, key
            assert key.held == held_by_key.get(key.id, 0), key
            assert key.topped_up == key.available + key.held + key.spent, key
        return totals


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    # upgrade() runs its own event loop (asyncio.run): call it from this sync fixture, before the test's loop
    url = database_url(tmp_path)  # SQLite file, or a fresh Postgres database on the postgres pass
    upgrade(url)
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def catalog() -> Catalog:
    return make_catalog()


@pytest.fixture
def books(db: Database, catalog: Catalog) -> Books:
    return Books(db, catalog)


MakeLedger = Callable[..., Ledger]


@pytest.fixture(params=["sqlalchemy"] if on_postgres() else ["sqlalchemy", "sqlite-writer"])
def make_ledger(request: pytest.FixtureRequest, db: Database) -> MakeLedger:
    """Ledgers on one of the two drivers: SQLAlchemy (Postgres, and SQLite here), or SQLite's group-commit
    writer thread. Both run the same transactions (``app.money.transactions``)."""

    def make(owner: str = OWNER, *, lease_seconds: float = 3600, database: Database | None = None) -> Ledger:
        database = database or db
        driver = SqlDriver(database) if request.param == "sqlalchemy" else None
        return Ledger(database, owner=owner, lease_seconds=lease_seconds, driver=driver)

    return make


@pytest.fixture
def ledger(make_ledger: MakeLedger) -> Ledger:
    return make_ledger()
