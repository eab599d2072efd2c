"""Random sequences of top-up / reserve / settle / release / recover on one key keep the books exact.

A small reference model predicts every deterministic outcome; after each step the database must
satisfy: ``available >= 0``, ``held == sum(open holds)``, ``sum(topups) == available + held + sum(charges)``.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import Coroutine
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

from app.db import Database
from app.errors import InsufficientBalance
from app.migrate import upgrade
from app.money.ledger import Hold, Ledger, Settlement, UsageRecord
from tests.db.conftest import Books, make_catalog, sqlite_url
from tests.support.backends import on_postgres

# the machine copies a migrated SQLite template per example; the postgres pass covers the portable
# SQLAlchemy path through test_billing.py, and the first pass runs this file on SQLite
pytestmark = pytest.mark.skipif(on_postgres(), reason="SQLite template copies (runs in the SQLite pass)")

T = TypeVar("T")
RUNS = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
amounts = st.integers(min_value=0, max_value=1_500)
costs = st.integers(min_value=0, max_value=3_000)  # often above the hold, sometimes above everything


def usage_record(cost: int) -> UsageRecord:
    return UsageRecord(
        model="doubao-seed-2.0-mini",
        upstream="ark",
        upstream_model="doubao-seed-2.0-mini",
        endpoint="chat.completions",
        stream=True,
        prompt_tokens=1,
        completion_tokens=1,
        reasoning_tokens=0,
        cached_tokens=0,
        cost=cost,
        status="ok",
    )


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
        writer = self.db.writer if self.use_writer else None
        self.me = Ledger(self.db, owner="me", hold_ttl=3600, writer=writer)
        self.dead = Ledger(self.db, owner="dead", hold_ttl=3600, writer=writer)  # never heart-beats
        self.key = ""
        self.available = 0  # the reference model
        self.open: dict[str, Hold] = {}
        self.owner_of: dict[str, str] = {}
        self.closed: list[Hold] = []
        self.ids = itertools.count()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def teardown(self) -> None:
        try:
            self.run(self.db.dispose())
        finally:
            self.runner.close()

    @initialize(balance=st.integers(min_value=0, max_value=3_000))
    def create_key(self, balance: int) -> None:
        self.key = self.run(self.books.new_key(f"{balance}E-12"))
        self.available = balance

    @rule(amount=st.integers(min_value=1, max_value=2_000))
    def topup(self, amount: int) -> None:
        self.run(self.me.topup(self.key, amount))
        self.available += amount

    @rule(amount=amounts, estimate=costs, by_dead_owner=st.booleans())
    def reserve(self, amount: int, estimate: int, by_dead_owner: bool) -> None:
        ledger = self.dead if by_dead_owner else self.me
        request_id = f"req-{next(self.ids)}"
        try:
            hold = self.run(
                ledger.reserve(
                    key_id=self.key,
                    request_id=request_id,
                    model="doubao-seed-2.0-mini",
                    amount=amount,
                    prompt_tokens_estimate=1,
                    prompt_cost_estimate=estimate,
                )
            )
        except InsufficientBalance:
            assert amount > self.available
            return
        assert amount <= self.available
        self.available -= amount
        self.open[request_id] = hold
        self.owner_of[request_id] = ledger.owner

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(min_value=0), cost=costs)
    def settle(self, pick: int, cost: int) -> None:
        hold = self.open.pop(sorted(self.open)[pick % len(self.open)])
        charged = min(cost, self.available + hold.amount)
        assert self.run(self.me.settle(hold, usage_record(cost))) == Settlement(charged, cost - charged)
        self.available += hold.amount - charged
        self.closed.append(hold)

    @precondition(lambda self: self.open)
    @rule(pick=st.integers(min_value=0))
    def release(self, pick: int) -> None:
        hold = self.open.pop(sorted(self.open)[pick % len(self.open)])
        assert self.run(self.me.release(hold))
        self.available += hold.amount
        self.closed.append(hold)

    @precondition(lambda self: self.closed)
    @rule(pick=st.integers(min_value=0), cost=costs, settle=st.booleans())
    def end_a_closed_hold_again(self, pick: int, cost: int, settle: bool) -> None:
        hold = self.closed[pick % len(self.closed)]
        if settle:
            assert self.run(self.me.settle(hold, usage_record(cost))) is None
        else:
            assert not self.run(self.me.release(hold))

    @rule()
    def recover(self) -> None:
        orphans = [rid for rid in self.open if self.owner_of[rid] == "dead"]
        total_before = self._total()
        assert self.run(self.me.recover(dead_after=30)) == len(orphans)
        for rid in orphans:
            self.closed.append(self.open.pop(rid))
        # charges depend on the order recovery walks the holds: re-read, but nothing may be created or lost
        self.available = self.run(self.books.key(self.key)).available
        assert self._total() == total_before

    def _total(self) -> int:
        row = self.run(self.books.key(self.key))
        return int(row.available + row.held + row.spent)

    @invariant()
    def books_balance(self) -> None:
        if not self.key:
            return
        self.run(self.books.check())  # ledger invariant, available >= 0, held == open holds in SQL
        row = self.run(self.books.key(self.key))
        assert row.available == self.available
        assert row.available >= 0
        assert row.held == sum(hold.amount for hold in self.open.values())


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
