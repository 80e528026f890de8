"""cache-write tokens by lifetime on results and costs (Anthropic bills them above input)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = ("cache_write_5m_tokens", "cache_write_1h_tokens")


def upgrade() -> None:
    for table, kind in (("results", sa.Integer()), ("costs", sa.BigInteger())):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in _COLUMNS:  # rows written before: no cache writes were told apart
                batch_op.add_column(sa.Column(name, kind, nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("costs", "results"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in reversed(_COLUMNS):
                batch_op.drop_column(name)
