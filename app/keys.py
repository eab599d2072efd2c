"""API keys: format, hashing, lookup and administration.

A key is ``sk-`` + 43 base62 characters (32 random bytes) + a 6-character base62 CRC32 checksum.
Only ``sha256(key)`` is stored (unique index) with a display prefix and the last four characters;
the raw key exists once, in the response that creates it. 256 random bits make a slow or peppered
hash unnecessary: nobody can brute-force the preimage, and a plain digest keeps the lookup cheap.

Lookups go by hash only, as a bound parameter. Authenticated records are cached for
``auth.cache_ttl_seconds`` (default 2 s): a revoke or update made through this process evicts the
entry at once; other processes see it when their entry expires.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from app.db import Database
from app.errors import AuthenticationFailed
from app.tables import api_keys

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # ceil(256 / log2(62))
_CHECK_LEN = 6
KEY_PREFIX = "sk-"
KEY_LENGTH = len(KEY_PREFIX) + _BODY_LEN + _CHECK_LEN
_CACHE_MAX = 50_000


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECK_LEN)


def generate_key() -> str:
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return f"{KEY_PREFIX}{body}{_checksum(body)}"


def well_formed(raw: str) -> bool:
    """Cheap structural check, so garbage never reaches the database."""
    if len(raw) != KEY_LENGTH or not raw.startswith(KEY_PREFIX):
        return False
    body, check = raw[len(KEY_PREFIX) : -_CHECK_LEN], raw[-_CHECK_LEN:]
    # the checksum characters too: compare_digest raises TypeError on non-ASCII strings
    return all(c in _ALPHABET for c in body + check) and secrets.compare_digest(check, _checksum(body))


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the request path needs to know about a key (never its balance: that lives in SQL)."""

    id: str
    name: str
    models: frozenset[str] | None
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    monthly_quota: int | None
    expires_at: datetime | None
    revoked: bool

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(
            id=row.id,
            name=row.name,
            models=frozenset(row.models) if row.models is not None else None,
            rpm=row.rpm,
            tpm=row.tpm,
            max_concurrent=row.max_concurrent,
            monthly_quota=row.monthly_quota,
            expires_at=row.expires_at,
            revoked=row.revoked_at is not None,
        )

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


_AUTH_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.key_hash,
    api_keys.c.models,
    api_keys.c.rpm,
    api_keys.c.tpm,
    api_keys.c.max_concurrent,
    api_keys.c.monthly_quota,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
)


class KeyStore:
    def __init__(self, db: Database, *, cache_ttl: float) -> None:
        self._db = db
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, KeyRecord]] = {}
        self._hash_by_id: dict[str, str] = {}

    async def lookup(self, raw: str) -> KeyRecord | None:
        """The key's record, or None when it is malformed or unknown. Revocation is checked by the caller."""
        digest = hash_key(raw)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]  # only well-formed keys are ever cached
        if not well_formed(raw):
            return None
        async with self._db.read() as conn:
            row = (await conn.execute(select(*_AUTH_COLUMNS).where(api_keys.c.key_hash == digest))).first()
        if row is None:
            return None
        # compare_digest: the index found it, this guards against any collation surprise
        if not secrets.compare_digest(row.key_hash, digest):
            return None
        record = KeyRecord.from_row(row)
        if self._ttl > 0:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
                self._hash_by_id.clear()
            self._cache[digest] = (now + self._ttl, record)
            self._hash_by_id[record.id] = digest
        return record

    def invalidate(self, key_id: str) -> None:
        digest = self._hash_by_id.pop(key_id, None)
        if digest is not None:
            self._cache.pop(digest, None)

    async def revoke(self, key_id: str) -> bool:
        now = datetime.now(UTC)
        async with self._db.write() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now, updated_at=now)
            )
        self.invalidate(key_id)
        return result.rowcount > 0


def hmac_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets of any content."""
    return secrets.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


async def authenticate(store: KeyStore, raw: str | None) -> KeyRecord:
    """The key a request presents, or 401: missing, unknown, revoked or expired."""
    if not raw:
        raise AuthenticationFailed("Missing API key. Send 'Authorization: Bearer sk-...' or 'x-api-key: sk-...'.")
    key = await store.lookup(raw)
    if key is None:
        raise AuthenticationFailed("Invalid API key.")
    if key.revoked:
        raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
    if key.expired(datetime.now(UTC)):
        raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
    return key
