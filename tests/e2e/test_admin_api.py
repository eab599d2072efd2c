"""The admin API: deny by default, exact money, only listed fields, and 400 (never 422) for bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import MASTER_KEY, GatewayProcess, api_client, chat_body, error_of, wait_until

ADMIN_ROUTES = [
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys"),
    ("GET", "/admin/keys/key_x"),
    ("PATCH", "/admin/keys/key_x"),
    ("DELETE", "/admin/keys/key_x"),
    ("POST", "/admin/keys/key_x/topup"),
    ("GET", "/admin/usage"),
    ("GET", "/admin/policy-events"),
    ("GET", "/admin/ledger"),
]


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong-master-key-0123456789abcdef"}, {"authorization": f"Basic {MASTER_KEY}"}],
    ids=["none", "wrong", "not-bearer"],
)
@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_deny_without_the_master_key(
    gateway: GatewayProcess, headers: dict[str, str], method: str, path: str
) -> None:
    with api_client(gateway) as http:
        response = http.request(method, path, headers=headers, json={"name": "x"})
    assert error_of(response, 401)["type"] == "invalid_request_error"


def test_client_key_is_not_an_admin_key(gateway: GatewayProcess) -> None:
    _, key = gateway.create_key("1")
    with api_client(gateway, key) as http:
        error_of(http.get("/admin/keys"), 401)


def test_create_returns_201_with_id_key_and_settings(gateway: GatewayProcess) -> None:
    fields = {
        "name": "team-a",
        "balance_usd": "2.5",
        "models": ["pro-latest", "doubao-seed-2-0-mini"],
        "rpm": 60,
        "tpm": 100000,
        "monthly_quota_usd": "10",
        "expires_at": "2099-01-01T00:00:00Z",
    }
    with gateway.admin() as admin:
        response = admin.post("/admin/keys", json=fields)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"].startswith("key_")
    assert created["key"].startswith("sk-")
    assert created["name"] == "team-a"
    assert created["balance_usd"] == "2.50"
    assert created["models"] == ["doubao-seed-2.0-mini", "doubao-seed-2.0-pro"]  # canonical ids
    assert (created["rpm"], created["tpm"]) == (60, 100000)
    assert created["monthly_quota_usd"] == "10.00"
    assert created["expires_at"].startswith("2099-01-01T00:00:00")
    assert created["revoked"] is False


def test_list_and_show_give_balances_without_keys(gateway: GatewayProcess) -> None:
    key_id, _ = gateway.create_key("3", name="listed")
    with gateway.admin() as admin:
        listed = admin.get("/admin/keys").json()
        shown = admin.get(f"/admin/keys/{key_id}").json()
        missing = admin.get("/admin/keys/key_does_not_exist")
    assert listed["object"] == "list"
    [entry] = [k for k in listed["data"] if k["id"] == key_id]
    assert entry == shown
    assert "key" not in shown
    assert (shown["name"], shown["balance_usd"], shown["spent_usd"], shown["held_usd"]) == (
        "listed",
        "3.00",
        "0.00",
        "0.00",
    )
    error_of(missing, 404)


def test_patch_changes_only_listed_fields(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    with gateway.admin() as admin:
        changed = admin.patch(f"/admin/keys/{key_id}", json={"name": "renamed", "rpm": 1, "models": ["pro-latest"]})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["name"], changed.json()["rpm"]) == ("renamed", 1)
        for bad in (
            {"balance_usd": "100"},
            {"spent_usd": "0"},
            {"key_hash": "00"},
            {"bogus": 1},
            {"rpm": 0},
            {"max_concurrent": 2**31},
        ):
            error_of(admin.patch(f"/admin/keys/{key_id}", json=bad), 400)
        error_of(admin.patch(f"/admin/keys/{key_id}", json={"models": ["gpt-nope"]}), 400)
        error_of(admin.patch("/admin/keys/key_does_not_exist", json={"name": "x"}), 404)
    assert gateway.key(key_id)["balance_usd"] == "1.00"
    # the change applies to the next request at once: rpm 1 and pro only
    with api_client(gateway, key) as http:
        error_of(http.post("/v1/chat/completions", json=chat_body(model="doubao-seed-2.0-mini")), 403)
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
        error_of(http.post("/v1/chat/completions", json=chat_body()), 429)


@pytest.mark.parametrize(
    ("amount", "balance"), [("0.000001", "1.000001"), ("2", "3.00"), ("0.000000000001", "1.000000000001")]
)
def test_topup_is_exact(gateway: GatewayProcess, amount: str, balance: str) -> None:
    key_id, _ = gateway.create_key("1")
    with gateway.admin() as admin:
        response = admin.post(f"/admin/keys/{key_id}/topup", json={"amount_usd": amount})
    assert response.status_code == 200, response.text
    assert response.json()["balance_usd"] == balance
    assert response.json()["topped_up_usd"] == balance
    assert gateway.key(key_id)["balance_usd"] == balance
    assert gateway.ledger()["balanced"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"amount_usd": "0"},
        {"amount_usd": "-1"},
        {"amount_usd": "0.0000000000001"},
        {"amount_usd": "lots"},
        {},
        {"amount_usd": "1", "x": 1},
    ],
    ids=["zero", "negative", "too-fine", "text", "missing", "extra-field"],
)
def test_invalid_topup_is_400_and_changes_nothing(gateway: GatewayProcess, body: dict[str, Any]) -> None:
    key_id, _ = gateway.create_key("1")
    with gateway.admin() as admin:
        error_of(admin.post(f"/admin/keys/{key_id}/topup", json=body), 400)
    assert gateway.key(key_id)["balance_usd"] == "1.00"


def test_topup_of_an_unknown_key_is_404(gateway: GatewayProcess) -> None:
    with gateway.admin() as admin:
        error_of(admin.post("/admin/keys/key_does_not_exist/topup", json={"amount_usd": "1"}), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"balance_usd": "1"},
        {"name": ""},
        {"name": "x", "balance_usd": "abc"},
        {"name": "x", "balance_usd": "-1"},
        {"name": "x", "balance_usd": "0.0000000000001"},
        {"name": "x", "models": ["gpt-nope"]},
        {"name": "x", "models": "doubao-seed-2.0-pro"},
        {"name": "x", "rpm": 0},
        {"name": "x", "rpm": 10**10},
        {"name": "x", "tpm": 2**31},
        {"name": "x", "expires_at": "tomorrow"},
        {"name": "x", "is_admin": True},
        ["name", "x"],
        "x",
    ],
)
def test_invalid_create_is_400_never_422(gateway: GatewayProcess, body: Any) -> None:
    with gateway.admin() as admin:
        before = len(admin.get("/admin/keys").json()["data"])
        response = admin.post("/admin/keys", json=body)
        after = len(admin.get("/admin/keys").json()["data"])
    assert error_of(response, 400)["type"] == "invalid_request_error"
    assert after == before


@pytest.mark.parametrize("raw", [b"{broken", b"", b"\xff"])
def test_unparsable_admin_body_is_400(gateway: GatewayProcess, raw: bytes) -> None:
    with gateway.admin() as admin:
        error_of(admin.post("/admin/keys", content=raw, headers={"content-type": "application/json"}), 400)


@pytest.mark.parametrize(
    "query",
    [{"limit": "0"}, {"limit": "abc"}, {"offset": "-1"}, {"offset": str(2**63)}],  # 2**63: was a 500 (SQLite)
)
@pytest.mark.parametrize("path", ["/admin/usage", "/admin/keys"])
def test_invalid_admin_query_is_400_never_422(gateway: GatewayProcess, path: str, query: dict[str, str]) -> None:
    with gateway.admin() as admin:
        error_of(admin.get(path, params=query), 400)


def test_a_usage_export_until_the_last_day_of_the_calendar_is_whole(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    with api_client(gateway, key) as http:
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
    with gateway.admin() as admin:
        # 9999-12-31 has no day after it: the export's bound was an OverflowError, the body cut after its head
        export = admin.get("/admin/usage.csv", params={"key_id": key_id, "until": "9999-12-31"})
    assert export.status_code == 200
    lines = export.text.splitlines()
    assert lines[0].startswith("created_at,request_id,")
    assert len(lines) == 2  # the key's one request


def test_revoked_key_is_refused_within_the_cache_ttl(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    with api_client(gateway, key) as http:
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200  # now cached
        with gateway.admin() as admin:
            revoked = admin.delete(f"/admin/keys/{key_id}")
            assert revoked.status_code == 200
            assert revoked.json()["revoked"] is True
            assert revoked.json()["revoked_at"]
            error_of(admin.delete("/admin/keys/key_does_not_exist"), 404)

        def refused() -> httpx.Response | None:
            response = http.post("/v1/chat/completions", json=chat_body())
            return response if response.status_code == 401 else None

        error = error_of(wait_until(refused, timeout=3, interval=0.2), 401)
    assert error["code"] == "revoked_api_key"
    assert len(gateway.usage(key_id)) <= 2


def test_usage_listing_has_one_row_per_request_filtered_by_key(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    other_id, other = gateway.create_key("1")
    with api_client(gateway, key) as http:
        ids = [http.post("/v1/chat/completions", json=chat_body()).headers["x-request-id"] for _ in range(3)]
    with api_client(gateway, other) as http:
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200
    with gateway.admin() as admin:
        rows = admin.get("/admin/usage", params={"key_id": key_id}).json()["data"]
        page = admin.get("/admin/usage", params={"key_id": key_id, "limit": 2}).json()["data"]
        everything = admin.get("/admin/usage").json()["data"]
    assert [row["request_id"] for row in rows] == ids
    assert {row["key_id"] for row in rows} == {key_id}
    assert len(page) == 2
    assert {row["key_id"] for row in everything} >= {key_id, other_id}
    fields = {"request_id", "key_id", "model", "prompt_tokens", "completion_tokens", "reasoning_tokens"}
    fields |= {"cached_tokens", "cost_usd", "status", "partial", "created_at"}
    assert fields <= set(rows[0])


def test_ledger_totals_are_balanced_integers(gateway: GatewayProcess) -> None:
    with gateway.admin() as admin:
        books = admin.get("/admin/ledger").json()
    assert books["balanced"] is True
    for field in ("available", "held", "spent", "topups", "charges"):
        assert isinstance(books[field], int)
    assert books["topups"] == books["available"] + books["held"] + books["charges"]
