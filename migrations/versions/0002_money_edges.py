"""money at the edges: hold leases and checkpoints, 64-bit token counts, daily usage rollups

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")


def upgrade() -> None:
    with op.batch_alter_table("holds") as batch:
        batch.alter_column("prompt_tokens_estimate", type_=sa.BigInteger(), existing_nullable=False)
        batch.add_column(sa.Column("output_price", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("sent", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("output_tokens", sa.BigInteger(), server_default="0", nullable=False))
    with op.batch_alter_table("usage") as batch:
        for column in _TOKEN_COLUMNS:
            batch.alter_column(column, type_=sa.BigInteger(), existing_nullable=False)
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("partial", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "key_id", "model", name=op.f("pk_usage_daily")),
    )
    # rows written before this revision: their totals, so the rollups start complete
    postgres = op.get_bind().dialect.name == "postgresql"
    day = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')" if postgres else "substr(created_at, 1, 10)"
    op.execute(
        f"""
        INSERT INTO usage_daily (day, key_id, model, requests, partial, prompt_tokens, completion_tokens,
                                 reasoning_tokens, cached_tokens, cost)
        SELECT {day}, key_id, model, COUNT(*), SUM(CASE WHEN partial THEN 1 ELSE 0 END), SUM(prompt_tokens),
               SUM(completion_tokens), SUM(reasoning_tokens), SUM(cached_tokens), SUM(cost)
          FROM usage GROUP BY {day}, key_id, model
        """  # noqa: S608 -- no user input
    )
    op.drop_table("instances")


def downgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    op.drop_table("usage_daily")
    with op.batch_alter_table("usage") as batch:
        for column in _TOKEN_COLUMNS:
            batch.alter_column(column, type_=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table("holds") as batch:
        batch.drop_column("output_tokens")
        batch.drop_column("sent")
        batch.drop_column("output_price")
        batch.alter_column("prompt_tokens_estimate", type_=sa.Integer(), existing_nullable=False)
