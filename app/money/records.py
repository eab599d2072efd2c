"""The money records, each defined once: a hold, a usage row, and what the ledger answers.

``UsageRow`` is THE usage table row: the SQL that writes it is generated from its fields
(``app.money.transactions``), so a column is added in one place (plus its migration).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Hold:
    """Money reserved for one request, and what recovery needs to charge it without the process."""

    request_id: str
    key_id: str
    model: str
    amount: int
    prompt_tokens_estimate: int
    prompt_cost_estimate: int
    output_price: int  # units per output token


@dataclass(frozen=True, slots=True)
class UsageRow:
    request_id: str
    key_id: str
    model: str
    upstream: str | None
    upstream_model: str | None
    endpoint: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int
    cost: int  # what was charged
    shortfall: int  # cost that the balance could not cover
    status: str
    partial: bool
    estimated: bool
    source: str  # request | recovery | late (the request settled after recovery had charged an estimate)
    latency_ms: int | None
    created_at: datetime


USAGE_COLUMNS = tuple(f.name for f in fields(UsageRow))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation failed: the key is gone, the balance or the monthly quota is short.

    ``room`` is what the key could still reserve (the smaller of balance and quota headroom).
    """

    reason: str  # key | balance | quota
    available: int
    room: int


@dataclass(frozen=True, slots=True)
class Settlement:
    charged: int
    shortfall: int
    late: bool = False  # posted as a late charge or refund after recovery had settled the hold


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A live hold's progress, written while the request runs; recovery charges from it after a crash."""

    request_id: str
    sent: bool  # the request went to the upstream
    output_tokens: int  # delivered so far
    lease_until: datetime
