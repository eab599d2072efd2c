"""Every pricing rule of ``app.money.rules``, one behaviour per test."""

from dataclasses import replace

import pytest

from app.catalog import Catalog, CatalogModel, Prices
from app.money import rules
from app.money.rules import Outcome, Quote
from app.money.tokens import TokenUsage
from app.settings import Settings

PRICES = Prices(input=470_000, output=2_370_000, cached_input=90_000)


def model(**fields: object) -> CatalogModel:
    cfg = {
        "id": "doubao-seed-2.0-code",
        "upstream": "ark",
        "context_window": 262_144,
        "max_output_tokens": 32_768,
        "price": {"input": "1.49", "output": "6.99", "cached_input": "0.30"},
        **fields,
    }
    settings = Settings(upstreams=[{"name": "ark", "base_url": "http://127.0.0.1:9/v1"}], models=[cfg])
    return Catalog.from_settings(settings).models[0]


CODE = model()


def quote(requested: int | None = None, *, prompt: int = 10, n: int = 1, margin: float = 0.1) -> Quote:
    return rules.quote(CODE, prompt_tokens=prompt, requested_output=requested, n=n, margin=margin)


# -- the hold ---------------------------------------------------------------------------------------


def test_the_hold_is_the_prompt_with_margin_plus_the_full_output_cap() -> None:
    q = quote(1000, prompt=100)
    assert q.prompt_cost == 100 * 1_490_000  # the dearer of input and cached input
    assert q.hold == int(100 * 1_490_000 * 1.1) + 1000 * 6_990_000
    assert (q.max_output_tokens, q.output_price, q.capped_from) == (1000, 6_990_000, None)


def test_no_requested_cap_reserves_the_models_cap() -> None:
    assert quote(None).max_output_tokens == 32_768


def test_a_cap_above_the_models_is_clamped_and_n_multiplies_the_output() -> None:
    q = quote(10**9, n=3)
    assert q.max_output_tokens == 32_768
    assert q.hold == int(10 * 1_490_000 * 1.1) + 32_768 * 3 * 6_990_000


def test_the_prompt_estimate_is_capped_at_the_context_window() -> None:
    assert quote(prompt=10**9).prompt_tokens == 262_144


# -- affordable holds -------------------------------------------------------------------------------


def test_a_short_balance_lowers_the_output_cap_to_what_it_pays_for() -> None:
    q = quote(32_000)  # Claude Code's max_tokens: a hold of ~$0.22
    room = 50_000_000_000  # $0.05
    capped = rules.affordable(q, room, min_output_tokens=1024)
    assert capped is not None
    prompt_part = q.hold - 32_000 * 6_990_000
    assert capped.max_output_tokens == (room - prompt_part) // 6_990_000 == 7150
    assert capped.hold <= room
    assert capped.capped_from == 32_000


def test_a_balance_below_the_useful_minimum_is_not_capped() -> None:
    q = quote(32_000)
    room = q.hold - 32_000 * 6_990_000 + 1023 * 6_990_000
    assert rules.affordable(q, room, min_output_tokens=1024) is None
    assert rules.affordable(q, room + 6_990_000, min_output_tokens=1024) is not None


def test_capping_never_raises_the_cap_nor_helps_free_output() -> None:
    q = quote(2000)
    assert rules.affordable(q, q.hold * 10, min_output_tokens=1024) is None
    free = replace(q, output_price=0, hold=q.hold - 2000 * 6_990_000)
    assert rules.affordable(free, 0, min_output_tokens=1) is None


def test_the_smallest_workable_balance_is_prompt_plus_the_useful_minimum() -> None:
    q = quote(32_000, n=2)
    prompt_part = q.hold - 32_000 * 2 * 6_990_000
    assert rules.smallest_workable_balance(q, min_output_tokens=1024) == prompt_part + 1024 * 2 * 6_990_000
    small = quote(100)
    assert rules.smallest_workable_balance(small, min_output_tokens=1024) == small.hold


# -- cost ---------------------------------------------------------------------------------------------


def test_cost_of_plain_usage() -> None:
    assert rules.cost(TokenUsage(1_000_000, 1_000_000), PRICES) == 470_000 * 10**6 + 2_370_000 * 10**6


