"""Redis-only limiter behaviour (TTLs, Redis time, shared counts, fallback); the behaviour every backend
shares is in tests/contract/test_limiter_contract.py."""

import asyncio
import logging
import math
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.limits import Decision, Limiter, MemoryLimiter
from app.limits.fallback import FallbackLimiter
from app.limits.redis import RedisLimiter

HOUR = 3600.0
FALLBACK_LOGGER = "app.limits.fallback"


async def redis_now(client: Redis) -> float:
    sec, usec = await client.time()
    return int(sec) + int(usec) / 1_000_000


async def seed(
    client: Redis, key: str, *, window: float, current: int, previous: int = 0, windows_ago: int = 0
) -> float:
    """Write a rate bucket as the script stores it, `windows_ago` windows back; return Redis's time."""
    now = await redis_now(client)
    index = math.floor(now / window) - windows_ago
    await client.hset(key, mapping={"w": repr(window), "i": index, "c": current, "p": previous})
    await client.pexpire(key, math.ceil(2 * window * 1000))
    return now


def test_backends_satisfy_the_limiter_interface(dead_client: Redis) -> None:
    redis_limiter: Limiter = RedisLimiter(dead_client)  # checked by mypy --strict
    fallback: Limiter = FallbackLimiter(redis_limiter, MemoryLimiter())
    assert isinstance(fallback, FallbackLimiter)


async def test_refund_reaches_the_previous_window(limiter: RedisLimiter, redis_client: Redis) -> None:
    key = limiter.key("tokens")
    await seed(redis_client, key, window=HOUR, current=100, windows_ago=1)
    await limiter.add("tokens", window_seconds=HOUR, cost=-60)
    assert await redis_client.hmget(key, ["c", "p"]) == [b"0", b"40"]


async def test_negative_add_on_unknown_bucket_creates_nothing(limiter: RedisLimiter, redis_client: Redis) -> None:
    await limiter.add("ghost", window_seconds=HOUR, cost=-5)
    assert await redis_client.exists(limiter.key("ghost")) == 0


async def test_previous_window_is_weighted_by_its_overlap(limiter: RedisLimiter, redis_client: Redis) -> None:
    before = await seed(redis_client, limiter.key("k"), window=HOUR, current=300, windows_ago=1)
    decision = await limiter.hit("k", limit=1000, window_seconds=HOUR)
    after = await redis_now(redis_client)
    # remaining = floor(1000 - 300 * (1 - f) - 1), f being the elapsed fraction of this hour.
    low = math.floor(999 - 300 * (1 - (before % HOUR) / HOUR))
    high = math.floor(999 - 300 * (1 - (after % HOUR) / HOUR))
    assert decision.allowed
    assert low <= decision.remaining <= high


async def test_usage_is_forgotten_after_two_windows(limiter: RedisLimiter, redis_client: Redis) -> None:
    await seed(redis_client, limiter.key("k"), window=HOUR, current=3, windows_ago=2)
    decision = await limiter.hit("k", limit=3, window_seconds=HOUR)
    assert (decision.allowed, decision.remaining) == (True, 2)


async def test_clock_stepping_back_counts_as_the_start_of_the_stored_window(
    limiter: RedisLimiter, redis_client: Redis
) -> None:
    # Stored one window ahead of Redis's clock (a failover to a host whose clock is behind): the
    # previous window still weighs fully, so nothing is forgotten early.
    await seed(redis_client, limiter.key("k"), window=HOUR, current=0, previous=10, windows_ago=-1)
    decision = await limiter.hit("k", limit=10, window_seconds=HOUR)
    assert not decision.allowed
    assert decision.retry_after > 0.1 * HOUR


async def test_retry_and_reset_after_follow_the_memory_formulas(limiter: RedisLimiter, redis_client: Redis) -> None:
    before = await seed(redis_client, limiter.key("k"), window=HOUR, current=10)
    decision = await limiter.hit("k", limit=10, window_seconds=HOUR)
    after = await redis_now(redis_client)
    start = math.floor(before / HOUR) * HOUR
    assert not decision.allowed
    # The current window alone fills the limit: a hit of 1 fits once 10 * (1 - f) <= 9 in the next one.
    assert start + 1.1 * HOUR - after <= decision.retry_after <= start + 1.1 * HOUR - before + 1e-3
    assert start + 2 * HOUR - after <= decision.reset_after <= start + 2 * HOUR - before


