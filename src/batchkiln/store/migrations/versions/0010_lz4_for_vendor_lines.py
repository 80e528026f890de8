"""PostgreSQL: lz4, not pglz, for the stored vendor lines and request bodies

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 01:20:00.000000

PostgreSQL compresses a value when its row passes ~2 KB, with pglz by default, and
pglz is slow: COPY of 50,000 result rows of ~2 KB lines took 1.05 s with pglz and
0.49 s with lz4 on this machine (0.59 s with no compression at all, at 7x the size),
and a real result line (a ~320-token answer) is just over that threshold. lz4 is
PostgreSQL 14+ and needs a server built with it (Debian's and the official images
are); elsewhere this changes nothing and says so in the log. It applies to values
written from now on; stored ones stay as they are (both read the same).
SQLite has no such knob; nothing changes there.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = (("results", "raw"), ("requests", "body"))
log = logging.getLogger(__name__)


def _set(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    version = bind.dialect.server_version_info or (0,)
    if version < (14,):
        log.info("PostgreSQL %s has no per-column compression: pglz stays", version)
        return
    for table, column in COLUMNS:
        try:
            with bind.begin_nested():  # a savepoint: a server without lz4 refuses
                bind.execute(
                    sa.text(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")
                )
        except sa.exc.DBAPIError as exc:
            log.info("%s.%s keeps the default compression: %s", table, column, exc.orig)


def upgrade() -> None:
    _set("lz4")


def downgrade() -> None:
    _set("default")
