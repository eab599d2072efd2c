"""Hostile bodies against the admin API's writes of a real gateway: create, update and top up keys.

Hypothesis builds key specs around the schema (amounts as strings, numbers, exponents, negative and
sub-cent values, NaN and infinity; limits past 32 bits; datetimes at the ends of the calendar; names
with control characters; models that do not exist; unknown fields) and whole other JSON values, a
bounded number of them. Every refusal is the OpenAI envelope with a 400 -- never a 500 (a value the
database cannot store) or a 422 (FastAPI's own validation shape) -- and the books stay balanced.
"""

from __future__ import annotations

import time
from datetime import UTC
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway import GatewayProcess
from tests.support.hostile import json_values

MAX_EXAMPLES = 80


def mostly(good: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` three times in four: most bodies get past validation, to the database's own limits."""
    return st.one_of(good, good, good, hostile)


amounts = mostly(
    st.decimals(min_value=0, max_value=10**7, places=2).map(str),
    st.sampled_from(["-1", "0.001", "1e3", "1e9999", "NaN", "Infinity", "", " 1", "1,5", "99999999999"])
    | st.decimals(allow_nan=False, allow_infinity=False).map(str)
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_values,
)
limits = mostly(st.integers(1, 2**31 - 1), st.integers(-2, 2**40) | st.sampled_from([2**31, 2**63]) | json_values)
times = mostly(
    st.datetimes(timezones=st.just(UTC) | st.none()).map(lambda moment: moment.isoformat()),
    st.sampled_from(["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "2030-13-01", "now", ""]) | json_values,
)
names = mostly(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=20),
    st.text(max_size=20) | st.sampled_from(["\x00", "\u0085", "a\nb", "", "x" * 300]) | json_values,
)
models = mostly(
    st.lists(st.sampled_from(["doubao-seed-2.0-pro", "pro-latest", "doubao-seed-2.0-mini"]), max_size=3),
    st.lists(st.sampled_from(["no-such-model", "", "claude-*"]), min_size=1, max_size=2) | json_values,
)
settings_fields = {
    "models": models,
    "rpm": limits,
    "tpm": limits,
    "max_concurrent": limits,
    "monthly_quota_usd": amounts,
    "expires_at": times,
}
creates = mostly(
    st.fixed_dictionaries({"name": names}, optional={"balance_usd": amounts, **settings_fields}), json_values
)
updates = mostly(st.fixed_dictionaries({}, optional={"name": names, **settings_fields}), json_values)
topups = mostly(
    st.fixed_dictionaries({"amount_usd": amounts}),
    st.fixed_dictionaries({}, optional={"surprise": json_values}) | json_values,
)


def assert_answered(response: httpx.Response) -> None:
    assert response.status_code not in (422, 500), response.text
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}, error
        assert error["message"], error


def test_hostile_admin_writes_are_refused_in_the_envelope_and_keep_the_books(gateway: GatewayProcess) -> None:
    key_id, _ = gateway.create_key("5")
    started = time.monotonic()
    with gateway.admin() as admin:

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(create=creates, update=updates, topup=topups)
        def one(create: Any, update: Any, topup: Any) -> None:
            assert_answered(admin.post("/admin/keys", json=create))
            assert_answered(admin.patch(f"/admin/keys/{key_id}", json=update))
            assert_answered(admin.post(f"/admin/keys/{key_id}/topup", json=topup))

        one()
        assert admin.get(f"/admin/keys/{key_id}").status_code == 200  # the key is still there
    assert time.monotonic() - started < 120
    totals = gateway.ledger()
    assert totals["balanced"], totals
