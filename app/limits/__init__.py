"""Rate and concurrency limits: the `Limiter` interface and its backends.

`limiter` holds the interface, the `Decision` it returns and the headers rendered from it; `memory` is
the single-process backend. A gateway running several workers must use a shared backend instead,
because in-memory counters would each count alone.
"""

from app.limits.fallback import FallbackLimiter
from app.limits.limiter import Decision, Limiter, ratelimit_headers
from app.limits.memory import MemoryLimiter
from app.limits.redis import RedisLimiter, connect

__all__ = ["Decision", "FallbackLimiter", "Limiter", "MemoryLimiter", "RedisLimiter", "connect", "ratelimit_headers"]
