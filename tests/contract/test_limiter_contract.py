"""The `Limiter` contract, run against every backend: memory (one process) and Redis (shared).

Both backends must answer the same way (app.limits.limiter); and on neither may unauthenticated
traffic push out a key's limit state (issue 11): per-IP windows, per-key windows and concurrency
slots live apart, and a live slot is never dropped.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from app.limits import Limiter, MemoryLimiter, RedisLimiter
from app.limits.checks import check_ip, concurrency_bucket
from app.limits.redis import connect
from app.settings import LimitsSettings

HOUR = 3600.0
# small stores, so a modest flood would overflow a shared one
SMALL = 20


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimiter(ip_windows=SMALL, key_windows=SMALL, slot_buckets=SMALL)
        return
    url: str = request.getfixturevalue("redis_url")  # skips when the test Redis is not running
    client = connect(url, timeout=5.0)
    prefix = f"sgtest:{uuid.uuid4().hex}:"
    try:
        yield RedisLimiter(client, prefix=prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_admits_up_to_the_limit_then_denies(limiter: Limiter) -> None:
    decisions = [await limiter.hit("rpm:k", limit=3, window_seconds=HOUR) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[0].retry_after == 0.0
    assert decisions[3].retry_after > 0
    assert (await limiter.hit("rpm:other", limit=1, window_seconds=HOUR)).allowed  # buckets are independent


async def test_denied_hits_do_not_consume(limiter: Limiter) -> None:
    assert (await limiter.hit("k", limit=5, window_seconds=HOUR, cost=3)).allowed
    for _ in range(10):
        assert not (await limiter.hit("k", limit=5, window_seconds=HOUR, cost=3)).allowed
    assert (await limiter.hit("k", limit=5, window_seconds=HOUR, cost=2)).allowed


async def test_a_hit_of_cost_0_looks_without_counting_and_is_refused_only_past_the_limit(limiter: Limiter) -> None:
    for _ in range(5):
        assert (await limiter.hit("ip:10.0.0.1", limit=2, window_seconds=HOUR, cost=0)).allowed
    await limiter.add("ip:10.0.0.1", window_seconds=HOUR, cost=2)  # at the limit: still allowed to look
    assert (await limiter.hit("ip:10.0.0.1", limit=2, window_seconds=HOUR, cost=0)).allowed
    await limiter.add("ip:10.0.0.1", window_seconds=HOUR, cost=1)  # past it (failed guesses are added)
    refused = await limiter.hit("ip:10.0.0.1", limit=2, window_seconds=HOUR, cost=0)
    assert not refused.allowed
    assert refused.retry_after > 0


async def test_cost_counts_as_several_units_and_above_the_limit_never_fits(limiter: Limiter) -> None:
    first = await limiter.hit("tokens", limit=1000, window_seconds=HOUR, cost=700)
    assert (first.allowed, first.remaining) == (True, 300)
    assert not (await limiter.hit("tokens", limit=1000, window_seconds=HOUR, cost=301)).allowed
    assert (await limiter.hit("tokens", limit=1000, window_seconds=HOUR, cost=300)).allowed
    too_big = await limiter.hit("big", limit=100, window_seconds=HOUR, cost=101)
    assert not too_big.allowed
    assert too_big.retry_after >= HOUR


async def test_add_records_usage_and_negative_add_refunds_but_never_below_zero(limiter: Limiter) -> None:
    await limiter.hit("tokens", limit=100, window_seconds=HOUR, cost=50)
    await limiter.add("tokens", window_seconds=HOUR, cost=500)
    assert not (await limiter.hit("tokens", limit=100, window_seconds=HOUR, cost=1)).allowed
    await limiter.add("tokens", window_seconds=HOUR, cost=-520)  # 550 - 520 = 30 left
    assert not (await limiter.hit("tokens", limit=100, window_seconds=HOUR, cost=71)).allowed
    assert (await limiter.hit("tokens", limit=100, window_seconds=HOUR, cost=70)).allowed
    await limiter.add("tokens", window_seconds=HOUR, cost=-10_000)
    decision = await limiter.hit("tokens", limit=100, window_seconds=HOUR, cost=100)
    assert (decision.allowed, decision.remaining) == (True, 0)


async def test_concurrency_slots_are_limited_and_released(limiter: Limiter) -> None:
    assert await limiter.acquire("streams", limit=2, ttl_seconds=600)
    assert await limiter.acquire("streams", limit=2, ttl_seconds=600)
    assert not await limiter.acquire("streams", limit=2, ttl_seconds=600)
    await limiter.release("streams")
    assert await limiter.acquire("streams", limit=2, ttl_seconds=600)
    assert not await limiter.acquire("streams", limit=2, ttl_seconds=600)


async def test_release_never_goes_below_zero(limiter: Limiter) -> None:
    await limiter.acquire("streams", limit=2, ttl_seconds=600)
    for _ in range(5):
        await limiter.release("streams")
    assert await limiter.acquire("streams", limit=2, ttl_seconds=600)
    assert await limiter.acquire("streams", limit=2, ttl_seconds=600)
    assert not await limiter.acquire("streams", limit=2, ttl_seconds=600)


async def test_zero_limit_never_admits_a_slot(limiter: Limiter) -> None:
    assert not await limiter.acquire("streams", limit=0, ttl_seconds=600)


async def test_rate_and_slot_buckets_cannot_share_a_name(limiter: Limiter) -> None:
    await limiter.hit("k", limit=1, window_seconds=HOUR)
    await limiter.acquire("s", limit=1, ttl_seconds=60)
    with pytest.raises(ValueError, match="rate window"):
        await limiter.acquire("k", limit=1, ttl_seconds=60)
    with pytest.raises(ValueError, match="rate window"):
        await limiter.release("k")
    with pytest.raises(ValueError, match="concurrency bucket"):
        await limiter.hit("s", limit=1, window_seconds=HOUR)
    with pytest.raises(ValueError, match="concurrency bucket"):
        await limiter.add("s", window_seconds=HOUR, cost=1)


async def test_a_flood_of_client_addresses_never_frees_a_keys_slots_or_windows(limiter: Limiter) -> None:
    limits = LimitsSettings(per_ip={"requests": 5, "window_seconds": 60})
    slots = concurrency_bucket("key_1")
    assert await limiter.acquire(slots, limit=2, ttl_seconds=600)
    assert await limiter.acquire(slots, limit=2, ttl_seconds=600)
    assert (await limiter.hit("rpm:key_1", limit=1, window_seconds=60)).allowed
    for n in range(200):  # ten times the memory backend's stores
        await check_ip(limiter, limits, f"127.0.{n // 250}.{n % 250 + 2}")
        await check_ip(limiter, limits, f"2001:db8:{n:x}::1")
    assert not await limiter.acquire(slots, limit=2, ttl_seconds=600)
    assert not (await limiter.hit("rpm:key_1", limit=1, window_seconds=60)).allowed


async def test_ipv6_clients_share_a_limit_per_prefix(limiter: Limiter) -> None:
    limits = LimitsSettings(per_ip={"requests": 2, "window_seconds": 60})
    await check_ip(limiter, limits, "2001:db8:0:1::1")
    await check_ip(limiter, limits, "2001:db8:0:1:ffff::2")
    with pytest.raises(Exception, match="Too many requests"):
        await check_ip(limiter, limits, "2001:db8:0:1::3")
    await check_ip(limiter, limits, "2001:db8:0:2::1")  # the next /64 has its own
    await check_ip(limiter, limits, "127.0.0.2")
    await check_ip(limiter, limits, "127.0.0.2")
    await check_ip(limiter, limits, "127.0.0.3")  # IPv4: per address
