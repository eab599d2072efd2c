from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select, update

from app.accounts import (
    AccountError,
    KeyCreate,
    KeyUpdate,
    TopUp,
    create_key,
    get_key,
    ledger_totals,
    list_keys,
    topup_key,
    update_key,
)
from app.catalog import Catalog
from app.db import Database
from app.keys import KeyStore, generate_key, hash_key, well_formed
from app.money.ledger import Ledger
from app.money.units import MAX_TOPPED_UP_UNITS
from app.tables import api_keys
from app.tables import ledger as ledger_table
from tests.support.books import Books


@pytest.fixture
def keys(db: Database) -> KeyStore:
    return KeyStore(db, cache_ttl=60)


async def test_created_key_is_shown_once_and_stored_as_a_hash(books: Books, db: Database, catalog: Catalog) -> None:
    created = await create_key(db, catalog, KeyCreate(name="ci", balance_usd=Decimal("12.5")))
    raw = created["key"]
    assert well_formed(raw)
    assert created["key_hint"] == f"{raw[:7]}...{raw[-4:]}"
    assert created["balance_usd"] == "12.50"
    assert created["topped_up_usd"] == "12.50"
    [row] = await books.rows(api_keys, id=created["id"])
    assert row.key_hash == hash_key(raw)
    assert raw not in [str(value) for value in row]
    shown = await get_key(db, created["id"])
    assert shown is not None
    assert "key" not in shown
    assert "key_hash" not in shown
    assert hash_key(raw) not in str(shown)
    listed = await list_keys(db)
    assert [k["id"] for k in listed] == [created["id"]]
    assert raw not in str(listed)
    assert hash_key(raw) not in str(listed)
    [initial] = await books.rows(ledger_table, key_id=created["id"])
    assert (initial.kind, initial.amount, initial.note) == ("topup", 12_500_000_000_000, "initial")
    await books.check()


async def test_key_without_balance_writes_no_ledger_row(books: Books) -> None:
    key = await books.new_key("0")
    assert await books.rows(ledger_table, key_id=key) == []
    assert (await books.check())["topups"] == 0


async def test_lookup_finds_the_key_and_revocation_takes_effect_at_once(
    db: Database, catalog: Catalog, keys: KeyStore
) -> None:
    created = await create_key(db, catalog, KeyCreate(name="n", models=["claude-opus-4-1"], rpm=5))
    raw = created["key"]
    record = await keys.lookup(raw)
    assert record is not None
    assert (record.id, record.models, record.rpm, record.revoked) == (
        created["id"],
        frozenset({"doubao-seed-2.0-pro"}),
        5,
        False,
    )
    assert await keys.lookup(raw) is record  # cached
    assert await keys.revoke(created["id"])
    after = await keys.lookup(raw)
    assert after is not None
    assert after.revoked
    assert not await keys.revoke(created["id"])  # already revoked


async def test_lookup_of_unknown_or_malformed_keys_is_none(keys: KeyStore) -> None:
    assert await keys.lookup(generate_key()) is None
    for raw in ("", "sk-", "Bearer x", "sk-" + "é" * 49, "sk-" + "\x00" * 49, "' OR 1=1 --"):
        assert await keys.lookup(raw) is None


async def test_models_are_canonicalised_and_unknown_models_refused(db: Database, catalog: Catalog) -> None:
    created = await create_key(
        db, catalog, KeyCreate(name="n", models=["claude-opus-4-1", "DOUBAO-SEED-2.0-MINI", "doubao-seed-2-0-pro"])
    )
    assert created["models"] == ["doubao-seed-2.0-mini", "doubao-seed-2.0-pro"]
    with pytest.raises(AccountError, match="unknown model"):
        await create_key(db, catalog, KeyCreate(name="n", models=["gpt-4o"]))


@pytest.mark.parametrize(
    "name",
    [
        "日本語のキー 🔑",
        "ключ-🚀-مفتاح",
        "emoji 👩‍👩‍👧‍👦 family",
        "x" * 200,
        "密钥" * 100,
        "tab-free name with 'quotes' and \"dq\"",
    ],
)
async def test_unicode_names_round_trip(db: Database, catalog: Catalog, name: str) -> None:
    created = await create_key(db, catalog, KeyCreate(name=name))
    assert created["name"] == name
    shown = await get_key(db, created["id"])
    assert shown is not None
    assert shown["name"] == name
    assert [k["name"] for k in await list_keys(db)] == [name]


@pytest.mark.parametrize(
    "name",
    ["nul\x00inside", "new\nline", "tab\there", "esc\x1b[31m", "del\x7f", "c1\x85control", "lone \ud800 surrogate", ""],
)
async def test_control_characters_in_names_are_refused_before_the_database(
    books: Books, keys: KeyStore, name: str
) -> None:
    with pytest.raises(ValidationError):
        KeyCreate(name=name)
    with pytest.raises(ValidationError):
        KeyUpdate(name=name)
    assert (await books.check())["topups"] == 0


async def test_name_longer_than_the_column_is_refused() -> None:
    with pytest.raises(ValidationError):
        KeyCreate(name="x" * 201)


