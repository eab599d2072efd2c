"""Hostile query strings and path ids against the reads of a real gateway -- the admin API's lists and
summaries, a key's stored responses, the models, the console's pages -- and hostile console forms.

Hypothesis fills each route's parameters with the right kind of value or anything else (dates that are
not, limits past every bound or negative, numbers in words, percent-encoded control characters, ids of
every shape), a bounded number of them. Every answer is the route's own: a 2xx, or a 4xx in the
route's envelope (JSON error object; the console's HTML pages and redirects), never a 500 or a 422.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway import MASTER_KEY, GatewayProcess

MAX_EXAMPLES = 60

words = st.text(max_size=24) | st.sampled_from(["", "0", "-1", "1e3", "abc", "%00", "\x00", "../", "NaN"])
numbers = st.integers(-(2**65), 2**65).map(str) | words
dates = (
    st.dates().map(str)
    | st.datetimes().map(lambda moment: moment.isoformat())
    | st.sampled_from(["2026-02-30", "9999-12-31", "0001-01-01", "today", "2026-13-01T00:00:00Z"])
    | words
)
usage_filters = {"key_id": words, "model": words, "status": words, "since": dates, "until": dates}
READS: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "/admin/keys": {"limit": numbers, "offset": numbers},
    "/admin/usage": {"key_id": words, "limit": numbers, "offset": numbers},
    "/admin/usage.csv": {"key_id": words, "model": words, "status": words, "since": dates, "until": dates},
    "/admin/usage/summary": {
        "from": dates,
        "to": dates,
        "group_by": st.sampled_from(["day", "key", "model", "day,key", "key,model", "hour"]) | words,
        "key_id": words,
        "model": words,
        "limit": numbers,
    },
    "/admin/alerts": {"key_id": words},
    "/admin/policy-events": {"key_id": words, "limit": numbers},
    "/admin/upstream-errors": {"request_id": words, "limit": numbers},
    # the console's pages, signed in
    "/console/usage": usage_filters | {"page_no": numbers},
    "/console/usage.csv": usage_filters,
    "/console/keys": {"q": words},
}
ids = st.text(max_size=40) | words


def queries(path: str) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({}, optional=READS[path])


def assert_answered(response: httpx.Response) -> None:
    assert response.status_code not in (422, 500), response.text
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
        error = response.json()["error"]
        assert error["message"], error


def test_hostile_queries_and_ids_get_the_routes_own_answers(gateway: GatewayProcess) -> None:
    _, key = gateway.create_key("5")
    started = time.monotonic()
    with gateway.admin() as admin, httpx.Client(base_url=gateway.base_url, timeout=15) as client:
        as_key = {"authorization": f"Bearer {key}"}
        form = client.get("/console/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, form.text[:300]
        signed_in = client.post("/console/login", data={"csrf": csrf.group(1), "master_key": MASTER_KEY})
        assert signed_in.status_code == 303, signed_in.text[:300]

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(path=st.sampled_from(list(READS)), data=st.data(), raw_id=ids)
        def one(path: str, data: Any, raw_id: str) -> None:
            some_id = quote(raw_id, safe="")  # a path segment: control characters and slashes percent-encoded
            reader = client if path.startswith("/console") else admin
            assert_answered(reader.get(path, params=data.draw(queries(path)), follow_redirects=False))
            assert_answered(admin.get(f"/admin/keys/{some_id}"))
            assert_answered(client.get(f"/v1/responses/{some_id}", headers=as_key))
            assert_answered(client.delete(f"/v1/responses/{some_id}", headers=as_key))
            assert_answered(client.get(f"/v1/models/{some_id}", headers=as_key))
            assert_answered(client.get(f"/console/keys/{some_id}", params={"done": raw_id}, follow_redirects=False))
            assert_answered(client.get(f"/console/static/{some_id}"))

        one()
    assert time.monotonic() - started < 120


money = (
    st.decimals(min_value=0, max_value=10**7, places=2).map(str)
    | st.sampled_from(["", "-1", "0", "0.001", "1e3", "1e30", "NaN", "Infinity", "99999999999999999999", "abc"])
    | words
)
FORMS: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "topup": {"amount_usd": money},
    "alert": {"threshold_usd": money},
    "edit": {
        "name": words,
        "models": st.sampled_from(["", "doubao-seed-2.0-pro", "no-such-model", "pro-latest, doubao-seed-2.0-mini"])
        | words,
        "rpm": numbers,
        "tpm": numbers,
        "max_concurrent": numbers,
        "monthly_quota_usd": money,
        "expires_at": dates,
    },
}


def test_hostile_console_forms_get_the_page_back_with_the_error(gateway: GatewayProcess) -> None:
    key_id, _ = gateway.create_key("5")
    started = time.monotonic()
    with httpx.Client(base_url=gateway.base_url, timeout=15) as client:
        form = client.get("/console/login")
        found = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert found, form.text[:300]
        assert client.post("/console/login", data={"csrf": found.group(1), "master_key": MASTER_KEY}).status_code == 303
        page = client.get(f"/console/keys/{key_id}")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text[:300]

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(action=st.sampled_from(list(FORMS)), data=st.data(), name=words, balance=money)
        def one(action: str, data: Any, name: str, balance: str) -> None:
            fields = data.draw(st.fixed_dictionaries({}, optional=FORMS[action]))
            sent = client.post(f"/console/keys/{key_id}/{action}", data={"csrf": csrf.group(1), **fields})
            assert_answered(sent)
            settings_fields = {k: v for k, v in fields.items() if k in FORMS["edit"] and k != "name"}
            new_key = {"csrf": csrf.group(1), "name": name, "balance_usd": balance, **settings_fields}
            assert_answered(client.post("/console/keys", data=new_key))

        one()
    assert time.monotonic() - started < 120
    totals = gateway.ledger()
    assert totals["balanced"], totals
