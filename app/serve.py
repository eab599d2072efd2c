"""``seedgate serve``: migrations, demo mode, logging, and uvicorn with a draining shutdown.

On SIGTERM/SIGINT readiness turns 503 and new chat requests are refused at once; uvicorn stops
accepting connections and gives open streams ``server.shutdown_grace_seconds``; the lifespan then
waits for every in-flight request to settle before the database closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from types import FrameType
from typing import Any

import uvicorn
from pydantic import SecretStr
from starlette.types import ASGIApp

from app import accounts
from app.accounts import KeyCreate
from app.catalog import Catalog
from app.db import Database
from app.logs import configure_logging
from app.main import create_app
from app.metrics import prepare_workers
from app.migrate import upgrade
from app.settings import Settings

log = logging.getLogger("seedgate")
DEMO_BALANCE_USD = 5


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self._settings = settings

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        gateway = getattr(self._app_state, "services", None)
        if gateway is not None:
            gateway.lifecycle.draining = True
        super().handle_exit(sig, frame)

    @property
    def _app_state(self) -> object:
        app = self.config.loaded_app
        while app is not None and not hasattr(app, "state"):
            app = getattr(app, "app", None)
        return getattr(app, "state", None)


def _secrets(settings: Settings) -> list[str]:
    found = [settings.admin.master_key.get_secret_value()]
    found += [u.api_key.get_secret_value() for u in settings.upstreams]
    if settings.redis.url is not None:
        found.append(settings.redis.url.get_secret_value())
    return [s for s in found if s]


async def _create_demo_key(settings: Settings) -> str:
    db = Database(settings.database.url)
    try:
        spec = KeyCreate(name="demo", balance_usd=DEMO_BALANCE_USD)
        created = await accounts.create_key(db, Catalog.from_settings(settings), spec)
        return str(created["key"])
    finally:
        await db.dispose()


def serve(settings: Settings, *, host: str | None, port: int | None, workers: int | None) -> int:
    server_cfg = settings.server.model_copy(
        update={k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    )
    settings = settings.model_copy(update={"server": server_cfg})
    if server_cfg.workers > 1 and settings.redis.url is None:
        print(
            "seedgate: refusing --workers > 1 without redis.url: each worker would count rate limits alone",
            file=sys.stderr,
        )
        return 2
    demo = settings.demo_mode
    if demo and not settings.admin.master_key.get_secret_value():
        settings = settings.model_copy(
            update={"admin": settings.admin.model_copy(update={"master_key": SecretStr(secrets.token_urlsafe(32))})}
        )
    configure_logging(settings.logging.level, _secrets(settings), json=settings.logging.format == "json")
    if settings.database.url.startswith("sqlite"):
        upgrade(settings.database.url)
    if demo:
        demo_key = asyncio.run(_create_demo_key(settings))
        _banner(settings, demo_key)
    options: dict[str, Any] = {
        "host": server_cfg.host,
        "port": server_cfg.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,  # only app.clientip decides the client address (server.trusted_proxies)
        "log_config": None,
        "timeout_graceful_shutdown": server_cfg.shutdown_grace_seconds,  # 0 cuts streams at once
    }
    prepare_workers(server_cfg.workers)  # metrics: a clean shared directory before any worker starts
    if server_cfg.workers > 1:
        # each worker process rebuilds the same settings from this snapshot
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        os.environ[DEMO_ENV] = "1" if demo else ""
        uvicorn.run("app.serve:worker_app", factory=True, workers=server_cfg.workers, **options)
        return 0
    DrainingServer(uvicorn.Config(create_app(settings, demo=demo), **options), settings).run()
    return 0


SETTINGS_ENV = "SEEDGATE_WORKER_SETTINGS"
DEMO_ENV = "SEEDGATE_WORKER_DEMO"


def worker_app() -> ASGIApp:
    """App factory for ``--workers N``: settings come from the parent process, secrets included."""
    settings = Settings.model_validate_json(os.environ[SETTINGS_ENV])
    configure_logging(settings.logging.level, _secrets(settings), json=settings.logging.format == "json")
    return create_app(settings, demo=bool(os.environ.get(DEMO_ENV)))


def _banner(settings: Settings, demo_key: str) -> None:
    base = f"http://{settings.server.host}:{settings.server.port}"
    model = settings.models[0].id if settings.models else "MODEL"
    print(
        "\n".join(
            [
                "=" * 72,
                "  SEEDGATE DEMO MODE: no upstream API key is configured, so answers come",
                "  from a built-in fake upstream. Set UPSTREAM_API_KEY to serve the real one.",
                f"  Demo API key (${DEMO_BALANCE_USD} balance): {demo_key}",
                f"  Admin master key: {settings.admin.master_key.get_secret_value()}",
                "  Try:",
                f"  curl {base}/v1/chat/completions -H 'Authorization: Bearer {demo_key}' \\",
                "    -H 'Content-Type: application/json' \\",
                f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'',
                "=" * 72,
            ]
        ),
        flush=True,
    )
