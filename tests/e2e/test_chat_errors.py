"""Refusals decided by the gateway itself: 400, 401, 402, 403, 404, 413, 429 in OpenAI's error envelope.

Every refusal must leave the key untouched (same balance, nothing held, no usage row) and must not
reach the upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from app.fake_upstream import FakeUpstreamThread
from app.keys import generate_key
from tests.support.gateway import (
    HELLO,
    GatewayProcess,
    api_client,
    assert_untouched,
    chat_body,
    dedicated_gateway,
    error_of,
    openai_client,
    wait_until,
)

BAD_BODIES: dict[str, tuple[Any, str | None]] = {
    "temperature above 2": (chat_body(temperature=3), "temperature"),
    "temperature not a number": (chat_body(temperature="hot"), "temperature"),
    "five stop strings": (chat_body(stop=["a", "b", "c", "d", "e"]), "stop"),
    "stream_options without stream": (chat_body(stream_options={"include_usage": True}), "stream_options"),
    "missing messages": ({"model": "doubao-seed-2.0-pro"}, "messages"),
    "empty messages": (chat_body(messages=[]), "messages"),
    "unknown role": (chat_body(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    "bad tool name": (
        chat_body(tools=[{"type": "function", "function": {"name": "bad name!", "parameters": {}}}]),
        "tools[0].function.name",
    ),
    "max_tokens zero": (chat_body(max_tokens=0), "max_tokens"),
    "top_p above 1": (chat_body(top_p=1.5), "top_p"),
    "missing model": ({"messages": HELLO}, "model"),
}


@pytest.fixture
def funded(gateway: GatewayProcess) -> Iterator[tuple[str, str]]:
    """A key with $1 that must still have exactly $1, nothing held and no usage row afterwards."""
    key_id, key = gateway.create_key("1")
    yield key_id, key
    assert_untouched(gateway, key_id, "1.00")


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_invalid_parameters_are_400_in_the_openai_envelope(
    gateway: GatewayProcess, fake: FakeUpstreamThread, funded: tuple[str, str], case: str
) -> None:
    body, param = BAD_BODIES[case]
    with api_client(gateway, funded[1]) as http:
        error = error_of(http.post("/v1/chat/completions", json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fake.requests == []


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2, 3]", b'"just a string"', b"", b"\xff\xfe"],
    ids=["broken", "list", "str", "empty", "binary"],
)
def test_bodies_that_are_not_a_json_object_are_400_never_422(
    gateway: GatewayProcess, fake: FakeUpstreamThread, funded: tuple[str, str], raw: bytes
) -> None:
    with api_client(gateway, funded[1]) as http:
        response = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert error_of(response, 400)["type"] == "invalid_request_error"
    assert fake.requests == []


def test_sdk_raises_bad_request_for_an_invalid_parameter(
    gateway: GatewayProcess, fake: FakeUpstreamThread, funded: tuple[str, str]
) -> None:
    with openai_client(gateway, funded[1]) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO, temperature=2.5)
    assert caught.value.status_code == 400
    assert caught.value.param == "temperature"


@pytest.mark.parametrize(
    "key",
    [None, "Bearer", "sk-short", "not-a-key-at-all", generate_key()],
    ids=["missing", "empty-bearer", "malformed-sk", "garbage", "well-formed-unknown"],
)
def test_missing_or_unknown_key_is_401(gateway: GatewayProcess, fake: FakeUpstreamThread, key: str | None) -> None:
    headers = {"authorization": key if key == "Bearer" else f"Bearer {key}"} if key else {}
    with api_client(gateway) as http:
        error = error_of(http.post("/v1/chat/completions", json=chat_body(), headers=headers), 401)
    assert error["code"] == "invalid_api_key"
    if key and key.startswith("sk-"):
        assert key not in error["message"]
    assert fake.requests == []


def test_sdk_raises_authentication_error_for_an_unknown_key(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    with openai_client(gateway, generate_key()) as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO)


def test_revoked_key_is_401(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    with gateway.admin() as admin:
        assert admin.delete(f"/admin/keys/{key_id}").status_code == 200
    with api_client(gateway, key) as http:
        error = error_of(http.post("/v1/chat/completions", json=chat_body()), 401)
    assert error["code"] == "revoked_api_key"
    assert_untouched(gateway, key_id, "1.00")
    assert fake.requests == []


def test_expired_key_is_401(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1", expires_at="2020-01-01T00:00:00Z")
    with api_client(gateway, key) as http:
        error = error_of(http.post("/v1/chat/completions", json=chat_body()), 401)
    assert error["code"] == "expired_api_key"
    assert_untouched(gateway, key_id, "1.00")
    assert fake.requests == []


def test_balance_below_the_worst_case_is_402_and_charges_nothing(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    # worst case of the default cap alone: 1000 output tokens * $2.37/M = $0.00237 > $0.002
    _, key = gateway.create_key("0.002")
    with api_client(gateway, key) as http:
        error = error_of(http.post("/v1/chat/completions", json=chat_body()), 402)
        assert error["type"] == "insufficient_balance"
        assert error["code"] == "insufficient_balance"
        # a smaller max_tokens fits: the hold really is the worst case of this request
        assert http.post("/v1/chat/completions", json=chat_body(max_tokens=100)).status_code == 200
    assert len(fake.requests) == 1


def test_402_leaves_balance_and_usage_untouched(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("0.0001")
    with openai_client(gateway, key) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO, stream=True)
    assert caught.value.status_code == 402
    assert_untouched(gateway, key_id, "0.0001")
    assert fake.requests == []


def test_model_outside_the_keys_allow_list_is_403(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1", models=["doubao-seed-2.0-mini"])
    with api_client(gateway, key) as http:
        error = error_of(http.post("/v1/chat/completions", json=chat_body(model="pro-latest")), 403)
        assert error["type"] == "permission_error"
        assert error["param"] == "model"
        assert fake.requests == []
        assert_untouched(gateway, key_id, "1.00")
        assert http.post("/v1/chat/completions", json=chat_body(model="doubao-seed-2-0-mini")).status_code == 200
    with openai_client(gateway, key) as client, pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO)


def test_unknown_model_is_404_model_not_found(
    gateway: GatewayProcess, fake: FakeUpstreamThread, funded: tuple[str, str]
) -> None:
    with api_client(gateway, funded[1]) as http:
        error = error_of(http.post("/v1/chat/completions", json=chat_body(model="gpt-4o")), 404)
    assert error["param"] == "model"
    assert error["code"] == "model_not_found"
    with openai_client(gateway, funded[1]) as client, pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="doubao-seed-9.9-ultra", messages=HELLO)
    assert fake.requests == []


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread) -> Iterator[GatewayProcess]:
    """Small body cap and per-IP budget; each test speaks for its own client address (X-Forwarded-For
    from the trusted proxy 127.0.0.1), so the tests do not share a budget."""
    overrides = {"server": {"max_body_bytes": 2000}, "limits": {"per_ip": {"requests": 3, "window_seconds": 60}}}
    with dedicated_gateway(tmp_path_factory.mktemp("small"), upstream.url, overrides) as gateway:
        yield gateway


def test_body_over_the_size_cap_is_413_also_when_chunked(
    small_gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    gateway = small_gateway
    key_id, key = gateway.create_key("1")
    big = chat_body(messages=[{"role": "user", "content": "x" * 5000}])
    small = chat_body(messages=[{"role": "user", "content": "x" * 500}])
    chunk = b'{"model": "doubao-seed-2.0-pro", "messages": [{"role": "user", "content": "' + b"y" * 6000 + b'"}]}'

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(chunk), 500):
            yield chunk[i : i + 500]

    with api_client(gateway, key) as http:
        http.headers["x-forwarded-for"] = "198.51.100.1"
        assert error_of(http.post("/v1/chat/completions", json=big), 413)["code"] == "request_too_large"
        response = http.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
        assert "content-length" not in response.request.headers
        error_of(response, 413)
        assert fake.requests == []
        assert_untouched(gateway, key_id, "1.00")
        assert http.post("/v1/chat/completions", json=small).status_code == 200


def test_per_ip_limit_is_429_with_retry_after(small_gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    gateway = small_gateway
    key_id, key = gateway.create_key("1")
    client_ip = {"x-forwarded-for": "198.51.100.2"}
    with api_client(gateway) as http:
        # failed logins count against the address too
        bad_login = {"authorization": "Bearer sk-x", **client_ip}
        error_of(http.post("/v1/chat/completions", json=chat_body(), headers=bad_login), 401)
        good = {"authorization": f"Bearer {key}", **client_ip}
        assert http.post("/v1/chat/completions", json=chat_body(), headers=good).status_code == 200
        assert http.get("/v1/models", headers=good).status_code == 200
        refused = http.post("/v1/chat/completions", json=chat_body(), headers=good)
        error = error_of(refused, 429)
        # another client behind the trusted proxy has its own budget
        other = {"authorization": f"Bearer {key}", "x-forwarded-for": "203.0.113.7"}
        assert http.post("/v1/chat/completions", json=chat_body(), headers=other).status_code == 200
    assert error["type"] == "rate_limit_error"
    assert 0 < int(refused.headers["retry-after"]) <= 120  # sliding window: at most 2 windows
    assert len(gateway.usage(key_id)) == 2


def test_per_key_rpm_is_429_with_retry_after(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1", rpm=2)
    other_id, other = gateway.create_key("1")
    with api_client(gateway, key) as http:
        statuses = [http.post("/v1/chat/completions", json=chat_body()).status_code for _ in range(2)]
        refused = http.post("/v1/chat/completions", json=chat_body())
    assert statuses == [200, 200]
    assert error_of(refused, 429)["code"] == "rate_limit_exceeded"
    assert 0 < int(refused.headers["retry-after"]) <= 120  # sliding window: at most 2 windows
    assert len(gateway.usage(key_id)) == 2
    with openai_client(gateway, key) as client, pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO)
    with api_client(gateway, other) as http:  # the limit is per key
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
    assert len(gateway.usage(other_id)) == 1


def test_per_key_tpm_is_429_with_retry_after(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1", tpm=50)
    body = chat_body(messages=[{"role": "user", "content": "x" * 120}])  # estimated 4 + 30 = 34 tokens
    fake.enqueue({"usage": {"prompt_tokens": 30, "completion_tokens": 10}})
    with api_client(gateway, key) as http:
        assert http.post("/v1/chat/completions", json=body).status_code == 200
        refused = http.post("/v1/chat/completions", json=body)  # 40 used + 34 > 50
    assert error_of(refused, 429)["type"] == "rate_limit_error"
    assert 0 < int(refused.headers["retry-after"]) <= 120
    assert len(gateway.usage(key_id)) == 1


def test_key_concurrency_limit_is_429(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1", max_concurrent=1)
    fake.enqueue({"content_chunks": ["a ", "b ", "c"], "event_delay": 0.2})
    with api_client(gateway, key) as http:
        with http.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as slow:
            assert slow.status_code == 200
            refused = http.post("/v1/chat/completions", json=chat_body())
            slow.read()
        assert error_of(refused, 429)["type"] == "rate_limit_error"
        # the slot comes back once the stream is settled
        wait_until(lambda: http.post("/v1/chat/completions", json=chat_body()).status_code == 200, timeout=3)
    assert gateway.key(key_id)["held_usd"] == "0.00"


def test_monthly_quota_is_429_that_must_not_be_retried(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1", monthly_quota_usd="0.001")
    with api_client(gateway, key) as http:
        refused = http.post("/v1/chat/completions", json=chat_body())
    error = error_of(refused, 429)
    assert error["code"] == "monthly_quota_exceeded"
    assert refused.headers["x-should-retry"] == "false"
    with openai_client(gateway, key) as client, pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO)
    assert fake.requests == []
    assert_untouched(gateway, key_id, "1.00")


def test_a_request_larger_than_the_keys_tokens_per_minute_is_refused_without_retry_and_spends_no_rpm(gateway):
    _, key = gateway.create_key("1", tpm=50, rpm=1)
    with api_client(gateway, key) as client:
        too_big = client.post("/v1/chat/completions", json=chat_body(messages=[{"role": "user", "content": "x" * 400}]))
        assert too_big.status_code == 429
        assert too_big.headers["x-should-retry"] == "false"
        assert too_big.json()["error"]["code"] == "request_exceeds_tpm"
        # the refused request did not use the key's one request per minute
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
