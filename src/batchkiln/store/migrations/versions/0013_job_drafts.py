"""A Job's draft commits its request rows as it reads them: `job_drafts`

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 07:00:00.000000

Until now a Job was written in one transaction from the first request row to the last.
On SQLite that put the whole file's WAL (~250 MB for a 200 MB request file) behind one
commit, where no checkpoint could copy it before the end, and held the one write lock
for the whole read. A draft now commits its request rows and bodies a chunk at a time,
under a job id that no job row has until the last, small transaction publishes the Job
(store/drafts.py). Its row here says the draft is alive (`touched_at`); the rows of a
draft that died (a crash, a kill) are swept once it has been silent long enough.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_drafts",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("worker", sa.String(length=100), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("touched_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_job_drafts"),
    )


def downgrade() -> None:
    # the rows of drafts still open have no job: they go with the table
    bind = op.get_bind()
    for table in ("request_bodies", "requests"):
        bind.execute(
            sa.text(f"DELETE FROM {table} WHERE job_id IN (SELECT job_id FROM job_drafts)")
        )
    op.drop_table("job_drafts")
