"""Sums of money columns across rows, exact past 64 bits.

Every money column of one key fits in 64 bits (``app.money.units``), but a sum over all keys need not:
SQLite's ``SUM()`` raises "integer overflow" past ~$9.2M in picodollars. ``exact_sum`` sums a column's
whole nanodollars and its remainders separately -- each sum stays inside 64 bits for billions of rows --
and ``joined`` puts the two back together in Python, where integers have no limit. Integer division
and remainder both truncate on SQLite and Postgres, so ``high * SPLIT + low`` is exact for negative
amounts (refunds) too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func

SPLIT = 10**3  # units per nanodollar


def exact_sum(column: ColumnElement[Any]) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """The two sums to select for ``column`` (0 over no rows); give both to ``joined``."""
    return func.coalesce(func.sum(column // SPLIT), 0), func.coalesce(func.sum(column % SPLIT), 0)


def joined(high: Any, low: Any) -> int:
    return int(high) * SPLIT + int(low)