@pytest.mark.parametrize("amount", [Decimal("0.0000000000001"), Decimal("1000000.000000000001"), Decimal("1E+30")])
async def test_unrepresentable_balances_are_account_errors(db: Database, catalog: Catalog, amount: Decimal) -> None:
    with pytest.raises(AccountError):
        await create_key(db, catalog, KeyCreate(name="n", balance_usd=amount))
    with pytest.raises(AccountError):
        await create_key(db, catalog, KeyCreate(name="n", monthly_quota_usd=amount))
    assert await list_keys(db) == []


async def test_negative_balance_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        KeyCreate(name="n", balance_usd=Decimal("-1"))
    with pytest.raises(ValidationError):
        KeyCreate.model_validate({"name": "n", "available": 10})
    with pytest.raises(ValidationError):
        KeyUpdate.model_validate({"key_hash": "0" * 64})
    with pytest.raises(ValidationError):
        KeyUpdate.model_validate({"spent": 0})


async def test_update_changes_only_the_given_fields(db: Database, catalog: Catalog, keys: KeyStore) -> None:
    created = await create_key(
        db, catalog, KeyCreate(name="old", balance_usd=Decimal(3), rpm=10, monthly_quota_usd=Decimal(2))
    )
    raw = created["key"]
    assert (await keys.lookup(raw)) is not None  # warm the cache: the update must evict it
    expires = datetime.now(UTC) + timedelta(days=1)
    updated = await update_key(
        db,
        catalog,
        keys,
        created["id"],
        KeyUpdate(name="新しい名前", rpm=None, models=["doubao-seed-2.0-mini"], expires_at=expires),
    )
    assert updated is not None
    assert (updated["name"], updated["rpm"], updated["monthly_quota_usd"], updated["balance_usd"]) == (
        "新しい名前",
        None,
        "2.00",
        "3.00",
    )
    assert updated["expires_at"] == expires.isoformat()
    assert updated["models"] == ["doubao-seed-2.0-mini"]
    record = await keys.lookup(raw)
    assert record is not None
    assert (record.name, record.rpm, record.models) == ("新しい名前", None, frozenset({"doubao-seed-2.0-mini"}))
    with pytest.raises(AccountError, match="null"):
        await update_key(db, catalog, keys, created["id"], KeyUpdate(name=None))
    assert await update_key(db, catalog, keys, "key_missing", KeyUpdate(rpm=3)) is None


async def test_naive_expiry_is_read_as_utc(db: Database, catalog: Catalog) -> None:
    created = await create_key(db, catalog, KeyCreate(name="n", expires_at=datetime(2030, 1, 2, 3, 4, 5)))  # noqa: DTZ001
    assert created["expires_at"] == "2030-01-02T03:04:05+00:00"


async def test_topup_adds_exactly_and_keeps_the_books(books: Books, db: Database) -> None:
    ledger = Ledger(db, owner="admin", lease_seconds=60)
    key = await books.new_key("0.10")
    shown = await topup_key(db, ledger, key, TopUp(amount_usd=Decimal("0.000000000001")))
    assert shown is not None
    assert shown["balance_usd"] == "0.100000000001"
    assert await topup_key(db, ledger, "key_missing", TopUp(amount_usd=Decimal(1))) is None
    with pytest.raises(AccountError, match="maximum"):
        await topup_key(db, ledger, key, TopUp(amount_usd=Decimal(1_000_000)))
    spent_out = await books.new_key("0")  # a key that had $9M over its life: no more top-ups, however small
    async with db.write() as conn:
        values = {"topped_up": MAX_TOPPED_UP_UNITS, "spent": MAX_TOPPED_UP_UNITS}
        await conn.execute(update(api_keys).where(api_keys.c.id == spent_out).values(**values))
    with pytest.raises(AccountError, match="over its life"):
        await topup_key(db, ledger, spent_out, TopUp(amount_usd=Decimal(1)))
    with pytest.raises(ValidationError):
        TopUp(amount_usd=Decimal(0))
    async with db.write() as conn:  # its books, whole again for the check: what it had, it spent (no rows)
        await conn.execute(update(api_keys).where(api_keys.c.id == spent_out).values(topped_up=0, spent=0))
    totals = await books.check()
    assert totals["topups"] == 100_000_000_001
    assert totals == await ledger_totals(db)


async def test_ledger_totals_are_exact_past_64_bits(books: Books, db: Database) -> None:
    big = 6 * 10**18  # two keys of $6M each: their sum passes 2**63 (SQLite's SUM() raised "integer overflow")
    keys = [await books.new_key("0") for _ in range(2)]
    async with db.write() as conn:
        for key in keys:
            await conn.execute(update(api_keys).where(api_keys.c.id == key).values(available=big + 7, spent=big))
            await conn.execute(
                insert(ledger_table).values(
                    key_id=key, kind="topup", amount=big + 7, note="test", created_at=datetime.now(UTC)
                )
            )
        rows = (await conn.execute(select(api_keys.c.available, api_keys.c.spent))).all()
    totals = await ledger_totals(db)
    assert totals["available"] == sum(row.available for row in rows) >= 2 * big + 14
    assert totals["spent"] == sum(row.spent for row in rows) >= 2 * big
    assert totals["topups"] >= 2 * (big + 7)
