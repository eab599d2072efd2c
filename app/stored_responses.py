"""Stored Responses API answers (``store: true``), for ``previous_response_id`` and ``GET``/``DELETE``.

Rules:
- A record is the response object plus the input items it answered (the whole conversation, so a
  chain of ``previous_response_id`` rebuilds it). It is sealed (AES-GCM, key from the master key, the
  response id and owner key id as associated data) before it touches the database.
- A key sees only its own: every read and delete is by (id, key_id); another key's id is "not found".
- Retention: records older than ``responses.retention_days`` are invisible at once and deleted by
  ``purge`` (the services' background maintenance).
- An id this gateway could not have issued (``ISSUED``) is "not found" without a query: a client's
  NUL byte or a megabyte of id never reaches the database (Postgres refuses NUL in text: a 500).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, insert, select

from app.db import Database
from app.dialects.responses.seal import Sealer
from app.money.ledger import utcnow
from app.tables import stored_responses

ISSUED = re.compile(r"resp_[0-9A-Za-z]{1,64}")  # ``resp_`` + the request id's hex


class ResponseStore:
    def __init__(self, db: Database, sealer: Sealer, *, retention_days: float) -> None:
        self._db = db
        self._sealer = sealer
        self._retention = timedelta(days=retention_days)

    @staticmethod
    def _associated(response_id: str, key_id: str) -> bytes:
        return f"{response_id}\x00{key_id}".encode()

    async def save(self, response_id: str, key_id: str, record: bytes) -> None:
        """Keep ``record``, the JSON of ``{"response": ..., "input": [...]}``."""
        sealed = self._sealer.seal(record, self._associated(response_id, key_id))
        async with self._db.write() as conn:
            await conn.execute(
                insert(stored_responses).values(id=response_id, key_id=key_id, sealed=sealed, created_at=utcnow())
            )

    async def get(self, response_id: str, key_id: str) -> dict[str, Any] | None:
        if not ISSUED.fullmatch(response_id):
            return None
        query = select(stored_responses.c.sealed).where(
            stored_responses.c.id == response_id,
            stored_responses.c.key_id == key_id,
            stored_responses.c.created_at > utcnow() - self._retention,
        )
        async with self._db.read() as conn:
            sealed = (await conn.execute(query)).scalar_one_or_none()
        if sealed is None:
            return None
        plain = self._sealer.open(sealed, self._associated(response_id, key_id))
        if plain is None:  # sealed under another master key: unreadable, so gone
            return None
        record: dict[str, Any] = orjson.loads(plain)
        return record

    async def delete(self, response_id: str, key_id: str) -> bool:
        if not ISSUED.fullmatch(response_id):
            return False
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(stored_responses).where(
                    stored_responses.c.id == response_id, stored_responses.c.key_id == key_id
                )
            )
        return bool(result.rowcount)

    async def purge(self, now: datetime | None = None) -> int:
        cutoff = (now or utcnow()) - self._retention
        async with self._db.write() as conn:
            result = await conn.execute(delete(stored_responses).where(stored_responses.c.created_at <= cutoff))
        return int(result.rowcount or 0)
