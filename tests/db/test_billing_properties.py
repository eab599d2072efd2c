"""Random sequences of money operations on one key keep the books exact, on both SQLite drivers.

Operations: top-up, reserve (by this process or by one that will crash), settle, release, a crash
(the last checkpoint, then the lease lapses), recovery, a late settlement of a recovered hold, a
month rollover of the monthly quota. A small reference model predicts every outcome; after each
step the database must satisfy ``available >= 0``, ``held == sum(open holds)``,
``sum(topups) == available + held + sum(charges and adjustments)``, and match the model exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import update

from app.db import Database
from app.migrate import upgrade
from app.money.drivers import SqlDriver
from app.money.ledger import Ledger
from app.money.records import Checkpoint, Hold, Settlement
from app.money.rules import clamp_charge, recovery_charge
from app.money.transactions import month_of
from app.tables import api_keys
from tests.contract.ledger_support import draft
from tests.support.backends import on_postgres
from tests.support.books import Books, make_catalog, sqlite_url

# the machine copies a migrated SQLite template per example; Postgres runs the contract tests
pytestmark = pytest.mark.skipif(on_postgres(), reason="SQLite template copies (runs in the SQLite pass)")

T = TypeVar("T")
RUNS = settings(max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
amounts = st.integers(min_value=0, max_value=1_500)
costs = st.integers(min_value=0, max_value=3_000)  # often above the hold, sometimes above everything
PRICE = 3  # units per output token


class LedgerMachine(RuleBasedStateMachine):
    template: Path
    workdir: Path
    use_writer: bool
    counter = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        # one event loop per example: the engine's pooled connections belong to the loop that made them
        self.runner = asyncio.Runner()
        path = self.workdir / f"example-{next(self.counter)}.db"
        shutil.copyfile(self.template, path)
        self.db = Database(sqlite_url(path))
        self.books = Books(self.db, make_catalog())
        driver = None if self.use_writer else SqlDriver(self.db)
        self.ledger = Ledger(self.db, owner="me", lease_seconds=3600, driver=driver)
        self.key = ""
        self.quota: int | None = None
        # the reference model
        self.available = 0
        self.quota_spent = 0
        self.open: dict[str, Hold] = {}
        self.crashed: dict[str, tuple[bool, int]] = {}  # open holds whose process died: last checkpoint
        self.recovered: dict[str, int] = {}  # recovered holds: what recovery charged
        self.closed: list[Hold] = []
        self.ids = itertools.count()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def teardown(self) -> None:
        try:
            self.run(self.db.dispose())
        finally:
            self.runner.close()

    @initialize(balance=st.integers(min_value=0, max_value=3_000), quota=st.none() | st.integers(0, 4_000))
    def create_key(self, balance: int, quota: int | None) -> None:
        fields = {} if quota is None else {"monthly_quota_usd": f"{quota}E-12"}
        self.key = self.run(self.books.new_key(f"{balance}E-12", **fields))
        self.available, self.quota = balance, quota

    @property
    def held(self) -> int:
        return sum(hold.amount for hold in self.open.values())

    @rule(amount=st.integers(min_value=1, max_value=2_000))
    def topup(self, amount: int) -> None:
        self.run(self.ledger.topup(self.key, amount))
        self.available += amount

    @rule(amount=amounts, estimate=costs)
    def reserve(self, amount: int, estimate: int) -> None:
        hold = Hold(f"req-{next(self.ids)}", self.key, "doubao-seed-2.0-mini", amount, 1, estimate, PRICE)
        refusal = self.run(self.ledger.reserve(hold))
        fits_quota = self.quota is None or self.quota_spent + self.held + amount <= self.quota
        if refusal is not None:
            assert amount > self.available or not fits_quota
            return
        assert amount <= self.available
        assert fits_quota
        self.available -= amount
        self.open[hold.request_id] = hold

    def _pick(self, pool: dict[str, Any], pick: int) -> str:
        return sorted(pool)[pick % len(pool)]

    @precondition(lambda self: bool(set(self.open) - set(self.crashed)))
    @rule(pick=st.integers(min_value=0), cost=costs)
    def settle(self, pick: int, cost: int) -> None:
        live = {rid: h for rid, h in self.open.items() if rid not in self.crashed}
        hold = self.open.pop(self._pick(live, pick))
        charged, shortfall = clamp_charge(cost, self.available + hold.amount)
        assert self.run(self.ledger.settle(hold, draft(hold, cost))) == Settlement(charged, shortfall)
        self.available += hold.amount - charged
        self.quota_spent += charged
        self.closed.append(hold)

    @precondition(lambda self: bool(set(self.open) - set(self.crashed)))
    @rule(pick=st.integers(min_value=0))
    def release(self, pick: int) -> None:
        live = {rid: h for rid, h in self.open.items() if rid not in self.crashed}
        hold = self.open.pop(self._pick(live, pick))
        assert self.run(self.ledger.release(hold))
        self.available += hold.amount
        self.closed.append(hold)

    @precondition(lambda self: bool(set(self.open) - set(self.crashed)))
    @rule(pick=st.integers(min_value=0), sent=st.booleans(), output=st.integers(0, 400))
    def crash(self, pick: int, sent: bool, output: int) -> None:
        """The owner dies; its last checkpoint stays, and the lease runs out."""
        request_id = self._pick({rid: 0 for rid in self.open if rid not in self.crashed}, pick)
        output = output if sent else 0
        lapsed = datetime.now(UTC) - timedelta(seconds=1)
        self.run(self.ledger.checkpoint([Checkpoint(request_id, sent, output, lapsed)]))
        self.crashed[request_id] = (sent, output)

    @rule()
    def recover(self) -> None:
        self.run(self.books.settled())
        assert self.run(self.ledger.recover()) == len(self.crashed)
        for request_id in list(self.crashed):  # recovery walks them in lease order: the order they crashed
            sent, output = self.crashed.pop(request_id)
            hold = self.open.pop(request_id)
            cost = recovery_charge(
                sent=sent, prompt_cost=hold.prompt_cost_estimate, output_tokens=output, output_price=PRICE
            )
            charged, _ = clamp_charge(cost, self.available + hold.amount) if cost else (0, 0)
            self.available += hold.amount - charged
            self.quota_spent += charged
            self.recovered[request_id] = charged

    @precondition(lambda self: self.recovered)
    @rule(pick=st.integers(min_value=0), cost=costs)
    def settle_late(self, pick: int, cost: int) -> None:
        """The process was only stalled: its real settlement arrives after recovery."""
        request_id = self._pick(self.recovered, pick)
        before = self.recovered.pop(request_id)
        hold = Hold(request_id, self.key, "doubao-seed-2.0-mini", 0, 1, 0, PRICE)
        difference = cost - before
        extra, shortfall = clamp_charge(difference, self.available) if difference > 0 else (difference, 0)
        assert self.run(self.ledger.settle(hold, draft(hold, cost))) == Settlement(extra, shortfall, late=True)
        self.available -= extra
        self.quota_spent = max(0, self.quota_spent + extra)  # a refund from a past month's charge stops at 0

    @precondition(lambda self: self.closed)
    @rule(pick=st.integers(min_value=0), cost=costs, settle=st.booleans())
    def end_a_closed_hold_again(self, pick: int, cost: int, settle: bool) -> None:
        hold = self.closed[pick % len(self.closed)]
        if settle:
            assert self.run(self.ledger.settle(hold, draft(hold, cost))) is None
        else:
            assert not self.run(self.ledger.release(hold))

    @rule()
    def new_month(self) -> None:
        async def roll() -> None:
            await self.books.settled()
            async with self.db.write() as conn:
                await conn.execute(update(api_keys).where(api_keys.c.id == self.key).values(quota_month="2000-01"))

        self.run(roll())
        self.quota_spent = 0

    @invariant()
    def books_balance(self) -> None:
        if not self.key:
            return
        self.run(self.books.check())  # ledger invariant, available >= 0, held == open holds in SQL
        row = self.run(self.books.key(self.key))
        assert (row.available, row.held) == (self.available, self.held)
        assert row.available >= 0
        this_month = row.quota_spent if row.quota_month == month_of(datetime.now(UTC)) else 0
        assert this_month == self.quota_spent


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "migrated.db"
    upgrade(sqlite_url(path))
    return path


@pytest.mark.timeout(300)  # room for Hypothesis to shrink a failure on a loaded machine
@pytest.mark.parametrize("use_writer", [False, True], ids=["sqlalchemy", "sqlite-writer"])
def test_random_money_operations_keep_the_books_exact(template: Path, tmp_path: Path, use_writer: bool) -> None:
    machine = type("Machine", (LedgerMachine,), {"template": template, "workdir": tmp_path, "use_writer": use_writer})
    run_state_machine_as_test(machine, settings=RUNS)
