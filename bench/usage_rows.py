"""Usage at scale: millions of raw usage rows (and their daily rollups), then the summary queries timed.

    .venv/bin/python bench/usage_rows.py                              # 10 million rows, SQLite and Postgres
    .venv/bin/python bench/usage_rows.py --rows 1000000 --backend sqlite --keep /tmp/usage.db

The database is migrated with the project's migrations; keys go in first (usage rows reference them),
then the raw rows in bulk -- ``executemany`` in large transactions on SQLite, binary ``COPY`` on
Postgres -- with the usage indexes dropped during the load and rebuilt after (as a restore would);
then the rollups are computed from the rows (as migrations 0002 and 0007 do), so they match.
The summary queries run through ``app.usage_summary.summarize``, exactly as ``GET /admin/usage/summary``
does (with the final days' totals kept in memory, filled by the first query that needs them): each
query's first call is printed, then the median and worst of ``--repeat`` more.

Shape: ``--keys`` keys over ``--days`` days ending today, each key using two of ``--models`` models,
so nearly every (day, key, model) has a rollup row -- the worst case for the summaries; one row in 64
did not end ok (the console's error series). The console's reads run with "now" at the newest row.
Postgres: a fresh database on ``SEEDGATE_TEST_POSTGRES_URL``'s server, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.console.queries import FinalHours, last_24_hours, last_30_days
from app.db import Database
from app.migrate import upgrade
from app.usage_summary import DayTotals, SummaryQuery, summarize

CHUNK = 200_000
USAGE_INDEXES = {
    "ix_usage_key_id_created_at": "usage (key_id, created_at)",
    "ix_usage_created_at": "usage (created_at)",
}
COLUMNS = (
    "request_id", "key_id", "model", "upstream", "upstream_model", "endpoint", "stream", "prompt_tokens",
    "completion_tokens", "reasoning_tokens", "cached_tokens", "cost", "shortfall", "status", "partial",
    "estimated", "source", "latency_ms", "created_at",
)  # fmt: skip
ROLLUP = """
INSERT INTO usage_daily (day, key_id, model, requests, partial, prompt_tokens, completion_tokens,
                         reasoning_tokens, cached_tokens, cost, failed)
SELECT {day}, key_id, model, COUNT(*), SUM(CASE WHEN partial THEN 1 ELSE 0 END), SUM(prompt_tokens),
       SUM(completion_tokens), SUM(reasoning_tokens), SUM(cached_tokens), SUM(cost),
       SUM(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END)
  FROM usage GROUP BY {day}, key_id, model"""


def key_ids(count: int) -> list[str]:
    return [f"key_bench{i:08d}" for i in range(count)]


def model_ids(count: int) -> list[str]:
    return [f"model-{i}" for i in range(count)]


def rows(total: int, keys: list[str], models: list[str], days: int, *, text_time: bool) -> Iterator[tuple[Any, ...]]:
    """The raw rows, oldest first (ids grow with time, as in production)."""
    rng = random.Random(13)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    step = days * 86_400 / total
    n_keys, n_models = len(keys), len(models)
    minute, created = -1, None
    for i in range(total):
        k = rng.randrange(n_keys)
        model = models[(k + (i & 1)) % n_models]  # each key uses two models
        if int(i * step) // 60 != minute:  # a timestamp per minute: building one per row costs more than the row
            minute = int(i * step) // 60
            at = start + timedelta(minutes=minute)
            created = at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds") if text_time else at
        prompt, completion = 200 + (i % 900), 50 + (i % 400)
        yield (
            f"req_{i:024x}", keys[k], model, "ark", model, "chat.completions", bool(i & 2), prompt, completion,
            i % 7, i % 11, prompt * 470_000 + completion * 2_370_000, 0, "ok" if i % 64 else "upstream_error",
            False, False, "request",
            100 + i % 500, created,
        )  # fmt: skip


def report(label: str, started: float) -> float:
    seconds = time.perf_counter() - started
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds


# --- loading ---------------------------------------------------------------------------------------------
def load_sqlite(path: str, args: argparse.Namespace) -> None:
    keys, models = key_ids(args.keys), model_ids(args.models)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a bulk load: durability comes from the final checkpoint
    conn.execute("BEGIN")
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    conn.executemany(
        "INSERT INTO api_keys (id, name, key_hash, key_prefix, key_last4, quota_month, quota_spent, available,"
        " held, spent, topped_up, created_at, updated_at) VALUES (?, 'bench', ?, 'sk-', 'abcd', '', 0, 0, 0, 0, 0,"
        " ?, ?)",
        [(k, secrets.token_hex(32), now, now) for k in keys],
    )
    for name in USAGE_INDEXES:
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    conn.execute("COMMIT")
    started = time.perf_counter()
    insert = f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608 -- constants
    batch: list[tuple[Any, ...]] = []
    conn.execute("BEGIN")
    for row in rows(args.rows, keys, models, args.days, text_time=True):
        batch.append(row)
        if len(batch) == CHUNK:
            conn.executemany(insert, batch)
            batch.clear()
    conn.executemany(insert, batch)
    conn.execute("COMMIT")
    report(f"{args.rows:,} raw rows (executemany)", started)
    started = time.perf_counter()
    for name, target in USAGE_INDEXES.items():
        conn.execute(f"CREATE INDEX {name} ON {target}")
    report("usage indexes rebuilt", started)
    started = time.perf_counter()
    conn.execute("BEGIN")
    conn.execute(ROLLUP.format(day="substr(created_at, 1, 10)"))
    conn.execute("COMMIT")
    report("daily rollups", started)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def load_postgres(url: str, args: argparse.Namespace) -> None:
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password, database=parsed.database
    )
    try:
        keys, models = key_ids(args.keys), model_ids(args.models)
        now = datetime.now(UTC)
        await conn.executemany(
            "INSERT INTO api_keys (id, name, key_hash, key_prefix, key_last4, created_at, updated_at)"
            " VALUES ($1, 'bench', $2, 'sk-', 'abcd', $3, $3)",
            [(k, secrets.token_hex(32), now) for k in keys],
        )
        for name in USAGE_INDEXES:
            await conn.execute(f"DROP INDEX IF EXISTS {name}")
        started = time.perf_counter()
        batch: list[tuple[Any, ...]] = []
        for row in rows(args.rows, keys, models, args.days, text_time=False):
            batch.append(row)
            if len(batch) == CHUNK:
                await conn.copy_records_to_table("usage", records=batch, columns=COLUMNS)
                batch.clear()
        await conn.copy_records_to_table("usage", records=batch, columns=COLUMNS)
        report(f"{args.rows:,} raw rows (COPY)", started)
        started = time.perf_counter()
        for name, target in USAGE_INDEXES.items():
            await conn.execute(f"CREATE INDEX {name} ON {target}")
        report("usage indexes rebuilt", started)
        started = time.perf_counter()
        await conn.execute(ROLLUP.format(day="to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"))
        report("daily rollups", started)
        await conn.execute("VACUUM ANALYZE usage_daily")
        await conn.execute("ANALYZE usage")
    finally:
        await conn.close()


# --- the queries -----------------------------------------------------------------------------------------
def data_end() -> datetime:
    """The time of the last generated row: the end of today (``rows`` spreads them up to it)."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1, seconds=-1)


