import random
import time

import pytest

from app.limits import Decision, Limiter, MemoryLimiter, ratelimit_headers

WINDOW = 60.0


class FakeClock:
    def __init__(self, now: float = 1_008_000.0) -> None:
        # Default start is on a boundary of 60 s and 3600 s windows, and far from zero like monotonic().
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> MemoryLimiter:
    return MemoryLimiter(clock=clock)


def test_memory_limiter_satisfies_the_limiter_interface(limiter: MemoryLimiter) -> None:
    as_protocol: Limiter = limiter  # checked by mypy --strict
    assert as_protocol is limiter


async def test_admits_up_to_the_limit_then_denies(limiter: MemoryLimiter) -> None:
    decisions = [await limiter.hit("k", limit=3, window_seconds=WINDOW) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[0].retry_after == 0.0
    assert decisions[3].retry_after > 0
    assert decisions[3].limit == 3


async def test_buckets_are_independent(limiter: MemoryLimiter) -> None:
    assert (await limiter.hit("a", limit=1, window_seconds=WINDOW)).allowed
    assert not (await limiter.hit("a", limit=1, window_seconds=WINDOW)).allowed
    assert (await limiter.hit("b", limit=1, window_seconds=WINDOW)).allowed


async def test_denied_hits_do_not_consume(limiter: MemoryLimiter) -> None:
    assert (await limiter.hit("k", limit=5, window_seconds=WINDOW, cost=3)).allowed
    for _ in range(10):
        assert not (await limiter.hit("k", limit=5, window_seconds=WINDOW, cost=3)).allowed
    assert (await limiter.hit("k", limit=5, window_seconds=WINDOW, cost=2)).allowed


async def test_previous_window_is_weighted_by_its_overlap(limiter: MemoryLimiter, clock: FakeClock) -> None:
    for _ in range(10):
        assert (await limiter.hit("k", limit=10, window_seconds=WINDOW)).allowed
    clock.advance(WINDOW + WINDOW / 4)  # a quarter into the next window: 10 * 0.75 = 7.5 still counted
    assert (await limiter.hit("k", limit=10, window_seconds=WINDOW)).allowed  # 8.5
    assert (await limiter.hit("k", limit=10, window_seconds=WINDOW)).allowed  # 9.5
    assert not (await limiter.hit("k", limit=10, window_seconds=WINDOW)).allowed  # 10.5 > 10
    clock.advance(WINDOW / 4)  # half way: 10 * 0.5 + 2 = 7
    decision = await limiter.hit("k", limit=10, window_seconds=WINDOW)
    assert decision.allowed
    assert decision.remaining == 2  # 10 - 8


async def test_usage_is_forgotten_after_two_windows(limiter: MemoryLimiter, clock: FakeClock) -> None:
    for _ in range(3):
        await limiter.hit("k", limit=3, window_seconds=WINDOW)
    clock.advance(2 * WINDOW)
    decision = await limiter.hit("k", limit=3, window_seconds=WINDOW)
    assert decision.allowed
    assert decision.remaining == 2


async def test_reset_after_reaches_the_end_of_the_next_window(limiter: MemoryLimiter, clock: FakeClock) -> None:
    clock.advance(15.0)
    decision = await limiter.hit("k", limit=3, window_seconds=WINDOW)
    assert decision.reset_after == pytest.approx(2 * WINDOW - 15.0)
    clock.advance(decision.reset_after)
    assert (await limiter.hit("k", limit=1, window_seconds=WINDOW)).allowed  # fully reset: 1 of 1 left


async def test_retry_after_is_sufficient_and_tight() -> None:
    # Random scenarios: whenever a hit is denied, waiting retry_after admits it, while waiting clearly
    # less does not (denied hits record nothing, so probing earlier does not change the answer).
    rng = random.Random(1234)
    denials = 0
    for _ in range(300):
        clock = FakeClock(rng.uniform(0, 1e6))
        limiter = MemoryLimiter(clock=clock)
        window = rng.choice([1.0, 7.5, 60.0, 3600.0])
        limit = rng.randint(1, 50)
        for _ in range(40):
            clock.advance(rng.uniform(0, window / 3))
            cost = rng.randint(1, limit)
            decision = await limiter.hit("k", limit=limit, window_seconds=window, cost=cost)
            if decision.allowed:
                continue
            denials += 1
            wait = decision.retry_after
            assert 0 < wait <= 2 * window
            if wait > 0.01:
                clock.advance(wait - 0.005)
                assert not (await limiter.hit("k", limit=limit, window_seconds=window, cost=cost)).allowed
                clock.advance(0.005)
            else:
                clock.advance(wait)
            assert (await limiter.hit("k", limit=limit, window_seconds=window, cost=cost)).allowed
    assert denials > 1000  # the scenarios really exercised denial


async def test_retry_after_within_the_window_is_exact(limiter: MemoryLimiter, clock: FakeClock) -> None:
    for _ in range(10):
        await limiter.hit("k", limit=10, window_seconds=WINDOW)
    clock.advance(WINDOW)  # start of the next window: previous weighs 10 * (1 - 0)
    decision = await limiter.hit("k", limit=10, window_seconds=WINDOW)
    assert not decision.allowed
    # previous * (1 - f) + 1 <= 10 once f >= 0.1, i.e. 6 s into the window.
    assert decision.retry_after == pytest.approx(6.0, abs=1e-3)


async def test_cost_counts_as_several_units(limiter: MemoryLimiter) -> None:
    first = await limiter.hit("tokens", limit=1000, window_seconds=WINDOW, cost=700)
    assert first.allowed
    assert first.remaining == 300
    assert not (await limiter.hit("tokens", limit=1000, window_seconds=WINDOW, cost=301)).allowed
    assert (await limiter.hit("tokens", limit=1000, window_seconds=WINDOW, cost=300)).allowed


async def test_cost_above_the_limit_is_never_admitted(limiter: MemoryLimiter, clock: FakeClock) -> None:
    decision = await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=101)
    assert not decision.allowed
    assert decision.retry_after >= WINDOW
    clock.advance(decision.retry_after)
    assert not (await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=101)).allowed


