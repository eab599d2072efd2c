from decimal import Decimal

import pytest

from app.money.units import (
    MAX_BALANCE_UNITS,
    UNITS_PER_USD,
    MoneyError,
    price_per_token,
    units_to_usd,
    usd_to_units,
)
from app.settings import load_settings

EXAMPLE_CONFIG_ENV = ("SEEDGATE_ADMIN_KEY", "UPSTREAM_API_KEY", "UPSTREAM_BASE_URL", "SEEDGATE_CONFIG")


@pytest.mark.parametrize(
    ("usd", "units"),
    [
        ("0", 0),
        ("1", UNITS_PER_USD),
        ("0.000000000001", 1),
        ("0.1", 100_000_000_000),
        ("12.345678901234", 12_345_678_901_234),
        ("-2.50", -2_500_000_000_000),
        ("1000000", MAX_BALANCE_UNITS),
        ("1E-12", 1),
        ("1000e-15", 1),
        ("0e999999", 0),
        (Decimal("3.14"), 3_140_000_000_000),
        (7, 7 * UNITS_PER_USD),
    ],
)
def test_usd_to_units_is_exact(usd, units) -> None:
    assert usd_to_units(usd) == units


def test_floats_are_read_as_their_shortest_decimal_text() -> None:
    assert usd_to_units(0.1) == 100_000_000_000
    assert usd_to_units(0.47) == 470_000_000_000


def test_thirteenth_decimal_is_refused() -> None:
    with pytest.raises(MoneyError, match="12 decimal"):
        usd_to_units("0.0000000000001")


def test_thirteenth_decimal_of_a_large_amount_is_not_rounded_away() -> None:
    # 31 significant digits: a 28-digit Decimal context would round this to an integer number of units
    with pytest.raises(MoneyError):
        usd_to_units("12345678901234567.0000000000001")
    with pytest.raises(MoneyError):
        usd_to_units("1." + "0" * 80 + "1")


def test_float_noise_is_refused_not_rounded() -> None:
    with pytest.raises(MoneyError):
        usd_to_units(0.1 + 0.2)  # 0.30000000000000004


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity", float("nan"), float("inf"), Decimal("NaN")])
def test_non_finite_amounts_are_refused(value) -> None:
    with pytest.raises(MoneyError):
        usd_to_units(value)


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_money(value) -> None:
    with pytest.raises(MoneyError):
        usd_to_units(value)


@pytest.mark.parametrize("value", ["", "abc", "1,5", "$1", "1e999999", "1e-999999"])
def test_garbage_and_absurd_amounts_raise_money_error_only(value) -> None:
    with pytest.raises(MoneyError):
        usd_to_units(value)


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


@pytest.mark.parametrize(
    ("units", "usd"),
    [
        (0, "0.00"),
        (1, "0.000000000001"),
        (UNITS_PER_USD, "1.00"),
        (1_500_000_000_000, "1.50"),
        (1_230_000_000_000, "1.23"),
        (12_345_678_901_234, "12.345678901234"),
        (-1, "-0.000000000001"),
        (-2_500_000_000_000, "-2.50"),
        (MAX_BALANCE_UNITS, "1000000.00"),
    ],
)
def test_units_to_usd_renders_exactly(units, usd) -> None:
    assert units_to_usd(units) == usd


@pytest.mark.parametrize("units", [0, 1, 7, 10**11, 999_999_999_999, -123_456_789, MAX_BALANCE_UNITS - 1, 2**63 - 1])
def test_round_trip_units_to_usd_and_back(units) -> None:
    assert usd_to_units(units_to_usd(units)) == units


def test_price_per_token_is_the_price_per_million_in_micro_units() -> None:
    assert price_per_token(Decimal("0.47")) == 470_000
    assert price_per_token(Decimal("0.000001")) == 1
    assert price_per_token(Decimal("0")) == 0


@pytest.mark.parametrize("price", [Decimal("0.0000001"), Decimal("-1"), Decimal("NaN")])
def test_price_per_token_refuses_inexact_or_negative_prices(price) -> None:
    with pytest.raises(MoneyError):
        price_per_token(price)


def test_every_example_config_price_is_exact_and_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EXAMPLE_CONFIG_ENV:
        monkeypatch.delenv(name, raising=False)
    settings = load_settings("config.example.yaml")
    prices = [
        price
        for model in settings.models
        for price in (model.price.input, model.price.output, model.price.cached_input)
        if price is not None
    ]
    assert len(prices) >= 8
    for price in prices:
        per_token = price_per_token(price)
        assert per_token > 0
        # exact: a million tokens cost exactly the configured price
        assert Decimal(units_to_usd(per_token * 10**6)) == price
