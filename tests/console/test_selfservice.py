"""Key-holder self-service: ``GET /v1/key`` through the openai SDK's own HTTP client, the OpenAI-legacy
billing routes as ChatGPT-Next-Web reads them, and the ``/me`` page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from app.console.render import usd
from tests.console.conftest import csrf_of
from tests.support.inprocess import Harness

CHAT = {"model": "doubao-seed-2.0-pro", "messages": [{"role": "user", "content": "hi"}]}


def sdk(harness: Harness, key: str) -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=harness._with_state, client=("127.0.0.1", 40000))  # type: ignore[arg-type]
    http = httpx.AsyncClient(transport=transport, base_url="http://gateway.test")
    # the SDK types its client as its own httpx fork; an httpx client is what it drives at run time
    return openai.AsyncOpenAI(api_key=key, base_url="http://gateway.test/v1", http_client=http, max_retries=0)  # type: ignore[arg-type]


async def spend_once(harness: Harness, key: str) -> None:
    async with harness.client(key) as api:
        assert (await api.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_v1_key_reports_balance_spend_quota_limits_models_and_expiry(harness: Harness) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    key_id, key = await harness.create_key(
        "5", monthly_quota_usd="3", rpm=30, models=["pro-latest"], expires_at=expires.isoformat()
    )
    await spend_once(harness, key)
    client = sdk(harness, key)
    body: Any = await client.get("/key", cast_to=object)
    admin = await harness.key(key_id)
    assert body["id"] == key_id
    assert body["balance_usd"] == admin["balance_usd"]
    assert body["held_usd"] == "0.00"
    assert body["spent_this_month_usd"] == admin["spent_usd"]
    assert Decimal(body["spent_this_month_usd"]) > 0
    assert body["monthly_quota_usd"] == "3.00"
    assert Decimal(body["monthly_quota_remaining_usd"]) == 3 - Decimal(admin["spent_usd"])
    assert body["limits"] == {"rpm": 30, "tpm": 2_000_000, "max_concurrent": 32}
    assert body["models"] == ["doubao-seed-2.0-pro"]
    assert datetime.fromisoformat(body["expires_at"]) == expires
    assert "key_hash" not in body
    assert key not in str(body)
    await client.close()


async def test_v1_key_refuses_a_missing_or_revoked_key_in_the_openai_envelope(harness: Harness) -> None:
    key_id, key = await harness.create_key("1")
    async with harness.client() as anonymous:
        missing = await anonymous.get("/v1/key")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    async with harness.admin() as admin:
        await admin.delete(f"/admin/keys/{key_id}")
    with pytest.raises(openai.AuthenticationError) as refused:
        await sdk(harness, key).get("/key", cast_to=object)
    assert refused.value.code == "revoked_api_key"


async def test_chatgpt_next_web_reads_used_and_total_from_the_billing_routes(harness: Harness) -> None:
    key_id, key = await harness.create_key("5")
    await spend_once(harness, key)
    today = datetime.now(UTC).date()
    async with harness.client(key) as web:
        for prefix in ("", "/v1"):
            subscription = (await web.get(f"{prefix}/dashboard/billing/subscription")).json()
            usage = await web.get(
                f"{prefix}/dashboard/billing/usage",
                params={"start_date": today.replace(day=1).isoformat(), "end_date": (today + timedelta(1)).isoformat()},
            )
            assert usage.status_code == 200
            used = usage.json()
            # what ChatGPT-Next-Web does with them (app/client/platforms/openai.ts, usage())
            total_usd = round(subscription["hard_limit_usd"] * 100) / 100
            used_usd = round(used["total_usage"]) / 100
            assert subscription["object"] == "billing_subscription"
            assert total_usd == 5.0
            spent = Decimal((await harness.key(key_id))["spent_usd"])
            assert abs(Decimal(str(used["total_usage"])) - spent * 100) < Decimal("1e-9")
            assert used_usd == round(float(spent) * 100) / 100
            assert used["daily_costs"][0]["line_items"][0]["name"] == "doubao-seed-2.0-pro"
        bad = await web.get("/dashboard/billing/usage", params={"start_date": "2026-13-01"})
        assert bad.status_code == 400
        assert bad.json()["error"]["type"] == "invalid_request_error"
        empty = await web.get("/dashboard/billing/usage", params={"start_date": "2020-01-01", "end_date": "2020-02-01"})
        assert empty.json() == {"object": "list", "daily_costs": [], "total_usage": 0}


async def test_me_page_shows_the_holder_their_key_from_a_form_body_only(harness: Harness) -> None:
    key_id, key = await harness.create_key("7")
    await spend_once(harness, key)
    async with harness.client() as browser:
        form = await browser.get("/me", params={"key": key})  # a key in the URL is ignored
        assert "Balance" not in form.text
        shown = await browser.post("/me", data={"csrf": csrf_of(form), "key": key})
        assert shown.status_code == 200
        assert f">{usd((await harness.key(key_id))['balance_usd'])}<" in shown.text
        assert 'id="me-chart"' in shown.text
        assert key not in shown.text
        wrong = await browser.post("/me", data={"csrf": csrf_of(form), "key": "sk-nope"})
        assert wrong.status_code == 401
        assert "Invalid API key." in wrong.text
        forged = await browser.post("/me", data={"key": key})
        assert forged.status_code == 403
