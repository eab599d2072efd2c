"""Database fixtures (shared with ``tests/db``): see ``tests.support.books``; Redis ones: ``tests.support.redis``."""

from __future__ import annotations

import pytest

from tests.support.books import books, catalog, db, db_url, ledger, make_ledger
from tests.support.redis import mark_redis_tests, redis_url

__all__ = ["books", "catalog", "db", "db_url", "ledger", "make_ledger", "redis_url"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_redis_tests(items)
