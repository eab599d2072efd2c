"""The ``--workers N`` supervisor: N spawned workers on one listening socket, kept at N until shutdown.

Rules owned here:

- The parent binds the socket once and hands it to each worker, started with multiprocessing's
  ``spawn`` (a fresh interpreter: nothing inherited but the socket and a pipe). Each worker loads
  its own configuration and runs every start-up check (``app.workers``).
- Start-up: the parent waits until every worker reports ready. If one fails first, all are stopped
  and ``run`` returns the worker's status (2: configuration, 1: anything else) after logging its reason.
- A worker that dies later (SIGKILL, crash) is replaced at once under a new instance id. The holds it
  owned stop being renewed, lapse after ``billing.hold_ttl_seconds`` and are recovered exactly once by
  whichever worker runs recovery next. A replacement that fails its start-up is retried with back-off
  (1 s doubling to 30 s) while the others keep serving.
- SIGTERM/SIGINT: the parent closes its copy of the socket and forwards SIGTERM to every worker, which
  drains (``app.server``). Workers still running after the grace, the settle wait and a margin are
  killed. ``run`` returns 0 when every worker stopped by itself, else 1.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from app.main import SETTLE_WAIT_SECONDS
from app.settings import Settings
from app.workers import EXIT_STARTUP, WorkerSpec, run_worker, worker_instance_id

log = logging.getLogger("seedgate")

STARTUP_TIMEOUT_SECONDS = 120.0
POLL_SECONDS = 1.0
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
STOP_MARGIN_SECONDS = 5.0
BACKLOG = 2048


@dataclass
class _Slot:
    index: int
    generation: int = 0
    process: BaseProcess | None = None
    conn: Connection | None = None  # the worker's pipe; read until it reports, then kept open as its lifeline
    ready: bool = False
    reported: tuple[str, int] | None = None  # (reason, status) of a failed start-up
    failures: int = 0
    restart_at: float | None = None


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, settings: Settings, *, config_path: str | None, server: dict[str, Any]) -> None:
        self._settings = settings
        self._config_path = os.path.abspath(config_path) if config_path else None
        self._server = server
        self._base_id = settings.server.instance_id or f"inst_{secrets.token_hex(8)}"
        self._slots = [_Slot(index) for index in range(settings.server.workers)]
        self._ctx = multiprocessing.get_context("spawn")
        self._stop: int | None = None
        self._sock: socket.socket | None = None

    def run(self) -> int:
        server = self._settings.server
        try:
            self._sock = bind(server.host, server.port)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", server.host, server.port, exc.strerror)
            return EXIT_STARTUP
        log.info("listening on %s:%d with %d workers", server.host, self._sock.getsockname()[1], len(self._slots))
        with self._signals() as wake:
            for slot in self._slots:
                self._spawn(slot)
            failure = self._supervise(wake)
            clean = self._stop_all()
        if failure is not None:
            return failure
        return 0 if clean else 1

    @contextlib.contextmanager
    def _signals(self) -> Iterator[socket.socket]:
        """SIGTERM/SIGINT set ``_stop``; the wake-up socket makes the supervisor's wait return at once."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)

        def stop(sig: int, frame: FrameType | None) -> None:
            self._stop = sig

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        old_fd = signal.set_wakeup_fd(wake_w.fileno())
        try:
            yield wake_r
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()

    def worker_spec(self, index: int, generation: int = 0) -> WorkerSpec:
        """What a worker is told: where the config is and which options the command line set, nothing secret."""
        return WorkerSpec(
            config_path=self._config_path,
            server=self._server,
            index=index,
            instance_id=worker_instance_id(self._base_id, index, generation),
        )

    def _spawn(self, slot: _Slot) -> None:
        spec = self.worker_spec(slot.index, slot.generation)
        ours, theirs = self._ctx.Pipe()
        process = self._ctx.Process(
            target=run_worker, args=(spec, self._sock, theirs), name=f"seedgate-worker-{slot.index}", daemon=True
        )
        process.start()
        theirs.close()
        slot.process, slot.conn, slot.ready, slot.reported, slot.restart_at = process, ours, False, None, None
        log.info("worker %d starting (pid %s, instance %s)", slot.index, process.pid, spec.instance_id)

    def _supervise(self, wake: socket.socket) -> int | None:
        """Keep every slot filled until a signal; a start-up failure of the first workers returns its status."""
        starting = True
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while self._stop is None:
            waitables: list[Any] = [wake]
            for slot in self._slots:
                if slot.process is not None:
                    waitables.append(slot.process.sentinel)
                    if not slot.ready and slot.conn is not None:
                        waitables.append(slot.conn)
            wait(waitables, timeout=POLL_SECONDS)
            with contextlib.suppress(OSError):
                wake.recv(64)
            for slot in self._slots:
                reason = self._check(slot)
                if reason is not None and starting:
                    log.error("worker %d failed to start: %s", slot.index, reason[0])
                    return reason[1]
                if reason is not None:
                    self._retry_later(slot, reason[0])
                if slot.process is None and slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    self._spawn(slot)
            if starting and all(slot.ready for slot in self._slots):
                starting = False
                log.info("all %d workers are ready", len(self._slots))
            elif starting and time.monotonic() > deadline:
                log.error("workers did not become ready within %.0f s", STARTUP_TIMEOUT_SECONDS)
                return EXIT_STARTUP
        log.info("received signal %d: stopping %d workers", self._stop, len(self._slots))
        return None

    def _check(self, slot: _Slot) -> tuple[str, int] | None:
        """Read what the slot's worker reported and notice its exit; (reason, status) if its start-up failed."""
        if slot.process is None:
            return None
        if not slot.ready and slot.conn is not None and slot.conn.poll():
            try:
                message = slot.conn.recv()
            except (EOFError, OSError):
                slot.conn.close()
                slot.conn = None
            else:
                if message[0] == "ready":
                    slot.ready, slot.failures = True, 0
                    log.info("worker %d ready (pid %d)", slot.index, message[1])
                else:
                    slot.reported = (message[1], message[2])
        code = slot.process.exitcode
        if code is None:
            return None
        pid, was_ready = slot.process.pid, slot.ready
        self._forget(slot)
        slot.generation += 1
        if was_ready:
            log.warning("worker %d (pid %s) exited with status %s; starting a replacement", slot.index, pid, code)
            self._spawn(slot)
            return None
        return slot.reported or (f"it exited with status {code}", EXIT_STARTUP)

    def _retry_later(self, slot: _Slot, reason: str) -> None:
        slot.failures += 1
        delay = min(RESTART_FIRST_SECONDS * 2 ** (slot.failures - 1), RESTART_MAX_SECONDS)
        log.error("replacement worker %d failed to start: %s; retrying in %.0f s", slot.index, reason, delay)
        slot.restart_at = time.monotonic() + delay

    def _forget(self, slot: _Slot) -> None:
        if slot.conn is not None:
            slot.conn.close()
        if slot.process is not None:
            slot.process.close()
        slot.process, slot.conn, slot.ready = None, None, False

    def _stop_all(self) -> bool:
        """Close the parent's socket, SIGTERM every worker, wait for them to drain; True if none was killed."""
        if self._sock is not None:
            self._sock.close()  # once every worker closed its copy too, new connections are refused
        running = [(slot, slot.process) for slot in self._slots if slot.process is not None]
        for _, process in running:
            process.terminate()
        grace = self._settings.server.shutdown_grace_seconds
        deadline = time.monotonic() + grace + SETTLE_WAIT_SECONDS + STOP_MARGIN_SECONDS
        clean = True
        for slot, process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error("worker %d (pid %s) did not stop in time: killed", slot.index, process.pid)
                process.kill()
                process.join(5)
                clean = False
            self._forget(slot)
        return clean
