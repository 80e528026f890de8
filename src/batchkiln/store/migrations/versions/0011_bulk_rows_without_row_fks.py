"""The bulk tables drop their per-row foreign keys: requests.job_id, requests.batch_id
and results.batch_id

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 01:10:00.000000

A foreign key is checked row by row: PostgreSQL runs a `SELECT ... FOR KEY SHARE` of
the parent for every row a COPY inserts (two per request row), which was the larger
part of the server's work storing a request file: COPY of 171,131 request rows (200 MB)
took 4.3-5.6 s with the two keys and 2.4-2.6 s without (bench/intake.py's file, this
machine). The rows of these two tables are only ever written by the store's bulk paths,
in the transaction that holds their parents: request rows by a Job's draft, whose batch
rows it inserts itself before their requests and whose per-batch row counts it checks
against the shard plan before committing (store/drafts.py); result rows under the lease
of the batch they belong to (store/ledger.py). No job or batch is ever deleted. The
keys guarded nothing these writers do not guard already, at twice the cost of the write.
The other foreign keys (batches, costs, estimates, callbacks) stay: their rows come one
at a time.

SQLite cannot drop a constraint in place: Alembic's batch mode copies each table once.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

KEYS = (
    ("requests", "fk_requests_job_id_jobs", "jobs", "job_id"),
    ("requests", "fk_requests_batch_id_batches", "batches", "batch_id"),
    ("results", "fk_results_batch_id_batches", "batches", "batch_id"),
)


def upgrade() -> None:
    for table in ("requests", "results"):
        with op.batch_alter_table(table) as batch_op:
            for owner, name, _, _ in KEYS:
                if owner == table:
                    batch_op.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    for table in ("requests", "results"):
        with op.batch_alter_table(table) as batch_op:
            for owner, name, parent, column in KEYS:
                if owner == table:
                    batch_op.create_foreign_key(name, parent, [column], ["id"])
