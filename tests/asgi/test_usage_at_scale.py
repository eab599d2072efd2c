"""Usage at scale, in process: summaries from the daily rollups agree with the raw rows, and raw rows
past the retention window go in small batches while the rollups and recent rows stay."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.money.drivers import SqlDriver
from app.retention import Pass, UsageRetention
from tests.asgi.conftest import MakeHarness
from tests.support.inprocess import Harness

PRO, MINI = "doubao-seed-2.0-pro", "doubao-seed-2.0-mini"
FIGURES = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}]}


async def send(harness: Harness, key: str, model: str, count: int, usage: dict[str, Any]) -> None:
    harness.upstream.enqueue(*[{"usage": usage} for _ in range(count)])
    async with harness.client(key) as client:
        for _ in range(count):
            assert (await client.post("/v1/chat/completions", json=chat(model))).status_code == 200


async def summary(harness: Harness, **params: str) -> dict[str, Any]:
    async with harness.admin() as admin:
        response = await admin.get("/admin/usage/summary", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def totals_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(FIGURES, 0)
    out["cost_usd"] = Decimal(0)
    for row in rows:
        out["requests"] += 1
        for name in FIGURES[1:]:
            out[name] += row[name]
        out["cost_usd"] += Decimal(row["cost_usd"])
    return out


def figures(entry: dict[str, Any]) -> dict[str, Any]:
    return {**{name: entry[name] for name in FIGURES}, "cost_usd": Decimal(entry["cost_usd"])}


async def test_usage_summary_matches_the_raw_rows_by_key_model_and_day(make_harness: MakeHarness) -> None:
    async with make_harness() as harness:
        first_id, first = await harness.create_key("10")
        second_id, second = await harness.create_key("10")
        await send(harness, first, PRO, 3, {"prompt_tokens": 10, "completion_tokens": 5})
        await send(harness, first, MINI, 2, {"prompt_tokens": 7, "completion_tokens": 3})
        await send(
            harness,
            second,
            PRO,
            1,
            {
                "prompt_tokens": 100,
                "completion_tokens": 50,
                "completion_tokens_details": {"reasoning_tokens": 20},
                "prompt_tokens_details": {"cached_tokens": 40},
            },
        )
        assert await harness.ledger_balanced()
        raw = {key_id: await harness.usage(key_id) for key_id in (first_id, second_id)}
        expected: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for key_id, rows in raw.items():
            for row in rows:
                expected[(key_id, row["model"])].append(row)

        by_key_model = await summary(harness, group_by="key,model")
        got = {(entry["key_id"], entry["model"]): figures(entry) for entry in by_key_model["data"]}
        assert got == {pair: totals_of(rows) for pair, rows in expected.items()}
        assert figures(by_key_model["totals"]) == totals_of([r for rows in raw.values() for r in rows])

        today = datetime.now(UTC).date().isoformat()
        by_day = await summary(harness, key_id=first_id, model=PRO, **{"from": today, "to": today})
        assert [entry["day"] for entry in by_day["data"]] == [today]
        assert figures(by_day["data"][0]) == totals_of(expected[(first_id, PRO)])

        no_group = await summary(harness, group_by="", model=MINI)
        assert no_group["data"] == []
        assert figures(no_group["totals"]) == totals_of(expected[(first_id, MINI)])

        long_ago = await summary(harness, **{"from": "2020-01-01", "to": "2020-01-31"})
        assert (long_ago["data"], long_ago["totals"]["requests"]) == ([], 0)


async def test_usage_summary_refuses_bad_ranges_and_groupings_with_400(harness: Harness) -> None:
    async with harness.admin() as admin:
        for params in (
            {"from": "2026-12-07", "to": "2026-12-01"},
            {"from": "yesterday"},
            {"from": "0001-01-01"},
            {"group_by": "day,secret"},
            {"group_by": "day,day"},
            {"limit": "0"},
            {"limit": "many"},
        ):
            response = await admin.get("/admin/usage/summary", params=params)
            assert response.status_code == 400, (params, response.text)
            assert response.json()["error"]["type"] == "invalid_request_error"
    async with harness.client("sk-not-the-master-key-000000000000") as stranger:
        assert (await stranger.get("/admin/usage/summary")).status_code == 401


def _age_rows(db_path: str, key_id: str, count: int, created: datetime) -> None:
    """Raw rows of long ago (their rollups are not the point here: retention must not touch any)."""
    rows = [
        (
            f"old-{key_id}-{i}",
            key_id,
            PRO,
            "chat.completions",
            0,
            1,
            1,
            0,
            0,
            10,
            0,
            "ok",
            0,
            0,
            "request",
            created.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds"),
        )
        for i in range(count)
    ]
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO usage (request_id, key_id, model, endpoint, stream, prompt_tokens, completion_tokens,"
            " reasoning_tokens, cached_tokens, cost, shortfall, status, partial, estimated, source, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def _counts(db_path: str) -> tuple[int, list[tuple[Any, ...]]]:
    with sqlite3.connect(db_path) as conn:
        [(raw,)] = conn.execute("SELECT COUNT(*) FROM usage").fetchall()
        rollups = conn.execute("SELECT * FROM usage_daily ORDER BY day, key_id, model").fetchall()
    return raw, rollups


async def test_retention_deletes_old_raw_rows_in_batches_and_keeps_rollups_and_recent_rows(
    make_harness: MakeHarness,
) -> None:
    async with make_harness() as harness:
        key_id, key = await harness.create_key("10")
        await send(harness, key, PRO, 2, {"prompt_tokens": 10, "completion_tokens": 5})
        assert await harness.ledger_balanced()
        db_path = harness.settings.database.url.split("///", 1)[1]
        now = datetime.now(UTC)
        _age_rows(db_path, key_id, 2_345, now - timedelta(days=91))
        raw_before, rollups_before = _counts(db_path)
        assert raw_before == 2_347

        retention = UsageRetention(harness.services.db, days=90, batch_rows=1_000, pause_seconds=0)
        done = await retention.prune(now)

        assert (done.rows, done.batches) == (2_345, 3)  # 1000 + 1000 + 345, one transaction each
        raw_after, rollups_after = _counts(db_path)
        assert raw_after == 2
        assert rollups_after == rollups_before
        assert [row["request_id"].startswith("req_") for row in await harness.usage(key_id)] == [True, True]
        assert (await retention.prune(now)).rows == 0


async def test_retention_on_the_sqlalchemy_path_and_its_schedule(make_harness: MakeHarness) -> None:
    async with make_harness() as harness:
        key_id, _ = await harness.create_key("10")
        db_path = harness.settings.database.url.split("///", 1)[1]
        now = datetime.now(UTC)
        _age_rows(db_path, key_id, 30, now - timedelta(days=8))
        clock = [0.0]
        retention = UsageRetention(
            harness.services.db,
            days=7,
            batch_rows=8,
            pause_seconds=0,
            interval_seconds=10,
            clock=lambda: clock[0],
            driver=SqlDriver(harness.services.db),
        )
        retention.tick(now)  # not due yet: nothing starts
        assert retention._task is None
        clock[0] = 10.0
        retention.tick(now)
        task = retention._task
        assert task is not None
        assert await task == Pass(30, 4)
        assert _counts(db_path)[0] == 0
        retention.tick(now)  # the next pass waits for the interval
        assert retention._task is task
        await retention.aclose()


def _rollups(db_path: str, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO usage_daily (day, key_id, model, requests, partial, prompt_tokens, completion_tokens,"
            " reasoning_tokens, cached_tokens, cost) VALUES (?, ?, ?, ?, 0, ?, ?, 0, 0, ?)",
            rows,
        )


async def test_summaries_of_final_days_from_memory_agree_with_the_rollups_and_recent_days_stay_live(
    harness: Harness,
) -> None:
    db_path = harness.settings.database.url.split("///", 1)[1]
    today = datetime.now(UTC).date()
    day = [(today - timedelta(days=n)).isoformat() for n in range(6)]
    _rollups(
        db_path,
        [
            (day[5], "key_a", PRO, 3, 30, 6, 3_000),
            (day[5], "key_b", PRO, 1, 10, 2, 1_000),
            (day[4], "key_a", MINI, 2, 20, 4, 500),
            (day[2], "key_b", MINI, 5, 50, 10, 2_000),
            (day[1], "key_a", PRO, 7, 70, 14, 7_000),  # yesterday: not final yet
        ],
    )
    span = {"from": day[5], "to": day[0]}
    by_day = await summary(harness, group_by="day", **span)  # served from the in-memory final days
    by_key = await summary(harness, group_by="day,key", **span)  # served by SQL, per key
    per_day: dict[str, int] = defaultdict(int)
    for entry in by_key["data"]:
        per_day[entry["day"]] += entry["requests"]
    assert (
        {entry["day"]: entry["requests"] for entry in by_day["data"]}
        == per_day
        == {day[5]: 4, day[4]: 2, day[2]: 5, day[1]: 7}
    )
    assert by_day["totals"] == by_key["totals"]
    assert by_day["totals"]["cost_usd"] == "0.0000000135"
    by_model = await summary(harness, group_by="model", model=MINI, **span)
    assert [(e["model"], e["requests"], e["prompt_tokens"]) for e in by_model["data"]] == [(MINI, 7, 70)]

    _rollups(db_path, [(day[1], "key_b", PRO, 1, 10, 2, 1_000), (day[0], "key_b", PRO, 2, 20, 4, 2_000)])
    again = await summary(harness, group_by="day", **span)
    assert {entry["day"]: entry["requests"] for entry in again["data"]}[day[1]] == 8
    assert {entry["day"]: entry["requests"] for entry in again["data"]}[day[0]] == 2
    assert again["totals"]["requests"] == 21