async def test_add_records_usage_unconditionally(limiter: MemoryLimiter) -> None:
    await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=50)
    await limiter.add("tokens", window_seconds=WINDOW, cost=500)  # the estimate was far too low
    decision = await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=1)
    assert not decision.allowed
    assert decision.remaining == 0


async def test_negative_add_refunds_an_overestimate(limiter: MemoryLimiter) -> None:
    await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=80)
    await limiter.add("tokens", window_seconds=WINDOW, cost=-50)
    assert (await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=70)).allowed
    assert not (await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=1)).allowed


async def test_negative_add_never_takes_usage_below_zero(limiter: MemoryLimiter) -> None:
    await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=10)
    await limiter.add("tokens", window_seconds=WINDOW, cost=-1000)
    assert not (await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=101)).allowed
    decision = await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=100)
    assert decision.allowed
    assert decision.remaining == 0


async def test_refund_reaches_an_estimate_made_in_the_previous_window(limiter: MemoryLimiter, clock: FakeClock) -> None:
    await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=100)
    clock.advance(WINDOW)  # the previous window still weighs fully
    await limiter.add("tokens", window_seconds=WINDOW, cost=-60)
    assert not (await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=61)).allowed
    assert (await limiter.hit("tokens", limit=100, window_seconds=WINDOW, cost=60)).allowed


async def test_negative_add_on_unknown_bucket_creates_nothing(limiter: MemoryLimiter) -> None:
    await limiter.add("ghost", window_seconds=WINDOW, cost=-5)
    assert len(limiter) == 0


async def test_changed_window_starts_the_bucket_afresh(limiter: MemoryLimiter) -> None:
    await limiter.hit("k", limit=1, window_seconds=WINDOW)
    assert (await limiter.hit("k", limit=1, window_seconds=2 * WINDOW)).allowed


async def test_invalid_arguments_are_refused(limiter: MemoryLimiter) -> None:
    with pytest.raises(ValueError, match="negative"):
        await limiter.hit("k", limit=1, window_seconds=WINDOW, cost=-1)
    with pytest.raises(ValueError, match="window_seconds"):
        await limiter.hit("k", limit=1, window_seconds=0)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await limiter.acquire("s", limit=1, ttl_seconds=0)
    with pytest.raises(ValueError, match="at least 1 bucket"):
        MemoryLimiter(key_windows=0)


async def test_lru_bound_keeps_the_most_recently_used(limiter: MemoryLimiter, clock: FakeClock) -> None:
    small = MemoryLimiter(key_windows=3, clock=clock)
    for name in ("a", "b", "c"):
        await small.hit(name, limit=1, window_seconds=WINDOW)
    await small.hit("a", limit=1, window_seconds=WINDOW)  # touch: "b" is now the least recently used
    await small.hit("d", limit=1, window_seconds=WINDOW)
    assert len(small) == 3
    assert "b" not in small
    assert all(name in small for name in ("a", "c", "d"))
    # The survivor kept its usage.
    assert not (await small.hit("a", limit=1, window_seconds=WINDOW)).allowed


async def test_each_store_stays_within_its_own_bound(clock: FakeClock) -> None:
    small = MemoryLimiter(ip_windows=50, key_windows=20, slot_buckets=10, clock=clock)
    for i in range(500):
        await small.hit(f"ip:{i}", limit=5, window_seconds=WINDOW)
        await small.hit(f"rpm:{i}", limit=5, window_seconds=WINDOW)
        assert small.sizes()["ip"] <= 50
        assert small.sizes()["key"] <= 20
    assert "ip:499" in small
    assert "rpm:499" in small


