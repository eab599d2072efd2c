"""Money as integers.

Every amount the gateway stores or compares is an ``int`` of *units*, where one unit is 1e-12 USD
(a picodollar). A price of ``$X per million tokens`` is then ``X * 10**6`` units per token, so any
price with up to six decimals per million tokens is exact and no price rounds to zero. A signed
64-bit column holds up to ~$9.2M, so a single key's balance is capped at ``MAX_BALANCE_UNITS`` and
its top-ups over its whole life at ``MAX_TOPPED_UP_UNITS``: every money column of a key (available,
held, spent, the month's spend) stays at or below what was topped up, so none can overflow (SQLite
would turn the sum into an inexact float). Sums across keys can pass 64 bits: they are summed exactly
(``app.money.sums``).

Decimal strings are the only way money enters or leaves: ``usd_to_units`` refuses anything that is
not exactly representable, ``units_to_usd`` renders exactly.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

UNITS_PER_USD = 10**12
UNITS_PER_TOKEN_PER_USD_PER_MILLION = 10**6
MAX_BALANCE_UNITS = 1_000_000 * UNITS_PER_USD  # $1M per key at a time
MAX_TOPPED_UP_UNITS = 9_000_000 * UNITS_PER_USD  # $9M per key over its life, under int64's ~$9.22M
MAX_USD_DIGITS = 18  # amounts of 1e19 USD or more are refused: no column could hold them anyway


class MoneyError(ValueError):
    """A money amount that cannot be represented exactly."""


def usd_to_units(value: Decimal | str | int | float) -> int:
    """Convert a USD amount to integer units, refusing values finer than one unit."""
    if isinstance(value, bool):
        raise MoneyError("amount must be a number")
    try:
        # floats go through str() so that 0.1 means "0.1", not its binary neighbour
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation as exc:
        raise MoneyError(f"not a decimal amount: {value!r}") from exc
    if not amount.is_finite():
        raise MoneyError("amount must be finite")
    # Integer arithmetic on the digits: Decimal multiplication rounds to 28 significant digits, which
    # would silently drop the 13th decimal of a large amount (and overflow on a huge exponent).
    sign, digits, exponent = amount.as_tuple()
    coefficient = int("".join(map(str, digits)))
    if coefficient == 0:
        return 0
    if amount.adjusted() > MAX_USD_DIGITS:
        raise MoneyError("amount is too large")
    shift = int(exponent) + 12  # units = coefficient * 10**shift
    if shift < 0:
        if -shift > len(digits):
            raise MoneyError("amount has more than 12 decimal places")
        divisor: int = 10**-shift
        coefficient, rest = divmod(coefficient, divisor)
        if rest:
            raise MoneyError("amount has more than 12 decimal places")
    else:
        coefficient *= 10**shift
    return -coefficient if sign else coefficient


def units_to_usd(units: int) -> str:
    """Render units as an exact decimal USD string with at least two decimals."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNITS_PER_USD)
    frac_digits = f"{frac:012d}".rstrip("0")
    if len(frac_digits) < 2:
        frac_digits = frac_digits.ljust(2, "0")
    return f"{sign}{whole}.{frac_digits}"


def price_per_token(usd_per_million: Decimal) -> int:
    """Units charged per token for a price given in USD per million tokens."""
    units = usd_per_million * UNITS_PER_TOKEN_PER_USD_PER_MILLION
    if units != units.to_integral_value() or units < 0:
        raise MoneyError(f"price {usd_per_million} per million tokens must be >= 0 with at most 6 decimals")
    return int(units)
