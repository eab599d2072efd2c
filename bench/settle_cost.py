"""CPU per ``reserve`` + ``settle`` on the SQLite group-commit writer, with and without the secondary
indexes of the usage tables: ``.venv/bin/python -m bench.settle_cost [--requests N]``.

Runs the ledger directly (no HTTP), one request after another, on a fresh migrated SQLite file in a
temporary directory, and prints process CPU (every thread) per reserve+settle pair.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from app.catalog import Catalog
from app.db import Database
from app.migrate import upgrade
from app.money.ledger import Ledger
from app.settings import Settings
from tests.contract.ledger_support import USD, draft, make_hold
from tests.support.books import Books
from tests.support.gateway import base_config

NEW_INDEXES = (
    "ix_usage_created_at",
    "ix_usage_failed_created_at",
    "ix_usage_daily_key_id_day",
    "ix_usage_daily_model_day",
)


async def cpu_per_pair(path: Path, *, drop_indexes: bool, requests: int) -> float:
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    if drop_indexes:
        with sqlite3.connect(path) as conn:
            for name in NEW_INDEXES:
                conn.execute(f"DROP INDEX IF EXISTS {name}")
    db = Database(url)
    try:
        settings = Settings(**base_config("http://upstream.invalid/v1", url))
        key = await Books(db, Catalog.from_settings(settings)).new_key("1000000")
        ledger = Ledger(db, owner="bench", lease_seconds=60)
        started = time.process_time()
        for _ in range(requests):
            hold = make_hold(key, USD // 100)
            if await ledger.reserve(hold) is not None:
                raise RuntimeError("the bench key ran out of money")
            await ledger.settle(hold, draft(hold, USD // 1000))
        return (time.process_time() - started) / requests * 1000
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seedgate-settle-") as workdir:
        for run, drop in enumerate((False, True, False, True)):
            cpu = asyncio.run(cpu_per_pair(Path(workdir) / f"{run}.db", drop_indexes=drop, requests=args.requests))
            label = "without the new indexes" if drop else "with every index        "
            print(f"{label}  {cpu:.3f} ms CPU per reserve+settle")


if __name__ == "__main__":
    main()
