"""Hostile clients (issue 11) through the whole request flow in process: limits that cannot be
flushed out, bodies too deep to serialise, admin input at the edges, and the schema kept private.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from app.json import MAX_JSON_DEPTH
from app.main import create_app
from tests.asgi.conftest import MakeHarness
from tests.support.gateway import MASTER_KEY
from tests.support.inprocess import Harness, inprocess_settings

MODEL = "doubao-seed-2.0-pro"


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


async def wait_for_inflight(harness: Harness, count: int) -> None:
    async with asyncio.timeout(5):
        while harness.services.lifecycle.inflight < count:
            await asyncio.sleep(0.01)


# -- limiter stores ------------------------------------------------------------------------------------


async def test_unauthenticated_flood_from_many_addresses_does_not_free_a_keys_slots(
    make_harness: MakeHarness,
) -> None:
    small = {"limits": {"max_ip_buckets": 20, "max_key_buckets": 20, "max_slot_buckets": 20}}
    async with make_harness(small) as harness:
        _, key = await harness.create_key("10", max_concurrent=2)
        harness.upstream.enqueue({"delay_before_headers": 1.5}, {"delay_before_headers": 1.5})
        async with harness.client(key) as client:
            running = [asyncio.create_task(client.post("/v1/chat/completions", json=chat())) for _ in range(2)]
            await wait_for_inflight(harness, 2)
            assert (await client.post("/v1/chat/completions", json=chat())).status_code == 429
            # 25 unauthenticated POSTs, each from its own loopback address (trusted X-Forwarded-For)
            for host in range(2, 27):
                async with harness.client(**{"x-forwarded-for": f"127.0.0.{host}"}) as stranger:
                    assert (await stranger.post("/v1/chat/completions", json=chat())).status_code == 401
            assert (await client.post("/v1/chat/completions", json=chat())).status_code == 429
            assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200]
        assert await harness.ledger_balanced()


async def test_ipv6_clients_share_one_limit_per_64_and_ipv4_clients_are_limited_per_address(
    make_harness: MakeHarness,
) -> None:
    async with make_harness({"limits": {"per_ip": {"requests": 2, "window_seconds": 60}}}) as harness:

        async def status(address: str) -> int:
            async with harness.client(**{"x-forwarded-for": address}) as client:
                return (await client.get("/v1/models")).status_code

        assert [await status(f"2001:db8:1:2::{n:x}") for n in range(1, 4)] == [401, 401, 429]
        assert await status("2001:db8:1:3::1") == 401  # another /64
        assert [await status("10.0.0.1"), await status("10.0.0.1"), await status("10.0.0.2")] == [401, 401, 401]


async def test_wrong_guesses_at_the_master_key_and_the_metrics_token_count_against_the_per_ip_limit(
    make_harness: MakeHarness,
) -> None:
    settings = {"limits": {"per_ip": {"requests": 3, "window_seconds": 60}}, "metrics": {"token": "m" * 32}}
    async with make_harness(settings) as harness:
        async with harness.client(MASTER_KEY, **{"x-forwarded-for": "10.0.0.9"}) as operator:
            assert [(await operator.get("/admin/keys")).status_code for _ in range(8)] == [200] * 8  # right: free
        for path, address in (("/admin/keys", "10.0.0.1"), ("/metrics", "10.0.0.2")):
            async with harness.client(**{"x-forwarded-for": address, "authorization": "Bearer " + "g" * 32}) as guesser:
                assert [(await guesser.get(path)).status_code for _ in range(6)] == [401] * 4 + [429] * 2
        async with harness.client(MASTER_KEY, **{"x-forwarded-for": "10.0.0.1"}) as locked:
            assert (await locked.get("/admin/keys")).status_code == 429  # even the right key: no oracle
        async with harness.client(MASTER_KEY, **{"x-forwarded-for": "10.0.0.3"}) as operator:  # another address
            assert (await operator.get("/admin/keys")).status_code == 200


async def test_ipv6_prefix_length_is_configurable(make_harness: MakeHarness) -> None:
    limits = {"per_ip": {"requests": 1, "window_seconds": 60}, "ipv6_prefix_length": 128}
    async with make_harness({"limits": limits}) as harness:
        for n in range(1, 4):
            async with harness.client(**{"x-forwarded-for": f"2001:db8::{n}"}) as client:
                assert (await client.get("/v1/models")).status_code == 401


# -- deep JSON -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_body_nested_too_deep_is_a_400_and_costs_nothing(harness: Harness, path: str) -> None:
    key_id, key = await harness.create_key("1")
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi", "extra": nested(300)}]}]
    body = {"model": MODEL, "max_tokens": 10, "messages": messages}
    async with harness.client(key) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "too_deep" in (error.get("code") or error.get("type") or "") or "nested deeper" in error["message"]
    assert harness.upstream.requests == []
    assert (await harness.key(key_id))["balance_usd"] == "1.00"
    assert await harness.ledger_balanced()


async def test_depth_is_refused_with_json_too_deep_in_the_openai_envelope(harness: Harness) -> None:
    _, key = await harness.create_key("1")
    async with harness.client(key) as client:
        deep = await client.post("/v1/chat/completions", json=chat(metadata=nested(MAX_JSON_DEPTH)))
        fine = await client.post("/v1/chat/completions", json=chat(user="u"))
    assert deep.status_code == 400
    assert deep.json()["error"]["code"] == "json_too_deep"
    assert set(deep.json()["error"]) >= {"message", "type", "param", "code"}
    assert fine.status_code == 200


async def test_admin_body_nested_too_deep_is_a_400(harness: Harness) -> None:
    async with harness.admin() as admin:
        response = await admin.post("/admin/keys", json={"name": "deep", "models": nested(200)})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_too_deep"


# -- admin input at the edges ------------------------------------------------------------------------------


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
async def test_extreme_expires_at_is_a_400_naming_the_field(harness: Harness, expires_at: str) -> None:
    key_id, _ = await harness.create_key("1")
    async with harness.admin() as admin:
        created = await admin.post("/admin/keys", json={"name": "x", "expires_at": expires_at})
        patched = await admin.patch(f"/admin/keys/{key_id}", json={"expires_at": expires_at})
    for response in (created, patched):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "expires_at"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/admin/keys", {"name": "x", "balance_usd": "-1"}, "balance_usd"),
        ("post", "/admin/keys", {"name": "x", "balance_usd": "1e999"}, "balance_usd"),
        ("post", "/admin/keys", {"name": "x", "rpm": 2**40}, "rpm"),
        ("post", "/admin/keys", {"name": "x", "expires_at": "yesterday"}, "expires_at"),
        ("post", "/admin/keys", {"name": "x", "models": "all"}, "models"),
        ("post", "/admin/keys", {"name": ""}, "name"),
        ("post", "/admin/keys", {"name": "x", "colour": "red"}, "colour"),
        ("patch", "/admin/keys/{id}", {"max_concurrent": 0}, "max_concurrent"),
        ("patch", "/admin/keys/{id}", {"expires_at": "+275760-09-13T00:00:00Z"}, "expires_at"),
        ("post", "/admin/keys/{id}/topup", {"amount_usd": "NaN"}, "amount_usd"),
        ("post", "/admin/keys/{id}/topup", {"amount_usd": 0}, "amount_usd"),
        ("get", "/admin/usage?limit=abc", None, "query.limit"),
    ],
)
async def test_every_admin_input_error_is_a_400_naming_the_field(
    harness: Harness, method: str, path: str, body: Any, field: str
) -> None:
    key_id, _ = await harness.create_key("1")
    async with harness.admin() as admin:
        url = path.replace("{id}", key_id)
        response = await (admin.get(url) if method == "get" else getattr(admin, method)(url, json=body))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field or field in error["message"]


# -- the schema is not public ---------------------------------------------------------------------------


async def test_openapi_and_docs_need_the_master_key(harness: Harness) -> None:
    async with harness.client() as anonymous:
        assert (await anonymous.get("/openapi.json")).status_code == 404
        assert (await anonymous.get("/docs")).status_code == 404
        assert (await anonymous.get("/admin/openapi.json")).status_code == 401
    async with harness.admin() as admin:
        schema = await admin.get("/admin/openapi.json")
    assert schema.status_code == 200
    assert "/admin/keys" in schema.json()["paths"]


def test_demo_mode_alone_serves_the_schema_and_docs_publicly(tmp_path: Path) -> None:
    settings = inprocess_settings(tmp_path / "demo.db")

    def fastapi_of(app: Any) -> FastAPI:
        while not isinstance(app, FastAPI):
            app = app.app  # RequestContext -> BilledEndpoints -> FastAPI
        return app

    demo, production = fastapi_of(create_app(settings, demo=True)), fastapi_of(create_app(settings))
    assert (demo.openapi_url, demo.docs_url) == ("/openapi.json", "/docs")
    assert (production.openapi_url, production.docs_url) == (None, None)
