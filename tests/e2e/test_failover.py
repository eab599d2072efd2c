"""Failover between upstream targets, through a running gateway.

For every fault: what the client receives, how many attempts the upstreams saw, and the money --
exactly one usage row for an answered request (none for a refused one) and never a hold left behind.
Two upstreams are real fake servers ("ark", the session's, and "spare", this module's); "dead-a" and
"dead-b" point at closed loopback ports.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.backends import backend_overrides, database_url
from tests.support.gateway import (
    HELLO,
    UPSTREAM_KEY,
    GatewayProcess,
    api_client,
    assert_untouched,
    base_config,
    deep_merge,
    error_of,
    free_port,
    openai_client,
    settled_rows,
    wait_until,
)

PRICE = {"input": 0.47, "output": 2.37}
USAGE = {"prompt_tokens": 1000, "completion_tokens": 800}
COST = "0.002366"  # 1000 x 0.47/M + 800 x 2.37/M (the output cap is 1000)
BALANCE_AFTER = "0.997634"
MAX_ATTEMPTS = 3
BREAKER_COOLDOWN = 1.0


def model(model_id: str, **where: Any) -> dict[str, Any]:
    return {"id": model_id, "max_output_tokens": 1000, "price": PRICE, **where}


def upstream(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "base_url": url, "api_key": UPSTREAM_KEY, "read_timeout": 5, "connect_timeout": 1}


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # bound then released: nothing listens there


def failover_config(ark: str, spare: str) -> dict[str, Any]:
    return {
        "upstreams": [
            upstream("ark", ark),
            upstream("spare", spare),
            upstream("dead-a", closed_port_url()),
            upstream("dead-b", closed_port_url()),
        ],
        "models": [
            model("solo", upstream="ark", upstream_model="solo-up"),
            model(
                "pair",
                targets=[
                    {"upstream": "ark", "upstream_model": "pair-main"},
                    {"upstream": "spare", "upstream_model": "pair-spare", "priority": 2},
                ],
            ),
            model(
                "weighted",
                targets=[
                    {"upstream": "ark", "upstream_model": "w-heavy", "weight": 3},
                    {"upstream": "ark", "upstream_model": "w-light", "weight": 1},
                    {"upstream": "ark", "upstream_model": "w-backup", "priority": 2},
                ],
            ),
            model("dead", upstream="dead-a", upstream_model="dead-up"),
            model(
                "all-dead",
                targets=[
                    {"upstream": "dead-a", "upstream_model": "all-dead-a"},
                    {"upstream": "dead-b", "upstream_model": "all-dead-b"},
                ],
            ),
            model(
                "half-dead",
                targets=[
                    {"upstream": "dead-a", "upstream_model": "half-dead-a"},
                    {"upstream": "ark", "upstream_model": "half-live", "priority": 2},
                ],
            ),
        ],
        # no circuit opens here: every test must see every attempt it causes
        "routing": {"max_attempts": MAX_ATTEMPTS, "backoff_seconds": 0.05, "breaker_failures": 1000},
    }


def breaker_config(ark: str, spare: str) -> dict[str, Any]:
    return {
        "upstreams": [upstream("ark", ark), upstream("spare", spare)],
        "models": [
            model(
                "guarded",
                targets=[
                    {"upstream": "spare", "upstream_model": "g-main"},
                    {"upstream": "ark", "upstream_model": "g-backup", "priority": 2},
                ],
            )
        ],
        "routing": {
            "max_attempts": MAX_ATTEMPTS,
            "backoff_seconds": 0.05,
            "breaker_failures": 2,
            "breaker_cooldown_seconds": BREAKER_COOLDOWN,
        },
    }


def gateway_for(workdir: Path, ark: str, overrides: dict[str, Any]) -> GatewayProcess:
    config = deep_merge(deep_merge(base_config(ark, database_url(workdir)), backend_overrides()), overrides)
    return GatewayProcess(workdir, config)


@pytest.fixture(scope="module")
def spare_upstream() -> Iterator[FakeUpstreamThread]:
    with FakeUpstreamThread() as spare:
        yield spare


@pytest.fixture(scope="module")
def gateways(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread, spare_upstream: FakeUpstreamThread
) -> Iterator[dict[str, GatewayProcess]]:
    """Both gateways of this module, started side by side (a start costs seconds)."""
    built = {
        "failover": gateway_for(
            tmp_path_factory.mktemp("failover"), upstream.url, failover_config(upstream.url, spare_upstream.url)
        ),
        "breaker": gateway_for(
            tmp_path_factory.mktemp("breaker"), upstream.url, breaker_config(upstream.url, spare_upstream.url)
        ),
    }
    try:
        with ThreadPoolExecutor(len(built)) as pool:
            list(pool.map(lambda g: g.start(), built.values()))
        yield built
    finally:
        for gateway in built.values():
            gateway.kill()


@pytest.fixture
def spare(spare_upstream: FakeUpstreamThread) -> Iterator[FakeUpstreamThread]:
    spare_upstream.reset()
    yield spare_upstream
    spare_upstream.reset()


@pytest.fixture
def gateway(gateways: dict[str, GatewayProcess], fake: FakeUpstreamThread) -> GatewayProcess:
    return gateways["failover"]


def chat(gateway: GatewayProcess, key: str, model_id: str, **fields: Any) -> httpx.Response:
    with api_client(gateway, key) as http:
        return http.post("/v1/chat/completions", json={"model": model_id, "messages": HELLO, **fields})


def upstream_models(fake: FakeUpstreamThread) -> list[str]:
    return [request["body"]["model"] for request in fake.requests]


def health(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    with gateway.admin() as admin:
        response = admin.get("/admin/upstreams")
    response.raise_for_status()
    return {row["target"]: row for row in response.json()["health"]}


def one_usage_row(gateway: GatewayProcess, key_id: str, *, upstream_model: str) -> dict[str, Any]:
    """The single usage row of a request answered with ``USAGE``; nothing held, the ledger balanced."""
    [row] = settled_rows(gateway, key_id)
    assert (row["upstream_model"], row["status"], row["partial"]) == (upstream_model, "ok", False), row
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (1000, 800, COST), row
    key = gateway.key(key_id)
    assert (key["balance_usd"], key["held_usd"], key["spent_usd"]) == (BALANCE_AFTER, "0.00", COST), key
    assert gateway.ledger()["balanced"] is True
    return row


def refused_cleanly(gateway: GatewayProcess, key_id: str) -> None:
    assert_untouched(gateway, key_id, "1.00")
    assert gateway.ledger()["balanced"] is True


# --- retry on the same target ---------------------------------------------------------------------


def test_503_then_200_on_one_target_answers_after_two_attempts(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"status": 503}, {"content": "second time lucky", "usage": USAGE})
    with openai_client(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(model="solo", messages=HELLO)
    answer = raw.parse()
    assert raw.status_code == 200
    assert raw.headers["x-seedgate-attempts"] == "2"
    assert answer.choices[0].message.content == "second time lucky"
    assert upstream_models(fake) == ["solo-up", "solo-up"]
    one_usage_row(gateway, key_id, upstream_model="solo-up")


def test_a_first_answer_makes_no_attempts_header(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"usage": USAGE})
    response = chat(gateway, key, "solo")
    assert response.status_code == 200, response.text
    assert "x-seedgate-attempts" not in response.headers
    assert len(fake.requests) == 1
    one_usage_row(gateway, key_id, upstream_model="solo-up")


def test_429_with_retry_after_is_waited_out_then_answered(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"status": 429, "headers": {"retry-after": "1"}}, {"usage": USAGE})
    started = time.monotonic()
    response = chat(gateway, key, "solo")
    waited = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.headers["x-seedgate-attempts"] == "2"
    assert 0.95 <= waited < 4.0  # the upstream's Retry-After, not the 0.05 s back-off
    assert len(fake.requests) == 2
    one_usage_row(gateway, key_id, upstream_model="solo-up")


def test_5xx_on_a_stream_request_is_retried_before_any_byte_is_sent(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"status": 502}, {"content_chunks": ["str", "eam"], "usage": USAGE})
    with openai_client(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(model="solo", messages=HELLO, stream=True)
        assert raw.headers["x-seedgate-attempts"] == "2"
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "stream"
    assert len(fake.requests) == 2
    one_usage_row(gateway, key_id, upstream_model="solo-up")


def test_an_error_json_on_every_attempt_of_a_stream_is_a_502_before_any_stream_byte(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    leak = {"error": {"message": f"boom {UPSTREAM_KEY}", "type": "server_error", "code": "InternalServiceError"}}
    fake.enqueue(*[{"status": 500, "error_body": leak}] * MAX_ATTEMPTS)
    response = chat(gateway, key, "solo", stream=True)
    error = error_of(response, 502)  # a JSON body, not text/event-stream
    assert error["code"] == "upstream_error"
    assert "data:" not in response.text
    assert UPSTREAM_KEY not in response.text
    assert "boom" not in response.text
    assert len(fake.requests) == MAX_ATTEMPTS  # a 5xx before content is retried, up to the limit
    refused_cleanly(gateway, key_id)


# --- failover to another target ----------------------------------------------------------------------


def test_503_on_the_first_target_fails_over_to_the_second(
    gateway: GatewayProcess, fake: FakeUpstreamThread, spare: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"status": 503})
    spare.enqueue({"content": "from the spare", "usage": USAGE})
    with openai_client(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(model="pair", messages=HELLO)
    assert raw.headers["x-seedgate-attempts"] == "2"
    assert raw.parse().choices[0].message.content == "from the spare"
    assert upstream_models(fake) == ["pair-main"]
    assert upstream_models(spare) == ["pair-spare"]
    assert spare.requests[0]["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    row = one_usage_row(gateway, key_id, upstream_model="pair-spare")
    assert row["upstream"] == "spare"


def test_connect_refused_on_the_first_target_fails_over(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"usage": USAGE})
    response = chat(gateway, key, "half-dead")
    assert response.status_code == 200, response.text
    assert response.headers["x-seedgate-attempts"] == "2"
    assert upstream_models(fake) == ["half-live"]
    one_usage_row(gateway, key_id, upstream_model="half-live")


def test_400_from_the_upstream_is_not_retried_and_reaches_the_client(
    gateway: GatewayProcess, fake: FakeUpstreamThread, spare: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    error_body = {"error": {"message": "max_tokens is too large", "type": "BadRequest", "code": "InvalidParameter"}}
    fake.enqueue({"status": 400, "error_body": error_body})
    response = chat(gateway, key, "pair")
    error = error_of(response, 400)
    assert error["code"] == "upstream_invalid_request"
    assert "max_tokens is too large" in error["message"]
    assert "x-seedgate-attempts" not in response.headers
    assert len(fake.requests) == 1
    assert spare.requests == []  # a rejected request is not the upstream's failure: no failover either
    refused_cleanly(gateway, key_id)


# --- nobody answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "targets"), [("dead", ["dead-a/dead-up"]), ("all-dead", ["dead-a/all-dead-a", "dead-b/all-dead-b"])]
)
def test_connect_refused_everywhere_is_502_after_max_attempts_with_the_balance_unchanged(
    gateway: GatewayProcess, fake: FakeUpstreamThread, model_id: str, targets: list[str]
) -> None:
    key_id, key = gateway.create_key("1")
    before = {target: health(gateway).get(target, {}).get("recent_requests", 0) for target in targets}
    started = time.monotonic()
    response = chat(gateway, key, model_id)
    assert time.monotonic() - started < 5.0
    error = error_of(response, 502)
    assert error["code"] == "upstream_error"
    assert UPSTREAM_KEY not in response.text
    after = health(gateway)
    tried = {target: after[target]["recent_requests"] - before[target] for target in targets}
    assert sum(tried.values()) == MAX_ATTEMPTS, tried
    assert all(tried.values()), tried  # every target had its turn
    assert all(after[target]["recent_error_rate"] == 1.0 for target in targets)
    assert fake.requests == []
    refused_cleanly(gateway, key_id)


# --- weights and priorities ------------------------------------------------------------------------------


def test_traffic_splits_three_to_one_and_never_reaches_the_backup(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("10")
    total = 200
    with api_client(gateway, key) as http:
        for _ in range(total):
            response = http.post("/v1/chat/completions", json={"model": "weighted", "messages": HELLO})
            assert response.status_code == 200, response.text
    counts = Counter(upstream_models(fake))
    assert set(counts) == {"w-heavy", "w-light"}
    # 3:1 means 150 of 200 (sd ~6); 1:1 would be 100 (sd ~7)
    assert 125 <= counts["w-heavy"] <= 175, counts
    rows = settled_rows(gateway, key_id, count=total)
    assert Counter(row["upstream_model"] for row in rows) == counts


def test_when_every_first_priority_target_fails_the_second_priority_serves(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"status": 503}, {"status": 503}, {"usage": USAGE})
    response = chat(gateway, key, "weighted")
    assert response.status_code == 200, response.text
    assert response.headers["x-seedgate-attempts"] == "3"
    tried = upstream_models(fake)
    assert sorted(tried[:2]) == ["w-heavy", "w-light"]
    assert tried[2] == "w-backup"
    one_usage_row(gateway, key_id, upstream_model="w-backup")


# --- circuit breaking ---------------------------------------------------------------------------------------


def test_a_failing_target_is_skipped_while_its_circuit_is_open_then_probed_and_closed(
    gateways: dict[str, GatewayProcess], fake: FakeUpstreamThread, spare: FakeUpstreamThread
) -> None:
    gateway = gateways["breaker"]
    key_id, key = gateway.create_key("1")
    spare.enqueue({"status": 503}, {"status": 503})
    with api_client(gateway, key) as http:

        def ask() -> httpx.Response:
            response = http.post("/v1/chat/completions", json={"model": "guarded", "messages": HELLO})
            assert response.status_code == 200, response.text
            return response

        # two failures open g-main's circuit (breaker_failures: 2); the backup answers both times
        assert [ask().headers.get("x-seedgate-attempts") for _ in range(2)] == ["2", "2"]
        figures = health(gateway)
        assert figures["spare/g-main"]["state"] == "open"
        assert figures["spare/g-main"]["recent_error_rate"] == 1.0
        assert figures["ark/g-backup"]["state"] == "closed"
        assert figures["ark/g-backup"]["recent_error_rate"] == 0.0
        assert figures["ark/g-backup"]["latency_ms_p50"] is not None

        # while open: straight to the backup, no failed attempt on the way
        assert [ask().headers.get("x-seedgate-attempts") for _ in range(3)] == [None, None, None]
        assert len(spare.requests) == 2
        assert upstream_models(fake) == ["g-backup"] * 5

        # after the cool-down one probe goes to g-main; it answers, and the circuit closes
        wait_until(lambda: health(gateway)["spare/g-main"]["reopens_in_seconds"] == 0, timeout=BREAKER_COOLDOWN + 2)
        assert ask().headers.get("x-seedgate-attempts") is None
        assert upstream_models(spare) == ["g-main"] * 3
        assert health(gateway)["spare/g-main"]["state"] == "closed"
        ask()
        assert len(spare.requests) == 4  # closed again: it takes its traffic back

    rows = settled_rows(gateway, key_id, count=7)
    assert Counter(row["upstream"] for row in rows) == {"ark": 5, "spare": 2}
    assert all(row["status"] == "ok" for row in rows)
    assert gateway.ledger()["balanced"] is True
