"""Exact money after known usage, and the one usage row each request leaves.

Prices of the test catalog (USD per million tokens): pro 0.47 in / 2.37 out / 0.09 cached;
mini 0.14 in / 0.69 out with no cached price (cached input is billed at the input price).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import HELLO, GatewayProcess, api_client, chat_body, openai_client


def usage(prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0) -> dict[str, object]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


@pytest.mark.parametrize("stream", [False, True])
def test_cached_tokens_use_the_cached_price_and_reasoning_is_output(
    gateway: GatewayProcess, fake: FakeUpstreamThread, stream: bool
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"reasoning": "Let me think.", "usage": usage(1000, 900, cached=400, reasoning=300)})
    with openai_client(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="doubao-seed-2.0-pro", messages=HELLO, stream=stream
        )
        if stream:
            list(raw.parse())
        request_id = raw.headers["x-request-id"]
    # 600 * 0.47/M + 400 * 0.09/M + 900 * 2.37/M = 0.000282 + 0.000036 + 0.002133
    view = gateway.key(key_id)
    assert view["balance_usd"] == "0.997549"
    assert view["spent_usd"] == "0.002451"
    assert view["held_usd"] == "0.00"
    [row] = gateway.usage(key_id)
    assert row["request_id"] == request_id
    assert row["key_id"] == key_id
    assert row["model"] == "doubao-seed-2.0-pro"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (1000, 900)
    assert (row["cached_tokens"], row["reasoning_tokens"]) == (400, 300)
    assert row["cost_usd"] == "0.002451"
    assert row["status"] == "ok"
    assert row["partial"] is False
    assert row["estimated"] is False
    assert row["stream"] is stream
    created = datetime.fromisoformat(row["created_at"])
    assert created.tzinfo is not None
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)


def test_model_without_cached_price_bills_cached_tokens_at_the_input_price(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("0.5")
    fake.enqueue({"usage": usage(10_000, 1_000, cached=8_000)})
    with api_client(gateway, key) as http:
        assert http.post("/v1/chat/completions", json=chat_body(model="doubao-seed-2.0-mini")).status_code == 200
    # 10000 * 0.14/M + 1000 * 0.69/M = 0.0014 + 0.00069
    [row] = gateway.usage(key_id)
    assert row["cost_usd"] == "0.00209"
    assert gateway.key(key_id)["balance_usd"] == "0.49791"


def test_balance_is_exact_after_many_requests(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("0.1")
    plan = [(1, 1), (17, 3), (123, 456), (7, 0), (999, 1)]
    fake.enqueue(*[{"usage": usage(p, c)} for p, c in plan])
    with api_client(gateway, key) as http:
        for index in range(len(plan)):
            body = chat_body(stream=index % 2 == 1)
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
    price_in, price_out = Decimal("0.47") / 10**6, Decimal("2.37") / 10**6
    costs = [p * price_in + c * price_out for p, c in plan]
    rows = gateway.usage(key_id)
    assert [Decimal(row["cost_usd"]) for row in rows] == costs
    assert len({row["request_id"] for row in rows}) == len(plan)
    key_view = gateway.key(key_id)
    assert Decimal(key_view["balance_usd"]) == Decimal("0.1") - sum(costs)
    assert Decimal(key_view["spent_usd"]) == sum(costs)
    assert gateway.ledger()["balanced"] is True


def test_explicit_zero_usage_is_charged_nothing(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"usage": usage(0, 0)})
    with api_client(gateway, key) as http:
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
    [row] = gateway.usage(key_id)
    assert (row["cost_usd"], row["estimated"], row["partial"]) == ("0.00", False, False)
    assert gateway.key(key_id)["balance_usd"] == "1.00"


def test_answer_without_usage_is_billed_from_an_estimate(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content": "x" * 400, "usage": "omit"})
    with api_client(gateway, key) as http:
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
    [row] = gateway.usage(key_id)
    assert row["estimated"] is True
    assert row["completion_tokens"] >= 100  # 400 ASCII characters are at least 100 tokens
    assert Decimal(row["cost_usd"]) > 0
    assert Decimal(gateway.key(key_id)["balance_usd"]) == 1 - Decimal(row["cost_usd"])


def test_cost_above_the_hold_charges_down_to_zero_never_below(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    # the hold for max_tokens=10 is far below what this usage claims; the balance must stop at zero
    key_id, key = gateway.create_key("0.001")
    fake.enqueue({"usage": usage(1_000_000, 1_000_000)})
    with api_client(gateway, key) as http:
        assert http.post("/v1/chat/completions", json=chat_body(max_tokens=10)).status_code == 200
    key_view = gateway.key(key_id)
    assert key_view["balance_usd"] == "0.00"
    assert key_view["held_usd"] == "0.00"
    [row] = gateway.usage(key_id)
    assert row["cost_usd"] == "0.001"
    # the claimed usage is first clamped to what the request could produce: the context window of
    # prompt (262,144 tokens) and max_tokens of answer: 262144 * 0.47/M + 10 * 2.37/M = 0.12323138
    assert (row["prompt_tokens"], row["completion_tokens"]) == (262_144, 10)
    assert Decimal(row["shortfall_usd"]) == Decimal("0.12323138") - Decimal("0.001")
    assert gateway.ledger()["balanced"] is True


def test_hold_covers_every_choice_of_n(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    # one choice of 500 tokens costs at most ~$0.0012; two need ~$0.0024 and the key has $0.002
    key_id, key = gateway.create_key("0.002")
    with api_client(gateway, key) as http:
        assert http.post("/v1/chat/completions", json=chat_body(n=2, max_tokens=500)).status_code == 402
        assert http.post("/v1/chat/completions", json=chat_body(n=1, max_tokens=500)).status_code == 200
    [sent] = fake.requests
    assert sent["body"]["max_completion_tokens"] == 500
    assert len(gateway.usage(key_id)) == 1
