"""The ledger contract: reserve, settle, release, top up -- the same behaviour on every driver and database.

Each test runs on SQLAlchemy and on the SQLite group-commit writer (first pass), and on Postgres
(second pass); every one ends with the ledger invariant checked by ``Books.check``.
"""

import asyncio
from datetime import UTC, datetime

import pytest

from app.db import Database
from app.money.ledger import Ledger, TopUpRefused
from app.money.records import Refusal, Settlement
from app.money.transactions import month_of
from app.money.units import MAX_BALANCE_UNITS, MAX_TOPPED_UP_UNITS
from app.tables import api_keys, holds, usage, usage_daily
from app.tables import ledger as ledger_table
from tests.contract.ledger_support import USD, draft, make_hold, reserve, set_columns
from tests.support.books import OWNER, Books, MakeLedger

# -- reserve -------------------------------------------------------------------------------------


async def test_reserve_moves_the_hold_from_available_to_held(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 3 * USD, estimate=USD, output_price=7)
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (7 * USD, 3 * USD, 0)
    [stored] = await books.rows(holds, request_id=hold.request_id)
    assert (stored.status, stored.amount, stored.owner, stored.prompt_cost_estimate) == ("held", 3 * USD, OWNER, USD)
    assert (stored.output_price, stored.sent, stored.output_tokens) == (7, True, 0)  # it goes upstream next
    await books.check()