async def test_waiting_retry_after_admits_the_hit(limiter: RedisLimiter) -> None:
    window = 0.5  # real sleeping: keep it short
    assert (await limiter.hit("k", limit=2, window_seconds=window)).allowed
    assert (await limiter.hit("k", limit=2, window_seconds=window)).allowed
    denied = await limiter.hit("k", limit=2, window_seconds=window)
    assert not denied.allowed
    assert 0 < denied.retry_after <= 2 * window
    waited = 0.0
    if denied.retry_after > 0.2:  # long enough to probe half way without racing the loopback latency
        waited = denied.retry_after / 2
        await asyncio.sleep(waited)
        assert not (await limiter.hit("k", limit=2, window_seconds=window)).allowed
    await asyncio.sleep(denied.retry_after - waited)
    assert (await limiter.hit("k", limit=2, window_seconds=window)).allowed


async def test_keys_carry_a_ttl_so_nothing_leaks(limiter: RedisLimiter, redis_client: Redis) -> None:
    await limiter.hit("rate", limit=5, window_seconds=60)
    assert 0 < await redis_client.pttl(limiter.key("rate")) <= 120_000
    await limiter.acquire("slots", limit=5, ttl_seconds=30)
    assert 0 < await redis_client.pttl(limiter.key("slots")) <= 30_001  # the key's expiry is rounded up to a ms
    await limiter.release("slots")
    assert await redis_client.exists(limiter.key("slots")) == 0  # a released bucket frees its key


async def test_zero_limit_never_admits_a_slot(limiter: RedisLimiter, redis_client: Redis) -> None:
    assert not await limiter.acquire("streams", limit=0, ttl_seconds=600)
    assert await redis_client.exists(limiter.key("streams")) == 0


async def test_leaked_slot_expires_after_its_ttl(limiter: RedisLimiter) -> None:
    assert await limiter.acquire("streams", limit=2, ttl_seconds=600)  # keeps the key alive: pruning must act
    assert await limiter.acquire("streams", limit=2, ttl_seconds=0.2)
    assert not await limiter.acquire("streams", limit=2, ttl_seconds=0.2)
    await asyncio.sleep(0.25)
    assert await limiter.acquire("streams", limit=2, ttl_seconds=0.2)


async def test_release_keeps_the_slot_with_the_latest_expiry(limiter: RedisLimiter, redis_client: Redis) -> None:
    assert await limiter.acquire("streams", limit=3, ttl_seconds=100)
    assert await limiter.acquire("streams", limit=3, ttl_seconds=600)
    await limiter.release("streams")
    slots: Any = await redis_client.zrange(limiter.key("streams"), 0, -1, withscores=True)
    [(_, expiry)] = slots
    assert expiry / 1_000_000 - await redis_now(redis_client) > 500


async def test_invalid_arguments_are_refused_without_asking_redis(dead_client: Redis) -> None:
    limiter = RedisLimiter(dead_client)
    with pytest.raises(ValueError, match="negative"):
        await limiter.hit("k", limit=1, window_seconds=HOUR, cost=-1)
    with pytest.raises(ValueError, match="window_seconds"):
        await limiter.hit("k", limit=1, window_seconds=0)
    with pytest.raises(ValueError, match="window_seconds"):
        await limiter.add("k", window_seconds=math.inf, cost=1)
    with pytest.raises(ValueError, match="ttl_seconds"):
        await limiter.acquire("s", limit=1, ttl_seconds=0)


async def test_two_limiters_on_two_clients_share_counts(redis_client: Redis, other_client: Redis, prefix: str) -> None:
    first, second = RedisLimiter(redis_client, prefix=prefix), RedisLimiter(other_client, prefix=prefix)
    assert (await first.hit("k", limit=3, window_seconds=HOUR)).allowed
    assert (await second.hit("k", limit=3, window_seconds=HOUR)).allowed
    assert (await first.hit("k", limit=3, window_seconds=HOUR)).allowed
    assert not (await second.hit("k", limit=3, window_seconds=HOUR)).allowed
    assert await first.acquire("streams", limit=1, ttl_seconds=60)
    assert not await second.acquire("streams", limit=1, ttl_seconds=60)
    await second.release("streams")  # a process frees only slots it holds
    assert not await second.acquire("streams", limit=1, ttl_seconds=60)
    await first.release("streams")
    assert await second.acquire("streams", limit=1, ttl_seconds=60)


