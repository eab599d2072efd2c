"""Fixtures for the tests against Redis: see ``tests.support.redis``."""

from __future__ import annotations

import pytest

from tests.support.redis import dead_client, limiter, mark_redis_tests, other_client, prefix, redis_client, redis_url

__all__ = ["dead_client", "limiter", "other_client", "prefix", "redis_client", "redis_url"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_redis_tests(items)
