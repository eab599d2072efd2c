"""Holds belong to a live owner: leases, checkpoints, recovery, late settlements, retried settlements."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from app.db import Database
from app.money.drivers import TxFactory
from app.money.leases import Leases
from app.money.ledger import Ledger
from app.money.records import Checkpoint, Settlement
from app.money.rules import Outcome
from app.money.transactions import month_of
from app.tables import api_keys, holds, usage, usage_daily
from app.tables import ledger as ledger_table
from tests.contract.ledger_support import USD, draft, reserve, set_columns
from tests.support.books import Books, MakeLedger

T = TypeVar("T")
PRICE = 1_000_000  # units per output token


def past() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=1)


async def lapse(ledger: Ledger, request_id: str, *, sent: bool, output_tokens: int) -> None:
    """The last checkpoint a process wrote before it died: its lease then runs out."""
    await ledger.checkpoint([Checkpoint(request_id, sent, output_tokens, past())])


async def recover(ledger: Ledger, books: Books) -> int:
    await books.settled()
    return await ledger.recover()


async def test_a_live_lease_is_never_recovered(books: Books, ledger: Ledger, make_ledger: MakeLedger) -> None:
    key = await books.new_key("10")
    await reserve(ledger, key, USD, estimate=USD // 10)
    assert await recover(make_ledger("other"), books) == 0
    assert await recover(ledger, books) == 0
    assert {r.status for r in await books.rows(holds, key_id=key)} == {"held"}
    await books.check()


async def test_a_hold_that_never_reached_the_upstream_is_released_by_recovery(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD, estimate=USD // 10)
    await lapse(ledger, hold.request_id, sent=False, output_tokens=0)
    assert await recover(ledger, books) == 1
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (10 * USD, 0, 0)
    assert await books.rows(usage, key_id=key) == []
    [stored] = await books.rows(holds, request_id=hold.request_id)
    assert stored.status == "recovered"
    await books.check()


async def test_recovery_names_each_key_it_charged_and_only_those(books: Books, ledger: Ledger) -> None:
    charged_key, released_key = await books.new_key("10"), await books.new_key("10")
    sent = await reserve(ledger, charged_key, USD, estimate=USD // 10)
    never_sent = await reserve(ledger, released_key, USD, estimate=USD // 10)
    await lapse(ledger, sent.request_id, sent=True, output_tokens=0)
    await lapse(ledger, never_sent.request_id, sent=False, output_tokens=0)
    await books.settled()
    noticed: list[str] = []
    assert await ledger.recover(charged=noticed.append) == 2
    assert noticed == [charged_key]  # the low-balance check follows the money, not the recovery
    await books.check()


async def test_recovery_charges_the_prompt_estimate_and_the_checkpointed_output(
    books: Books, ledger: Ledger, make_ledger: MakeLedger
) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD, estimate=USD // 10, output_price=PRICE)
    await lapse(ledger, hold.request_id, sent=True, output_tokens=1000)
    assert await recover(make_ledger("survivor"), books) == 1
    charged = USD // 10 + 1000 * PRICE
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (10 * USD - charged, 0, charged)
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.source, used.status, used.partial, used.estimated, used.cost) == (
        "recovery",
        "recovered",
        True,
        True,
        charged,
    )
    assert (used.prompt_tokens, used.completion_tokens) == (100, 1000)
    [day] = await books.rows(usage_daily, key_id=key)
    assert (day.requests, day.failed, day.completion_tokens, day.cost) == (1, 1, 1000, charged)
    before = await books.check()
    assert await recover(ledger, books) == 0  # twice: nothing more
    assert await books.check() == before


async def test_concurrent_recoveries_settle_each_hold_once(
    books: Books, ledger: Ledger, make_ledger: MakeLedger
) -> None:
    key = await books.new_key("10")
    for _ in range(5):
        hold = await reserve(ledger, key, USD, estimate=USD // 10)
        await lapse(ledger, hold.request_id, sent=True, output_tokens=0)
    rescuers = [make_ledger(f"rescuer-{i}") for i in range(4)]
    await books.settled()
    counts = await asyncio.gather(*(r.recover() for r in rescuers))
    assert sum(counts) == 5
    assert (await books.key(key)).spent == 5 * (USD // 10)
    assert len(await books.rows(usage, key_id=key)) == 5
    await books.check()


async def test_recovery_charge_above_the_balance_is_capped(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("1")
    hold = await reserve(ledger, key, USD // 2, estimate=3 * USD)  # estimate larger than everything
    await lapse(ledger, hold.request_id, sent=True, output_tokens=0)
    assert await recover(ledger, books) == 1
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.cost, used.shortfall) == (USD, 2 * USD)
    assert (await books.key(key)).available == 0
    await books.check()


async def test_a_checkpoint_renews_the_lease(books: Books, ledger: Ledger, db: Database) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD)
    await set_columns(db, holds, holds.c.request_id == hold.request_id, expires_at=past())
    await ledger.checkpoint([Checkpoint(hold.request_id, True, 5, datetime.now(UTC) + timedelta(minutes=5))])
    assert await recover(ledger, books) == 0
    [stored] = await books.rows(holds, request_id=hold.request_id)
    assert (stored.status, stored.sent, stored.output_tokens) == ("held", True, 5)


async def test_a_settle_after_recovery_posts_the_difference_as_a_late_charge(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD, estimate=USD // 10, output_price=PRICE)
    await lapse(ledger, hold.request_id, sent=True, output_tokens=100)
    assert await recover(ledger, books) == 1
    recovered = USD // 10 + 100 * PRICE
    real = USD // 2
    settlement = await ledger.settle(hold, draft(hold, real, completion_tokens=30_000, partial=False))
    assert settlement == Settlement(charged=real - recovered, shortfall=0, late=True)
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (10 * USD - real, 0, real)
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.source, used.status, used.cost, used.completion_tokens, used.partial) == (
        "late",
        "ok",
        real,
        30_000,
        False,
    )
    [adjustment] = await books.rows(ledger_table, key_id=key, kind="adjustment")
    assert adjustment.amount == real - recovered
    [day] = await books.rows(usage_daily, key_id=key)
    assert (day.requests, day.partial, day.failed, day.completion_tokens, day.cost) == (1, 0, 0, 30_000, real)
    assert await ledger.settle(hold, draft(hold, real)) is None  # and only once
    await books.check()


async def test_a_late_settlement_cheaper_than_the_estimate_is_refunded(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD, estimate=USD // 10)
    await lapse(ledger, hold.request_id, sent=True, output_tokens=0)
    await recover(ledger, books)
    assert await ledger.settle(hold, draft(hold, USD // 100)) == Settlement(USD // 100 - USD // 10, 0, late=True)
    row = await books.key(key)
    assert (row.available, row.spent) == (10 * USD - USD // 100, USD // 100)
    await books.check()


async def test_a_late_settlement_equal_to_the_estimate_posts_no_adjustment(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD, estimate=USD // 10)
    await lapse(ledger, hold.request_id, sent=True, output_tokens=0)
    await recover(ledger, books)
    assert await ledger.settle(hold, draft(hold, USD // 10, partial=False)) == Settlement(0, 0, late=True)
    assert await books.rows(ledger_table, key_id=key, kind="adjustment") == []
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.source, used.cost, used.partial) == ("late", USD // 10, False)
    await books.check()


async def test_a_late_settlement_after_a_free_recovery_writes_the_row(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD)
    await lapse(ledger, hold.request_id, sent=False, output_tokens=0)  # looked unsent when the process stalled
    await recover(ledger, books)
    assert await ledger.settle(hold, draft(hold, USD // 4)) == Settlement(USD // 4, 0, late=True)
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.source, used.cost) == ("late", USD // 4)
    assert (await books.key(key)).spent == USD // 4
    await books.check()


async def test_a_release_after_recovery_refunds_what_recovery_charged(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD, estimate=USD // 10)
    await lapse(ledger, hold.request_id, sent=True, output_tokens=0)  # recovered from under the live request
    await recover(ledger, books)
    assert (await books.key(key)).spent == USD // 10
    assert await ledger.release(hold) is True  # which then ended uncharged (e.g. the upstream refused it)
    row = await books.key(key)
    assert (row.available, row.held, row.spent) == (10 * USD, 0, 0)
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.source, used.status, used.cost, used.prompt_tokens) == ("late", "released", 0, 0)
    [refund] = await books.rows(ledger_table, key_id=key, kind="adjustment")
    assert refund.amount == -(USD // 10)
    [day] = await books.rows(usage_daily, key_id=key)
    assert (day.requests, day.cost, day.prompt_tokens) == (1, 0, 0)
    [stored] = await books.rows(holds, request_id=hold.request_id)
    assert stored.status == "released"
    assert await ledger.release(hold) is False  # once
    await books.check()


async def test_a_late_refund_in_a_later_month_leaves_that_months_quota_spend_at_zero(
    books: Books, ledger: Ledger, db: Database
) -> None:
    key = await books.new_key("10", monthly_quota_usd="5")
    hold = await reserve(ledger, key, USD, estimate=USD // 10)
    await lapse(ledger, hold.request_id, sent=True, output_tokens=0)
    await recover(ledger, books)  # charged in the month that ends
    await set_columns(db, api_keys, api_keys.c.id == key, quota_month="2000-01")  # the month turned meanwhile
    assert await ledger.release(hold) is True  # refunded in the new one
    row = await books.key(key)
    assert (row.quota_month, row.quota_spent, row.spent) == (month_of(datetime.now(UTC)), 0, 0)
    await books.check()


async def test_recovery_of_a_free_request_keeps_its_usage_row(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD, estimate=0, output_price=0)  # a model priced at zero
    await lapse(ledger, hold.request_id, sent=True, output_tokens=700)
    assert await recover(ledger, books) == 1
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.status, used.cost, used.prompt_tokens, used.completion_tokens) == ("recovered", 0, 100, 700)
    assert (await books.key(key)).available == 10 * USD
    await books.check()


async def test_a_hold_is_written_sent_as_reserved_and_unsent_by_the_next_tick_if_it_never_went_out(
    books: Books, ledger: Ledger
) -> None:
    key = await books.new_key("10")
    went_out = await reserve(ledger, key, USD, estimate=USD // 10)
    refused = await reserve(ledger, key, USD, estimate=USD // 10)
    await books.settled()
    assert {stored.sent for stored in await books.rows(holds, key_id=key)} == {True}  # a crash now: charged
    leases = Leases(ledger)
    now = datetime.now(UTC)
    leases.add(went_out.request_id, Outcome(sent=True), now)
    leases.add(refused.request_id, Outcome(sent=False), now)  # every attempt was refused before any work
    assert await leases.tick(now) == 1
    await books.settled()
    [stored] = await books.rows(holds, request_id=refused.request_id)
    assert stored.sent is False  # a crash from now on: released at no charge
    await books.check()


async def test_a_late_charge_never_overdraws(books: Books, ledger: Ledger) -> None:
    key = await books.new_key("1")
    hold = await reserve(ledger, key, USD // 2, estimate=USD // 10)
    await lapse(ledger, hold.request_id, sent=True, output_tokens=0)
    await recover(ledger, books)
    assert await ledger.settle(hold, draft(hold, 3 * USD)) == Settlement(USD - USD // 10, 2 * USD, late=True)
    row = await books.key(key)
    assert (row.available, row.spent) == (0, USD)
    [used] = await books.rows(usage, request_id=hold.request_id)
    assert (used.cost, used.shortfall) == (USD, 2 * USD)
    await books.check()


# -- leases ---------------------------------------------------------------------------------------


async def test_leases_checkpoint_what_changed_and_renew_what_is_due(books: Books, make_ledger: MakeLedger) -> None:
    ledger = make_ledger(lease_seconds=30)
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD)
    leases = Leases(ledger)
    outcome = Outcome(sent=True)  # on its way upstream, as the hold was written
    now = datetime.now(UTC)
    leases.add(hold.request_id, outcome, now)
    assert await leases.tick(now) == 0  # nothing new, lease fresh
    outcome.output_tokens = 42
    assert await leases.tick(now) == 1
    assert await leases.tick(now) == 0
    assert await leases.tick(now + timedelta(seconds=11)) == 1  # a third of the lease went by: renewed
    await books.settled()
    [stored] = await books.rows(holds, request_id=hold.request_id)
    assert (stored.sent, stored.output_tokens) == (True, 42)
    assert stored.expires_at > now + timedelta(seconds=40)
    leases.remove(hold.request_id)
    assert len(leases) == 0


# -- durability -----------------------------------------------------------------------------------


class Flaky:
    """A driver whose first ``failures`` runs fail, as when the database is locked or away."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def run(self, make: TxFactory[T], *, durable: bool = True) -> T:
        if self.failures:
            self.failures -= 1
            raise OSError("database is locked")
        result: T = await self.inner.run(make, durable=durable)
        return result

    async def flush(self) -> None:
        await self.inner.flush()


async def test_a_failed_settlement_is_retried_until_it_is_durable(
    books: Books, ledger: Ledger, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    key = await books.new_key("10")
    hold = await reserve(ledger, key, USD)
    flaky = Flaky(ledger._driver, failures=3)
    retrying = Ledger(db, owner="x", lease_seconds=60, driver=flaky)
    assert await retrying.settle(hold, draft(hold, USD // 3)) == Settlement(USD // 3, 0)
    assert flaky.failures == 0
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 3
    assert (await books.key(key)).spent == USD // 3
    await retrying.flush()  # every acknowledged write is durable now (a no-op where each already is)
    await books.check()
