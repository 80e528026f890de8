"""the Job lifecycle: active jobs whose failures wait for a retry become awaiting_retry

Until now `awaiting_retry` was computed on read; it is a persisted Job state now
(`lifecycle.JOB_TRANSITIONS`). No schema change: the status column holds it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_HELD = """
UPDATE jobs SET status = 'awaiting_retry'
WHERE status = 'active'
  AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.job_id = jobs.id AND b.state <> 'done')
  AND EXISTS (SELECT 1 FROM requests r WHERE r.job_id = jobs.id AND r.outcome IS NULL)
"""


def upgrade() -> None:
    op.execute(_HELD)


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'active' WHERE status = 'awaiting_retry'")
