"""Redis fixtures (shared by ``tests/redis`` and ``tests/contract``) for the server `scripts/services start` runs.

The Redis tests skip when SEEDGATE_TEST_REDIS_URL is unset (a laptop without the services); CI always
sets it, so there they run. Each test gets its own key prefix, and its keys are deleted afterwards.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.limits.redis import RedisLimiter, connect

REDIS_URL_ENV = "SEEDGATE_TEST_REDIS_URL"


def mark_redis_tests(items: list[pytest.Item]) -> None:
    # Only tests that really talk to Redis carry the marker, so `-m "not redis"` keeps the others.
    for item in items:
        if "redis_url" in getattr(item, "fixturenames", ()) and item.get_closest_marker("redis") is None:
            item.add_marker(pytest.mark.redis)


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_URL_ENV, "")
    if not url:
        pytest.skip(f'{REDIS_URL_ENV} is not set; run scripts/services start and eval "$(scripts/services env)"')
    return url


async def _open(url: str) -> Redis:
    client = connect(url, timeout=5.0)
    await client.ping()
    return client


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = await _open(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def other_client(redis_url: str) -> AsyncIterator[Redis]:
    """A second connection pool, as another worker or host would have."""
    client = await _open(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: Redis) -> AsyncIterator[str]:
    prefix = f"sgtest:{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
def limiter(redis_client: Redis, prefix: str) -> RedisLimiter:
    return RedisLimiter(redis_client, prefix=prefix)


@pytest.fixture
async def dead_client() -> AsyncIterator[Redis]:
    """A client pointed at a loopback port nobody listens on: every command fails to connect."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = connect(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    yield client
    await client.aclose()
