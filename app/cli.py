"""The ``seedgate`` command: serve, migrate, and administer keys and usage from a shell.

Key commands talk to the database directly (same code as the admin API), so they work before the
gateway runs. Exit status: 0 ok, 1 not found / refused, 2 bad usage or configuration.
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
from app.migrate import upgrade
from app.money.ledger import Ledger
from app.settings import ConfigError, Settings, load_settings
from app.usage import list_usage


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
    usage.add_argument("--limit", type=int, default=100)
    usage.add_argument("--json", action="store_true")
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


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items() if v is not None))


async def _with_db(settings: Settings, action: Callable[[Database, Catalog], Awaitable[int]]) -> int:
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
    async def run(db: Database, _catalog: Catalog) -> int:
        _print(await list_usage(db, key_id=args.key_id, limit=args.limit), args.json)
        return 0

    return asyncio.run(_with_db(settings, run))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
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
    except (AccountError, ValueError) as exc:
        print(f"seedgate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
