"""The bill is exact at the edges (issue 10), through the whole request flow in process.

Each test drives ``POST /v1/chat/completions`` through the real pipeline, ledger and SQLite file,
with the upstream on the transport seam, and ends with the ledger balanced and nothing held.
"""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from typing import Any

import pytest

from app import db as db_module
from tests.asgi.conftest import MakeHarness
from tests.support.inprocess import Harness

CODE_MODEL = {
    "id": "doubao-seed-2.0-code",
    "upstream": "ark",
    "upstream_model": "doubao-seed-2-0-code-260215",
    "max_output_tokens": 32_768,
    "price": {"input": 1.49, "output": 6.99},
}
WIDE = {"models": [CODE_MODEL]}


def chat(model: str = "doubao-seed-2.0-code", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}


async def settled(harness: Harness, key_id: str) -> list[dict[str, Any]]:
    assert await harness.ledger_balanced()
    return await harness.usage(key_id)


# -- tokens when the upstream sends no usage -------------------------------------------------------


async def test_a_tool_call_answer_without_usage_is_billed_for_its_arguments(make_harness: MakeHarness) -> None:
    async with make_harness(WIDE) as harness:
        key_id, key = await harness.create_key("10")
        arguments = '{"path": "' + "x" * 40_000 + '"}'
        harness.upstream.enqueue(
            {"tool_calls": [{"id": "call_1", "name": "write", "arguments": arguments}], "usage": "omit"}
        )
        async with harness.client(key) as client:
            response = await client.post("/v1/chat/completions", json=chat())
        assert response.status_code == 200
        [row] = await settled(harness, key_id)
        assert row["completion_tokens"] >= 10_000
        assert (row["estimated"], row["partial"], row["status"]) == (True, False, "ok")


# -- sanity bounds -------------------------------------------------------------------------------------


async def test_absurd_upstream_usage_is_clamped_and_settled(make_harness: MakeHarness) -> None:
    async with make_harness(WIDE) as harness:
        key_id, key = await harness.create_key("10")
        harness.upstream.enqueue({"usage": {"prompt_tokens": 10, "completion_tokens": 10**19}})
        async with harness.client(key) as client:
            response = await client.post("/v1/chat/completions", json=chat(max_tokens=500))
        assert response.status_code == 200
        [row] = await settled(harness, key_id)
        assert row["completion_tokens"] == 500
        assert Decimal(row["cost_usd"]) == 10 * Decimal("0.00000149") + 500 * Decimal("0.00000699")
        assert (await harness.key(key_id))["held_usd"] == "0.00"


# -- upstream timeouts after the request was sent ---------------------------------------------------


async def test_a_non_stream_answer_after_the_read_timeout_costs_the_prompt_estimate(
    make_harness: MakeHarness,
) -> None:
    async with make_harness(
        {**WIDE, "upstreams": [{"name": "ark", "base_url": "http://x.invalid", "read_timeout": 0.2}]}
    ) as harness:
        key_id, key = await harness.create_key("10")
        harness.upstream.enqueue({"delay_before_headers": 5})
        async with harness.client(key) as client:
            response = await client.post("/v1/chat/completions", json=chat())
        assert response.status_code == 504
        [row] = await settled(harness, key_id)
        assert (row["status"], row["partial"], row["estimated"], row["completion_tokens"]) == (
            "upstream_504",
            True,
            True,
            0,
        )
        assert row["prompt_tokens"] > 0
        assert Decimal(row["cost_usd"]) > 0


async def test_a_stream_silent_past_the_read_timeout_costs_the_prompt_estimate(make_harness: MakeHarness) -> None:
    async with make_harness(
        {**WIDE, "upstreams": [{"name": "ark", "base_url": "http://x.invalid", "read_timeout": 0.2}]}
    ) as harness:
        key_id, key = await harness.create_key("10")
        harness.upstream.enqueue({"delay_before_headers": 5})
        async with harness.client(key) as client:
            response = await client.post("/v1/chat/completions", json=chat(stream=True))
        assert response.status_code == 504
        [row] = await settled(harness, key_id)
        assert (row["partial"], row["estimated"]) == (True, True)


