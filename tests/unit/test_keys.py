import hashlib
import string
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from app.keys import KEY_LENGTH, KEY_PREFIX, KeyRecord, generate_key, hash_key, hmac_equal, new_key_id, well_formed

BASE62 = set(string.digits + string.ascii_letters)


def test_generated_key_format() -> None:
    key = generate_key()
    assert key.startswith("sk-")
    assert KEY_PREFIX == "sk-"
    assert len(key) == KEY_LENGTH == 3 + 43 + 6
    assert set(key[3:]) <= BASE62
    assert well_formed(key)


def test_thousand_generated_keys_are_unique_and_well_formed() -> None:
    keys = [generate_key() for _ in range(1000)]
    assert len(set(keys)) == 1000
    assert all(well_formed(k) for k in keys)
    # 32 random bytes: the body's first characters are not constant across keys
    assert len({k[3:8] for k in keys}) > 900


def test_every_one_character_change_is_rejected() -> None:
    key = generate_key()
    for position in range(len(KEY_PREFIX), len(key)):
        replacement = "A" if key[position] != "A" else "B"
        changed = key[:position] + replacement + key[position + 1 :]
        assert not well_formed(changed), position


def test_swapped_neighbours_are_rejected() -> None:
    key = generate_key()
    for position in range(len(KEY_PREFIX), len(key) - 1):
        if key[position] != key[position + 1]:
            swapped = key[:position] + key[position + 1] + key[position] + key[position + 2 :]
            assert not well_formed(swapped), position


@pytest.mark.parametrize(
    "make",
    [
        lambda k: "",
        lambda k: k[:-1],
        lambda k: k + "a",
        lambda k: "pk-" + k[3:],
        lambda k: "SK-" + k[3:],
        lambda k: k[:10] + "-" + k[11:],
        lambda k: k[:10] + "é" + k[11:],
        lambda k: k[:-6] + "éééééé",  # non-ASCII checksum: must not raise
        lambda k: k[:-1] + "\x00",
        lambda k: k.upper(),
    ],
)
def test_malformed_keys_are_rejected_without_raising(make) -> None:
    assert not well_formed(make(generate_key()))


def test_hash_is_sha256_hex_of_the_key() -> None:
    key = generate_key()
    digest = hash_key(key)
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")
    assert hash_key(generate_key()) != digest


def test_key_ids_are_unique_and_not_keys() -> None:
    ids = {new_key_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("key_") and not well_formed(i) for i in ids)


@pytest.mark.parametrize(
    ("given", "expected", "equal"),
    [("abc", "abc", True), ("abc", "abd", False), ("", "x", False), ("ключ🔑", "ключ🔑", True), ("\ud800", "x", False)],
)
def test_hmac_equal_compares_any_text(given, expected, equal) -> None:
    assert hmac_equal(given, expected) is equal


def test_key_record_expiry_and_revocation() -> None:
    now = datetime.now(UTC)
    row = SimpleNamespace(
        id="key_1",
        name="n",
        models=["b", "a"],
        rpm=None,
        tpm=10,
        max_concurrent=None,
        monthly_quota=None,
        expires_at=now,
        revoked_at=None,
    )
    record = KeyRecord.from_row(row)
    assert record.models == frozenset({"a", "b"})
    assert not record.revoked
    assert record.expired(now)
    assert not record.expired(now - timedelta(seconds=1))
    assert not KeyRecord.from_row(SimpleNamespace(**{**vars(row), "expires_at": None})).expired(now)
    assert KeyRecord.from_row(SimpleNamespace(**{**vars(row), "revoked_at": now, "models": None})).revoked
