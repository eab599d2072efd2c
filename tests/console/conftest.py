"""Console tests: the in-process harness (as ``tests.asgi``, on Postgres too) plus sign-in helpers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.asgi.conftest import MakeHarness
from tests.support.backends import backend_overrides, database_url
from tests.support.gateway import MASTER_KEY, deep_merge
from tests.support.inprocess import Harness, inprocess_settings


@pytest.fixture
def make_harness(tmp_path: Path) -> MakeHarness:
    """A harness on SQLite, or with ``SEEDGATE_TEST_BACKEND=postgres`` on a fresh Postgres database."""
    counter = iter(range(1000))

    def make(overrides: dict[str, Any] | None = None) -> Harness:
        workdir = tmp_path / f"h{next(counter)}"
        workdir.mkdir()
        with ThreadPoolExecutor(1) as pool:  # creating a Postgres database runs its own event loop
            url = pool.submit(database_url, workdir).result(timeout=60)
        backend = deep_merge({"database": {"url": url}}, backend_overrides())
        return Harness(inprocess_settings(workdir / "unused.db", deep_merge(backend, overrides or {})))

    return make


@pytest.fixture
async def harness(make_harness: MakeHarness) -> AsyncIterator[Harness]:
    async with make_harness() as started:
        yield started


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str = MASTER_KEY) -> httpx.Response:
    form = await client.get("/console/login")
    return await client.post("/console/login", data={"csrf": csrf_of(form), "master_key": key})
