"""estimates, wide token counts, spend by period, append-only audit log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TOKEN_COLUMNS = ("input_tokens", "cached_input_tokens", "output_tokens")

_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER audit_events_append_only_{verb.lower()} BEFORE {verb} ON audit_events"
    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
    for verb in ("UPDATE", "DELETE")
]
_POSTGRES_TRIGGER = [
    """
    CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION 'audit_events is append-only';
    END;
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events"
    " FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "estimates",
        sa.Column("batch_key", sa.String(length=300), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("uncapped", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("list_cost_usd", sa.Float(), nullable=True),
        sa.Column("tokenizer", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_estimates_job_id_jobs")),
        sa.PrimaryKeyConstraint("batch_key", name=op.f("pk_estimates")),
    )
    with op.batch_alter_table("estimates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_estimates_job_id"), ["job_id"], unique=False)
    with op.batch_alter_table("costs", schema=None) as batch_op:
        for name in _TOKEN_COLUMNS:
            batch_op.alter_column(
                name, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
            )
        batch_op.create_index(batch_op.f("ix_costs_recorded_at"), ["recorded_at"], unique=False)
    for statement in _triggers():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION audit_events_append_only()")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER audit_events_append_only_{verb}")
    with op.batch_alter_table("costs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_costs_recorded_at"))
        for name in _TOKEN_COLUMNS:
            batch_op.alter_column(
                name, existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
            )
    with op.batch_alter_table("estimates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_estimates_job_id"))
    op.drop_table("estimates")


def _triggers() -> list[str]:
    if op.get_bind().dialect.name == "postgresql":
        return _POSTGRES_TRIGGER
    return _SQLITE_TRIGGERS
