"""Which storage and limiter backends the tests run on.

``SEEDGATE_TEST_BACKEND=postgres`` (set by ``scripts/check`` for its second pass) gives every
gateway a fresh Postgres database and a Redis key prefix of its own; otherwise each gateway gets an
SQLite file in its temp directory and in-memory limits.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url


def backend() -> str:
    return os.environ.get("SEEDGATE_TEST_BACKEND", "sqlite")


def on_postgres() -> bool:
    return backend() == "postgres"


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run `scripts/services start` and `eval $(scripts/services env)`")
    return value


def postgres_admin_url() -> str:
    return _required("SEEDGATE_TEST_POSTGRES_URL")


def redis_url() -> str:
    return _required("SEEDGATE_TEST_REDIS_URL")


def create_postgres_database() -> str:
    """A new empty database on the test server; returns its SQLAlchemy URL."""
    admin = make_url(postgres_admin_url())
    name = "sg_" + secrets.token_hex(6)

    async def create() -> None:
        conn = await asyncpg.connect(
            host=admin.host, port=admin.port, user=admin.username, password=admin.password, database=admin.database
        )
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return admin.set(database=name).render_as_string(hide_password=False)


def database_url(workdir: Path) -> str:
    if on_postgres():
        return create_postgres_database()
    return f"sqlite+aiosqlite:///{workdir}/seedgate.db"


def backend_overrides() -> dict[str, Any]:
    """Config additions for the selected backend (Redis-shared limits on the postgres pass)."""
    if not on_postgres():
        return {}
    return {"redis": {"url": redis_url(), "prefix": f"sgtest:{secrets.token_hex(4)}:"}}