async def test_concurrent_hits_admit_exactly_the_limit(redis_client: Redis, other_client: Redis, prefix: str) -> None:
    limiters = [RedisLimiter(redis_client, prefix=prefix), RedisLimiter(other_client, prefix=prefix)]
    decisions = await asyncio.gather(*(limiters[i % 2].hit("k", limit=50, window_seconds=HOUR) for i in range(200)))
    assert sum(d.allowed for d in decisions) == 50
    grants = await asyncio.gather(*(limiters[i % 2].acquire("s", limit=7, ttl_seconds=60) for i in range(100)))
    assert sum(grants) == 7


class Switchable:
    """A limiter that raises a Redis connection error while `down`, and counts the calls it got."""

    def __init__(self, inner: Limiter) -> None:
        self.inner = inner
        self.down = False
        self.calls = 0
        self.gate: asyncio.Event | None = None  # when set to an Event, calls wait for it (a slow Redis)

    async def _check(self) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise RedisConnectionError("Connection refused")

    async def hit(self, bucket: str, *, limit: int, window_seconds: float, cost: int = 1) -> Decision:
        await self._check()
        return await self.inner.hit(bucket, limit=limit, window_seconds=window_seconds, cost=cost)

    async def add(self, bucket: str, *, window_seconds: float, cost: int) -> None:
        await self._check()
        await self.inner.add(bucket, window_seconds=window_seconds, cost=cost)

    async def acquire(self, bucket: str, *, limit: int, ttl_seconds: float) -> bool:
        await self._check()
        return await self.inner.acquire(bucket, limit=limit, ttl_seconds=ttl_seconds)

    async def release(self, bucket: str) -> None:
        await self._check()
        await self.inner.release(bucket)

    async def renew_slots(self) -> None:
        await self._check()
        await self.inner.renew_slots()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [r for r in caplog.records if r.name == FALLBACK_LOGGER and r.levelno == logging.WARNING]


