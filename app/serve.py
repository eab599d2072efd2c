"""``seedgate serve``: migrations, demo mode, logging, then one draining server or N supervised workers.

One process runs ``app.server.DrainingServer`` itself. ``--workers N`` (N > 1) hands over to
``app.supervisor``: each worker loads the same config file and environment itself, so secrets never
travel between processes. Several workers need ``redis.url`` (shared limits) and, when demo mode
would generate the master key, a configured one (every worker must accept the same key).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys

import uvicorn
from pydantic import SecretStr

from app import accounts
from app.accounts import KeyCreate
from app.catalog import Catalog
from app.db import Database
from app.main import create_app
from app.metrics import prepare_workers
from app.migrate import upgrade
from app.server import DrainingServer, configure_process_logging, uvicorn_options, with_server
from app.settings import Settings

log = logging.getLogger("seedgate")
DEMO_BALANCE_USD = 5


async def _create_demo_key(settings: Settings) -> str:
    db = Database(settings.database.url)
    try:
        spec = KeyCreate(name="demo", balance_usd=DEMO_BALANCE_USD)
        created = await accounts.create_key(db, Catalog.from_settings(settings), spec)
        return str(created["key"])
    finally:
        await db.dispose()


def _refusal(settings: Settings) -> str | None:
    if settings.server.workers == 1:
        return None
    if settings.redis.url is None:
        return "refusing --workers > 1 without redis.url: each worker would count rate limits alone"
    if settings.demo_mode and not settings.admin.master_key.get_secret_value():
        return "refusing --workers > 1 in demo mode without admin.master_key: every worker must share one"
    return None


def serve(
    settings: Settings, *, host: str | None, port: int | None, workers: int | None, config_path: str | None = None
) -> int:
    """Run the gateway until SIGTERM/SIGINT; ``config_path`` is what workers load (None: as the parent did)."""
    server = {"host": host, "port": port, "workers": workers}
    settings = with_server(settings, **server)
    refusal = _refusal(settings)
    if refusal is not None:
        print(f"seedgate: {refusal}", file=sys.stderr)
        return 2
    demo = settings.demo_mode
    if demo and not settings.admin.master_key.get_secret_value():
        settings = settings.model_copy(
            update={"admin": settings.admin.model_copy(update={"master_key": SecretStr(secrets.token_urlsafe(32))})}
        )
    configure_process_logging(settings)
    if settings.database.url.startswith("sqlite"):
        upgrade(settings.database.url)
    if demo:
        demo_key = asyncio.run(_create_demo_key(settings))
        _banner(settings, demo_key)
    prepare_workers(settings.server.workers)  # metrics: a clean shared directory before any worker starts
    if settings.server.workers > 1:
        from app.supervisor import Supervisor  # the single-process path never loads multiprocessing

        overrides = {name: value for name, value in server.items() if value is not None}
        return Supervisor(settings, config_path=config_path, server=overrides).run()
    DrainingServer(uvicorn.Config(create_app(settings, demo=demo), **uvicorn_options(settings.server))).run()
    return 0


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
                f"  Console: {base}/console (sign in with the master key); your key's page: {base}/me",
                "  Try:",
                f"  curl {base}/v1/chat/completions -H 'Authorization: Bearer {demo_key}' \\",
                "    -H 'Content-Type: application/json' \\",
                f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'',
                "=" * 72,
            ]
        ),
        flush=True,
    )
