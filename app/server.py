"""What every serving process sets up, alone or as one of ``--workers N``: the command line's server
options, logging that redacts this configuration's secrets, uvicorn's options and the draining server.

On SIGTERM/SIGINT readiness turns 503 and new chat requests are refused at once; uvicorn stops
accepting connections and gives open streams ``server.shutdown_grace_seconds`` (then cuts them, each
ending with the error event); the lifespan then waits for every in-flight request to settle before
the database closes.
"""

from __future__ import annotations

import gc
import socket
from types import FrameType
from typing import Any

import uvicorn

from app.logs import configure_logging
from app.settings import ServerSettings, Settings


def with_server(settings: Settings, **fields: Any) -> Settings:
    """``settings`` with these ``server`` fields (None: keep); the command line beats file and environment."""
    update = {name: value for name, value in fields.items() if value is not None}
    return settings.model_copy(update={"server": settings.server.model_copy(update=update)})


def secret_values(settings: Settings) -> list[str]:
    found = [settings.admin.master_key.get_secret_value()]
    found += [u.api_key.get_secret_value() for u in settings.upstreams]
    if settings.redis.url is not None:
        found.append(settings.redis.url.get_secret_value())
    return [s for s in found if s]


def configure_process_logging(settings: Settings) -> None:
    configure_logging(settings.logging.level, secret_values(settings), json=settings.logging.format == "json")


def uvicorn_options(server: ServerSettings) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,  # only app.clientip decides the client address (server.trusted_proxies)
        "log_config": None,
        "timeout_graceful_shutdown": server.shutdown_grace_seconds,  # 0 cuts streams at once
    }


# The cyclic collector's generation-0 threshold while serving (CPython's default is 700). A request
# allocates a few thousand container objects and frees nearly all of them by reference counting, so
# at the default the collector ran every few requests and scanned the young objects of every request
# in flight. bench/run.py, non-stream at c=16/64: ~0.43 -> ~0.36 ms of CPU per request with
# `freeze_startup_objects` (see bench/RESULTS.md).
GC_THRESHOLDS = (20_000, 20, 20)


def freeze_startup_objects() -> None:
    """Once the application has started: what exists now (settings, routes, templates, metrics,
    caches) lives as long as the process, so it leaves the collector's scans for good (``gc.freeze``),
    and the young generation is collected less often. Serving processes only: a test process that
    creates many applications must keep collecting them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class DrainingServer(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            freeze_startup_objects()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        gateway = getattr(self._app_state, "services", None)
        if gateway is not None:
            gateway.lifecycle.draining = True
        super().handle_exit(sig, frame)

    @property
    def _app_state(self) -> object:
        app = getattr(self.config, "loaded_app", None)  # a signal may arrive before the app is loaded
        while app is not None and not hasattr(app, "state"):
            app = getattr(app, "app", None)
        return getattr(app, "state", None)
