"""Redis limiter: the same limits as `app.limits.memory`, shared by every worker and host using one Redis.

Rules owned here:

- Each operation is ONE Lua script, so reading and updating a bucket is atomic across all clients, and
  time is Redis's `TIME` inside the script: workers with skewed clocks still agree on the window.
- Semantics are those of `MemoryLimiter` (sliding-window counter, denied hits record nothing, refunds
  from the current window first, slots released earliest-expiry first -- here among the releasing
  process's own, see `RedisLimiter`). The script decides and returns
  the bucket's state; `retry_after`, `reset_after` and `remaining` are then computed from that state by
  the memory backend's own formulas, so both backends always give the same answers.
- A rate bucket is one hash `{w: window, i: window index, c: current, p: previous}` whose TTL is two
  windows from its last write (after that it counts nothing). A concurrency bucket is a sorted set of
  slot id -> expiry in integer microseconds, pruned on every call, whose TTL is its latest slot's expiry.
  Nothing outlives its usefulness, so the key space stays bounded without any sweeper.
- Rate and concurrency buckets share one key space under `prefix`; using a name as the other kind is a
  `ValueError`, as in memory. Each class has its own name (`ip:`, `rpm:`, `tpm:`, `conc:`) and Redis
  never evicts by count, so, as in memory, per-IP traffic cannot push out a key's windows or its live
  slots (run Redis with `maxmemory-policy noeviction` or `volatile-ttl`, never an `allkeys-*` policy).
- Needs Redis >= 5 (scripts that call TIME and then write, ZPOPMIN). One key per script, so it also
  works on a Redis Cluster.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.limits.limiter import Decision
from app.limits.memory import _remaining, _Window

# Script sentinel: the key holds the other kind of bucket.
_WRONG_KIND = -1

# Numbers go back to Redis through %.17g: Lua's default %.14g would round microsecond timestamps.
_LUA_COMMON = """
local key = KEYS[1]
local function num(x) return string.format('%.17g', x) end
local kind = redis.call('TYPE', key)['ok']
local t = redis.call('TIME')
local sec, usec = tonumber(t[1]), tonumber(t[2])
"""

# Loads the rate bucket and rolls it to the window containing now (see memory._Window.roll).
# ARGV[1] = window seconds.
_LUA_WINDOW = (
    _LUA_COMMON
    + """
if kind ~= 'none' and kind ~= 'hash' then return {-1} end
local window = tonumber(ARGV[1])
local now = sec + usec / 1000000
local index = math.floor(now / window)
local current, previous, fraction = 0, 0, nil
local state = redis.call('HMGET', key, 'w', 'i', 'c', 'p')
if state[1] and tonumber(state[1]) == window then
  local stored = tonumber(state[2])
  current, previous = tonumber(state[3]), tonumber(state[4])
  if index > stored then
    if index == stored + 1 then previous = current else previous = 0 end
    current = 0
  elseif index < stored then
    -- Redis's clock stepped back (e.g. a failover): count as the start of the window already stored.
    index, fraction = stored, 0
  end
end
if not fraction then
  fraction = (now - index * window) / window
  if fraction > 1 then fraction = 1 elseif fraction < 0 then fraction = 0 end
end
local function save()
  redis.call('HSET', key, 'w', ARGV[1], 'i', num(index), 'c', num(current), 'p', num(previous))
  redis.call('PEXPIRE', key, math.ceil(2 * window * 1000))
end
"""
)

# ARGV[2] = limit, ARGV[3] = cost. Returns {allowed, sec, usec, index, current, previous, used}.
_LUA_HIT = (
    _LUA_WINDOW
    + """
local limit, cost = tonumber(ARGV[2]), tonumber(ARGV[3])
local used = previous * (1 - fraction) + current
local allowed = 0
if used + cost <= limit + 1e-6 then
  allowed = 1
  current = current + cost
  save()
