"""batches.input_file: the vendor input file a create will name, recorded before the call

Gemini batches carry no metadata; the uploaded file's name, stored before create, is what
reconciliation matches against `inputConfig.fileName` after an unknown outcome.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("input_file", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("input_file")
