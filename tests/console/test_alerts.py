"""Low-balance alerts against a loopback webhook receiver: signed, fired once per fall, retried on 500,
re-armed by a top-up, and visible in the console."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiohttp import web

from app.money.records import Checkpoint, Hold
from app.money.units import usd_to_units
from tests.asgi.conftest import MakeHarness
from tests.console.conftest import sign_in
from tests.support.inprocess import Harness

SECRET = "whsec-test-0123456789"
CHAT = {"model": "doubao-seed-2.0-pro", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Receiver:
    url: str = ""
    fail_first: int = 0
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append(({k.lower(): v for k, v in request.headers.items()}, body))
        if len(self.calls) <= self.fail_first:
            return web.Response(status=500)
        self.delivered.append(orjson.loads(body))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield found
    finally:
        await runner.cleanup()


async def until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def spend(harness: Harness, key: str, times: int = 1) -> None:
    async with harness.client(key) as api:
        for _ in range(times):
            assert (await api.post("/v1/chat/completions", json=CHAT)).status_code == 200


def alerting(receiver: Receiver) -> dict[str, Any]:
    return {
        "alerts": {
            "webhook_url": receiver.url,
            "webhook_secret": SECRET,
            "default_threshold_usd": "2",
            "first_retry_seconds": 0.2,
            "max_attempts": 3,
        }
    }


async def test_low_balance_alert_is_signed_fired_once_and_retried_after_a_500(
    make_harness: MakeHarness, receiver: Receiver
) -> None:
    receiver.fail_first = 1
    async with make_harness(alerting(receiver)) as harness:
        key_id, key = await harness.create_key("2.00003")  # above the $2 threshold until it spends
        await spend(harness, key, times=3)  # falls below on the second request; the third changes nothing
        await until(lambda: receiver.delivered)
        await asyncio.sleep(0.6)  # time for any duplicate to show up
        assert len(receiver.calls) == 2  # the 500, then the retry
        assert len(receiver.delivered) == 1
        headers, body = receiver.calls[-1]
        expected = hmac.new(SECRET.encode(), headers["x-seedgate-timestamp"].encode() + b"." + body, hashlib.sha256)
        assert headers["x-seedgate-signature"] == "sha256=" + expected.hexdigest()
        assert receiver.calls[0][1] == body  # the retry sends the same event
        event = receiver.delivered[0]
        assert (event["event"], event["key_id"], event["threshold_usd"]) == ("balance.low", key_id, "2.00")
        assert Decimal(event["balance_usd"]) < 2

        async with harness.admin() as admin:
            [delivery] = (await admin.get("/admin/alerts")).json()["data"]
        assert (delivery["status"], delivery["attempts"], delivery["last_error"]) == ("delivered", 2, None)
        async with harness.client() as browser:
            await sign_in(browser)
            page = await browser.get("/console/alerts")
        assert "delivered" in page.text
        assert receiver.url in page.text


async def test_a_hold_recovered_after_a_crash_can_fire_the_alert(make_harness: MakeHarness, receiver: Receiver) -> None:
    """The crashed request's charge comes from recovery, not from a settlement: it too is checked."""
    leases = {
        "billing": {"hold_ttl_seconds": 0.5, "recovery_interval_seconds": 0.2, "checkpoint_interval_seconds": 0.1}
    }
    async with make_harness({**alerting(receiver), **leases}) as harness:
        key_id, _ = await harness.create_key("2.05")
        ledger = harness.services.ledger
        hold = Hold("req_crashed", key_id, "doubao-seed-2.0-pro", usd_to_units("0.5"), 100, usd_to_units("0.1"), 0)
        assert await ledger.reserve(hold) is None  # a request of a process that then died: nobody renews it
        await ledger.checkpoint([Checkpoint(hold.request_id, True, 0, datetime.now(UTC))])
        await until(lambda: receiver.delivered)
        [event] = receiver.delivered
        assert (event["event"], event["key_id"], event["balance_usd"]) == ("balance.low", key_id, "1.95")
        assert await harness.ledger_balanced()


async def test_a_top_up_rearms_the_alert(make_harness: MakeHarness, receiver: Receiver) -> None:
    async with make_harness(alerting(receiver)) as harness:
        key_id, key = await harness.create_key("1")
        await spend(harness, key)
        await until(lambda: len(receiver.delivered) == 1)
        await spend(harness, key)
        async with harness.admin() as admin:
            await admin.post(f"/admin/keys/{key_id}/topup", json={"amount_usd": "0.5"})
        await spend(harness, key)
        await until(lambda: len(receiver.delivered) == 2)
        await asyncio.sleep(0.3)
        assert len(receiver.delivered) == 2


async def test_an_unreachable_receiver_gives_up_after_max_attempts(make_harness: MakeHarness) -> None:
    overrides = {"alerts": {"webhook_url": "http://127.0.0.1:9/hook", "first_retry_seconds": 0.1, "max_attempts": 2}}
    async with make_harness(overrides) as harness:
        _, key = await harness.create_key("0.5")
        await spend(harness, key)

        async def state() -> dict[str, Any]:
            async with harness.admin() as admin:
                rows: list[dict[str, Any]] = (await admin.get("/admin/alerts")).json()["data"]
            return rows[0] if rows else {}

        async with asyncio.timeout(10):
            while (await state()).get("status") != "failed":
                await asyncio.sleep(0.1)
        final = await state()
        assert final["attempts"] == 2
        assert final["last_error"]
