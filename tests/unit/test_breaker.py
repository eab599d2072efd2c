"""Circuit breaking per upstream target: when a circuit opens, how it is probed, what the admin sees."""

from __future__ import annotations

import pytest

from app.breaker import RECENT, Breaker, Breakers

FAILURES = 3
COOLDOWN = 10.0


class FakeClock:
    def __init__(self, now: float = 5_000.0) -> None:
        self.now = now  # far from zero, like time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breakers(clock: FakeClock) -> Breakers:
    return Breakers(failures=FAILURES, cooldown=COOLDOWN, clock=clock)


def opened(breakers: Breakers, key: str = "ark/model") -> Breaker:
    health = breakers[key]
    for _ in range(FAILURES):
        assert health.allows()
        health.failure()
    assert health.state == "open"
    return health


def test_a_new_target_is_closed_and_lets_every_request_through(breakers: Breakers) -> None:
    health = breakers["ark/model"]
    assert health.state == "closed"
    assert all(health.allows() for _ in range(10))
    assert health.reopens_in() == 0.0


def test_the_same_key_always_gives_the_same_health(breakers: Breakers) -> None:
    assert breakers["a/m"] is breakers["a/m"]
    assert breakers["a/m"] is not breakers["b/m"]


def test_circuit_opens_after_the_configured_consecutive_failures(breakers: Breakers) -> None:
    health = breakers["ark/model"]
    for _ in range(FAILURES - 1):
        health.failure()
    assert health.state == "closed"
    assert health.allows()
    health.failure()
    assert health.state == "open"
    assert not health.allows()


def test_a_success_resets_the_consecutive_failure_count(breakers: Breakers) -> None:
    health = breakers["ark/model"]
    for _ in range(FAILURES - 1):
        health.failure()
    health.success(12.0)
    for _ in range(FAILURES - 1):
        health.failure()
    assert health.state == "closed"
    assert health.consecutive_failures == FAILURES - 1


def test_open_circuit_refuses_until_the_cooldown_has_passed(breakers: Breakers, clock: FakeClock) -> None:
    health = opened(breakers)
    assert health.reopens_in() == pytest.approx(COOLDOWN)
    clock.advance(COOLDOWN - 0.5)
    assert not health.allows()
    assert health.reopens_in() == pytest.approx(0.5)
    clock.advance(0.5)
    assert health.reopens_in() == 0.0
    assert health.allows()


def test_after_the_cooldown_exactly_one_probe_goes_through(breakers: Breakers, clock: FakeClock) -> None:
    health = opened(breakers)
    clock.advance(COOLDOWN)
    assert [health.allows() for _ in range(5)] == [True, False, False, False, False]
    assert health.state == "half_open"


def test_a_successful_probe_closes_the_circuit(breakers: Breakers, clock: FakeClock) -> None:
    health = opened(breakers)
    clock.advance(COOLDOWN)
    assert health.allows()
    health.success(30.0)
    assert health.state == "closed"
    assert health.consecutive_failures == 0
    assert all(health.allows() for _ in range(3))


def test_a_failed_probe_reopens_the_circuit_for_a_full_cooldown(breakers: Breakers, clock: FakeClock) -> None:
    health = opened(breakers)
    clock.advance(COOLDOWN + 3)
    assert health.allows()
    health.failure()  # one failure is enough in half-open, whatever the threshold
    assert health.state == "open"
    assert health.reopens_in() == pytest.approx(COOLDOWN)
    assert not health.allows()
    clock.advance(COOLDOWN)
    assert health.allows()


def test_a_probe_that_never_reports_back_does_not_block_the_target_forever(
    breakers: Breakers, clock: FakeClock
) -> None:
    # the probe's request may end without a verdict (the client's own 4xx, a cancelled request)
    health = opened(breakers)
    clock.advance(COOLDOWN)
    assert health.allows()
    clock.advance(COOLDOWN / 2)
    assert not health.allows()
    clock.advance(COOLDOWN / 2)
    assert health.allows()


def test_snapshot_reports_state_error_rate_and_latency(breakers: Breakers) -> None:
    health = breakers["ark/model"]
    for latency in (10.0, 20.0, 30.0):
        health.success(latency)
    health.failure()
    figures = breakers.snapshot()["ark/model"]
    assert figures["state"] == "closed"
    assert figures["consecutive_failures"] == 1
    assert figures["recent_requests"] == 4
    assert figures["recent_error_rate"] == 0.25
    assert figures["latency_ms_p50"] == 20.0
    assert figures["latency_ms_p90"] == 30.0
    assert figures["reopens_in_seconds"] == 0.0


def test_snapshot_of_an_open_circuit_says_when_it_reopens(breakers: Breakers, clock: FakeClock) -> None:
    opened(breakers)
    clock.advance(4.0)
    figures = breakers.snapshot()["ark/model"]
    assert figures["state"] == "open"
    assert figures["recent_error_rate"] == 1.0
    assert figures["latency_ms_p50"] is None
    assert figures["reopens_in_seconds"] == pytest.approx(COOLDOWN - 4.0)


def test_error_rate_covers_only_the_most_recent_outcomes(breakers: Breakers) -> None:
    health = breakers["ark/model"]
    for _ in range(RECENT):
        health.failure()
    for _ in range(RECENT):
        health.success(1.0)
    figures = health.snapshot()
    assert figures["recent_requests"] == RECENT
    assert figures["recent_error_rate"] == 0.0


def test_snapshot_lists_targets_in_key_order(breakers: Breakers) -> None:
    for key in ("b/m", "a/m", "c/m"):
        breakers[key].success(1.0)
    assert list(breakers.snapshot()) == ["a/m", "b/m", "c/m"]