async def test_reserve_of_the_whole_balance_succeeds(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("2.5")
    await reserve(ledger, key, 2_500_000_000_000)
    assert (await books.key(key)).available == 0
    await books.check()


async def test_reserve_above_the_balance_is_refused_with_the_room_left(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("1")
    hold = make_hold(key, USD + 1)
    assert await ledger.reserve(hold) == Refusal("balance", available=USD, room=USD)
    row = await books.key(key)
    assert (row.available, row.held) == (USD, 0)
    assert await books.rows(holds, key_id=key) == []
    await books.check()


async def test_reserve_on_an_unknown_key_is_refused(books: Books, ledger: Ledger) -> None:
    assert await ledger.reserve(make_hold("key_missing", 1)) == Refusal("key", 0, 0)
    await books.check()


async def test_monthly_quota_counts_spend_and_open_holds(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10", monthly_quota_usd="1")
    first = await reserve(ledger, key, 600_000_000_000)
    refusal = await ledger.reserve(make_hold(key, 600_000_000_000))  # 0.6 held + 0.6 > 1
    assert refusal == Refusal("quota", available=10 * USD - 600_000_000_000, room=400_000_000_000)
    await ledger.settle(first, draft(first, 500_000_000_000))
    refusal = await ledger.reserve(make_hold(key, 600_000_000_000))  # 0.5 spent + 0.6 > 1
    assert refusal is not None
    assert (refusal.reason, refusal.room) == ("quota", 500_000_000_000)
    await reserve(ledger, key, 500_000_000_000)  # 0.5 spent + 0.5 == 1: allowed
    row = await books.key(key)
    assert (row.quota_month, row.quota_spent, row.held) == (month_of(datetime.now(UTC)), 500_000_000_000, 5 * 10**11)
    await books.check()


async def test_short_balance_and_short_quota_together_is_a_balance_refusal(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("1", monthly_quota_usd="0.5")
    assert await ledger.reserve(make_hold(key, 2 * USD)) == Refusal("balance", available=USD, room=USD // 2)


async def test_a_new_month_resets_the_quota_spend(books: Books, ledger: Ledger, db: Database) -> None:
    key = await books.new_key("10", monthly_quota_usd="1")
    await set_columns(db, api_keys, api_keys.c.id == key, quota_month="2000-01", quota_spent=USD)
    hold = await reserve(ledger, key, USD)  # last month's full spend does not count
    row = await books.key(key)
    assert (row.quota_month, row.quota_spent) == (month_of(datetime.now(UTC)), 0)
    await ledger.settle(hold, draft(hold, USD // 4))
    assert (await books.key(key)).quota_spent == USD // 4
    await books.check()


async def test_settle_in_a_new_month_starts_the_spend_from_the_charge(
    books: Books, ledger: Ledger, db: Database
) -> None:
    key = await books.new_key("10", monthly_quota_usd="5")
    hold = await reserve(ledger, key, USD)
    await set_columns(db, api_keys, api_keys.c.id == key, quota_month="2000-01", quota_spent=3 * USD)
    await ledger.settle(hold, draft(hold, USD // 2))
    row = await books.key(key)
    assert (row.quota_month, row.quota_spent) == (month_of(datetime.now(UTC)), USD // 2)
    await books.check()


# -- settle and release --------------------------------------------------------------------------


async def test_settle_charges_exactly_and_writes_one_charge_and_one_usage_row(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 2 * USD)
    cost = 1_234_567_890_123
    assert await ledger.settle(hold, draft(hold, cost)) == Settlement(charged=cost, shortfall=0)
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (10 * USD - cost, 0, cost)
    [charge] = await books.rows(ledger_table, key_id=key, kind="charge")
    assert (charge.amount, charge.request_id) == (cost, hold.request_id)
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.key_id, used.cost, used.shortfall, used.source, used.status) == (key, cost, 0, "request", "ok")
    assert (used.prompt_tokens, used.completion_tokens, used.reasoning_tokens, used.cached_tokens) == (100, 20, 5, 10)
    assert (used.partial, used.estimated, used.latency_ms, used.upstream) == (False, False, 12, "ark")
    [stored] = await books.rows(holds, request_id=hold.request_id)
    assert stored.status == "settled"
    await books.check()


async def test_settlements_add_up_in_the_daily_rollup(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    first, second = await reserve(ledger, key, USD), await reserve(ledger, key, USD)
    await ledger.settle(first, draft(first, 1000))
    await ledger.settle(second, draft(second, 2000, partial=True, completion_tokens=7, status="client_disconnected"))
    [day] = await books.rows(usage_daily, key_id=key)
    assert (day.day, day.model, day.requests, day.partial, day.failed) == (
        datetime.now(UTC).date().isoformat(),
        "doubao-seed-2.0-pro",
        2,
        1,
        1,
    )
    assert (day.prompt_tokens, day.completion_tokens, day.reasoning_tokens, day.cached_tokens, day.cost) == (
        200,
        27,
        10,
        20,
        3000,
    )
    await books.check()


async def test_token_counts_beyond_32_bits_are_stored(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD)
    await ledger.settle(hold, draft(hold, 1, prompt_tokens=2**40, completion_tokens=2**33))
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.prompt_tokens, used.completion_tokens) == (2**40, 2**33)
    await books.check()


async def test_zero_cost_is_a_real_settlement(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("1")
    hold = await reserve(ledger, key, USD)
    assert await ledger.settle(hold, draft(hold, 0, prompt_tokens=0, completion_tokens=0)) == Settlement(0, 0)
    assert (await books.key(key)).available == USD
    assert len(await books.rows(usage, request_id=hold.request_id)) == 1
    await books.check()


async def test_second_settle_returns_none_and_changes_nothing(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 2 * USD)
    await ledger.settle(hold, draft(hold, USD))
    before = await books.check()
    assert await ledger.settle(hold, draft(hold, USD)) is None
    assert await ledger.settle(hold, draft(hold, 5 * USD)) is None
    assert await books.check() == before
    assert len(await books.rows(usage, key_id=key)) == 1
    assert len(await books.rows(ledger_table, key_id=key, kind="charge")) == 1


async def test_concurrent_settles_of_one_hold_charge_once(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 2 * USD)
    results = await asyncio.gather(*(ledger.settle(hold, draft(hold, USD)) for _ in range(10)))
    assert [r for r in results if r is not None] == [Settlement(USD, 0)]
    assert (await books.key(key)).available == 9 * USD
    await books.check()


async def test_release_gives_the_hold_back(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 4 * USD)
    assert await ledger.release(hold)
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (10 * USD, 0, 0)
    [stored] = await books.rows(holds, request_id=hold.request_id)
    assert stored.status == "released"
    assert await books.rows(usage, key_id=key) == []
    assert not await ledger.release(hold)  # twice: nothing more comes back
    assert (await books.key(key)).available == 10 * USD
    await books.check()


async def test_release_after_settle_does_nothing(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 4 * USD)
    await ledger.settle(hold, draft(hold, USD))
    before = await books.check()
    assert not await ledger.release(hold)
    assert await books.check() == before
    assert (await books.key(key)).available == 9 * USD


async def test_settle_after_release_does_nothing(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 4 * USD)
    await ledger.release(hold)
    assert await ledger.settle(hold, draft(hold, USD)) is None
    assert (await books.key(key)).available == 10 * USD
    await books.check()


async def test_cost_above_the_hold_is_charged_from_the_rest_of_the_balance(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 4 * USD)
    assert await ledger.settle(hold, draft(hold, 7 * USD)) == Settlement(7 * USD, 0)
    assert (await books.key(key)).available == 3 * USD
    await books.check()


async def test_cost_above_everything_charges_down_to_zero_and_records_the_shortfall(
    books: Books, ledger: Ledger
) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 4 * USD)
    assert await ledger.settle(hold, draft(hold, 15 * USD)) == Settlement(charged=10 * USD, shortfall=5 * USD)
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (0, 0, 10 * USD)
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.cost, used.shortfall) == (10 * USD, 5 * USD)
    await books.check()


async def test_shortfall_never_takes_money_reserved_by_other_requests(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    other = await reserve(ledger, key, 6 * USD)
    hold = await reserve(ledger, key, 4 * USD)
    assert await ledger.settle(hold, draft(hold, 9 * USD)) == Settlement(4 * USD, 5 * USD)
    row = await books.key(key)
    assert (row.available, row.held) == (0, 6 * USD)
    assert await ledger.release(other)
    assert (await books.key(key)).available == 6 * USD
    await books.check()


async def test_topup_adds_to_available_and_writes_a_ledger_row(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("1")
    await ledger.topup(key, 2 * USD, note="manual")
    row = await books.key(key)
    assert (row.available, row.topped_up) == (3 * USD, 3 * USD)
    assert sorted(r.amount for r in await books.rows(ledger_table, key_id=key, kind="topup")) == [USD, 2 * USD]
    with pytest.raises(KeyError):
        await ledger.topup("key_missing", USD)
    await books.check()


async def test_a_topup_past_the_balance_maximum_is_refused_and_changes_nothing(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("999999")
    with pytest.raises(TopUpRefused) as refused:
        await ledger.topup(key, 2 * USD)
    assert refused.value.reason == "balance"
    await ledger.topup(key, USD)  # exactly to the maximum
    row = await books.key(key)
    assert (row.available, row.topped_up) == (MAX_BALANCE_UNITS, MAX_BALANCE_UNITS)
    rows = await books.rows(ledger_table, key_id=key, kind="topup")
    assert sorted(r.amount for r in rows) == [USD, 999_999 * USD]  # the initial one and this: the refused, none
    await books.check()


async def test_a_topup_past_the_lifetime_maximum_is_refused_though_the_balance_has_room(
    books: Books, ledger: Ledger
) -> None:
    key = await books.new_key("0")
    # a key that has had nearly $9M and spent it (its own books kept whole: topped up == spent)
    await set_columns(
        books.db, api_keys, api_keys.c.id == key, topped_up=MAX_TOPPED_UP_UNITS - USD, spent=MAX_TOPPED_UP_UNITS - USD
    )
    with pytest.raises(TopUpRefused) as refused:
        await ledger.topup(key, 2 * USD)  # $2 more would pass $9M topped up over the key's life
    assert refused.value.reason == "lifetime"
    await ledger.topup(key, USD)
    row = await books.key(key)
    assert (row.available, row.topped_up) == (USD, MAX_TOPPED_UP_UNITS)


# -- concurrency ---------------------------------------------------------------------------------


async def test_concurrent_topups_never_pass_the_balance_maximum_together(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("0")
    amount = MAX_BALANCE_UNITS * 3 // 10  # each fits alone; three of them fit together, a fourth does not
    outcomes = await asyncio.gather(*(ledger.topup(key, amount) for _ in range(8)), return_exceptions=True)
    assert sum(outcome is None for outcome in outcomes) == 3
    assert all(outcome is None or isinstance(outcome, TopUpRefused) for outcome in outcomes)
    row = await books.key(key)
    assert (row.available, row.topped_up) == (3 * amount, 3 * amount)
    await books.check()


async def test_concurrent_reserves_never_overdraw_the_balance(books: Books, ledger: Ledger) -> None:
    amount = 150_000_000_000
    key = await books.new_key("1.05")  # exactly 7 holds of 0.15
    candidates = [make_hold(key, amount) for _ in range(50)]
    refusals = await asyncio.gather(*(ledger.reserve(h) for h in candidates))
    won = [h for h, refusal in zip(candidates, refusals, strict=True) if refusal is None]
    assert len(won) == 7
    assert all(r is None or r.reason == "balance" for r in refusals)
    row = await books.key(key)
    assert (row.available, row.held) == (0, 7 * amount)
    await books.check()
    # settle and release them concurrently too: every hold ends exactly once
    outcomes = await asyncio.gather(
        *(ledger.settle(h, draft(h, amount // 3)) if i % 2 else ledger.release(h) for i, h in enumerate(won))
    )
    assert all(outcomes)
    row = await books.key(key)
    assert (row.held, row.spent) == (0, 3 * (amount // 3))
    await books.check()


async def test_two_ledgers_on_two_engines_share_one_balance(books: Books, db_url: str, make_ledger: MakeLedger) -> None:
    key = await books.new_key("1")
    second = Database(db_url)
    try:
        ledgers = [make_ledger("a"), make_ledger("b", database=second)]
        refusals = await asyncio.gather(*(ledgers[i % 2].reserve(make_hold(key, USD // 4)) for i in range(12)))
    finally:
        await second.dispose()
    assert sum(r is None for r in refusals) == 4
    assert (await books.key(key)).available == 0
    await books.check()