Timed = Callable[[Database], Awaitable[object]]


def queries(args: argparse.Namespace) -> list[tuple[str, Timed]]:
    """Each read as its endpoint or page runs it, with the process's caches (final days, final hours)."""
    today = datetime.now(UTC).date()
    days, hours = DayTotals(), FinalHours()
    now = data_end()  # the console's "now": the newest rows are the last minutes before it

    def ago(n: int) -> date:
        return today - timedelta(days=n - 1)

    def summary(spec: SummaryQuery) -> Timed:
        return lambda db: summarize(db, spec, days=days, today=today)

    key, model = key_ids(args.keys)[args.keys // 2], model_ids(args.models)[0]
    return [
        ("overview: 30 days by day", summary(SummaryQuery(ago(30), today, ("day",)))),
        ("90 days by model", summary(SummaryQuery(ago(90), today, ("model",)))),
        ("30 days by key (top of the keys page)", summary(SummaryQuery(ago(30), today, ("key",)))),
        ("one key, 90 days by day", summary(SummaryQuery(ago(90), today, ("day",), key_id=key))),
        ("one model, 30 days by day", summary(SummaryQuery(ago(30), today, ("day",), model=model))),
        ("one day by day, key, model (1000 rows)", summary(SummaryQuery(today, today, ("day", "key", "model")))),
        ("all time, totals only", summary(SummaryQuery(date(2000, 1, 1), today, ()))),
        ("console overview: 24 hours by hour", lambda db: last_24_hours(db, now, final=hours)),
        ("console overview: 30 days with errors", lambda db: last_30_days(db, now.date())),
        ("console key page: 30 days with errors", lambda db: last_30_days(db, now.date(), key_id=key)),
    ]


async def time_queries(db_url: str, args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    """Each read as its endpoint runs it (final days' and hours' totals kept in memory): first call, then
    warm runs."""
    db = Database(db_url)
    results = []
    try:
        async with db.read() as conn:
            [raw] = (await conn.exec_driver_sql("SELECT COUNT(*) FROM usage")).one()
            [rollups] = (await conn.exec_driver_sql("SELECT COUNT(*) FROM usage_daily")).one()
        print(f"  {raw:,} raw usage rows, {rollups:,} daily rollup rows", flush=True)
        for label, read in queries(args):
            started = time.perf_counter()
            await read(db)
            first = (time.perf_counter() - started) * 1000
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                await read(db)
                times.append((time.perf_counter() - started) * 1000)
            median, worst = statistics.median(times), max(times)
            results.append((label, first, median, worst))
            print(f"  {label:<42} first {first:8.1f} ms   median {median:7.1f} ms   worst {worst:7.1f} ms", flush=True)
    finally:
        await db.dispose()
    return results


# --- the runs --------------------------------------------------------------------------------------------
def run_sqlite(args: argparse.Namespace) -> None:
    path = args.keep or str(Path(tempfile.mkdtemp(prefix="seedgate-usage-")) / "usage.db")
    url = f"sqlite+aiosqlite:///{path}"
    print(f"SQLite ({path})", flush=True)
    upgrade(url)
    try:
        load_sqlite(path, args)
        asyncio.run(time_queries(url, args))
    finally:
        if not args.keep:
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
            Path(path).parent.rmdir()


def run_postgres(args: argparse.Namespace) -> None:
    admin = os.environ.get("SEEDGATE_TEST_POSTGRES_URL")
    if not admin:
        print("Postgres: skipped (SEEDGATE_TEST_POSTGRES_URL is not set; see scripts/services)")
        return
    parsed = make_url(admin)
    name = "sg_usage_" + secrets.token_hex(4)

    async def admin_sql(sql: str) -> None:
        conn = await asyncpg.connect(
            host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password, database=parsed.database
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    url = parsed.set(database=name).render_as_string(hide_password=False)
    print(f"Postgres (database {name})", flush=True)
    try:
        upgrade(url)
        asyncio.run(load_postgres(url, args))
        asyncio.run(time_queries(url, args))
    finally:
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}"'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--keep", help="SQLite: build the database at this path and keep it")
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        run_sqlite(args)
    if args.backend in ("postgres", "both"):
        run_postgres(args)


if __name__ == "__main__":
    main()
