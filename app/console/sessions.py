"""Console sessions: sign in with the master key, a hashed session row with an expiry, CSRF tokens.

The cookie holds a random 256-bit token; the table holds ``HMAC-SHA256(master key, token)``: a
session is valid under the master key it was opened with only, so rotating the key (and restarting)
ends every session opened with the old one. The CSRF token of a session is ``HMAC-SHA256(token,
"csrf")``: a page can carry it, an attacker without the cookie cannot compute it. Signed-out forms
(sign-in, ``/me``) use a double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select

from app.db import Database
from app.keys import hmac_equal
from app.tables import console_sessions

SESSION_COOKIE = "sg_console"
FORM_COOKIE = "sg_form"  # the double-submit CSRF cookie of the signed-out forms


def _digest(token: str, master_key: str) -> str:
    return hmac.new(master_key.encode("utf-8"), token.encode("utf-8"), hashlib.sha256).hexdigest()


def csrf_for(token: str) -> str:
    return hmac.new(token.encode("utf-8"), b"csrf", hashlib.sha256).hexdigest()


def csrf_ok(token: str, given: str | None) -> bool:
    return bool(given) and hmac_equal(given or "", csrf_for(token))


def new_form_token() -> str:
    return secrets.token_urlsafe(24)


async def sign_in(db: Database, given_key: str, master_key: str, *, hours: float) -> str | None:
    """A new session token when ``given_key`` is the master key, else None."""
    if not master_key or not given_key or not hmac_equal(given_key, master_key):
        return None
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    async with db.write() as conn:
        await conn.execute(delete(console_sessions).where(console_sessions.c.expires_at <= now))
        await conn.execute(
            insert(console_sessions).values(
                token_hash=_digest(token, master_key), created_at=now, expires_at=now + timedelta(hours=hours)
            )
        )
    return token


async def valid(db: Database, token: str | None, master_key: str) -> bool:
    """Whether ``token`` is a session opened with this ``master_key`` and not expired."""
    if not token or len(token) > 100 or not master_key:
        return False
    query = select(console_sessions.c.expires_at).where(console_sessions.c.token_hash == _digest(token, master_key))
    async with db.read() as conn:
        expires = (await conn.execute(query)).scalar()
    return expires is not None and expires > datetime.now(UTC)


async def sign_out(db: Database, token: str | None, master_key: str) -> None:
    if token:
        digest = _digest(token, master_key)
        async with db.write() as conn:
            await conn.execute(delete(console_sessions).where(console_sessions.c.token_hash == digest))
