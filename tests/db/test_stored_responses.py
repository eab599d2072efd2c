"""Stored Responses answers on each database (SQLite, and Postgres in the second pass)."""

from app.db import Database
from app.dialects.responses.seal import Sealer
from app.stored_responses import ResponseStore
from tests.support.books import Books


async def test_a_stored_answer_is_read_back_by_its_key_only_and_odd_ids_never_reach_the_database(
    db: Database, books: Books
) -> None:
    owner, other = await books.new_key("1"), await books.new_key("1")
    store = ResponseStore(db, Sealer("master-key-0123456789", "stored responses"), retention_days=30)
    await store.save("resp_01ab", owner, b'{"response":{"id":"resp_01ab"},"input":[]}')
    assert await store.get("resp_01ab", owner) == {"response": {"id": "resp_01ab"}, "input": []}
    assert await store.get("resp_01ab", other) is None
    for odd in ("resp_\x00", "resp_01ab\x00", "resp_" + "a" * 65, "resp_\u00e9", ""):
        assert await store.get(odd, owner) is None  # Postgres refuses a NUL in text: this was a 500
        assert await store.delete(odd, owner) is False
    assert await store.delete("resp_01ab", owner) is True
    assert await store.get("resp_01ab", owner) is None