def test_cached_tokens_are_billed_at_the_cached_price() -> None:
    usage = TokenUsage(prompt_tokens=100, completion_tokens=10, cached_tokens=40)
    assert rules.cost(usage, PRICES) == 60 * 470_000 + 40 * 90_000 + 10 * 2_370_000


def test_reasoning_tokens_are_inside_completion_and_not_billed_twice() -> None:
    with_reasoning = TokenUsage(prompt_tokens=10, completion_tokens=50, reasoning_tokens=45)
    without = TokenUsage(prompt_tokens=10, completion_tokens=50)
    assert rules.cost(with_reasoning, PRICES) == rules.cost(without, PRICES) == 10 * 470_000 + 50 * 2_370_000


def test_zero_usage_costs_nothing() -> None:
    assert rules.cost(TokenUsage(0, 0), PRICES) == 0


# -- sanity bounds --------------------------------------------------------------------------------


def test_absurd_upstream_counts_are_clamped_to_what_the_request_could_produce() -> None:
    q = quote(1000, n=2)
    usage, anomalous = rules.clamp_usage(TokenUsage(10**19, 10**19, 10**19, 10**19), context_window=262_144, quote=q)
    assert anomalous
    assert usage == TokenUsage(
        prompt_tokens=262_144, completion_tokens=2000, reasoning_tokens=2000, cached_tokens=262_144
    )


def test_plausible_counts_pass_unchanged() -> None:
    usage = TokenUsage(500, 900, 300, 100)
    assert rules.clamp_usage(usage, context_window=262_144, quote=quote(1000)) == (usage, False)


# -- settlement ---------------------------------------------------------------------------------------


def test_nothing_consumed_is_a_release() -> None:
    assert rules.settlement(Outcome(status="failed", sent=True), quote(), CODE) is None


def test_completed_answers_are_charged_the_reported_usage() -> None:
    outcome = Outcome(consumed=True, complete=True, usage=TokenUsage(100, 50), output_tokens=999)
    charge = rules.settlement(outcome, quote(1000), CODE)
    assert charge == rules.Charge(TokenUsage(100, 50), rules.cost(TokenUsage(100, 50), CODE.prices), "ok", False, False)


def test_missing_usage_is_estimated_from_the_prompt_and_the_forwarded_output() -> None:
    outcome = Outcome(status="client_disconnected", consumed=True, output_tokens=300)
    charge = rules.settlement(outcome, quote(1000, prompt=40), CODE)
    assert charge is not None
    assert (charge.usage, charge.partial, charge.estimated) == (TokenUsage(40, 300), True, True)


def test_an_accepted_request_that_timed_out_costs_at_least_its_prompt_estimate() -> None:
    charge = rules.settlement(Outcome(status="upstream_timeout", consumed=True), quote(prompt=40), CODE)
    assert charge is not None
    assert charge.cost == 40 * CODE.prices.input
    assert (charge.status, charge.partial, charge.estimated) == ("upstream_timeout", True, True)


def test_absurd_reported_usage_is_clamped_before_it_is_charged() -> None:
    outcome = Outcome(consumed=True, complete=True, usage=TokenUsage(5, 10**19))
    charge = rules.settlement(outcome, quote(1000), CODE)
    assert charge is not None
    assert charge.usage.completion_tokens == 1000


@pytest.mark.parametrize(("cost", "room", "expected"), [(5, 10, (5, 0)), (15, 10, (10, 5)), (5, -3, (0, 5))])
def test_a_charge_never_takes_more_than_the_room(cost: int, room: int, expected: tuple[int, int]) -> None:
    assert rules.clamp_charge(cost, room) == expected


def test_recovery_charges_the_prompt_if_sent_plus_the_checkpointed_output() -> None:
    assert rules.recovery_charge(sent=False, prompt_cost=100, output_tokens=0, output_price=7) == 0
    assert rules.recovery_charge(sent=True, prompt_cost=100, output_tokens=0, output_price=7) == 100
    assert rules.recovery_charge(sent=True, prompt_cost=100, output_tokens=10, output_price=7) == 170
