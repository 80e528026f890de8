"""The request ledger and stored results.

Closing a batch is one transaction: the DOWNLOADING -> DONE move (the one
compare-and-set, `transitions.move`), every request's outcome, the retry child (if
any) with the requests moved to it, the cost record (primary key per batch: counted
once), the key archived, and, when it was the Job's last live batch, the Job's own
move. The engine decides all of it (the `Closing` it hands over); the store only
applies it, in one transaction, because a crash between any two of these writes
would count a cost twice, lose a retry, or strand the Job. A crash before commit
leaves the batch in DOWNLOADING to be ingested again.

Outcomes are set-based: the engine decides what each *shape* of stored result
(its outcome and failure class, or no result line at all) becomes, as a small
table (`OutcomeRules`), and the store applies it with a few UPDATEs over the
batch's rows (see `_apply_outcomes`) and moves the retry set with one more. Work
and memory do not depend on holding the batch's seqs in Python; each statement is
O(N) in the database, and the big group (usually "succeeded") needs no join. On
PostgreSQL that big group is given its outcome before the close, in the close's own
transaction opened with the download (store.staging); the close counts it as done.

PostgreSQL plans, right after the bulk insert of the results, when statistics are
stale: we chose a query shape that does not need them over an ANALYZE. The one
join every close makes is restricted to the result rows that did not succeed and
is on the whole primary key of `results` (batch_id, seq), with no IN-lists; every
other filter is an equality on an indexed column of `requests`. Any plan the
planner may pick (hash, merge, or a nested loop over the primary key index) is
then linear or N log N. ANALYZE would sample up to 30,000 pages of a table just
filled (about 0.25 s for 25,000 results of 2 KB here) inside the closing
transaction, and the plan would still depend on what it happened to sample.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    exists,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from batchkiln.clock import Clock
from batchkiln.lifecycle import Event, JobEvent, JobState, State
from batchkiln.store.audit import append_event
from batchkiln.store.bulk import Row, copy_or_insert, packed_insert
from batchkiln.store.checkpoints import WalCheckpointer
from batchkiln.store.jobs import KEY_RETENTION_SECONDS, insert_batch, settle_job
from batchkiln.store.leases import check_lease, lease_owner
from batchkiln.store.rows import BatchRow, RequestRow, from_row
from batchkiln.store.staging import Stage, staged_close
from batchkiln.store.tables import (
    batches,
    costs,
    idempotency_keys,
    jobs,
    request_bodies,
    requests,
    results,
)
from batchkiln.store.transitions import BATCHES, JOBS, move

_CHUNK = 1000

# The column order of a result row given to `store_results`.
RESULT_COLUMNS = (
    "batch_id",
    "seq",
    "job_id",
    "outcome",
    "failure",
    "error_code",
    "error_message",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "billed",
    "raw",
)

USAGE_NAMES = (
    "billed_requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
)
_TOKENS_AT = tuple(RESULT_COLUMNS.index(name) for name in USAGE_NAMES[1:])
_OUTCOME_AT, _FAILURE_AT, _BILLED_AT = (
    RESULT_COLUMNS.index(name) for name in ("outcome", "failure", "billed")
)


class ResultTally:
    """What `Ledger.summarize` reads from a batch's result rows, counted instead as the
    rows are written: a shape count and the billed usage, O(1) in memory.

    Valid only for a pass that wrote (or met, after a crash) every result row the batch
    has: a whole pass over the vendor's result file, which is immutable once the batch
    ended, so rows stored by an earlier, interrupted pass are the same rows. It saves
    reading every row back (each carries the vendor's line) to count them."""

    def __init__(self, carried: int) -> None:
        self.carried = carried  # requests the batch carries (none has an outcome yet)
        self.shapes: dict[ResultShape, int] = {}
        self._billed = 0
        self._sums = [0] * len(_TOKENS_AT)

    def add(self, row: Row) -> None:
        """One row, in RESULT_COLUMNS order."""
        shape = (row[_OUTCOME_AT], row[_FAILURE_AT])
        self.shapes[shape] = self.shapes.get(shape, 0) + 1
        if row[_BILLED_AT] == 1:
            self._billed += 1
            sums = self._sums
            for i, at in enumerate(_TOKENS_AT):
                sums[i] += row[at]

    @property
    def usage(self) -> dict[str, int]:
        """The billed usage, by USAGE_NAMES."""
        return dict(zip(USAGE_NAMES, (self._billed, *self._sums), strict=True))


FINAL_OUTCOMES = ("succeeded", "failed", "exhausted", "cancelled")
RETRY = "retry"  # goes to the retry child
WAIT = "wait"  # no final outcome yet: waits for `kiln retry` (or a budget)
DECISIONS = (*FINAL_OUTCOMES, RETRY, WAIT)

# (results.outcome, results.failure) of a stored result; MISSING: no result line
ResultShape = tuple[str | None, str | None]
MISSING: ResultShape = (None, None)


@dataclass(frozen=True)
class StoredResult:
    seq: int
    outcome: str
    failure: str | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True)
