"""The ``seedgate`` command: serve, migrate, and administer keys and usage from a shell.

Key commands talk to the database directly (same code as the admin API), so they work before the
gateway runs, and need no master key (only ``serve`` checks it). A database that is missing or not
migrated is a one-line error naming the command to run; nothing is created by a read. Output is a
table for people, ``--json`` for programs, ``usage --csv`` streams CSV. Exit status: 0 ok, 1 not
found / refused, 2 bad usage, configuration or database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from app import accounts
from app.accounts import AccountError, KeyCreate, KeyUpdate, TopUp
from app.catalog import Catalog, CatalogError
from app.db import Database
from app.keys import KeyStore
from app.migrate import schema_problem, upgrade
from app.money.ledger import Ledger
from app.settings import ConfigError, Settings, load_settings
from app.usage import UsageFilter, list_usage, usage_csv

KEY_COLUMNS = ("id", "name", "key_hint", "balance_usd", "held_usd", "spent_usd", "models", "expires_at", "revoked")
USAGE_COLUMNS = (
    "created_at",
    "request_id",
    "key_id",
    "model",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
)


class DatabaseNotReady(Exception):
    """The configured database is missing or not migrated; the message says what to run."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedgate", description="OpenAI- and Anthropic-compatible LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="YAML config file (default: $SEEDGATE_CONFIG)")
        return p

    serve = with_config(sub.add_parser("serve", help="run the gateway"))
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes; each loads the config itself (needs redis.url)")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    with_config(db.add_parser("upgrade", help="apply pending migrations"))

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = with_config(keys.add_parser("create", help="issue a key (printed once)"))
    create.add_argument("--name", required=True)
    create.add_argument("--balance", type=Decimal, default=Decimal(0), help="USD")
    _key_settings(create)
    with_config(keys.add_parser("list")).add_argument("--json", action="store_true")
    for name in ("show", "revoke"):
        cmd = with_config(keys.add_parser(name))
        cmd.add_argument("key_id")
        cmd.add_argument("--json", action="store_true")
    patch = with_config(keys.add_parser("update", help="change a key's settings"))
    patch.add_argument("key_id")
    patch.add_argument("--name")
    _key_settings(patch)
    topup = with_config(keys.add_parser("topup", help="add prepaid balance"))
    topup.add_argument("key_id")
    topup.add_argument("amount", type=Decimal, help="USD")
    topup.add_argument("--json", action="store_true")

    usage = with_config(sub.add_parser("usage", help="usage rows, one per request"))
    usage.add_argument("--key-id")
    usage.add_argument("--model")
    usage.add_argument("--status")
    usage.add_argument("--since", help="YYYY-MM-DD (UTC)")
    usage.add_argument("--until", help="YYYY-MM-DD (UTC, inclusive)")
    usage.add_argument("--limit", type=int, default=100, help="rows shown (not for --csv, which exports all)")
    output = usage.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--csv", action="store_true", help="stream every selected row as CSV")
    return parser


def _key_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", help="comma-separated model ids (default: all)")
    p.add_argument("--rpm", type=int)
    p.add_argument("--tpm", type=int)
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--monthly-quota", type=Decimal, help="USD per calendar month")
    p.add_argument("--expires-at", help="ISO 8601 time")
    p.add_argument("--json", action="store_true")


def _key_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {
        "models": [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None,
        "rpm": args.rpm,
        "tpm": args.tpm,
        "max_concurrent": args.max_concurrent,
        "monthly_quota_usd": args.monthly_quota,
        "expires_at": args.expires_at,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _print(data: Any, as_json: bool, columns: tuple[str, ...] = KEY_COLUMNS) -> None:
    """JSON for programs; for people, a list as an aligned table and one record as field/value lines."""
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    if isinstance(data, dict):
        width = max(len(k) for k in data)
        for key, value in data.items():
            print(f"{key.ljust(width)}  {_cell(value)}")
        return
    if not data:
        print("(none)")
        return
    table = [list(columns)] + [[_cell(row.get(c)) for c in columns] for row in data]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for index, line in enumerate(table):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


async def _with_db(settings: Settings, action: Callable[[Database, Catalog], Awaitable[int]]) -> int:
    problem = await schema_problem(settings.database.url)
    if problem is not None:
        raise DatabaseNotReady(problem)
    db = Database(settings.database.url)
    try:
        return await action(db, Catalog.from_settings(settings))
    finally:
        await db.dispose()


def _keys_command(args: argparse.Namespace, settings: Settings) -> int:
    async def run(db: Database, catalog: Catalog) -> int:
        cmd = args.keys_command
        result: Any
        if cmd == "create":
            spec = KeyCreate(name=args.name, balance_usd=args.balance, **_key_fields(args))
            result = await accounts.create_key(db, catalog, spec)
            if not args.json:
                print(f"Created {result['id']} ({result['name']}), balance ${result['balance_usd']}.")
                print(f"API key (shown once, store it now): {result['key']}")
                return 0
        elif cmd == "list":
            result = await accounts.list_keys(db)
        elif cmd == "show":
            result = await accounts.get_key(db, args.key_id)
        elif cmd == "revoke":
            store = KeyStore(db, cache_ttl=0)
            result = await accounts.get_key(db, args.key_id) if await store.revoke(args.key_id) else None
        elif cmd == "update":
            fields = _key_fields(args) | ({"name": args.name} if args.name else {})
            store = KeyStore(db, cache_ttl=0)
            result = await accounts.update_key(db, catalog, store, args.key_id, KeyUpdate(**fields))
        else:  # topup
            ledger = Ledger(db, owner="cli", lease_seconds=settings.billing.hold_ttl_seconds)
            result = await accounts.topup_key(db, ledger, args.key_id, TopUp(amount_usd=args.amount))
        if result is None:
            print(f"seedgate: no such key (or already revoked): {args.key_id}", file=sys.stderr)
            return 1
        _print(result, args.json)
        return 0

    return asyncio.run(_with_db(settings, run))


def _usage_command(args: argparse.Namespace, settings: Settings) -> int:
    where = UsageFilter.parse(
        {"key_id": args.key_id, "model": args.model, "status": args.status, "since": args.since, "until": args.until}
    )

    async def run(db: Database, _catalog: Catalog) -> int:
        if args.csv:
            async for chunk in usage_csv(db, where):
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            return 0
        rows = await list_usage(db, limit=args.limit, where=where, newest_first=True)
        _print(rows, args.json, USAGE_COLUMNS)
        return 0

    return asyncio.run(_with_db(settings, run))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config, require_master_key=args.command == "serve")
        Catalog.from_settings(settings)
    except (ConfigError, CatalogError) as exc:
        print(f"seedgate: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            from app.serve import serve

            return serve(settings, host=args.host, port=args.port, workers=args.workers, config_path=args.config)
        if args.command == "db":
            upgrade(settings.database.url)
            print("database is at the latest schema revision")
            return 0
        if args.command == "keys":
            return _keys_command(args, settings)
        return _usage_command(args, settings)
    except (AccountError, ValueError, DatabaseNotReady) as exc:
        print(f"seedgate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
