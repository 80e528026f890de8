"""Duplicate custom_ids and the line errors of one validation pass, in a database.

The validation pass must remember every custom_id it has seen and the line it was
first seen on, and report every bad line in line order up to a cap, for files of
millions of requests. Holding the ids in Python grows with the request count, so
`LineBook` writes them, a chunk at a time, to a private temporary SQLite database
(stdlib `sqlite3`; an empty file name gives a database SQLite deletes on close,
kept in a 2 MB page cache that spills to a temp file), and finds duplicates with
one GROUP BY at the end. The ids are compared exactly (no hashing), and the same
code serves `kiln validate`, which has no store. Written by hand because no
library does "dedupe on disk with line numbers"; sqlite3 is the standard one.

A duplicate line is reported as a duplicate even if it has other faults (the
reason is the duplicate, as a reader would fix it first), and the first line of
an id counts even when it is bad itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

_CHUNK = 10_000
_CACHE_KIB = 2048


@dataclass(frozen=True)
class Finding:
    line: int
    reason: str


class LineBook:
    """custom_id -> lines, and each bad line's reason, for one file."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)
        for pragma in (
            f"cache_size=-{_CACHE_KIB}",
            "journal_mode=OFF",
            "synchronous=OFF",
            "temp_store=FILE",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE ids (custom_id TEXT NOT NULL, line INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE bad (line INTEGER NOT NULL, reason TEXT NOT NULL)")
        self._ids: list[tuple[str, int]] = []
        self._bad: list[tuple[int, str]] = []
        self.bad_lines = 0

    def __enter__(self) -> LineBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def add_id(self, custom_id: str, line: int) -> None:
        self._ids.append((custom_id, line))
        if len(self._ids) >= _CHUNK:
            self._flush()

    def add_bad(self, line: int, reason: str) -> None:
        """A line with a fault other than being a duplicate (or with no custom_id)."""
        self.bad_lines += 1
        self._bad.append((line, reason))
        if len(self._bad) >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        self._db.execute("BEGIN")
        if self._ids:
            self._db.executemany("INSERT INTO ids VALUES (?, ?)", self._ids)
        if self._bad:
            self._db.executemany("INSERT INTO bad VALUES (?, ?)", self._bad)
        self._db.execute("COMMIT")
        self._ids.clear()
        self._bad.clear()

    def findings(self, limit: int) -> tuple[list[Finding], int]:
        """The first `limit` findings in line order (a duplicate line reports the
        duplicate), and how many more there are."""
        self._flush()
        self._db.execute(
            "CREATE TEMP TABLE dup AS"
            " SELECT i.line AS line, i.custom_id AS custom_id, d.first AS first"
            " FROM ids i JOIN (SELECT custom_id, min(line) AS first FROM ids"
            "  GROUP BY custom_id HAVING count(*) > 1) d ON d.custom_id = i.custom_id"
            " WHERE i.line > d.first"
        )
        query = (
            "SELECT line, reason, NULL, NULL FROM bad WHERE line NOT IN (SELECT line FROM dup)"
            " UNION ALL SELECT line, NULL, custom_id, first FROM dup ORDER BY 1"
        )
        found: list[Finding] = []
        total = 0
        for line, reason, custom_id, first in self._rows(query):
            total += 1
            if len(found) < limit:
                if reason is None:
                    reason = f"duplicate custom_id {custom_id!r} (first seen on line {first})"
                found.append(Finding(line, reason))
        return found, total - len(found)

    def _rows(self, query: str) -> Iterator[tuple[int, str | None, str | None, int | None]]:
        cursor = self._db.execute(query)
        while rows := cursor.fetchmany(1000):
            yield from rows
