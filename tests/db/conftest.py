"""Database fixtures (shared with ``tests/contract``): see ``tests.support.books``."""

from tests.support.books import books, catalog, db, db_url, ledger, make_ledger

__all__ = ["books", "catalog", "db", "db_url", "ledger", "make_ledger"]
