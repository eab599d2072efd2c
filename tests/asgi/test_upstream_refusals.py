"""An upstream's refusal reaches the client as the gateway's digest, and the operator in full (issue 11)."""

from __future__ import annotations

from typing import Any

from tests.asgi.conftest import MakeHarness
from tests.support.inprocess import Harness

LEAKY = (
    "Invalid value for max_tokens: must be <= 32768. Endpoint ep-20240101123456-abcde of account 2100123456 "
    "at http://10.1.2.3:8080/api/v3 (host ark-internal.cn-beijing.volces.com, peer fd00::17) "
    "rejected key sk-abcd****wxyz / AKLTYzQ5ZmU2ODQ3ZjdmNGFiYjk4YTY2MzFkNjBhYjkzZjM"
)
SECRETS = (
    "ep-20240101123456-abcde",
    "2100123456",
    "10.1.2.3",
    "http://",
    "volces.com",
    "fd00::17",
    "sk-abcd",
    "wxyz",
    "AKLTYzQ5ZmU2",
)


def refusal(message: str, param: str | None = "max_tokens") -> dict[str, Any]:
    error = {"message": message, "type": "BadRequest", "param": param, "code": "InvalidParameter"}
    return {"status": 400, "error_body": {"error": error}}


def chat() -> dict[str, Any]:
    return {"model": "doubao-seed-2.0-pro", "messages": [{"role": "user", "content": "hi"}]}


async def test_client_sees_what_helps_and_nothing_that_names_the_operator(harness: Harness) -> None:
    _, key = await harness.create_key("1")
    harness.upstream.enqueue(refusal(LEAKY))
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "upstream_invalid_request"
    assert error["param"] == "max_tokens"
    assert "max_tokens: must be <= 32768" in error["message"]
    for leak in SECRETS:
        assert leak not in response.text, leak


async def test_anthropic_clients_get_the_same_digest(harness: Harness) -> None:
    _, key = await harness.create_key("1")
    harness.upstream.enqueue(refusal(LEAKY, param="http://10.1.2.3/x"))
    async with harness.client(key) as client:
        body = {**chat(), "max_tokens": 10}
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 400
    assert "32768" in response.json()["error"]["message"]
    for leak in SECRETS:
        assert leak not in response.text, leak


async def test_operator_sees_the_upstreams_own_words_with_the_request_id(harness: Harness) -> None:
    _, key = await harness.create_key("1")
    harness.upstream.enqueue(refusal(LEAKY))
    async with harness.client(key) as client:
        response = await client.post("/v1/chat/completions", json=chat())
    request_id = response.headers["x-request-id"]
    async with harness.admin() as admin:
        listed = (await admin.get("/admin/upstream-errors", params={"request_id": request_id})).json()["data"]
    async with harness.client(key) as client:
        assert (await client.get("/admin/upstream-errors")).status_code == 401
    [row] = listed
    assert (row["status"], row["code"], row["upstream"], row["model"]) == (
        400,
        "InvalidParameter",
        "ark",
        "doubao-seed-2.0-pro",
    )
    assert "ep-20240101123456-abcde" in row["message"]
    assert "http://10.1.2.3:8080/api/v3" in row["message"]


async def test_only_the_newest_upstream_errors_are_kept(make_harness: MakeHarness) -> None:
    async with make_harness({"logging": {"upstream_errors_kept": 3}}) as harness:
        _, key = await harness.create_key("1")
        harness.upstream.enqueue(*(refusal(f"bad value number {n}") for n in range(6)))
        async with harness.client(key) as client:
            for _ in range(6):
                assert (await client.post("/v1/chat/completions", json=chat())).status_code == 400
        async with harness.admin() as admin:
            rows = (await admin.get("/admin/upstream-errors")).json()["data"]
    assert [row["message"] for row in rows] == [f"bad value number {n}" for n in (5, 4, 3)]
