"""SQLite's WAL is checkpointed in a thread of its own after bulk writes."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from batchkiln.clock import FakeClock
from batchkiln.store import Store
from batchkiln.store.checkpoints import EVERY, WalCheckpointer

from .test_ledger import downloading, result


def _wal_database(path: Path, rows: int) -> sqlite3.Connection:
    """A WAL-mode database whose -wal file holds `rows` committed rows of 10 KB, none
    checkpointed: its connection (returned) stays open, or closing it, the last one,
    would checkpoint them."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
    con.executemany("INSERT INTO t (b) VALUES (?)", [(bytes(10_000),)] * rows)
    return con


async def test_reported_bytes_past_the_threshold_checkpoint_every_committed_frame(
    tmp_path: Path,
) -> None:
    """Once `every` bytes are reported, one PASSIVE checkpoint copies every frame in the WAL."""
    path = tmp_path / "wal.db"
    writer = _wal_database(path, 50)
    checkpoints = WalCheckpointer(str(path), every=1 << 20)
    checkpoints.wrote(600_000)
    await checkpoints.settled()
    assert checkpoints.runs == 0  # under the threshold: nothing started
    checkpoints.wrote(600_000)
    await checkpoints.settled()
    assert checkpoints.runs == 1
    assert checkpoints.last is not None
    busy, frames, copied = checkpoints.last
    assert busy == 0 and frames > 0 and copied == frames
    await checkpoints.aclose()
    writer.close()


async def test_reports_after_close_start_nothing(tmp_path: Path) -> None:
    """A closed checkpointer ignores reports (the store is going away)."""
    path = tmp_path / "wal.db"
    writer = _wal_database(path, 5)
    checkpoints = WalCheckpointer(str(path), every=1)
    await checkpoints.aclose()
    checkpoints.wrote(10 << 20)
    await checkpoints.settled()
    assert checkpoints.runs == 0
    writer.close()


async def test_a_failed_checkpoint_is_logged_and_raises_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not a database: the checkpoint fails with one warning, the writer
    goes on, and a later report tries again."""
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not a SQLite file" * 1000)
    checkpoints = WalCheckpointer(str(path), every=1)
    with caplog.at_level(logging.WARNING, logger="batchkiln.store.checkpoints"):
        checkpoints.wrote(1)
        await checkpoints.settled()
        checkpoints.wrote(1)
        await checkpoints.settled()
    await checkpoints.aclose()
    assert checkpoints.runs == 0
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 2 and all(str(path) in m for m in failures), failures


async def test_a_missing_database_file_is_not_created(tmp_path: Path) -> None:
    """The checkpoint connection opens the file read-write, never creating one."""
    path = tmp_path / "gone.db"
    checkpoints = WalCheckpointer(str(path), every=1)
    checkpoints.wrote(1)
    await checkpoints.settled()
    await checkpoints.aclose()
    assert not path.exists() and checkpoints.runs == 0


def test_only_a_sqlite_file_gets_a_checkpointer() -> None:
    """PostgreSQL, an in-memory SQLite and a URI filename get none; a file gets one, by
    its absolute path (the process may change its directory later)."""
    assert WalCheckpointer.for_url(make_url("postgresql+asyncpg://u@h/db")) is None
    assert WalCheckpointer.for_url(make_url("sqlite+aiosqlite://")) is None
    assert WalCheckpointer.for_url(make_url("sqlite+aiosqlite:///:memory:")) is None
    uri = make_url("sqlite+aiosqlite:///file:x?mode=memory&uri=true")
    assert WalCheckpointer.for_url(uri) is None
    made = WalCheckpointer.for_url(make_url("sqlite+aiosqlite:///kiln-x.db"))
    assert made is not None and made.path == str(Path("kiln-x.db").resolve())


async def test_stored_results_are_checkpointed_behind_the_writer(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Result chunks on a SQLite store report their bytes: past the threshold the WAL is
    checkpointed in the background, every committed frame, the rows intact."""
    store = await Store.open(f"sqlite:///{tmp_path}/kiln.db", clock=clock)
    try:
        assert store.checkpoints is not None
        batch = await downloading(store, 40)
        big = EVERY // 20 + 1  # 20 rows of raw vendor lines pass the threshold
        rows = [(*result(batch, seq, "succeeded")[:-1], bytes(big)) for seq in range(40)]
        await store.ledger.store_results(rows)
        await store.checkpoints.settled()
        assert store.checkpoints.runs >= 1
        assert store.checkpoints.last is not None
        busy, frames, copied = store.checkpoints.last
        assert busy == 0 and copied == frames > 0
        assert await store.ledger.result_shapes(batch) == {("succeeded", None): 40}
    finally:
        await store.close()


async def test_a_sqlite_store_has_a_checkpointer_and_postgres_none(store: Store) -> None:
    """Only a SQLite file has a WAL to checkpoint."""
    assert (store.checkpoints is None) == (store.dialect == "postgresql")