class ChildBatch:
    key: str
    tag: str
    attempt: int
    requests: int  # how many requests of the parent it retries
    wire_bytes: int
    seqs: Sequence[int] | None = None  # which (a manual retry); None: the rules' RETRY set


@dataclass(frozen=True)
class OutcomeRules:
    """What a closing batch's requests become, by the shape of their stored result.

    `decisions` maps every shape to one of DECISIONS; a request whose result is not
    `succeeded` gets `last_error` from its result row (code, message, outcome), or
    `missing_error` when it has no result line. `counts` (from
    `Ledger.result_shapes`) is checked against the rows each UPDATE touches."""

    decisions: Mapping[ResultShape, str]
    missing_error: dict[str, Any]
    counts: Mapping[ResultShape, int]  # the batch's requests by shape, at planning

    def __post_init__(self) -> None:
        unknown = set(self.decisions.values()) - set(DECISIONS)
        if unknown:
            raise ValueError(f"unknown decisions {sorted(unknown)}")

    def shapes(self, *wanted: str) -> list[ResultShape]:
        return [shape for shape, d in self.decisions.items() if d in wanted]


_RESULT_DEFAULTS: dict[str, Any] = {
    "failure": None,
    "error_code": None,
    "error_message": None,
    "input_tokens": 0,
    "cached_input_tokens": 0,
    "output_tokens": 0,
    "cache_write_5m_tokens": 0,
    "cache_write_1h_tokens": 0,
    "billed": 0,
}


def _as_result_tuple(row: Mapping[str, Any]) -> Row:
    return tuple(row[c] if c in row else _RESULT_DEFAULTS[c] for c in RESULT_COLUMNS)


def _set(batch: BatchRow, decision: str, error: dict[str, Any] | None) -> dict[str, Any]:
    """The SET values for requests of `batch` that all get `decision`."""
    values: dict[str, Any] = {"attempts": batch.attempt}
    if decision in FINAL_OUTCOMES:
        values.update(outcome=decision, result_batch_id=batch.id)
    if error is not None:
        values["last_error"] = error
    return values


def _one_decision(rules: OutcomeRules, counts: Mapping[ResultShape, int], outcome: str) -> str:
    decisions = {rules.decisions.get(s, WAIT) for s in counts if s[0] == outcome}
    if len(decisions) != 1:
        raise ValueError(f"requests whose result {outcome} must all end alike: {decisions}")
    return decisions.pop()


@dataclass
class Closing:
    """Everything that becomes true when a batch's results are in."""

    rules: OutcomeRules
    child: ChildBatch | None = None
    cost: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _with_results(batch_id: str) -> Any:
    """The batch's requests, each with its stored result row or none."""
    return requests.outerjoin(
        results, and_(results.c.batch_id == batch_id, results.c.seq == requests.c.seq)
    )


def _body_of() -> ColumnElement[bool]:
    """Joins a request to its body (one per request, on the primary key)."""
    body = request_bodies.c
    return and_(body.job_id == requests.c.job_id, body.seq == requests.c.seq)


def _carried(batch: BatchRow) -> ColumnElement[bool]:
    """The requests `batch` carries that have no final outcome yet."""
    return and_(
        requests.c.job_id == batch.job_id,
        requests.c.batch_id == batch.id,
        requests.c.outcome.is_(None),
    )


def _is_shape(shape: ResultShape) -> ColumnElement[bool]:
    outcome, failure = shape
    if outcome is None:
        return results.c.outcome.is_(None)
    return and_(
        results.c.outcome == outcome,
        results.c.failure.is_(None) if failure is None else results.c.failure == failure,
    )


