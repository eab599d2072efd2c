"""Secrets never rest anywhere: not in the database, not in the log, not in admin answers.

The gateway runs with DEBUG logging and sees successes, refusals and an upstream failure whose body
echoes secrets; afterwards the raw client keys (or any long piece of them), the upstream key and the
master key must appear nowhere in the database files or the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from app.fake_upstream import FakeUpstreamThread
from app.keys import generate_key
from tests.support.gateway import (
    FAULT_TOLERANT,
    MASTER_KEY,
    UPSTREAM_KEY,
    GatewayProcess,
    api_client,
    chat_body,
    database_bytes,
    dedicated_gateway,
    deep_merge,
)


@pytest.fixture(scope="module")
def secrets_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread) -> Iterator[GatewayProcess]:
    overrides = deep_merge(FAULT_TOLERANT, {"logging": {"level": "DEBUG"}})
    with dedicated_gateway(tmp_path_factory.mktemp("secrets"), upstream.url, overrides) as gateway:
        yield gateway


def _traffic(gateway: GatewayProcess, fake: FakeUpstreamThread, key: str, unknown: str) -> None:
    echo = {"error": {"message": f"bad auth Bearer {UPSTREAM_KEY} for {key}", "type": "x", "param": None, "code": "x"}}
    fake.enqueue({}, {}, {"status": 500, "error_body": echo}, {"status": 500, "error_body": echo})
    with api_client(gateway) as http:
        bearer = {"authorization": f"Bearer {key}"}
        assert http.post("/v1/chat/completions", json=chat_body(), headers=bearer).status_code == 200
        assert (
            http.post("/v1/chat/completions", json=chat_body(stream=True), headers={"x-api-key": key}).status_code
            == 200
        )
        assert http.post("/v1/chat/completions", json=chat_body(), headers=bearer).status_code == 502
        assert http.post("/v1/chat/completions", json=chat_body(temperature=9), headers=bearer).status_code == 400
        for wrong in (unknown, unknown[:-1], key + "x"):
            refused = http.post("/v1/chat/completions", json=chat_body(), headers={"authorization": f"Bearer {wrong}"})
            assert refused.status_code == 401
            assert wrong not in refused.text
        assert http.get("/v1/models", headers={"x-api-key": unknown}).status_code == 401
        assert http.get("/admin/keys", headers={"authorization": f"Bearer {key}"}).status_code == 401


def _pieces(secret: str) -> list[str]:
    """The secret and its long slices: a key stored truncated or split would still be a leak."""
    return [secret, *(secret[i : i + 20] for i in range(3, len(secret) - 20, 10))]


def test_raw_keys_and_upstream_key_are_absent_from_database_and_log(
    secrets_gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    gateway = secrets_gateway
    key_id, key = gateway.create_key("1")
    unknown = generate_key()
    _traffic(gateway, fake, key, unknown)
    assert len(gateway.usage(key_id)) == 2
    stored = database_bytes(gateway)
    assert key_id.encode() in stored  # the dump really holds the gateway's data
    log = gateway.logs()
    assert "request" in log  # and the log is the gateway's
    for secret in (key, unknown, UPSTREAM_KEY, MASTER_KEY):
        for piece in _pieces(secret):
            assert piece.encode() not in stored, f"a piece of a secret is stored: {piece[:6]}..."
            assert piece not in log, f"a piece of a secret is logged: {piece[:6]}..."


def test_admin_answers_never_carry_a_hash_or_the_raw_key(
    secrets_gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    gateway = secrets_gateway
    key_id, key = gateway.create_key("1")
    digest = hashlib.sha256(key.encode()).hexdigest()
    with api_client(gateway, key) as http:
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
    with gateway.admin() as admin:
        answers = {
            "list": admin.get("/admin/keys"),
            "show": admin.get(f"/admin/keys/{key_id}"),
            "patch": admin.patch(f"/admin/keys/{key_id}", json={"name": "renamed"}),
            "topup": admin.post(f"/admin/keys/{key_id}/topup", json={"amount_usd": "1"}),
            "usage": admin.get("/admin/usage", params={"key_id": key_id}),
            "revoke": admin.delete(f"/admin/keys/{key_id}"),
        }
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.text)
        assert key not in response.text, name
        assert key[3:-4] not in response.text, name
        assert digest not in response.text, name
        assert "key_hash" not in response.text, name
        assert '"key"' not in response.text, name
    shown = answers["show"].json()
    assert shown["key_hint"].startswith("sk-")
    assert len(shown["key_hint"]) < 16
