"""batch ownership proof, cancel intent, wake-ups during a step, enqueued-token holds

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("provisional", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("foreign_vendor_ids", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("cancel_requested_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("woken_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("hold_reason", sa.Text(), nullable=True))
    op.create_table(
        "enqueued_limits",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "model", name=op.f("pk_enqueued_limits")),
    )


def downgrade() -> None:
    op.drop_table("enqueued_limits")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        for name in (
            "hold_reason",
            "woken_at",
            "cancel_requested_at",
            "foreign_vendor_ids",
            "provisional",
        ):
            batch_op.drop_column(name)