def _any_shape(shapes: Sequence[ResultShape]) -> ColumnElement[bool]:
    return or_(*[_is_shape(s) for s in shapes]) if shapes else literal_column("1") == 0


def _word(value: str) -> ColumnElement[Any]:
    # a literal, not a bind: PostgreSQL cannot type a parameter inside CASE/json_*
    assert value.replace("_", "").isalnum(), value
    return literal_column(f"'{value}'")


def _error_of_result(conn: AsyncConnection) -> ColumnElement[Any]:
    """`last_error` from a result row: {"code", "message", "outcome"}."""
    build = func.json_build_object if conn.dialect.name == "postgresql" else func.json_object
    return build(
        _word("code"),
        func.coalesce(results.c.error_code, results.c.outcome),
        _word("message"),
        results.c.error_message,
        _word("outcome"),
        results.c.outcome,
    )


def _closing_reason(closing: Closing) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(closing.summary.items()) if k in _OUTCOMES)
    retry = f"; {closing.child.requests} to a retry batch" if closing.child else ""
    return f"results stored: {counts or 'no requests'}{retry}"


_OUTCOMES = ("succeeded", "failed", "exhausted", "cancelled")


class Ledger:
    def __init__(
        self, engine: AsyncEngine, clock: Clock, checkpoints: WalCheckpointer | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._checkpoints = checkpoints

    async def requests_of(self, batch_id: str) -> list[tuple[int, bytes]]:
        """(seq, body) of every request the batch carries, in input order."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(requests.c.seq, request_bodies.c.body)
                .select_from(requests.join(request_bodies, _body_of()))
                .where(requests.c.batch_id == batch_id)
                .order_by(requests.c.seq)
            )
            return [(r.seq, r.body) for r in rows]

    async def seq_span(self, batch_id: str) -> tuple[int, int, int]:
        """The lowest and highest seq the batch carries, and how many it carries
        ((0, -1, 0) for none): when high - low + 1 is the count, they are every seq
        between, and need not be read one by one (`seqs_of`)."""
        async with self._engine.connect() as conn:
            low, high, count = (
                await conn.execute(
                    select(func.min(requests.c.seq), func.max(requests.c.seq), func.count()).where(
                        requests.c.batch_id == batch_id
                    )
                )
            ).one()
        return (0, -1, 0) if not count else (int(low), int(high), int(count))

    async def seqs_of(self, batch_id: str) -> AsyncIterator[list[int]]:
        """The seqs of every request the batch carries, in order, streamed (no bodies) a
        chunk at a time: one hop to the driver per chunk, not per row (a row at a time
        took 1 s of a 50,000-request ingest). Chunks of 2,000, not 10,000: the larger
        ones left ~1 MB more resident from 25,000 to 100,000 requests (PostgreSQL peak
        RSS of the whole ingest +10 %, now +4 %), at no cost in time we could see."""
        query = (
            select(requests.c.seq)
            .where(requests.c.batch_id == batch_id)
            .order_by(requests.c.seq)
            .execution_options(yield_per=_CHUNK * 2)
        )
        async with self._engine.connect() as conn:
            stream = await conn.stream(query)
            async for part in stream.scalars().partitions():
                yield list(part)

    async def store_results(
        self, rows: Sequence[Row] | Sequence[Mapping[str, Any]], *, consume: bool = False
    ) -> None:
        """Insert result rows (tuples in RESULT_COLUMNS order, or mappings by column
        name) in one transaction; a row already stored for (batch, seq) is kept as it
        was. `consume` (a list of tuples, SQLite): the list is emptied once its rows
        are packed, so they are freed while SQLite writes the packed copy."""
        tuples: Sequence[Row]
        if isinstance(rows, list) and all(type(r) is tuple for r in rows):
            tuples = rows
        else:  # tuple first: a C check, where Mapping is an ABC's (~1 us a row)
            tuples = [r if isinstance(r, tuple) else _as_result_tuple(r) for r in rows]
            consume = False
        at = RESULT_COLUMNS.index("batch_id")
        leased = {str(r[at]) for r in tuples}
        if self._engine.dialect.name == "sqlite" and len(leased) == 1:
            await self._store_sqlite(tuples, leased.pop(), consume=consume)
            return

        async def under_lease(conn: AsyncConnection) -> None:
            for batch_id in leased:  # inside a leased step: only under its lease
                await check_lease(conn, batch_id)

        await copy_or_insert(self._engine, results, RESULT_COLUMNS, tuples, guard=under_lease)

    async def _store_sqlite(
        self, rows: Sequence[Row], batch_id: str, *, consume: bool = False
    ) -> None:
        """SQLite: one chunk of one batch's results as ONE statement on the driver, in
        autocommit (a write statement alone takes the write lock as it starts, waiting on
        busy_timeout, as BEGIN IMMEDIATE does), with the lease check folded in.

        Why by hand: the engine parses the next chunk while this one is written, and the
        driver's thread needs the GIL back after every call it makes: up to a switch
        interval (5 ms) beside the busy parser. Through SQLAlchemy a chunk took ~14 such
        calls (cursors, begin, the lease UPDATE, commit): ~135 ms a chunk of 2,000 against
        ~30 ms to parse one. The INSERT inserts nothing unless the guard's worker holds
        the lease (one statement: the check and the write are atomic); fewer rows than
        given means duplicates (a restart) or a lost lease, told apart by `check_lease`,
        which raises LeaseLost for the latter."""
        sql, packed = packed_insert(results, RESULT_COLUMNS, rows, ignore_duplicates=True)
        params: tuple[Any, ...] = packed  # the rows, their raw lines, the fixed columns
        given = len(rows)
        if consume and isinstance(rows, list):
            rows.clear()
        owner = lease_owner()
        if owner is not None:
            n = len(params)
            sql += f" WHERE EXISTS (SELECT 1 FROM batches WHERE id = ?{n + 1}"
            sql += f" AND lease_owner = ?{n + 2})"
            params = (*params, batch_id, owner)
        async with self._engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            inserted = (await driver.execute(sql, params)).rowcount
            if owner is not None and inserted < given:
                await check_lease(conn, batch_id, owner)
                await conn.rollback()
        if self._checkpoints is not None:  # committed: its pages are in the WAL
            self._checkpoints.wrote(sum(len(p) for p in packed if isinstance(p, bytes)))

    async def result_shapes(self, batch: BatchRow) -> dict[ResultShape, int]:
        """How many requests the batch carries (no final outcome yet) per shape of
        stored result; MISSING counts those with no result line."""
        return (await self.summarize(batch))[0]

    async def summarize(
        self, batch: BatchRow, tally: ResultTally | None = None
    ) -> tuple[dict[ResultShape, int], dict[str, int]]:
        """`result_shapes` and `usage_of` from one scan of the batch's result rows (or
        from `tally`, counted as they were written) and one count of its requests
        (result rows are only ever stored for requests the batch carries, so no join
        is needed)."""
        if tally is not None:
            # A downloading batch's requests have no outcome yet (they get one when it
            # closes), so the tally's count is the query's; if the batch was closed
            # meanwhile, the close's compare-and-set refuses before anything applies.
            shapes, usage, total = dict(tally.shapes), tally.usage, tally.carried
        else:
            shapes, usage, total = await self._scan(batch)
        # fewer carried than results: the batch is closed already (its requests have
        # outcomes); closing it again raises StaleTransition before anything applies
        missing = total - sum(shapes.values())
        return ({**shapes, MISSING: missing} if missing > 0 else shapes), usage

    async def _scan(self, batch: BatchRow) -> tuple[dict[ResultShape, int], dict[str, int], int]:
        """Shapes and billed usage from the batch's result rows, and its carried count."""
        billed = results.c.billed == 1

        def billed_sum(column: Any) -> Any:
            return func.coalesce(func.sum(case((billed, column), else_=0)), 0)

        by_shape = (
            select(
                results.c.outcome,
                results.c.failure,
                func.count(),
                func.coalesce(func.sum(case((billed, 1), else_=0)), 0),
                *(billed_sum(results.c[name]) for name in USAGE_NAMES[1:]),
            )
            .where(results.c.batch_id == batch.id)
            .group_by(results.c.outcome, results.c.failure)
        )
        usage = dict.fromkeys(USAGE_NAMES, 0)
        shapes: dict[ResultShape, int] = {}
        async with self._engine.connect() as conn:
            for outcome, failure, n, *sums in (await conn.execute(by_shape)).all():
                shapes[(outcome, failure)] = int(n)
                for name, value in zip(USAGE_NAMES, sums, strict=True):
                    usage[name] += int(value)
            carried = select(func.count()).where(_carried(batch))
            total = int((await conn.execute(carried)).scalar_one())
        return shapes, usage, total

    async def bodies_to_retry(self, batch: BatchRow, rules: OutcomeRules) -> AsyncIterator[bytes]:
        """The stored bodies of the requests `rules` sends to a retry child, streamed."""
        query = (
            select(request_bodies.c.body)
            .select_from(_with_results(batch.id).join(request_bodies, _body_of()))
            .where(_carried(batch), _any_shape(rules.shapes(RETRY)))
            .order_by(requests.c.seq)
            .execution_options(yield_per=_CHUNK)
        )
        async with self._engine.connect() as conn:
            stream = await conn.stream(query)
            async for (body,) in stream:
                yield body

    async def results_of(self, batch_id: str) -> list[StoredResult]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(
                    results.c.seq,
                    results.c.outcome,
                    results.c.failure,
                    results.c.error_code,
                    results.c.error_message,
                ).where(results.c.batch_id == batch_id)
            )
            return [StoredResult(**r._mapping) for r in rows]

    async def usage_of(self, batch_id: str) -> dict[str, int]:
        """Token totals over the billed results of a batch."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        func.count().label("billed_requests"),
                        func.coalesce(func.sum(results.c.input_tokens), 0).label("input_tokens"),
                        func.coalesce(func.sum(results.c.cached_input_tokens), 0).label(
                            "cached_input_tokens"
                        ),
                        func.coalesce(func.sum(results.c.output_tokens), 0).label("output_tokens"),
                        func.coalesce(func.sum(results.c.cache_write_5m_tokens), 0).label(
                            "cache_write_5m_tokens"
                        ),
                        func.coalesce(func.sum(results.c.cache_write_1h_tokens), 0).label(
                            "cache_write_1h_tokens"
                        ),
                    ).where(results.c.batch_id == batch_id, results.c.billed == 1)
                )
            ).one()
            return {k: int(v) for k, v in row._mapping.items()}

    def stage(self, batch: BatchRow) -> AbstractAsyncContextManager[Stage]:
        """The batch's closing transaction, opened before its results are stored, for
        the succeeded outcomes to go in as they come (store.staging); give it to
        `close_batch`. Rolled back on the way out unless the close committed it."""
        return staged_close(self._engine, batch)

    async def close_batch(
        self,
        batch: BatchRow,
        closing: Closing,
        *,
        worker: str | None,
        stage: Stage | None = None,
    ) -> str | None:
        """Apply `closing` and move the batch DOWNLOADING -> DONE atomically.

        Returns the child batch id, if a retry was planned. Raises StaleTransition
        when another worker closed it first (nothing is applied twice). With an
        active `stage` (store.staging) the close runs in the stage's transaction,
        where the succeeded requests have their outcome already, and commits it."""
        if stage is not None and stage.active:
            conn = await stage.connection()
            child_id = await self._close(conn, batch, closing, worker, staged=stage.count)
            await conn.commit()
            return child_id
        async with self._engine.begin() as conn:
            return await self._close(conn, batch, closing, worker, staged=0)

    async def _close(
        self,
        conn: AsyncConnection,
        batch: BatchRow,
        closing: Closing,
        worker: str | None,
        *,
        staged: int,
    ) -> str | None:
        now = self._clock.now()
        await check_lease(conn, batch.id)  # inside a leased step: only under its lease
        await move(
            conn,
            BATCHES,
            batch.id,
            State.DOWNLOADING,
            Event.INGESTED,
            now=now,
            worker=worker,
            reason=_closing_reason(closing),
            values={"next_check_at": None},
            data=closing.summary,
        )
        await self._apply_outcomes(conn, batch, closing, staged)
        child_id = None
        if closing.child is not None:
            child_id = await self._insert_child(
                conn, batch, closing.child, now, worker, closing.rules
            )
        if closing.cost is not None:
            await conn.execute(insert(costs).values(recorded_at=now, **closing.cost))
            await append_event(
                conn,
                at=now,
                kind="cost.recorded",
                job_id=batch.job_id,
                batch_id=batch.id,
                worker=worker,
                data=closing.cost,
            )
        expires = now + KEY_RETENTION_SECONDS
        await conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.key == batch.key)
            .values(archived_at=now, expires_at=expires)
        )
        await append_event(
            conn,
            at=now,
            kind="key.archived",
            job_id=batch.job_id,
            batch_id=batch.id,
            worker=worker,
            data={"key": batch.key, "expires_at": expires},
        )
        if child_id is None:
            await settle_job(conn, batch.job_id, now=now, worker=worker)
        return child_id

    async def _apply_outcomes(
        self, conn: AsyncConnection, batch: BatchRow, closing: Closing, staged: int
    ) -> None:
        """A few set-based UPDATEs, by group of requests (see the module doc):

        1. with a result that did not succeed (usually few): joined to their result
           rows, for the per-row error;
        2. with a result that succeeded, and 3. with no result line: one of the two
           is "every carried request not yet touched" (touched ones have
           `attempts` = the batch's attempt, untouched ones a lower one), so only a
           batch that has both needs a second join.

        `staged` requests got `succeeded` earlier in this transaction (store.staging):
        they have an outcome, so no statement here touches them again.

        The row counts must match the plan's counts, or nothing is applied."""
        rules, k = closing.rules, batch.attempt
        counts = rules.counts
        done = staged
        if staged and _one_decision(rules, counts, "succeeded") != "succeeded":
            raise ValueError("requests whose result succeeded were staged as succeeded")
        failing = sum(n for s, n in counts.items() if s != MISSING and s[0] != "succeeded")
        if failing:
            done += await self._apply_joined(conn, batch, rules, succeeded=False)
        ok = sum(n for s, n in counts.items() if s[0] == "succeeded") - staged
        missing = counts.get(MISSING, 0)
        if ok and missing:
            done += await self._apply_joined(conn, batch, rules, succeeded=True)
        if ok or missing:
            if missing:
                values = _set(batch, rules.decisions.get(MISSING, WAIT), rules.missing_error)
            else:
                values = _set(batch, _one_decision(rules, counts, "succeeded"), None)
            moved = await conn.execute(
                update(requests).where(_carried(batch), requests.c.attempts != k).values(**values)
            )
            done += moved.rowcount
        if done != sum(counts.values()):
            raise RuntimeError(
                f"{done} request(s) of {batch.id} given an outcome, {sum(counts.values())} planned"
                " (its rows changed since the plan)"
            )

    async def _apply_joined(
        self, conn: AsyncConnection, batch: BatchRow, rules: OutcomeRules, *, succeeded: bool
    ) -> int:
        """The requests whose result row did (not) succeed, joined to it."""
        if succeeded:
            values = _set(batch, _one_decision(rules, rules.counts, "succeeded"), None)
            which = results.c.outcome == "succeeded"
        else:
            final = [
                (s, d)
                for s, d in rules.decisions.items()
                if d in FINAL_OUTCOMES and s != MISSING and s[0] != "succeeded"
            ]
            outcome = (
                case(*[(_is_shape(s), _word(d)) for s, d in final], else_=null())
                if final
                else null()
            )
            values = {
                "outcome": outcome,
                "result_batch_id": case(
                    (_any_shape([s for s, _ in final]), _word(batch.id)),
                    else_=requests.c.result_batch_id,
                ),
                "last_error": _error_of_result(conn),
                "attempts": batch.attempt,
            }
            which = results.c.outcome != "succeeded"
        moved = await conn.execute(
            update(requests)
            .where(
                _carried(batch),
                results.c.batch_id == batch.id,
                results.c.seq == requests.c.seq,
                which,
            )
            .values(**values)
        )
        return int(moved.rowcount)

    async def add_child(
        self, parent: BatchRow, child: ChildBatch, *, worker: str | None
    ) -> str | None:
        """Start a retry child of a done batch by hand; None if its key already exists."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            taken = await conn.execute(select(batches.c.id).where(batches.c.key == child.key))
            if taken.first() is not None:
                return None
            child_id = await self._insert_child(conn, parent, child, now, worker)
            status = await conn.execute(select(jobs.c.status).where(jobs.c.id == parent.job_id))
            if status.scalar_one() == JobState.AWAITING_RETRY.value:
                await move(
                    conn,
                    JOBS,
                    parent.job_id,
                    JobState.AWAITING_RETRY,
                    JobEvent.RETRIED,
                    now=now,
                    worker=worker,
                    reason=f"retry batch {child_id} started by hand",
                )
            return child_id

    async def awaiting_retry(
        self, job_id: str, classes: Collection[str] = ("retryable",)
    ) -> dict[str, list[int]]:
        """Requests with no final outcome whose batch is done (auto retry was off, or
        an `account` failure held), by the batch that last carried them, for the
        failure classes asked for (a request with no result line counts as retryable)."""
        failure = func.coalesce(results.c.failure, "retryable")
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(requests.c.batch_id, requests.c.seq)
                .select_from(
                    requests.join(batches, batches.c.id == requests.c.batch_id).outerjoin(
                        results,
                        and_(
                            results.c.batch_id == requests.c.batch_id,
                            results.c.seq == requests.c.seq,
                        ),
                    )
                )
                .where(
                    requests.c.job_id == job_id,
                    requests.c.outcome.is_(None),
                    batches.c.state == State.DONE.value,
                    failure.in_(list(classes)),
                )
                .order_by(requests.c.seq)
            )
            waiting: dict[str, list[int]] = {}
            for batch_id, seq in rows:
                waiting.setdefault(batch_id, []).append(seq)
            return waiting

    async def _insert_child(
        self,
        conn: AsyncConnection,
        parent: BatchRow,
        child: ChildBatch,
        now: float,
        worker: str | None,
        rules: OutcomeRules | None = None,
    ) -> str:
        child_id = await insert_batch(
            conn,
            job_id=parent.job_id,
            parent_id=parent.id,
            key=child.key,
            tag=child.tag,
            shard=parent.shard,
            attempt=child.attempt,
            request_count=child.requests,
            wire_bytes=child.wire_bytes,
            now=now,
        )
        moved_count = 0
        if child.seqs is not None:  # a manual retry names its requests (chunks of seqs)
            seqs = sorted(child.seqs)
            for start in range(0, len(seqs), _CHUNK):
                moved = await conn.execute(
                    update(requests)
                    .where(
                        requests.c.job_id == parent.job_id,
                        requests.c.seq.in_(seqs[start : start + _CHUNK]),
                        requests.c.batch_id == parent.id,
                        requests.c.outcome.is_(None),
                    )
                    .values(batch_id=child_id)
                )
                moved_count += moved.rowcount
        else:  # the rules' RETRY set: left without an outcome, and not held (WAIT)
            where = [
                requests.c.job_id == parent.job_id,
                requests.c.batch_id == parent.id,
                requests.c.outcome.is_(None),
            ]
            if rules is not None:
                result_of = and_(results.c.batch_id == parent.id, results.c.seq == requests.c.seq)
                held = [s for s in rules.shapes(WAIT) if s != MISSING and rules.counts.get(s)]
                if held:
                    where.append(~exists().where(result_of, _any_shape(held)))
                if rules.decisions.get(MISSING) == WAIT and rules.counts.get(MISSING):
                    where.append(exists().where(result_of))
            moved = await conn.execute(update(requests).where(*where).values(batch_id=child_id))
            moved_count = moved.rowcount
        if moved_count != child.requests:
            raise RuntimeError(
                f"{moved_count} request(s) left in {parent.id} to retry, {child.requests} planned"
            )
        await append_event(
            conn,
            at=now,
            kind="batch.created",
            job_id=parent.job_id,
            batch_id=child_id,
            to_state=State.NOT_SUBMITTED.value,
            worker=worker,
            reason=f"retry attempt {child.attempt} of {child.requests} request(s) from {parent.id}",
            data={"key": child.key, "tag": child.tag, "parent_id": parent.id},
        )
        return child_id

    async def job_counts(self, job_id: str) -> dict[str, int]:
        """How many of a job's requests have each final outcome ('pending': none yet)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(requests.c.outcome, func.count())
                .where(requests.c.job_id == job_id)
                .group_by(requests.c.outcome)
            )
            return {(o or "pending"): int(n) for o, n in rows.all()}

    async def export_rows(self, job_id: str) -> AsyncIterator[tuple[RequestRow, bytes | None]]:
        """Every request of a job in input order, with the raw result line that is
        final for it, streamed."""
        query = (
            select(requests, results.c.raw)
            .select_from(
                requests.outerjoin(
                    results,
                    and_(
                        results.c.batch_id == requests.c.result_batch_id,
                        results.c.seq == requests.c.seq,
                    ),
                )
            )
            .where(requests.c.job_id == job_id)
            .order_by(requests.c.seq)
        )
        async with self._engine.connect() as conn:
            stream = await conn.stream(query.execution_options(yield_per=_CHUNK))
            async for row in stream.mappings():
                yield from_row(RequestRow, row), row["raw"]
