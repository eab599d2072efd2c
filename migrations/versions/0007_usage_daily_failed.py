"""usage_daily.failed: requests of the day that did not end ok, so the console's 30-day error series
reads the rollups instead of the failed raw rows (whose partial index goes)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 03:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_daily") as batch:
        batch.add_column(sa.Column("failed", sa.BigInteger(), nullable=False, server_default="0"))
    postgres = op.get_bind().dialect.name == "postgresql"
    day = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')" if postgres else "substr(created_at, 1, 10)"
    # the raw rows still kept (billing.usage_retention_days) say which requests failed; older days keep 0
    op.execute(
        f"""
        UPDATE usage_daily SET failed = found.n
          FROM (SELECT {day} AS day, key_id, model, COUNT(*) AS n FROM usage WHERE status <> 'ok'
                 GROUP BY {day}, key_id, model) AS found
         WHERE usage_daily.day = found.day AND usage_daily.key_id = found.key_id AND usage_daily.model = found.model
        """  # noqa: S608 -- constants only
    )
    op.drop_index("ix_usage_failed_created_at", table_name="usage")


def downgrade() -> None:
    failed = sa.text("status <> 'ok'")
    op.create_index(
        "ix_usage_failed_created_at", "usage", ["created_at"], sqlite_where=failed, postgresql_where=failed
    )
    with op.batch_alter_table("usage_daily") as batch:
        batch.drop_column("failed")
