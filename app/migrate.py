"""Apply the Alembic migrations in ``migrations/`` to a database URL (``seedgate db upgrade``)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation; URLs may carry %-escaped passwords
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Must be called outside a running event loop."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def schema_problem(url: str) -> str | None:
    """Why the database at ``url`` cannot serve the CLI yet (one line naming the fix), or None.

    A SQLite file that does not exist is reported, never created."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.ext.asyncio import create_async_engine

    fix = "run `seedgate db upgrade` (with the same --config) first"
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        if not os.path.isfile(path):  # noqa: ASYNC240 -- one stat, run from the CLI before anything else
            where = os.path.abspath(path)  # noqa: ASYNC240
            return f"database file {where} does not exist: {fix}, or point --config at the right database"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            try:
                current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            except SQLAlchemyError:
                return f"database {parsed.render_as_string(hide_password=True)} has no Seedgate schema: {fix}"
    except (SQLAlchemyError, OSError) as exc:
        return f"cannot open database {parsed.render_as_string(hide_password=True)}: {type(exc).__name__}"
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        return f"database schema is at revision {current}, this Seedgate needs {head}: {fix}"
    return None
