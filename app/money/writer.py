"""Group commit for SQLite: one writer thread runs the money writes, one sync thread makes them durable.

Each submitted operation is a plain function run against a stdlib ``sqlite3`` connection in the
writer thread. Operations that queue up together go into one transaction, each inside its own
SAVEPOINT (one failing operation is rolled back alone).

Durability is split from the decision. The writer connection commits with ``synchronous=NORMAL``
(no fsync per commit), and the sync thread fsyncs the WAL file after commits, as often as the disk
allows: one fsync covers every transaction committed before it -- a group commit. SQLite replays
every committed frame that reached the disk, so a transaction is durable once an fsync that started
after its COMMIT returned.

- ``run(op)`` resolves after that fsync: the same guarantee as ``synchronous=FULL``.
- ``run(op, durable=False)`` resolves once its batch is committed to the WAL, before the fsync: it
  survives a crash of the process, and is lost only if the machine loses power before the next
  fsync. While nobody waits for an fsync, the sync thread lets ``GATHER_SECONDS`` (5 ms) of commits
  join one, so that window is at most 5 ms plus one fsync. The request path uses it (with
  ``database.sqlite_durability: group``): no client waits for the disk.
- ``barrier()`` resolves once everything submitted before it is durable (admin reads use it).

Why: through SQLAlchemy's async layer and aiosqlite, a reserve + settle pair cost ~5.6 ms of CPU per
request (every statement is a thread hop and a greenlet switch), and a ``synchronous=FULL`` commit
costs ~3.5 ms of wall time on our disks, which serialised every request behind the previous fsync.
Here the same SQL costs tens of microseconds of CPU and no request waits for an fsync.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("seedgate.db")

T = TypeVar("T")
MAX_BATCH = 512
GATHER_SECONDS = 0.005  # group mode: the longest a commit waits for the fsync that covers it
Operation = Callable[[sqlite3.Connection], Any]
_Item = tuple[Operation, asyncio.Future[Any], asyncio.AbstractEventLoop, bool]
_Waiter = tuple[asyncio.Future[Any], asyncio.AbstractEventLoop, Any, BaseException | None]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _resolve_all(ready: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in ready:
        _resolve(future, result, error)


def _deliver_all(waiters: list[_Waiter]) -> None:
    """One wake-up per event loop for a whole batch, not one per operation."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for future, loop, result, error in waiters:
        by_loop.setdefault(loop, []).append((future, result, error))
    for loop, ready in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_all, ready)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody waits for these results any more


def _nothing(_conn: sqlite3.Connection) -> None:
    return None


class SqliteWriter:
    def __init__(self, path: str, *, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        # shared with the sync thread, under _synced
        self._synced = threading.Condition()
        self._committed = 0  # batches committed so far
        self._durable_upto = 0  # batches covered by a finished fsync
        self._waiting: list[tuple[int, _Waiter]] = []  # (batch, waiter) resolved once durable
        self._stopping = False

    async def run(self, operation: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``operation`` in the next batch; see the module docstring for when this returns."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((operation, future, loop, durable))
        return await future

    async def barrier(self) -> None:
        """Return once every operation submitted before this call is durable."""
        if self._threads:
            await self.run(_nothing)

    def _ensure_started(self) -> None:
        if not self._threads:  # the hot path: no lock once the threads run
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return  # another thread started them first
            self._threads = [
                threading.Thread(target=self._write_loop, name="seedgate-sqlite-writer", daemon=True),
                threading.Thread(target=self._sync_loop, name="seedgate-sqlite-sync", daemon=True),
            ]
            for thread in self._threads:
                thread.start()

    def close(self) -> None:
        """Finish every queued operation, make it durable, stop both threads."""
        if not self._threads:
            return
        self._queue.put(None)
        self._threads[0].join(timeout=30)
        with self._synced:
            self._stopping = True
            self._synced.notify_all()
        self._threads[1].join(timeout=30)
        self._threads = []

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        conn.execute("PRAGMA synchronous=NORMAL")  # the sync thread fsyncs the WAL for every commit
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _write_loop(self) -> None:
        conn = self._connect()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                self._commit(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for operation, _future, _loop, _durable in batch:
                conn.execute("SAVEPOINT op")
                error: BaseException | None = None
                try:
                    result = operation(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    result, error = None, exc
                conn.execute("RELEASE op")
                outcomes.append((result, error))
            conn.execute("COMMIT")
        except Exception as exc:
            log.critical("a write batch of %d operations failed and was rolled back", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            _deliver_all([(future, loop, None, exc) for _operation, future, loop, _durable in batch])
            return
        early: list[_Waiter] = []
        with self._synced:
            self._committed += 1
            for (_operation, future, loop, durable), (result, error) in zip(batch, outcomes, strict=True):
                if durable:
                    self._waiting.append((self._committed, (future, loop, result, error)))
                else:
                    early.append((future, loop, result, error))
            self._synced.notify_all()
        _deliver_all(early)

    def _sync_loop(self) -> None:
        wal: int | None = None
        try:
            while True:
                with self._synced:
                    while self._committed == self._durable_upto and not self._stopping:
                        self._synced.wait()
                    if self._committed == self._durable_upto:
                        return  # stopping, and everything is durable
                    self._gather_before_fsync()
                    target = self._committed
                if wal is None:
                    wal = os.open(self._path + "-wal", os.O_RDONLY)
                os.fsync(wal)  # covers every batch committed before it started: `target` at least
                with self._synced:
                    self._durable_upto = target
                    ready = [waiter for batch, waiter in self._waiting if batch <= target]
                    self._waiting = [(batch, waiter) for batch, waiter in self._waiting if batch > target]
                _deliver_all(ready)
        finally:
            if wal is not None:
                os.close(wal)

    def _gather_before_fsync(self) -> None:
        """Called holding ``_synced``: while nobody waits for this fsync (every request write is
        acknowledged at its commit), let the commits of the next ``GATHER_SECONDS`` join it. One fsync
        per commit was most of the process's kernel time with one request at a time (two commits per
        request); a waiter (``durable=True``, ``barrier``) or closing cuts the wait short."""
        deadline = time.monotonic() + GATHER_SECONDS
        while not self._waiting and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._synced.wait(left)
