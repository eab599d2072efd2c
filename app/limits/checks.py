"""The limit checks of the request flow: per client address (before auth), then per key.

Order (docs/reliability.md): the per-IP window counts every request, authenticated or not, so failed
logins are limited too; the per-key checks come after authentication and validation:
requests/min, tokens/min (the prompt estimate, corrected when the request ends), and concurrent
requests (a slot held until the request ends).

An IPv4 client is limited per address; an IPv6 client per network of ``ipv6_prefix_length`` bits
(default /64, what one subscriber is usually given: limiting per address would let one host rotate
through 2^64 of them). Anything that is not an IP address (a test client's name) is its own bucket.
Every refusal is reported to ``rejected(kind)`` first (``seedgate_limit_rejections_total``), kind
being ``ip``, ``tpm_request`` (a request larger than the key's tokens/min), ``rpm``, ``tpm`` or
``concurrency``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable

from app.errors import RateLimited
from app.keys import KeyRecord
from app.limits.limiter import Limiter, ratelimit_headers
from app.limits.memory import IP_PREFIX
from app.settings import KeyDefaults, LimitsSettings

Rejected = Callable[[str], None]


def _uncounted(_kind: str) -> None:
    return None


def concurrency_bucket(key_id: str) -> str:
    return f"conc:{key_id}"


def tpm_bucket(key_id: str) -> str:
    return f"tpm:{key_id}"


@functools.lru_cache(maxsize=4096)
def ip_bucket(client_ip: str, ipv6_prefix_length: int = 64) -> str:
    """The per-IP bucket of ``client_ip``: the IPv4 address, or its IPv6 network."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return IP_PREFIX + client_ip
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is None:
            network = ipaddress.IPv6Network((address, ipv6_prefix_length), strict=False)
            return f"{IP_PREFIX}{network.network_address.compressed}/{ipv6_prefix_length}"
        address = mapped
    return IP_PREFIX + address.compressed


async def check_ip(
    limiter: Limiter,
    limits: LimitsSettings,
    client_ip: str,
    *,
    rejected: Rejected = _uncounted,
    cost: int = 1,
    refusal: str = "Too many requests from this address; slow down.",
) -> None:
    window = limits.per_ip
    bucket = ip_bucket(client_ip, limits.ipv6_prefix_length)
    decision = await limiter.hit(bucket, limit=window.requests, window_seconds=window.window_seconds, cost=cost)
    if not decision.allowed:
        rejected("ip")
        raise RateLimited(
            refusal,
            headers=ratelimit_headers(decision),
            fallback_suggestion=f"retry after {max(1, round(decision.retry_after))} seconds",
        )


async def refuse_while_guessing(
    limiter: Limiter, limits: LimitsSettings, client_ip: str, *, rejected: Rejected = _uncounted
) -> None:
    """For a secret checked outside the billed flow (the master key, the metrics token): a 429 while
    failed guesses (``count_failed_guess``) have taken this address past its per-IP limit -- whatever
    the secret given, so a locked-out guesser learns nothing. Requests with the right secret cost nothing.
    """
    refusal = "Too many failed attempts from this address; slow down."
    await check_ip(limiter, limits, client_ip, rejected=rejected, cost=0, refusal=refusal)


async def count_failed_guess(limiter: Limiter, limits: LimitsSettings, client_ip: str) -> None:
    """One wrong secret from ``client_ip``, counted in its per-IP window (see ``refuse_while_guessing``)."""
    bucket = ip_bucket(client_ip, limits.ipv6_prefix_length)
    await limiter.add(bucket, window_seconds=limits.per_ip.window_seconds, cost=1)


async def limit_key(
    limiter: Limiter,
    key: KeyRecord,
    defaults: KeyDefaults,
    *,
    prompt_tokens: int,
    slot_ttl: float,
    rejected: Rejected = _uncounted,
) -> dict[str, str]:
    """Requests/min, tokens/min and a concurrency slot for ``key``; the ``x-ratelimit-*`` headers.

    The caller owns the slot from here on and gives it back with ``release_key``.
    """
    tpm_limit = key.tpm or defaults.tpm
    if prompt_tokens > tpm_limit:
        # it can never fit: tell the SDKs not to retry, and spend none of the key's request budget
        rejected("tpm_request")
        raise RateLimited(
            f"This request (~{prompt_tokens} prompt tokens) exceeds the key's limit of {tpm_limit} tokens per minute.",
            code="request_exceeds_tpm",
            headers={"x-should-retry": "false"},
        )
    rpm = await limiter.hit(f"rpm:{key.id}", limit=key.rpm or defaults.rpm, window_seconds=60)
    if not rpm.allowed:
        rejected("rpm")
        raise RateLimited("This key's requests-per-minute limit is reached.", headers=ratelimit_headers(rpm))
    tpm = await limiter.hit(tpm_bucket(key.id), limit=tpm_limit, window_seconds=60, cost=prompt_tokens)
    if not tpm.allowed:
        rejected("tpm")
        raise RateLimited("This key's tokens-per-minute limit is reached.", headers=ratelimit_headers(tpm))
    limit = key.max_concurrent or defaults.max_concurrent
    if not await limiter.acquire(concurrency_bucket(key.id), limit=limit, ttl_seconds=slot_ttl):
        rejected("concurrency")
        raise RateLimited(f"This key already has {limit} requests running.", headers={"retry-after": "1"})
    return {
        "x-ratelimit-limit-requests": str(rpm.limit),
        "x-ratelimit-remaining-requests": str(rpm.remaining),
        "x-ratelimit-limit-tokens": str(tpm.limit),
        "x-ratelimit-remaining-tokens": str(tpm.remaining),
    }


async def release_key(limiter: Limiter, key_id: str, *, tokens_estimated: int, tokens_used: int) -> None:
    """Give back the concurrency slot and correct the tokens/min estimate with what was used."""
    await limiter.release(concurrency_bucket(key_id))
    correction = tokens_used - tokens_estimated
    if correction:
        await limiter.add(tpm_bucket(key_id), window_seconds=60, cost=correction)
