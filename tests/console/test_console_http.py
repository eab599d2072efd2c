"""The console over HTTP, in process: sign-in, sessions, CSRF, security headers, pages and the CSV export."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from sqlalchemy import select

from app.console import sessions
from app.tables import console_sessions
from tests.console.conftest import csrf_of, sign_in
from tests.support.gateway import MASTER_KEY
from tests.support.inprocess import Harness, inprocess_settings


async def test_pages_redirect_to_sign_in_without_a_session(harness: Harness) -> None:
    async with harness.client() as client:
        for path in ("/console", "/console/keys", "/console/usage", "/console/upstreams", "/console/alerts"):
            response = await client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/console/login"


async def test_wrong_master_key_is_refused_in_place(harness: Harness) -> None:
    async with harness.client() as client:
        response = await sign_in(client, "not-the-master-key-0123456789")
        assert response.status_code == 401
        assert "That is not the master key." in response.text
        assert "sg_console" not in response.headers.get("set-cookie", "")
        assert (await client.get("/console")).status_code == 303


async def test_sign_in_sets_a_strict_httponly_cookie_and_stores_only_its_hash(harness: Harness) -> None:
    async with harness.client() as client:
        response = await sign_in(client)
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Path=/console" in cookie
        assert MASTER_KEY not in cookie
        token = client.cookies["sg_console"]
        overview = await client.get("/console")
        assert overview.status_code == 200
        assert MASTER_KEY not in overview.text
    async with harness.services.db.read() as conn:
        stored = (await conn.execute(select(console_sessions.c.token_hash))).scalars().all()
    assert len(stored) == 1
    assert stored[0] != token
    assert len(stored[0]) == 64


async def test_rotating_the_master_key_ends_the_sessions_opened_with_the_old_one(tmp_path: Path) -> None:
    database = tmp_path / "shared.db"
    async with Harness(inprocess_settings(database)) as before, before.client() as client:
        assert (await sign_in(client)).status_code == 303
        token = client.cookies["sg_console"]
        assert (await client.get("/console/keys")).status_code == 200
    new_key = "rotated-master-key-0123456789-abcdefgh"
    rotated = {"admin": {"master_key": new_key}}
    async with Harness(inprocess_settings(database, rotated)) as after, after.client() as client:
        client.cookies.set("sg_console", token, domain="gateway.test", path="/console")
        assert (await client.get("/console/keys")).status_code == 303  # to the sign-in page
        made = await client.post(
            "/console/keys", data={"csrf": sessions.csrf_for(token), "name": "x", "balance_usd": "9"}
        )
        assert made.status_code in (303, 403)
        async with after.client(new_key) as admin:
            assert (await admin.get("/admin/keys")).json()["data"] == []  # nothing was created


async def test_the_cookie_is_secure_behind_tls_at_a_trusted_proxy(harness: Harness) -> None:
    async with harness.client() as plain:
        assert "Secure" not in (await plain.get("/console/login")).headers["set-cookie"]
    async with harness.client(**{"x-forwarded-proto": "https"}) as proxied:  # the peer, 127.0.0.1, is trusted
        assert "Secure" in (await proxied.get("/console/login")).headers["set-cookie"]


async def test_every_page_has_a_strict_csp_and_no_external_asset(harness: Harness) -> None:
    async with harness.client() as client:
        await sign_in(client)
        for path in ("/console", "/console/keys", "/console/usage", "/console/upstreams", "/console/alerts", "/me"):
            response = await client.get(path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp
            assert "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp
            assert response.headers["x-frame-options"] == "DENY"
            assert "http://" not in response.text
            assert "https://" not in response.text
            assert " style=" not in response.text
            assert "<script>" not in response.text


async def test_only_the_consoles_own_files_are_served_as_static(harness: Harness) -> None:
    async with harness.client() as client:
        for name in ("console.css", "console.js"):
            response = await client.get(f"/console/static/{name}")
            assert response.status_code == 200
            assert b"http://" not in response.content
            assert b"https://" not in response.content
        assert (await client.get("/console/static/..%2F..%2Fsettings.py")).status_code == 404
        assert (await client.get("/console/static/login.html")).status_code == 404


async def test_a_post_without_the_csrf_token_is_refused(harness: Harness) -> None:
    async with harness.client() as client:
        await sign_in(client)
        missing = await client.post("/console/keys", data={"name": "sneaky", "balance_usd": "5"})
        wrong = await client.post("/console/keys", data={"name": "sneaky", "balance_usd": "5", "csrf": "0" * 64})
        assert missing.status_code == 403
        assert wrong.status_code == 403
        no_login_csrf = await client.post("/console/login", data={"master_key": MASTER_KEY})
        assert no_login_csrf.status_code == 403
    async with harness.admin() as admin:
        assert (await admin.get("/admin/keys")).json()["data"] == []


async def test_bad_form_input_is_shown_in_place(harness: Harness) -> None:
    async with harness.client() as client:
        await sign_in(client)
        page = await client.get("/console/keys")
        response = await client.post(
            "/console/keys", data={"csrf": csrf_of(page), "name": "x", "balance_usd": "lots", "models": ""}
        )
        assert response.status_code == 400
        assert "balance_usd: not an amount in USD" in response.text
        unknown = await client.post("/console/keys", data={"csrf": csrf_of(page), "name": "x", "models": "gpt-nope"})
        assert unknown.status_code == 400
        assert "unknown model" in unknown.text
        assert (await client.get("/console/keys/key%00")).status_code == 404
        assert (await client.get("/console/keys", params={"q": "a\x00"})).status_code == 200
        nul = await client.get("/console/usage", params={"key_id": "key\x00"})
        assert nul.status_code == 400
        assert "control characters" in nul.text
        bad_date = await client.get("/console/usage", params={"since": "yesterday"})
        assert bad_date.status_code == 400
        assert "since: expected a date" in bad_date.text


async def test_sign_out_ends_the_session(harness: Harness) -> None:
    async with harness.client() as client:
        await sign_in(client)
        page = await client.get("/console")
        token = client.cookies["sg_console"]
        response = await client.post("/console/logout", data={"csrf": csrf_of(page)})
        assert response.status_code == 303
        client.cookies.set("sg_console", token, path="/console")  # a copied cookie is dead too
        assert (await client.get("/console")).status_code == 303


async def test_key_lifecycle_and_csv_export_through_the_forms(harness: Harness) -> None:
    async with harness.client() as client:
        await sign_in(client)
        page = await client.get("/console/keys")
        created = await client.post("/console/keys", data={"csrf": csrf_of(page), "name": "team-a", "balance_usd": "2"})
        assert created.status_code == 200
        assert "shown only once" in created.text
        key = created.text.split('id="new-key">')[1].split("<")[0]
        key_id = created.text.split('href="/console/keys/')[1].split('"')[0]
        async with harness.client(key) as api:
            answer = await api.post(
                "/v1/chat/completions",
                json={"model": "doubao-seed-2.0-pro", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert answer.status_code == 200
        detail = await client.get(f"/console/keys/{key_id}")
        csrf = csrf_of(detail)
        topped = await client.post(f"/console/keys/{key_id}/topup", data={"csrf": csrf, "amount_usd": "3"})
        assert topped.status_code == 303
        detail = await client.get(topped.headers["location"])
        assert "Balance topped up." in detail.text
        assert (await harness.key(key_id))["topped_up_usd"] == "5.00"
        edited = await client.post(
            f"/console/keys/{key_id}/edit", data={"csrf": csrf, "name": "team-b", "rpm": "60", "models": "pro-latest"}
        )
        assert edited.status_code == 303
        view = await harness.key(key_id)
        assert (view["name"], view["rpm"], view["models"]) == ("team-b", 60, ["doubao-seed-2.0-pro"])
        export = await client.get("/console/usage.csv", params={"key_id": key_id})
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert export.headers["content-type"].startswith("text/csv")
        assert [r["key_id"] for r in rows] == [key_id]
        assert rows[0]["status"] == "ok"
        revoked = await client.post(f"/console/keys/{key_id}/revoke", data={"csrf": csrf})
        assert revoked.status_code == 303
        assert (await harness.key(key_id))["revoked"] is True
