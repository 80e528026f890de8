"""PostgreSQL: room on each requests page, so closing a batch updates in place

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:20:00.000000

Closing a batch updates every request row it carried (outcome, attempts, ...).
PostgreSQL writes a new version of each row; when it fits on the same page and no
indexed column changes, the update is "HOT" and touches none of the table's three
indexes. Rows are filled to the brim by the bulk insert at intake, so without
free space every update also inserts three index entries. With fillfactor 50
each page keeps room for a new version of each of its rows: the close's UPDATE
took 0.42 s instead of 0.79 s for 25,000 requests of ~1 KB on this machine
(EXPLAIN ANALYZE), at the price of a requests heap twice the size. (A smaller
`toast_tuple_target` to move bodies out of line was tried: PostgreSQL only
toasts rows over ~2 KB, so it changes nothing for ~1 KB bodies.)
SQLite has no such knob; nothing changes there, and tables.py is unchanged
(storage parameters are not part of the schema it describes).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE requests SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE requests RESET (fillfactor)")
