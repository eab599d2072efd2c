"""Console tests: the in-process harness (``tests.asgi``) plus sign-in helpers."""

from __future__ import annotations

import re

import httpx

from tests.asgi.conftest import harness, make_harness  # noqa: F401 -- fixtures shared with tests/asgi
from tests.support.gateway import MASTER_KEY

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str = MASTER_KEY) -> httpx.Response:
    form = await client.get("/console/login")
    return await client.post("/console/login", data={"csrf": csrf_of(form), "master_key": key})
