"""The SQL schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create exactly this.

Money columns are BigInteger units of 1e-12 USD (see ``app.money``). The ledger invariant, per key
and in total: ``topped_up == available + held + spent`` where ``topped_up`` is the sum of ``topup``
ledger rows and ``spent`` the sum of ``charge`` and ``adjustment`` ledger rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(16), nullable=False),
    Column("key_last4", String(4), nullable=False),
    Column("models", JSON, nullable=True),  # list of public model ids; NULL = every model
    Column("rpm", Integer, nullable=True),  # NULL = limits.key_defaults
    Column("tpm", Integer, nullable=True),
    Column("max_concurrent", Integer, nullable=True),
    Column("monthly_quota", BigInteger, nullable=True),
    Column("quota_month", String(7), nullable=False, server_default=""),
    Column("quota_spent", BigInteger, nullable=False, server_default="0"),
    Column("available", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    Column("spent", BigInteger, nullable=False, server_default="0"),
    Column("topped_up", BigInteger, nullable=False, server_default="0"),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

holds = Table(
    "holds",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("prompt_tokens_estimate", BigInteger, nullable=False),
    Column("prompt_cost_estimate", BigInteger, nullable=False),
    Column("output_price", BigInteger, nullable=False, server_default="0"),  # units per output token
    Column("owner", String(64), nullable=False),  # the instance that made it
    Column("status", String(16), nullable=False),  # held | settled | released | recovered
    Column("sent", Boolean, nullable=False, server_default=false()),  # checkpoint: the request reached the upstream
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),  # checkpoint: output delivered
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),  # the lease, renewed while the request runs
    Index("ix_holds_status_expires_at", "status", "expires_at"),
    Index("ix_holds_owner", "owner"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # topup | charge | adjustment (late charge or refund, signed)
    Column("amount", BigInteger, nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("note", String(200), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_ledger_key_id", "key_id"),
)


usage = Table(
    "usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("upstream", String(100), nullable=True),
    Column("upstream_model", String(200), nullable=True),
    Column("endpoint", String(32), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("cost", BigInteger, nullable=False),
    Column("shortfall", BigInteger, nullable=False),
    Column("status", String(32), nullable=False),
    Column("partial", Boolean, nullable=False),
    Column("estimated", Boolean, nullable=False),
    Column("source", String(16), nullable=False),  # request | recovery | late
    Column("latency_ms", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_usage_key_id_created_at", "key_id", "created_at"),
    Index("ix_usage_created_at", "created_at"),
)

policy_events = Table(
    "policy_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("code", String(100), nullable=True),
    Column("message", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# Daily totals per key and model, maintained in the same transaction as each usage row (and kept
# after raw rows expire): the console's charts and the usage summary read these, not raw rows.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("key_id", String(40), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("partial", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("cost", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False, server_default="0"),  # did not end ok (migration 0007)
    Index("ix_usage_daily_key_id_day", "key_id", "day"),  # summaries by key (migration 0006)
    Index("ix_usage_daily_model_day", "model", "day"),  # summaries by model (migration 0006)
)

# Responses API answers kept for ``previous_response_id`` and GET (``store: true``), per key, sealed:
# ``sealed`` is AES-GCM ciphertext (app.stored_responses), never the plain conversation.
stored_responses = Table(
    "stored_responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_id", String(40), ForeignKey("api_keys.id"), nullable=False),
    Column("sealed", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_stored_responses_created_at", "created_at"),
)

# What upstreams answered when they refused a request, in their own words (the client saw only the
# gateway's digest, app.upstream_messages); only the last ``logging.upstream_errors_kept`` rows are kept.
upstream_errors = Table(
    "upstream_errors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("key_id", String(40), nullable=True),
    Column("model", String(200), nullable=True),
    Column("upstream", String(200), nullable=True),
    Column("status", Integer, nullable=True),
    Column("code", String(100), nullable=True),
    Column("message", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_upstream_errors_request_id", "request_id"),
)

# --- console and alerts (issue 13) ------------------------------------------------------------------

# Console sign-ins: only sha256(session token) is stored; the CSRF token is derived from the token.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_console_sessions_expires_at", "expires_at"),
)

# Per-key low-balance alert state: a threshold (NULL = alerts.default_threshold_usd) and whether the
# alert has fired since the last top-up (it fires once, a top-up re-arms it).
key_alerts = Table(
    "key_alerts",
    metadata,
    Column("key_id", String(40), ForeignKey("api_keys.id"), primary_key=True),
    Column("threshold", BigInteger, nullable=True),
    Column("fired", Boolean, nullable=False, server_default=false()),
)

# The webhook outbox: one row per alert, delivered with bounded retries by a background task.
alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_id", String(40), nullable=False),
    Column("event", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", String(300), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Index("ix_alert_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)
