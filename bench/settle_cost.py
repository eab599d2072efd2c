"""Writer CPU per ``reserve`` + ``settle``, as the SQLite group-commit writer runs them under load:
``.venv/bin/python -m bench.settle_cost [--requests N] [--batch B]``.

No HTTP and no event loop: the money transactions (``app.money.transactions``) run on a stdlib
connection to a fresh migrated SQLite file (WAL, ``synchronous=NORMAL``), ``--batch`` operations per
transaction, each in its own savepoint -- exactly what ``app.money.writer`` does with the operations
that queue up together (at concurrency 16 a batch holds a few). Printed: process CPU (user + system,
so the WAL writes count) per reserve+settle pair, for

- random request ids against time-ordered ones (``app.asgi.new_request_id``): a random id dirties a
  random leaf page of the unique ``request_id`` indexes of holds and usage per request;
- every index against the usage indexes the console and the summaries added (``NEW_INDEXES``).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.asgi import new_request_id
from app.migrate import upgrade
from app.money import transactions as tx
from app.money.drivers import run_on_sqlite
from app.money.records import Hold
from tests.contract.ledger_support import USD, draft

NEW_INDEXES = (
    "ix_usage_created_at",
    "ix_usage_daily_key_id_day",
    "ix_usage_daily_model_day",
)
KEY_ID = "key_bench"
Operation = Callable[[sqlite3.Connection], object]


def _connect(path: Path, *, drop_indexes: bool) -> sqlite3.Connection:
    upgrade(f"sqlite+aiosqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")
    if drop_indexes:
        for name in NEW_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    conn.execute(
        "INSERT INTO api_keys (id, name, key_hash, key_prefix, key_last4, quota_month, quota_spent, available,"
        " held, spent, topped_up, created_at, updated_at) VALUES (?, 'bench', 'hash', 'sk-bench', 'last', '',"
        " 0, ?, 0, 0, ?, ?, ?)",
        (KEY_ID, 10**18, 10**18, now, now),
    )
    return conn


def _pair(request_id: str) -> tuple[Operation, Operation]:
    hold = Hold(request_id, KEY_ID, "doubao-seed-2.0-pro", USD // 100, 100, 10**6, 5)
    now = datetime.now(UTC)
    return (
        lambda conn: run_on_sqlite(conn, tx.reserve(hold, owner="bench", now=now, lease_until=now + timedelta(60))),
        lambda conn: run_on_sqlite(conn, tx.settle(hold, draft(hold, USD // 1000))),
    )


def _commit(conn: sqlite3.Connection, operations: list[Operation]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for operation in operations:
        conn.execute("SAVEPOINT op")
        operation(conn)
        conn.execute("RELEASE op")
    conn.execute("COMMIT")


def cpu_per_pair(path: Path, *, ordered_ids: bool, drop_indexes: bool, requests: int, batch: int) -> float:
    conn = _connect(path, drop_indexes=drop_indexes)
    make_id = new_request_id if ordered_ids else lambda: "req_" + uuid.uuid4().hex[:24]
    try:
        started = time.process_time()
        for _ in range(requests // batch):
            pairs = [_pair(make_id()) for _ in range(batch)]
            _commit(conn, [reserve for reserve, _ in pairs])
            _commit(conn, [settle for _, settle in pairs])
        return (time.process_time() - started) / (requests // batch * batch) * 1e6
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=4, help="operations per transaction")
    args = parser.parse_args()
    variants = [
        ("random request ids, every index", False, False),
        ("time-ordered ids, every index  ", True, False),
        ("time-ordered ids, without NEW_INDEXES", True, True),
    ]
    with tempfile.TemporaryDirectory(prefix="seedgate-settle-") as workdir:
        for run in range(2):
            for n, (label, ordered, drop) in enumerate(variants):
                path = Path(workdir) / f"{run}-{n}.db"
                cpu = cpu_per_pair(
                    path, ordered_ids=ordered, drop_indexes=drop, requests=args.requests, batch=args.batch
                )
                print(f"{label}  {cpu:6.1f} us CPU per reserve+settle (batches of {args.batch})", flush=True)


if __name__ == "__main__":
    main()
