"""Key administration shared by the admin API and the CLI: create, list, show, update, revoke, top up.

Inputs are pydantic models with ``extra="forbid"``: an update accepts only the listed fields. What
leaves here never contains a key hash; the raw key appears once, in ``create_key``'s result.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import insert, select, update

from app import alerts
from app.catalog import Catalog
from app.db import Database
from app.keys import KEY_PREFIX, KeyStore, generate_key, hash_key, new_key_id
from app.money.ledger import Ledger, TopUpRefused
from app.money.sums import exact_sum, joined
from app.money.units import MAX_BALANCE_UNITS, MAX_TOPPED_UP_UNITS, MoneyError, units_to_usd, usd_to_units
from app.tables import api_keys, ledger

Name = Annotated[str, Field(min_length=1, max_length=200)]
Usd = Annotated[Decimal, Field(ge=0)]
# rpm/tpm/max_concurrent are INTEGER columns: a larger value would overflow on Postgres (a 500, not a 400)
Limit = Annotated[int, Field(gt=0, le=2**31 - 1)]


def _printable(value: str | None) -> str | None:
    if value is None:  # KeyUpdate(name=None): update_key refuses it with an AccountError, not a TypeError
        return None
    # C0, DEL and C1 controls (Unicode category Cc) and lone surrogates, which Postgres cannot store
    if any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("must not contain control characters")
    return value


class _KeySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = None
    rpm: Limit | None = None
    tpm: Limit | None = None
    max_concurrent: Limit | None = None
    monthly_quota_usd: Usd | None = None
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # a bare ISO 8601 time is read as UTC
        try:
            # stored in UTC; 9999-12-31T23:59:59-12:00 and 0001-01-01T00:00:00+14:00 have no UTC form
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("must be a time between years 1 and 9999 in UTC") from None


class KeyCreate(_KeySettings):
    name: Name
    balance_usd: Usd = Decimal(0)

    _name = field_validator("name")(_printable)


class KeyUpdate(_KeySettings):
    name: Name | None = None

    _name = field_validator("name")(_printable)


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_usd: Annotated[Decimal, Field(gt=0)]


class AccountError(ValueError):
    """Bad admin input that pydantic cannot see (unknown model, money precision, limits)."""


def _units(amount: Decimal, what: str) -> int:
    try:
        units = usd_to_units(amount)
    except MoneyError as exc:
        raise AccountError(f"{what}: {exc}") from None
    if units > MAX_BALANCE_UNITS:
        raise AccountError(f"{what} exceeds the per-key maximum of ${units_to_usd(MAX_BALANCE_UNITS)}")
    return units


def _canonical_models(catalog: Catalog, names: list[str] | None) -> list[str] | None:
    if names is None:
        return None
    resolved = []
    for name in names:
        model = catalog.resolve(name)
        if model is None:
            raise AccountError(f"unknown model {name!r}")
        resolved.append(model.id)
    return sorted(set(resolved))


def key_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "key_hint": f"{row.key_prefix}...{row.key_last4}",
        "models": row.models,
        "rpm": row.rpm,
        "tpm": row.tpm,
        "max_concurrent": row.max_concurrent,
        "monthly_quota_usd": units_to_usd(row.monthly_quota) if row.monthly_quota is not None else None,
        "balance_usd": units_to_usd(row.available),
        "held_usd": units_to_usd(row.held),
        "spent_usd": units_to_usd(row.spent),
        "topped_up_usd": units_to_usd(row.topped_up),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "revoked": row.revoked_at is not None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        "created_at": row.created_at.isoformat(),
    }


VIEW_COLUMNS = [c for c in api_keys.c if c.name != "key_hash"]


async def create_key(db: Database, catalog: Catalog, spec: KeyCreate) -> dict[str, Any]:
    balance = _units(spec.balance_usd, "balance_usd")
    quota = _units(spec.monthly_quota_usd, "monthly_quota_usd") if spec.monthly_quota_usd is not None else None
    models = _canonical_models(catalog, spec.models)
    raw = generate_key()
    key_id = new_key_id()
    now = datetime.now(UTC)
    async with db.write() as conn:
        await conn.execute(
            insert(api_keys).values(
                id=key_id,
                name=spec.name,
                key_hash=hash_key(raw),
                key_prefix=raw[: len(KEY_PREFIX) + 4],
                key_last4=raw[-4:],
                models=models,
                rpm=spec.rpm,
                tpm=spec.tpm,
                max_concurrent=spec.max_concurrent,
                monthly_quota=quota,
                available=balance,
                topped_up=balance,
                expires_at=spec.expires_at,
                created_at=now,
                updated_at=now,
            )
        )
        if balance:
            await conn.execute(
                insert(ledger).values(key_id=key_id, kind="topup", amount=balance, note="initial", created_at=now)
            )
    view = await get_key(db, key_id)
    if view is None:
        raise RuntimeError("the key just created is missing")
    return {**view, "key": raw}


async def get_key(db: Database, key_id: str) -> dict[str, Any] | None:
    async with db.read() as conn:
        row = (await conn.execute(select(*VIEW_COLUMNS).where(api_keys.c.id == key_id))).first()
    return key_view(row) if row is not None else None


async def list_keys(db: Database, *, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = (
            await conn.execute(select(*VIEW_COLUMNS).order_by(api_keys.c.created_at).limit(limit).offset(offset))
        ).all()
    return [key_view(row) for row in rows]


async def update_key(
    db: Database, catalog: Catalog, keys: KeyStore, key_id: str, spec: KeyUpdate
) -> dict[str, Any] | None:
    changes: dict[str, Any] = {}
    for field in spec.model_fields_set:
        value = getattr(spec, field)
        if field == "monthly_quota_usd":
            changes["monthly_quota"] = _units(value, field) if value is not None else None
        elif field == "models":
            changes["models"] = _canonical_models(catalog, value)
        elif field == "name" and value is None:
            raise AccountError("name cannot be null")
        else:
            changes[field] = value
    if changes:
        changes["updated_at"] = datetime.now(UTC)
        async with db.write() as conn:
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**changes))
        keys.invalidate(key_id)
    return await get_key(db, key_id)


async def topup_key(db: Database, ledger_: Ledger, key_id: str, spec: TopUp) -> dict[str, Any] | None:
    amount = _units(spec.amount_usd, "amount_usd")
    try:
        await ledger_.topup(key_id, amount, note="topup")
    except KeyError:
        return None
    except TopUpRefused as refused:
        if refused.reason == "balance":
            raise AccountError(
                f"the balance would exceed the per-key maximum of ${units_to_usd(MAX_BALANCE_UNITS)}"
            ) from None
        raise AccountError(
            f"the key's top-ups would exceed ${units_to_usd(MAX_TOPPED_UP_UNITS)} over its life"
            " (the most its money columns hold); issue a new key"
        ) from None
    await alerts.rearm(db, key_id)  # a low-balance alert fires again after the next fall
    return await get_key(db, key_id)


async def ledger_totals(db: Database) -> dict[str, int]:
    """Sums for the ledger invariant: topups == available + held + charges (adjustments included)."""
    # summed exactly (app.money.sums): over every key and all time, these pass 64 bits long before one key can
    columns = (api_keys.c.available, api_keys.c.held, api_keys.c.spent)
    async with db.read() as conn:
        keys_row = (await conn.execute(select(*(part for c in columns for part in exact_sum(c))))).one()
        by_kind = select(ledger.c.kind, *exact_sum(ledger.c.amount)).group_by(ledger.c.kind)
        kinds = {kind: joined(high, low) for kind, high, low in (await conn.execute(by_kind)).all()}
    available, held, spent = (joined(keys_row[2 * i], keys_row[2 * i + 1]) for i in range(len(columns)))
    return {
        "available": available,
        "held": held,
        "spent": spent,
        "topups": kinds.get("topup", 0),
        # late settlements after recovery post signed adjustments: they are charges too
        "charges": kinds.get("charge", 0) + kinds.get("adjustment", 0),
    }
