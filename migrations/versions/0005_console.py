"""console sessions, low-balance alert state and its webhook outbox; usage by time for the console

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 23:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_console_sessions")),
    )
    op.create_index(op.f("ix_console_sessions_expires_at"), "console_sessions", ["expires_at"])
    op.create_table(
        "key_alerts",
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=True),
        sa.Column("fired", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name=op.f("fk_key_alerts_key_id_api_keys")),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_key_alerts")),
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
    )
    op.create_index(
        op.f("ix_alert_deliveries_status_next_attempt_at"), "alert_deliveries", ["status", "next_attempt_at"]
    )
    # the console's last-24-hours chart and the usage explorer's date filter read usage by time
    op.create_index("ix_usage_created_at", "usage", ["created_at"])
    failed = sa.text("status <> 'ok'")
    op.create_index(
        "ix_usage_failed_created_at", "usage", ["created_at"], sqlite_where=failed, postgresql_where=failed
    )


def downgrade() -> None:
    op.drop_index("ix_usage_failed_created_at", table_name="usage")
    op.drop_index("ix_usage_created_at", table_name="usage")
    op.drop_index(op.f("ix_alert_deliveries_status_next_attempt_at"), table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_table("key_alerts")
    op.drop_index(op.f("ix_console_sessions_expires_at"), table_name="console_sessions")
    op.drop_table("console_sessions")
