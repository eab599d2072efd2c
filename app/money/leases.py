"""The live holds of this process: leases renewed, progress checkpointed.

A hold belongs to a live owner. Every ``billing.checkpoint_interval_seconds`` the process writes, in
one batch, each live hold whose progress changed (sent upstream; output tokens delivered) and
renews each lease a third of the way through it. So:

- a live request never loses its hold, however long it runs or however slowly its client reads;
- a crash loses at most one interval of delivered output: recovery charges the last checkpoint;
- a hold is written ``sent`` as it is reserved (the request goes upstream next), so a crash in a
  request's first interval charges its prompt estimate, as later; one that never went out (every
  attempt refused) is written unsent by the next tick -- only a crash in that one interval charges it;
- a hold whose process died lapses after ``billing.hold_ttl_seconds`` and is recovered by any
  instance sharing the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.money.ledger import Ledger
from app.money.records import Checkpoint
from app.money.rules import Outcome

log = logging.getLogger("seedgate.money")


@dataclass(slots=True)
class _Live:
    outcome: Outcome
    written: tuple[bool, int]
    renew_at: datetime


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class Leases:
    def __init__(self, ledger: Ledger, *, outstanding: Gauge | None = None) -> None:
        self._ledger = ledger
        self._live: dict[str, _Live] = {}
        self._outstanding = outstanding  # seedgate_holds_outstanding: this process's live holds

    def __len__(self) -> int:
        return len(self._live)

    def add(self, request_id: str, outcome: Outcome, reserved_at: datetime) -> None:
        # the hold was written ``sent`` (``tx.reserve``): the next tick corrects it if the request never went out
        self._live[request_id] = _Live(outcome, (True, 0), reserved_at + self._ledger.lease / 3)
        if self._outstanding is not None:
            self._outstanding.set(len(self._live))

    def remove(self, request_id: str) -> None:
        self._live.pop(request_id, None)
        if self._outstanding is not None:
            self._outstanding.set(len(self._live))

    async def tick(self, now: datetime) -> int:
        """Checkpoint what changed and renew what is due; returns how many holds were written."""
        due: list[tuple[_Live, Checkpoint]] = []
        for request_id, live in self._live.items():
            state = (live.outcome.sent, live.outcome.output_tokens)
            if state != live.written or now >= live.renew_at:
                due.append((live, Checkpoint(request_id, state[0], state[1], now + self._ledger.lease)))
        if not due:
            return 0
        await self._ledger.checkpoint([mark for _, mark in due])
        for live, mark in due:
            live.written = (mark.sent, mark.output_tokens)
            live.renew_at = now + self._ledger.lease / 3
        return len(due)
