"""One ``--workers N`` worker: what it is told (``WorkerSpec``) and how it builds and checks itself.

Rules owned here:

- A worker is told nothing secret: the config file path, the command line's server options, its
  index and its instance id. It loads the same config file and the same environment itself, so
  ``${VAR}`` in the YAML resolves in every worker, and no secret passes through a pickle, a file or
  the process list. (Handing over ``Settings`` as JSON is what masked every secret as ``**********``.)
- Every start-up check of single-process mode runs in every worker: the master key is present, long
  enough and not an example value (``load_settings``); and because several workers count limits
  together only through Redis, ``redis.url`` is set and answers a PING. A worker that fails reports
  why to the supervisor (``("failed", reason, exit code)``) and exits; a ready one says ``("ready", pid)``.
- Instance ids are ``<base>-w<index>``, and ``<base>-w<index>.<generation>`` for replacements: at most
  ``MAX_INSTANCE_ID`` characters, one per process, so each worker owns its holds under its own id.
- A worker whose supervisor died (its pipe closed) drains and exits as on SIGTERM. SIGTERM/SIGINT
  before or after serving exit with status 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import redis
import uvicorn

from app.server import DrainingServer, configure_process_logging, uvicorn_options, with_server
from app.settings import ConfigError, Settings, load_settings

log = logging.getLogger("seedgate")

MAX_INSTANCE_ID = 48
REDIS_CHECK_SECONDS = 3.0
EXIT_CONFIG = 2  # the CLI's status for a configuration that cannot be used
EXIT_STARTUP = 1


class StartupError(Exception):
    """A worker cannot serve; the message says why, without secret values."""


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    config_path: str | None  # None: SEEDGATE_CONFIG or the default, resolved as the parent did
    server: dict[str, Any]  # the command line's server options (host, port, workers): never secret
    index: int
    instance_id: str


def worker_instance_id(base: str, index: int, generation: int = 0) -> str:
    suffix = f"-w{index}" if generation == 0 else f"-w{index}.{generation}"
    return base[: MAX_INSTANCE_ID - len(suffix)] + suffix


def worker_settings(spec: WorkerSpec) -> Settings:
    """The worker's configuration, loaded from the file and the environment as the parent loaded it."""
    settings = load_settings(spec.config_path)
    return with_server(settings, **spec.server, instance_id=spec.instance_id)


def check_shared_limits(settings: Settings) -> None:
    """Several workers need Redis for their limits: it must be configured and answer a PING."""
    if settings.redis.url is None:
        raise StartupError("--workers > 1 needs redis.url: each worker would count rate limits alone")
    url = settings.redis.url.get_secret_value()
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=REDIS_CHECK_SECONDS, socket_timeout=REDIS_CHECK_SECONDS
        )
    except ValueError as exc:
        raise StartupError("redis.url is not a valid Redis URL") from exc
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        reason = str(exc).replace(url, "[redis.url]")
        raise StartupError(f"Redis (redis.url) did not answer PING: {type(exc).__name__}: {reason}") from exc
    finally:
        client.close()


class WorkerServer(DrainingServer):
    """The draining server, telling the supervisor once it serves."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # exits with status 3 when the application's start-up fails
        if self.started:
            self._on_ready()


class _FirstError(logging.Handler):
    """Keeps the last line of the first error logged while the application starts (its exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reason: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.reason is None:
            text = record.exc_text or record.getMessage()
            lines = [line for line in text.splitlines() if line.strip()]
            self.reason = lines[-1].strip() if lines else None


def _exit_quietly(sig: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def drain_when_orphaned(conn: Connection) -> None:
    """Wait (in a thread) for the supervisor's end of the pipe to close, then SIGTERM this worker."""
    try:
        conn.recv()  # the supervisor never writes: this returns only when its end closes
    except (EOFError, OSError):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def run_worker(spec: WorkerSpec, sock: socket.socket, conn: Connection) -> None:
    """Process entry point (spawned): load and check the configuration, then serve on the shared socket."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_quietly)
    try:
        settings = worker_settings(spec)
        configure_process_logging(settings)
        check_shared_limits(settings)
    except (ConfigError, StartupError) as exc:
        conn.send(("failed", str(exc), EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_STARTUP))
        sys.exit(EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_STARTUP)
    threading.Thread(target=drain_when_orphaned, args=(conn,), name="supervisor-watch", daemon=True).start()
    from app.main import create_app  # after the checks: a worker that cannot serve fails without this import's seconds

    errors = _FirstError()
    logging.getLogger().addHandler(errors)
    config = uvicorn.Config(create_app(settings, demo=settings.demo_mode), **uvicorn_options(settings.server))

    def ready() -> None:
        logging.getLogger().removeHandler(errors)
        conn.send(("ready", os.getpid()))

    try:
        WorkerServer(config, on_ready=ready).run(sockets=[sock])
    except SystemExit as exc:
        if exc.code not in (0, None) and errors.reason is not None:
            conn.send(("failed", f"application start-up failed: {errors.reason}", EXIT_STARTUP))
        raise