end
return {allowed, sec, usec, num(index), num(current), num(previous), num(used)}
"""
)

# ARGV[2] = cost, may be negative (a refund). Returns 1, or 0 when there was nothing to refund.
_LUA_ADD = (
    _LUA_WINDOW
    + """
local cost = tonumber(ARGV[2])
if cost <= 0 and kind == 'none' then return 0 end
if cost >= 0 then
  current = current + cost
else
  local taken = math.min(-cost, current)
  current = current - taken
  previous = math.max(0, previous - (-cost - taken))
end
save()
return 1
"""
)

_LUA_SLOTS = (
    _LUA_COMMON
    + """
if kind ~= 'none' and kind ~= 'zset' then return -1 end
local now = sec * 1000000 + usec
"""
)

# ARGV[1] = limit, ARGV[2] = ttl in microseconds, ARGV[3] = slot id. Returns 1 if granted, else 0.
_LUA_ACQUIRE = (
    _LUA_SLOTS
    + """
redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now))
if redis.call('ZCARD', key) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', key, num(now + tonumber(ARGV[2])), ARGV[3])
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', key, num(math.ceil(tonumber(last[2]) / 1000)))
return 1
"""
)

# ARGV[1] = the owner's member prefix. Frees the owner's slot expiring first, then prunes.
_LUA_RELEASE = (
    _LUA_SLOTS
    + """
for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  if string.sub(member, 1, #ARGV[1]) == ARGV[1] then
    redis.call('ZREM', key, member)
    break
  end
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now))
return 1
"""
)

# ARGV[1] = the owner's member prefix, ARGV[2] = lease in microseconds. Extends every live slot of the
# owner to now + lease; returns how many there were.
_LUA_RENEW = (
    _LUA_SLOTS
    + """
redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now))
local found = 0
for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  if string.sub(member, 1, #ARGV[1]) == ARGV[1] then
    redis.call('ZADD', key, 'XX', num(now + tonumber(ARGV[2])), member)
    found = found + 1
  end
end
if found > 0 then
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', key, num(math.ceil(tonumber(last[2]) / 1000)))
end
return found
"""
)


def connect(url: str, *, timeout: float = 0.5) -> Redis:
    """A client suited to limits: short timeouts and no retries.

    A limit check sits in front of every request, so a slow or absent Redis must fail fast and let
    `FallbackLimiter` answer locally; redis-py's default of ten retries with back-off would stall requests.
    """
    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )
    return client


def _check_window(window_seconds: float) -> None:
    if not window_seconds > 0 or math.isinf(window_seconds):
        raise ValueError(f"window_seconds must be a positive finite number, got {window_seconds!r}")


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLimiter:
    """`Limiter` backed by Redis; every instance given the same Redis and prefix shares the counts.

    Concurrency slots are leased like holds (`app.money.leases`): each is named after its `owner` (the
    process's instance id), lasts at most `lease_seconds` unless its owner renews it (`renew_slots`,
    from the services' maintenance), and is released by its owner. So the slots of a process that
    died (`kill -9`, OOM) free themselves within a lease, instead of blocking their key until the
    request's whole timeout has passed.
    """

    __slots__ = ("_acquire", "_add", "_hit", "_lease", "_live", "_owner", "_prefix", "_release", "_renew", "_renew_at")

    def __init__(
        self, client: Redis, *, prefix: str = "sg:", owner: str | None = None, lease_seconds: float | None = None
    ) -> None:
        if lease_seconds is not None and not 0 < lease_seconds < math.inf:
            raise ValueError(f"lease_seconds must be a positive finite number, got {lease_seconds!r}")
        self._prefix = prefix
        self._owner = f"{owner or secrets.token_hex(6)}:"  # the members of this process's slots start so
        self._lease = lease_seconds
        self._live: dict[str, int] = {}  # bucket -> slots this process holds there
        self._renew_at = 0.0
        # register_script only hashes the source; Redis loads it on first use (and again after a flush).
        self._hit = client.register_script(_LUA_HIT)
        self._add = client.register_script(_LUA_ADD)
        self._acquire = client.register_script(_LUA_ACQUIRE)
        self._release = client.register_script(_LUA_RELEASE)
        self._renew = client.register_script(_LUA_RENEW)

    def key(self, bucket: str) -> str:
        """The Redis key holding `bucket`."""
        return self._prefix + bucket

    async def hit(self, bucket: str, *, limit: int, window_seconds: float, cost: int = 1) -> Decision:
        if cost < 0:
            raise ValueError("hit cost must not be negative; use add() to give units back")
        _check_window(window_seconds)
        reply: Sequence[Any] = await self._hit(keys=[self.key(bucket)], args=[repr(float(window_seconds)), limit, cost])
        if reply[0] == _WRONG_KIND:
            raise ValueError(f"bucket {bucket!r} is a concurrency bucket, not a rate window")
        allowed, sec, usec, index, current, previous, used_text = reply
        # The same arithmetic as the script's, on the same doubles: `now` is bit-identical.
        now = int(sec) + int(usec) / 1_000_000
        state = _Window(window_seconds, now)
        state.index = int(_as_str(index))
        state.current = int(_as_str(current))
        state.previous = int(_as_str(previous))
        used = float(_as_str(used_text))
        if allowed == 1:
            return Decision(True, limit, _remaining(limit, used + cost), 0.0, state.reset_after(now))
        return Decision(
            False, limit, _remaining(limit, used), state.retry_after(now, limit, cost), state.reset_after(now)
        )

    async def add(self, bucket: str, *, window_seconds: float, cost: int) -> None:
        _check_window(window_seconds)
        reply = await self._add(keys=[self.key(bucket)], args=[repr(float(window_seconds)), cost])
        if _first(reply) == _WRONG_KIND:
            raise ValueError(f"bucket {bucket!r} is a concurrency bucket, not a rate window")

    async def acquire(self, bucket: str, *, limit: int, ttl_seconds: float) -> bool:
        if not ttl_seconds > 0 or math.isinf(ttl_seconds):
            raise ValueError(f"ttl_seconds must be a positive finite number, got {ttl_seconds!r}")
        if self._lease is not None:
            ttl_seconds = min(ttl_seconds, self._lease)  # renewed while the request runs
        ttl_us = max(1, math.ceil(ttl_seconds * 1_000_000))
        # Slot ids only need to be unique within one bucket's live slots.
        member = self._owner + secrets.token_hex(12)
        reply = await self._acquire(keys=[self.key(bucket)], args=[limit, ttl_us, member])
        if reply == _WRONG_KIND:
            raise ValueError(f"bucket {bucket!r} is a rate window, not a concurrency bucket")
        if reply == 1:
            self._live[bucket] = self._live.get(bucket, 0) + 1
        return bool(reply == 1)

    async def release(self, bucket: str) -> None:
        held = self._live.pop(bucket, 0)
        if held > 1:
            self._live[bucket] = held - 1
        reply = await self._release(keys=[self.key(bucket)], args=[self._owner])
        if reply == _WRONG_KIND:
            raise ValueError(f"bucket {bucket!r} is a rate window, not a concurrency bucket")

    async def renew_slots(self) -> None:
        """Extend this process's live slots by a lease, a third of the way through it (call it often)."""
        if self._lease is None or not self._live:
            return
        now = time.monotonic()
        if now < self._renew_at:
            return
        self._renew_at = now + self._lease / 3
        lease_us = max(1, math.ceil(self._lease * 1_000_000))
        for bucket in list(self._live):
            await self._renew(keys=[self.key(bucket)], args=[self._owner, lease_us])


def _first(reply: Any) -> Any:
    # The window prologue signals the wrong kind with a one-element table; other replies are integers.
    return reply[0] if isinstance(reply, list) else reply
