"""The SQLite group-commit writer (app/money/writer.py): batches, savepoints, failures, durability."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import app.money.writer
from app.money.writer import GATHER_SECONDS, SqliteWriter


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[SqliteWriter]:
    path = str(tmp_path / "w.db")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (v INTEGER NOT NULL)")
    started = SqliteWriter(path, busy_timeout_ms=100)
    yield started
    started.close()


def rows(writer: SqliteWriter) -> list[int]:
    with sqlite3.connect(writer._path) as conn:
        return [v for (v,) in conn.execute("SELECT v FROM t ORDER BY v")]


def insert(value: int, *, pause: float = 0.0) -> Callable[[sqlite3.Connection], int]:
    def op(conn: sqlite3.Connection) -> int:
        if pause:
            time.sleep(pause)
        return conn.execute("INSERT INTO t (v) VALUES (?)", (value,)).rowcount

    return op


async def test_a_durable_and_an_acknowledged_write_both_land(writer: SqliteWriter) -> None:
    assert await writer.run(insert(1)) == 1
    assert await writer.run(insert(2), durable=False) == 1
    await writer.barrier()
    assert rows(writer) == [1, 2]


async def test_a_failing_operation_is_rolled_back_alone_and_its_batch_commits(writer: SqliteWriter) -> None:
    def fails(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES (99)")
        raise ValueError("no")

    blocker = asyncio.ensure_future(writer.run(insert(0, pause=0.2)))
    await asyncio.sleep(0.05)  # the next three queue up behind it: one batch
    results = await asyncio.gather(
        writer.run(insert(1)),
        writer.run(fails),
        writer.run(insert(2)),
        return_exceptions=True,
    )
    await blocker
    assert results[0] == 1
    assert results[2] == 1
    assert isinstance(results[1], ValueError)
    assert rows(writer) == [0, 1, 2]


async def test_a_batch_that_cannot_commit_fails_every_caller_and_writes_nothing(writer: SqliteWriter) -> None:
    def breaks_the_savepoint(conn: sqlite3.Connection) -> None:
        conn.execute("RELEASE op")  # the writer's own RELEASE then fails, inside the open transaction

    blocker = asyncio.ensure_future(writer.run(insert(0, pause=0.2)))
    await asyncio.sleep(0.05)
    results = await asyncio.gather(
        writer.run(insert(1)),
        writer.run(breaks_the_savepoint),
        return_exceptions=True,
    )
    await blocker
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert rows(writer) == [0]
    assert await writer.run(insert(3)) == 1  # the writer goes on


async def test_a_batch_whose_transaction_was_ended_by_an_operation_fails_cleanly(writer: SqliteWriter) -> None:
    def commits_itself(conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    with pytest.raises(sqlite3.OperationalError):
        await writer.run(commits_itself)
    assert await writer.run(insert(4)) == 1
    assert rows(writer) == [4]


async def test_a_write_lock_held_past_the_busy_timeout_fails_the_batch(writer: SqliteWriter) -> None:
    other = sqlite3.connect(writer._path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await writer.run(insert(5))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await writer.run(insert(6)) == 1
    assert rows(writer) == [6]


async def test_a_caller_that_gave_up_does_not_stop_the_write(writer: SqliteWriter) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.run(insert(7, pause=0.2)), 0.05)
    await writer.barrier()
    assert rows(writer) == [7]


def test_a_caller_whose_event_loop_closed_does_not_break_the_writer(writer: SqliteWriter) -> None:
    def submit_and_close() -> None:
        loop = asyncio.new_event_loop()
        with pytest.raises(TimeoutError):
            loop.run_until_complete(asyncio.wait_for(writer.run(insert(8, pause=0.2)), 0.05))
        loop.close()  # before the writer delivers the result

    thread = threading.Thread(target=submit_and_close)
    thread.start()
    thread.join(timeout=5)
    assert asyncio.run(writer.run(insert(9))) == 1
    assert rows(writer) == [8, 9]


async def test_a_barrier_before_any_write_returns_at_once(tmp_path: Path) -> None:
    idle = SqliteWriter(str(tmp_path / "idle.db"), busy_timeout_ms=100)
    await asyncio.wait_for(idle.barrier(), 1)
    idle.close()  # never started: nothing to stop
    assert not (tmp_path / "idle.db").exists()


async def test_close_finishes_the_writes_queued_behind_a_busy_batch(writer: SqliteWriter) -> None:
    blocker = asyncio.ensure_future(writer.run(insert(10, pause=0.2)))
    await asyncio.sleep(0.05)
    pending = [asyncio.ensure_future(writer.run(insert(v), durable=False)) for v in range(11, 15)]
    await asyncio.sleep(0)  # queued, then the stop marker behind them
    await asyncio.to_thread(writer.close)
    await asyncio.gather(blocker, *pending)
    assert rows(writer) == [10, 11, 12, 13, 14]


async def test_a_long_queue_is_committed_in_bounded_batches(writer: SqliteWriter) -> None:
    blocker = asyncio.ensure_future(writer.run(insert(0, pause=0.2)))
    await asyncio.sleep(0.05)
    results = await asyncio.gather(*(writer.run(insert(v), durable=False) for v in range(1, 1201)))
    await blocker
    assert results == [1] * 1200
    assert rows(writer) == list(range(1201))


async def test_starting_twice_starts_one_pair_of_threads(writer: SqliteWriter) -> None:
    await writer.run(insert(1))
    threads = list(writer._threads)
    writer._start()  # what a second thread racing the first start does
    assert writer._threads == threads


async def test_acknowledged_commits_in_a_row_share_fsyncs(
    writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[float] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(time.monotonic())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    started = time.monotonic()
    for value in range(60):  # one request at a time: every write its own commit
        await writer.run(insert(value), durable=False)
    await writer.barrier()
    elapsed = time.monotonic() - started
    assert rows(writer) == list(range(60))
    # at most one fsync per GATHER_SECONDS of commits, plus the barrier's own
    assert len(synced) <= elapsed / GATHER_SECONDS + 2, (len(synced), elapsed)
    assert len(synced) < 60


async def test_a_durable_write_does_not_wait_for_the_gathering(
    writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.money.writer, "GATHER_SECONDS", 3.0)  # a gathering far longer than any write
    await writer.run(insert(0), durable=False)  # the sync thread is now gathering commits
    started = time.monotonic()
    await writer.run(insert(1))  # durable: its waiter ends the gathering at once
    assert time.monotonic() - started < 1.0
    assert rows(writer) == [0, 1]
