import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.db import Database
from app.errors import AuthenticationFailed, InsufficientBalance, MonthlyQuotaExceeded
from app.money.ledger import Hold, Ledger, Settlement, UsageRecord, current_month
from app.money.units import UNITS_PER_USD
from app.tables import api_keys, holds, instances, usage
from app.tables import ledger as ledger_table
from tests.db.conftest import OWNER, Books, MakeLedger

USD = UNITS_PER_USD


def record(cost: int, **fields: object) -> UsageRecord:
    values: dict[str, object] = {
        "model": "doubao-seed-2.0-pro",
        "upstream": "ark",
        "upstream_model": "doubao-seed-2-0-pro-260215",
        "endpoint": "chat.completions",
        "stream": False,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "reasoning_tokens": 5,
        "cached_tokens": 10,
        "cost": cost,
        "status": "ok",
        "latency_ms": 12,
    }
    values.update(fields)
    return UsageRecord(**values)  # type: ignore[arg-type]


async def reserve(ledger: Ledger, key_id: str, amount: int, *, estimate: int = 0) -> Hold:
    return await ledger.reserve(
        key_id=key_id,
        request_id="req_" + uuid.uuid4().hex,
        model="doubao-seed-2.0-pro",
        amount=amount,
        prompt_tokens_estimate=100,
        prompt_cost_estimate=estimate,
    )


async def recover(ledger: Ledger, books: Books) -> int:
    # on the writer-thread path a reserve is acknowledged before its COMMIT; a dead owner's holds were
    # committed long before anyone recovers them, so wait for the commit as the real world would
    await books.settled()
    return await ledger.recover(dead_after=30)


async def set_columns(db: Database, table: object, where: object, **values: object) -> None:
    async with db.write() as conn:
        await conn.execute(update(table).where(where).values(**values))  # type: ignore[arg-type]


# -- reserve -------------------------------------------------------------------------------------