async def test_a_flood_of_addresses_never_evicts_key_windows_or_live_slots(clock: FakeClock) -> None:
    small = MemoryLimiter(ip_windows=5, key_windows=5, slot_buckets=5, clock=clock)
    assert (await small.hit("rpm:key", limit=1, window_seconds=WINDOW)).allowed
    assert await small.acquire("conc:key", limit=1, ttl_seconds=600)
    for i in range(1000):
        await small.hit(f"ip:10.0.{i // 250}.{i % 250}", limit=5, window_seconds=WINDOW)
    assert not (await small.hit("rpm:key", limit=1, window_seconds=WINDOW)).allowed
    assert not await small.acquire("conc:key", limit=1, ttl_seconds=600)


async def test_live_slots_are_never_evicted_and_a_full_store_refuses_new_keys(clock: FakeClock) -> None:
    small = MemoryLimiter(slot_buckets=3, clock=clock)
    for name in ("a", "b", "c"):
        assert await small.acquire(f"conc:{name}", limit=1, ttl_seconds=30)
    assert not await small.acquire("conc:d", limit=1, ttl_seconds=30)  # refused, nobody evicted
    assert not await small.acquire("conc:a", limit=1, ttl_seconds=30)  # "a" still holds its slot
    clock.advance(31)  # every slot expired: their buckets may now be forgotten
    assert await small.acquire("conc:d", limit=1, ttl_seconds=30)
    assert small.sizes()["slots"] == 1


async def test_eviction_stays_cheap_with_many_buckets() -> None:
    # An O(n) eviction would take minutes here; O(1) takes well under a second.
    big = MemoryLimiter(ip_windows=10_000, clock=FakeClock())
    started = time.perf_counter()
    for i in range(60_000):
        await big.hit(f"ip:{i}", limit=5, window_seconds=WINDOW)
    assert time.perf_counter() - started < 10
    assert len(big) == 10_000


async def test_released_bucket_frees_its_memory(limiter: MemoryLimiter) -> None:
    await limiter.acquire("streams", limit=2, ttl_seconds=600)
    await limiter.release("streams")
    assert len(limiter) == 0


async def test_zero_limit_never_admits_a_slot(limiter: MemoryLimiter) -> None:
    assert not await limiter.acquire("streams", limit=0, ttl_seconds=600)
    assert len(limiter) == 0


async def test_leaked_slot_expires_after_its_ttl(limiter: MemoryLimiter, clock: FakeClock) -> None:
    assert await limiter.acquire("streams", limit=1, ttl_seconds=30)
    clock.advance(29.9)
    assert not await limiter.acquire("streams", limit=1, ttl_seconds=30)
    clock.advance(0.2)
    assert await limiter.acquire("streams", limit=1, ttl_seconds=30)


async def test_release_keeps_the_live_slot_with_the_latest_expiry(limiter: MemoryLimiter, clock: FakeClock) -> None:
    assert await limiter.acquire("streams", limit=2, ttl_seconds=10)  # expires at +10
    clock.advance(5)
    assert await limiter.acquire("streams", limit=2, ttl_seconds=10)  # expires at +15
    await limiter.release("streams")
    clock.advance(7)  # +12: the +15 slot must still be held
    assert await limiter.acquire("streams", limit=2, ttl_seconds=10)
    assert not await limiter.acquire("streams", limit=2, ttl_seconds=10)


def test_headers_of_an_allowed_decision_have_no_retry_after() -> None:
    headers = ratelimit_headers(Decision(True, 60, 59, 0.0, 119.2))
    assert headers == {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59", "x-ratelimit-reset": "120"}


@pytest.mark.parametrize(("retry_after", "expected"), [(0.001, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")])
def test_retry_after_header_rounds_up_to_whole_seconds(retry_after: float, expected: str) -> None:
    headers = ratelimit_headers(Decision(False, 10, 0, retry_after, 90.0))
    assert headers["retry-after"] == expected
    assert headers["x-ratelimit-remaining"] == "0"
    assert headers["x-ratelimit-reset"] == "90"


async def test_client_obeying_the_retry_after_header_is_admitted(limiter: MemoryLimiter, clock: FakeClock) -> None:
    clock.advance(WINDOW / 2)
    await limiter.hit("k", limit=2, window_seconds=WINDOW)
    await limiter.hit("k", limit=2, window_seconds=WINDOW)
    headers = ratelimit_headers(await limiter.hit("k", limit=2, window_seconds=WINDOW))
    assert headers["x-ratelimit-limit"] == "2"
    assert headers["x-ratelimit-remaining"] == "0"
    assert headers["x-ratelimit-reset"] == str(int(1.5 * WINDOW))
    wait = int(headers["retry-after"])
    # Next window, 2 * (1 - f) + 1 <= 2 once f >= 0.5: 30 s to the boundary plus 30 s (+1 s for rounding up).
    assert int(WINDOW) <= wait <= int(WINDOW) + 1
    clock.advance(wait)
    assert (await limiter.hit("k", limit=2, window_seconds=WINDOW)).allowed