async def test_fallback_keeps_answering_when_redis_is_unreachable(
    dead_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = FallbackLimiter(RedisLimiter(dead_client), MemoryLimiter())
    with caplog.at_level(logging.INFO, logger=FALLBACK_LOGGER):
        decisions = [await limiter.hit("ip:1", limit=3, window_seconds=60) for _ in range(5)]
        assert await limiter.acquire("streams", limit=1, ttl_seconds=60)
        assert not await limiter.acquire("streams", limit=1, ttl_seconds=60)
        await limiter.add("tokens", window_seconds=60, cost=5)
    assert [d.allowed for d in decisions] == [True, True, True, False, False]  # counted locally
    assert limiter.degraded
    assert len(warnings_of(caplog)) == 1


async def test_fallback_probes_after_the_back_off_and_resumes_sharing(caplog: pytest.LogCaptureFixture) -> None:
    clock, primary, local = Clock(), Switchable(MemoryLimiter()), MemoryLimiter()
    limiter = FallbackLimiter(primary, local, retry_seconds=5, clock=clock)
    with caplog.at_level(logging.INFO, logger=FALLBACK_LOGGER):
        assert (await limiter.hit("k", limit=10, window_seconds=60)).allowed
        primary.down = True
        for _ in range(3):
            assert (await limiter.hit("k", limit=10, window_seconds=60)).allowed
        assert primary.calls == 2  # one success, one failure; then it is left alone
        clock.now += 5
        await limiter.hit("k", limit=10, window_seconds=60)  # the probe, still failing
        await limiter.hit("k", limit=10, window_seconds=60)
        assert primary.calls == 3
        primary.down = False
        clock.now += 5
        decision = await limiter.hit("k", limit=10, window_seconds=60)
    assert not limiter.degraded
    assert decision.remaining == 8  # the shared count again: 2 hits there, the local ones stayed local
    assert len(warnings_of(caplog)) == 1
    assert any("reachable again" in r.getMessage() for r in caplog.records)


async def test_only_one_call_probes_while_the_others_count_locally() -> None:
    clock, primary = Clock(), Switchable(MemoryLimiter())
    limiter = FallbackLimiter(primary, MemoryLimiter(), retry_seconds=5, clock=clock)
    primary.down = True
    await limiter.hit("k", limit=10, window_seconds=60)
    primary.down, primary.gate = False, asyncio.Event()
    clock.now += 5
    probe = asyncio.create_task(limiter.hit("k", limit=10, window_seconds=60))
    await asyncio.sleep(0)  # the probe is now waiting on the slow primary
    assert primary.calls == 2
    assert (await asyncio.wait_for(limiter.hit("k", limit=10, window_seconds=60), 1)).allowed  # answered locally
    assert primary.calls == 2
    primary.gate.set()
    assert (await asyncio.wait_for(probe, 1)).allowed
    assert not limiter.degraded


async def test_slot_is_released_on_the_backend_that_granted_it() -> None:
    clock, shared, local = Clock(), MemoryLimiter(), MemoryLimiter()
    primary = Switchable(shared)
    limiter = FallbackLimiter(primary, local, retry_seconds=5, clock=clock)
    assert await limiter.acquire("streams", limit=1, ttl_seconds=600)  # on the shared backend
    primary.down = True
    assert await limiter.acquire("streams", limit=1, ttl_seconds=600)  # local
    primary.down = False
    clock.now += 5
    await limiter.release("streams")
    await limiter.release("streams")
    assert await shared.acquire("streams", limit=1, ttl_seconds=600)  # both freed, on their own backend
    assert await local.acquire("streams", limit=1, ttl_seconds=600)


async def test_failed_shared_release_does_not_free_a_local_slot() -> None:
    primary, local = Switchable(MemoryLimiter()), MemoryLimiter()
    limiter = FallbackLimiter(primary, local)
    assert await limiter.acquire("streams", limit=1, ttl_seconds=600)
    assert await local.acquire("streams", limit=1, ttl_seconds=600)  # someone else's local slot
    primary.down = True
    await limiter.release("streams")  # the shared slot; its TTL will free it in Redis
    assert not await local.acquire("streams", limit=1, ttl_seconds=600)
    assert limiter.degraded


async def test_argument_errors_propagate_and_are_no_outage(caplog: pytest.LogCaptureFixture) -> None:
    limiter = FallbackLimiter(Switchable(MemoryLimiter()), MemoryLimiter())
    with pytest.raises(ValueError, match="negative"):
        await limiter.hit("k", limit=1, window_seconds=60, cost=-1)
    assert not limiter.degraded
    assert warnings_of(caplog) == []


async def test_a_dead_owners_slots_lapse_after_a_lease_while_a_renewing_owners_stay(
    redis_client: Redis, other_client: Redis, prefix: str
) -> None:
    dead = RedisLimiter(redis_client, prefix=prefix, owner="dead", lease_seconds=0.6)
    alive = RedisLimiter(other_client, prefix=prefix, owner="alive", lease_seconds=0.6)
    assert await dead.acquire("conc:k", limit=2, ttl_seconds=990)  # the request's timeout: capped by the lease
    assert await alive.acquire("conc:k", limit=2, ttl_seconds=990)
    assert not await alive.acquire("conc:k", limit=2, ttl_seconds=990)
    for _ in range(5):  # 1 s: the live owner renews (its renewals are a third of a lease apart); the dead one cannot
        await asyncio.sleep(0.2)
        await alive.renew_slots()
    assert await alive.acquire("conc:k", limit=2, ttl_seconds=990)  # the dead owner's slot is gone
    assert not await alive.acquire("conc:k", limit=2, ttl_seconds=990)  # the renewed one is not
    members: list[bytes] = await redis_client.zrange(alive.key("conc:k"), 0, -1)  # type: ignore[assignment]
    assert sorted(member.split(b":")[0] for member in members) == [b"alive", b"alive"]