async def test_an_upstream_refusal_before_any_content_costs_nothing(harness: Harness) -> None:
    key_id, key = await harness.create_key("10")
    harness.upstream.enqueue({"status": 400})
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat("doubao-seed-2.0-pro"))
    assert response.status_code == 400
    assert await settled(harness, key_id) == []
    assert (await harness.key(key_id))["balance_usd"] == "10.00"


# -- affordable holds ------------------------------------------------------------------------------


async def test_a_small_balance_gets_a_capped_answer_instead_of_402(make_harness: MakeHarness) -> None:
    async with make_harness(WIDE) as harness:
        key_id, key = await harness.create_key("0.05")
        async with harness.client(key) as client:
            response = await client.post("/v1/chat/completions", json=chat(max_tokens=32_000))
        assert response.status_code == 200, response.text
        capped = int(response.headers["x-seedgate-max-tokens-capped"])
        assert 1024 <= capped < 32_000
        assert harness.upstream.requests[-1]["max_completion_tokens"] == capped
        # the capped hold is affordable: the worst case of the capped request fits in $0.05
        assert capped * Decimal("0.00000699") <= Decimal("0.05")
        await settled(harness, key_id)
        assert Decimal((await harness.key(key_id))["balance_usd"]) >= 0


async def test_a_balance_below_the_useful_minimum_is_402_naming_the_smallest_balance(
    make_harness: MakeHarness,
) -> None:
    async with make_harness(WIDE) as harness:
        key_id, key = await harness.create_key("0.001")
        async with harness.client(key) as client:
            response = await client.post("/v1/chat/completions", json=chat(max_tokens=32_000))
        assert response.status_code == 402
        message = response.json()["error"]["message"]
        assert "at least $0.00716" in message  # 1024 tokens at $6.99/M plus the prompt
        assert await settled(harness, key_id) == []


async def test_fifty_concurrent_capped_requests_never_overdraw(make_harness: MakeHarness) -> None:
    async with make_harness({**WIDE, "limits": {"key_defaults": {"max_concurrent": 100}}}) as harness:
        key_id, key = await harness.create_key("0.05")
        harness.upstream.enqueue(*[{"usage": {"prompt_tokens": 5, "completion_tokens": 2000}}] * 50)
        async with harness.client(key) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=chat(max_tokens=32_000)) for _ in range(50))
            )
        statuses = sorted({r.status_code for r in responses})
        assert set(statuses) <= {200, 402}, statuses
        assert 200 in statuses
        rows = await settled(harness, key_id)
        assert len(rows) == sum(r.status_code == 200 for r in responses)
        view = await harness.key(key_id)
        assert Decimal(view["balance_usd"]) >= 0
        assert Decimal(view["spent_usd"]) + Decimal(view["balance_usd"]) == Decimal("0.05")
        assert all(row["shortfall_usd"] == "0.00" for row in rows)


# -- a settlement that fails is retried until it is durable ---------------------------------------


async def test_a_settlement_blocked_by_the_sqlite_write_lock_is_retried(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    async with make_harness(WIDE) as harness:
        key_id, key = await harness.create_key("10")
        harness.upstream.enqueue({"usage": {"prompt_tokens": 10, "completion_tokens": 10_000}})
        path = harness.settings.database.url.removeprefix("sqlite+aiosqlite:///")
        locker = sqlite3.connect(path, isolation_level=None)
        released = asyncio.Event()

        async def hold_the_lock() -> None:
            await asyncio.sleep(0.1)  # the request is reserved and waiting for the upstream
            locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the busy timeout
            await asyncio.sleep(1.5)  # the settlement fails for as long as the lock is held
            locker.execute("ROLLBACK")
            released.set()

        try:
            harness.upstream.scripts[0].delay_before_headers = 0.3
            async with harness.client(key) as client:
                response, _ = await asyncio.gather(client.post("/v1/chat/completions", json=chat()), hold_the_lock())
            assert response.status_code == 200
            assert released.is_set()
        finally:
            locker.close()
        for _ in range(100):
            if (await harness.key(key_id))["held_usd"] == "0.00":
                break
            await asyncio.sleep(0.05)
        [row] = await settled(harness, key_id)
        assert row["completion_tokens"] == 10_000
        assert Decimal(row["cost_usd"]) == 10 * Decimal("0.00000149") + 10_000 * Decimal("0.00000699")
