"""Request bodies move out of the request ledger into a table of their own

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 03:40:00.000000

A ledger row (`requests`) changes when its batch closes, when it goes to a retry child
and when its outcome is set; its body never changes. With the body in the row, every
such UPDATE wrote the whole row again, so closing a batch rewrote every page of its
bodies: on SQLite, 171,000 requests of ~1 KB took 0.47-0.56 s to close plus 0.33-0.38 s
to commit (110 MB through the WAL and back); apart, 0.11 s and 0.01 s. PostgreSQL
wrote a new version of each row with its body inline (bodies under ~2 KB are not
TOASTed). Storing a request file costs the same (1.0-1.2 s either way for those rows),
and reading a batch's bodies is a join on the primary key (0.33-0.37 s -> 0.41 s).

`request_bodies` has no foreign key, like the other bulk tables (0011): the Job's draft
writes a body with its ledger row, in the same transaction. On PostgreSQL 14+ the body
keeps lz4 compression (0010). SQLite cannot drop a column in place: Alembic's batch
mode copies `requests` once.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)


def _lz4(table: str) -> None:
    """lz4 for `table`.body on PostgreSQL 14+ built with it (as 0010 does)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or (bind.dialect.server_version_info or (0,)) < (14,):
        return
    try:
        with bind.begin_nested():  # a savepoint: a server without lz4 refuses
            bind.execute(sa.text(f"ALTER TABLE {table} ALTER COLUMN body SET COMPRESSION lz4"))
    except sa.exc.DBAPIError as exc:
        log.info("%s.body keeps the default compression: %s", table, exc.orig)


def upgrade() -> None:
    op.create_table(
        "request_bodies",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "seq", name="pk_request_bodies"),
    )
    _lz4("request_bodies")
    op.execute(
        "INSERT INTO request_bodies (job_id, seq, body) SELECT job_id, seq, body FROM requests"
    )
    with op.batch_alter_table("requests") as batch_op:
        batch_op.drop_column("body")


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch_op:
        batch_op.add_column(sa.Column("body", sa.LargeBinary(), nullable=True))
    _lz4("requests")
    op.execute(
        "UPDATE requests SET body = (SELECT b.body FROM request_bodies b"
        " WHERE b.job_id = requests.job_id AND b.seq = requests.seq)"
    )
    with op.batch_alter_table("requests") as batch_op:
        batch_op.alter_column("body", existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table("request_bodies")