async def test_reserve_moves_the_hold_from_available_to_held(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    before = datetime.now(UTC)
    hold = await reserve(ledger, key, 3 * USD, estimate=USD)
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (7 * USD, 3 * USD, 0)
    [stored] = await books.rows(holds, request_id=hold.request_id)
    assert (stored.status, stored.amount, stored.owner, stored.prompt_cost_estimate) == ("held", 3 * USD, OWNER, USD)
    assert before + timedelta(seconds=3590) < stored.expires_at < before + timedelta(seconds=3700)
    await books.check()


async def test_reserve_of_the_whole_balance_succeeds(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("2.5")
    await reserve(ledger, key, 2_500_000_000_000)
    assert (await books.key(key)).available == 0
    await books.check()


async def test_reserve_above_the_balance_is_402_and_changes_nothing(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("1")
    with pytest.raises(InsufficientBalance) as info:
        await reserve(ledger, key, USD + 1)
    assert info.value.status == 402
    assert "$1.000000000001" in info.value.message
    row = await books.key(key)
    assert (row.available, row.held) == (USD, 0)
    assert await books.rows(holds, key_id=key) == []
    await books.check()


async def test_reserve_on_an_unknown_key_is_refused(books: Books, ledger: Ledger) -> None:
    with pytest.raises(AuthenticationFailed):
        await reserve(ledger, "key_missing", 1)
    await books.check()


async def test_monthly_quota_counts_spend_and_open_holds(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10", monthly_quota_usd="1")
    first = await reserve(ledger, key, 600_000_000_000)
    with pytest.raises(MonthlyQuotaExceeded) as info:
        await reserve(ledger, key, 600_000_000_000)  # 0.6 held + 0.6 > 1
    assert info.value.status == 429
    assert info.value.headers == {"x-should-retry": "false"}
    await ledger.settle(first, record(500_000_000_000))
    with pytest.raises(MonthlyQuotaExceeded):
        await reserve(ledger, key, 600_000_000_000)  # 0.5 spent + 0.6 > 1
    await reserve(ledger, key, 500_000_000_000)  # 0.5 spent + 0.5 == 1: allowed
    row = await books.key(key)
    assert (row.quota_month, row.quota_spent, row.held) == (
        current_month(datetime.now(UTC)),
        500_000_000_000,
        5 * 10**11,
    )
    await books.check()


async def test_a_new_month_resets_the_quota_spend(books: Books, ledger: Ledger, db: Database) -> None:
    key = await books.new_key("10", monthly_quota_usd="1")
    await set_columns(db, api_keys, api_keys.c.id == key, quota_month="2000-01", quota_spent=USD)
    hold = await reserve(ledger, key, USD)  # last month's full spend does not count
    row = await books.key(key)
    assert (row.quota_month, row.quota_spent) == (current_month(datetime.now(UTC)), 0)
    await ledger.settle(hold, record(USD // 4))
    assert (await books.key(key)).quota_spent == USD // 4
    await books.check()


async def test_settle_in_a_new_month_starts_the_spend_from_the_charge(
    books: Books, ledger: Ledger, db: Database
) -> None:
    key = await books.new_key("10", monthly_quota_usd="5")
    hold = await reserve(ledger, key, USD)
    await set_columns(db, api_keys, api_keys.c.id == key, quota_month="2000-01", quota_spent=3 * USD)
    await ledger.settle(hold, record(USD // 2))
    row = await books.key(key)
    assert (row.quota_month, row.quota_spent) == (current_month(datetime.now(UTC)), USD // 2)
    await books.check()


# -- settle and release --------------------------------------------------------------------------


async def test_settle_charges_exactly_and_writes_one_charge_and_one_usage_row(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 2 * USD)
    cost = 1_234_567_890_123
    assert await ledger.settle(hold, record(cost)) == Settlement(charged=cost, shortfall=0)
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


async def test_zero_cost_is_a_real_settlement(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("1")
    hold = await reserve(ledger, key, USD)
    assert await ledger.settle(hold, record(0, prompt_tokens=0, completion_tokens=0)) == Settlement(0, 0)
    assert (await books.key(key)).available == USD
    assert len(await books.rows(usage, request_id=hold.request_id)) == 1
    await books.check()


async def test_second_settle_returns_none_and_changes_nothing(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 2 * USD)
    await ledger.settle(hold, record(USD))
    before = await books.check()
    assert await ledger.settle(hold, record(USD)) is None
    assert await ledger.settle(hold, record(5 * USD)) is None
    assert await books.check() == before
    assert len(await books.rows(usage, key_id=key)) == 1
    assert len(await books.rows(ledger_table, key_id=key, kind="charge")) == 1


async def test_concurrent_settles_of_one_hold_charge_once(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 2 * USD)
    results = await asyncio.gather(*(ledger.settle(hold, record(USD)) for _ in range(10)))
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
    await ledger.settle(hold, record(USD))
    before = await books.check()
    assert not await ledger.release(hold)
    assert await books.check() == before
    assert (await books.key(key)).available == 9 * USD


async def test_settle_after_release_does_nothing(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 4 * USD)
    await ledger.release(hold)
    assert await ledger.settle(hold, record(USD)) is None
    assert (await books.key(key)).available == 10 * USD
    await books.check()


async def test_cost_above_the_hold_is_charged_from_the_rest_of_the_balance(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 4 * USD)
    assert await ledger.settle(hold, record(7 * USD)) == Settlement(7 * USD, 0)
    assert (await books.key(key)).available == 3 * USD
    await books.check()


async def test_cost_above_everything_charges_down_to_zero_and_records_the_shortfall(
    books: Books, ledger: Ledger
) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, 4 * USD)
    assert await ledger.settle(hold, record(15 * USD)) == Settlement(charged=10 * USD, shortfall=5 * USD)
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (0, 0, 10 * USD)
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.cost, used.shortfall) == (10 * USD, 5 * USD)
    await books.check()


async def test_shortfall_never_takes_money_reserved_by_other_requests(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    other = await reserve(ledger, key, 6 * USD)
    hold = await reserve(ledger, key, 4 * USD)
    assert await ledger.settle(hold, record(9 * USD)) == Settlement(4 * USD, 5 * USD)
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


# -- concurrency ---------------------------------------------------------------------------------


async def test_concurrent_reserves_never_overdraw_the_balance(books: Books, ledger: Ledger) -> None:
    amount = 150_000_000_000
    key = await books.new_key("1.05")  # exactly 7 holds of 0.15
    results = await asyncio.gather(*(reserve(ledger, key, amount) for _ in range(50)), return_exceptions=True)
    won = [r for r in results if isinstance(r, Hold)]
    lost = [r for r in results if not isinstance(r, Hold)]
    assert len(won) == 7
    assert len(lost) == 43
    assert all(isinstance(r, InsufficientBalance) for r in lost)
    row = await books.key(key)
    assert (row.available, row.held) == (0, 7 * amount)
    await books.check()
    # settle and release them concurrently too: every hold ends exactly once
    outcomes = await asyncio.gather(
        *(ledger.settle(h, record(amount // 3)) if i % 2 else ledger.release(h) for i, h in enumerate(won))
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
        results = await asyncio.gather(
            *(reserve(ledgers[i % 2], key, USD // 4) for i in range(12)), return_exceptions=True
        )
    finally:
        await second.dispose()
    assert sum(isinstance(r, Hold) for r in results) == 4
    assert (await books.key(key)).available == 0
    await books.check()


# -- recovery ------------------------------------------------------------------------------------


async def test_recover_settles_holds_of_dead_owners_once(books: Books, db: Database, make_ledger: MakeLedger) -> None:
    key = await books.new_key("10")
    dead = make_ledger("dead-instance")  # never heart-beats
    survivor = make_ledger("survivor")
    await survivor.heartbeat()
    hold = await reserve(dead, key, 3 * USD, estimate=USD // 2)
    assert await recover(survivor, books) == 1
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (10 * USD - USD // 2, 0, USD // 2)
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.source, used.status, used.partial, used.estimated, used.cost) == (
        "recovery",
        "recovered",
        True,
        True,
        USD // 2,
    )
    before = await books.check()
    assert await recover(survivor, books) == 0
    assert await books.check() == before
    assert await dead.settle(hold, record(USD)) is None  # the dead owner coming back cannot charge twice


async def test_recover_settles_owners_whose_heartbeat_stopped(
    books: Books, db: Database, make_ledger: MakeLedger
) -> None:
    key = await books.new_key("10")
    stale = make_ledger("stale")
    await stale.heartbeat()
    await reserve(stale, key, USD, estimate=USD // 10)
    survivor = make_ledger("survivor")
    assert await recover(survivor, books) == 0  # still alive
    old = datetime.now(UTC) - timedelta(seconds=120)
    await set_columns(db, instances, instances.c.id == "stale", heartbeat_at=old)
    assert await recover(survivor, books) == 1
    assert (await books.key(key)).spent == USD // 10
    await books.check()


async def test_recover_leaves_fresh_holds_of_live_owners_alone(
    books: Books, db: Database, ledger: Ledger, make_ledger: MakeLedger
) -> None:
    key = await books.new_key("10")
    live = make_ledger("live")
    await live.heartbeat()
    theirs = await reserve(live, key, USD)
    mine = await reserve(ledger, key, USD)  # the recovering process's own fresh hold
    assert await recover(ledger, books) == 0
    assert {r.status for r in await books.rows(holds, key_id=key)} == {"held"}
    row = await books.key(key)
    assert (row.available, row.held) == (8 * USD, 2 * USD)
    assert await live.settle(theirs, record(USD // 2)) is not None
    assert await ledger.release(mine)
    await books.check()


async def test_recover_settles_expired_holds_even_of_live_owners(books: Books, db: Database, ledger: Ledger) -> None:
    key = await books.new_key("10")
    await ledger.heartbeat()
    hold = await reserve(ledger, key, USD, estimate=USD // 5)
    await set_columns(
        db, holds, holds.c.request_id == hold.request_id, expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert await recover(ledger, books) == 1
    assert await recover(ledger, books) == 0
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (10 * USD - USD // 5, 0, USD // 5)
    await books.check()


async def test_recovery_charge_above_the_balance_is_capped(books: Books, db: Database, make_ledger: MakeLedger) -> None:
    key = await books.new_key("1")
    dead = make_ledger("dead")
    hold = await reserve(dead, key, USD // 2, estimate=3 * USD)  # estimate larger than everything
    assert await recover(make_ledger("other"), books) == 1
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.cost, used.shortfall) == (USD, 2 * USD)
    assert (await books.key(key)).available == 0
    await books.check()


async def test_concurrent_recoveries_settle_each_hold_once(books: Books, db: Database, make_ledger: MakeLedger) -> None:
    key = await books.new_key("10")
    dead = make_ledger("dead")
    for _ in range(5):
        await reserve(dead, key, USD, estimate=USD // 10)
    rescuers = [make_ledger(f"rescuer-{i}") for i in range(4)]
    counts = await asyncio.gather(*(recover(r, books) for r in rescuers))
    assert sum(counts) == 5
    assert (await books.key(key)).spent == 5 * (USD // 10)
    assert len(await books.rows(usage, key_id=key)) == 5
    await books.check()
