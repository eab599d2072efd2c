"""usage at scale: indexes for filtered rollup summaries

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 23:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # retention deletes the oldest raw rows in small batches through ix_usage_created_at (0005)
    # GET /admin/usage/summary filtered by key or by model over a date range (the primary key leads with day)
    op.create_index("ix_usage_daily_key_id_day", "usage_daily", ["key_id", "day"])
    op.create_index("ix_usage_daily_model_day", "usage_daily", ["model", "day"])


def downgrade() -> None:
    op.drop_index("ix_usage_daily_model_day", table_name="usage_daily")
    op.drop_index("ix_usage_daily_key_id_day", table_name="usage_daily")
