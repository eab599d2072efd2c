"""Entry points for processes a test spawns: kept in a module that imports little, so they start fast."""

from __future__ import annotations

from multiprocessing.connection import Connection

from app.workers import WorkerSpec, worker_settings


def report_worker_settings(spec: WorkerSpec, conn: Connection) -> None:
    """Load the configuration as a worker does and send back its secrets and server fields (tests only)."""
    settings = worker_settings(spec)
    conn.send(
        {
            "master_key": settings.admin.master_key.get_secret_value(),
            "upstream_keys": tuple(u.api_key.get_secret_value() for u in settings.upstreams),
            "redis_url": settings.redis.url.get_secret_value() if settings.redis.url else None,
            "instance_id": settings.server.instance_id,
            "port": settings.server.port,
        }
    )
    conn.close()
