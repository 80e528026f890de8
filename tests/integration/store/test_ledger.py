"""Closing a batch applies outcomes set-based, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from batchkiln.errors import LeaseLost, StaleTransition
from batchkiln.lifecycle import Event, State
from batchkiln.store import BatchRow, ChildBatch, Closing, OutcomeRules, Store
from batchkiln.store.leases import guarded_by
from batchkiln.store.ledger import MISSING, RETRY, WAIT
from batchkiln.store.tables import batches, requests

from .helpers import make_job

NO_RESULT = {"code": "no_result", "message": "the vendor returned no result line"}


async def downloading(store: Store, n: int) -> BatchRow:
    job = await make_job(store, key=f"ledger-{n}", n=n)
    (batch,) = await store.batches.for_job(job.id)
    await store.batches.transition(batch, State.NOT_SUBMITTED, Event.SUBMIT)
    await store.batches.transition(
        batch, State.SUBMITTING, Event.ACCEPTED, values={"vendor_id": "vb_1"}
    )
    await store.batches.transition(batch, State.PENDING, Event.VENDOR_PARTIAL)
    await store.batches.transition(batch, State.PARTIAL, Event.DOWNLOAD)
    return await store.batches.get(batch.id)


def result(batch: BatchRow, seq: int, outcome: str, failure: str | None = None) -> tuple[Any, ...]:
    code = None if outcome == "succeeded" else f"code-{seq}"
    message = None if outcome == "succeeded" else f"message {seq}"
    billed = 1 if outcome == "succeeded" else 0
    raw = f'{{"seq": {seq}}}'.encode()
    tokens = (10, 0, 5, 0, 0)  # input, cached input, output, cache writes 5m and 1h
    return (batch.id, seq, batch.job_id, outcome, failure, code, message, *tokens, billed, raw)


DECISIONS = {
    ("succeeded", None): "succeeded",
    ("errored", "retryable"): RETRY,
    ("errored", "permanent"): "failed",
    ("expired", "retryable"): RETRY,
    MISSING: RETRY,
}


async def rules_for(store: Store, batch: BatchRow) -> OutcomeRules:
    return OutcomeRules(DECISIONS, NO_RESULT, await store.ledger.result_shapes(batch))


async def rows_of(store: Store, job_id: str) -> dict[int, dict[str, Any]]:
    async with store.engine.connect() as conn:
        found = await conn.execute(
            requests.select().where(requests.c.job_id == job_id).order_by(requests.c.seq)
        )
        return {r["seq"]: dict(r) for r in found.mappings()}


async def test_close_sets_outcomes_errors_and_moves_the_retry_set(store: Store) -> None:
    """Each request gets the outcome its result's shape calls for, its last error, and
    the retry set moves to the child, in one close."""
    batch = await downloading(store, 6)
    await store.ledger.store_results(
        [
            result(batch, 0, "succeeded"),
            result(batch, 1, "errored", "retryable"),
            result(batch, 2, "errored", "permanent"),
            result(batch, 3, "expired", "retryable"),
            result(batch, 5, "succeeded"),
        ]
    )
    shapes = await store.ledger.result_shapes(batch)
    assert shapes == {
        ("succeeded", None): 2,
        ("errored", "retryable"): 1,
        ("errored", "permanent"): 1,
        ("expired", "retryable"): 1,
        MISSING: 1,
    }
    _, usage = await store.ledger.summarize(batch)
    assert usage == await store.ledger.usage_of(batch.id)
    assert usage == {
        "billed_requests": 2,
        "input_tokens": 20,
        "cached_input_tokens": 0,
        "output_tokens": 10,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
    }
    rules = await rules_for(store, batch)
    bodies = [b async for b in store.ledger.bodies_to_retry(batch, rules)]
    assert bodies == [b'{"n":1}', b'{"n":3}', b'{"n":4}']
    child = ChildBatch(f"{batch.key}:retry", "tchild01", attempt=2, requests=3, wire_bytes=1)
    child_id = await store.ledger.close_batch(batch, Closing(rules=rules, child=child), worker="w")
    assert child_id is not None
    rows = await rows_of(store, batch.job_id)
    assert {s: r["outcome"] for s, r in rows.items()} == {
        0: "succeeded",
        1: None,
        2: "failed",
        3: None,
        4: None,
        5: "succeeded",
    }
    assert {s for s, r in rows.items() if r["batch_id"] == child_id} == {1, 3, 4}
    assert {s for s, r in rows.items() if r["result_batch_id"] == batch.id} == {0, 2, 5}
    assert all(r["attempts"] == 1 for r in rows.values())
    assert rows[0]["last_error"] is None
    assert rows[2]["last_error"] == {"code": "code-2", "message": "message 2", "outcome": "errored"}
    assert rows[4]["last_error"] == NO_RESULT
    assert (await store.batches.get(batch.id)).state == State.DONE
    assert (await store.batches.get(child_id)).request_count == 3


async def test_a_close_that_would_move_the_wrong_retry_set_applies_nothing(store: Store) -> None:
    """A child planned for more requests than are left to retry rolls the close back."""
    batch = await downloading(store, 3)
    await store.ledger.store_results([result(batch, 0, "succeeded")])
    child = ChildBatch(f"{batch.key}:retry", "tchild02", attempt=2, requests=5, wire_bytes=1)
    closing = Closing(rules=await rules_for(store, batch), child=child)
    with pytest.raises(RuntimeError, match="2 request"):
        await store.ledger.close_batch(batch, closing, worker="w")
    assert (await store.batches.get(batch.id)).state == State.DOWNLOADING
    assert {r["outcome"] for r in (await rows_of(store, batch.job_id)).values()} == {None}


async def test_staged_outcomes_show_only_once_the_close_commits(store: Store) -> None:
    """Succeeded outcomes staged as the results come in (the closing transaction, opened
    early on PostgreSQL) show nowhere until the close commits; then every request has
    the outcome, attempt and result batch the close gives."""
    batch = await downloading(store, 3)
    stored = [result(batch, 0, "succeeded"), result(batch, 1, "succeeded")]
    await store.ledger.store_results([*stored, result(batch, 2, "errored", "permanent")])
    rules = await rules_for(store, batch)
    async with store.ledger.stage(batch) as stage:
        await stage.succeeded([0, 1])
        assert stage.count == (2 if store.dialect == "postgresql" else 0)
        assert await store.ledger.job_counts(batch.job_id) == {"pending": 3}
        await store.ledger.close_batch(batch, Closing(rules=rules), worker="w", stage=stage)
    rows = await rows_of(store, batch.job_id)
    assert [rows[s]["outcome"] for s in range(3)] == ["succeeded", "succeeded", "failed"]
    assert all(r["attempts"] == 1 and r["result_batch_id"] == batch.id for r in rows.values())
    assert rows[2]["last_error"] == {"code": "code-2", "message": "message 2", "outcome": "errored"}


async def test_a_refused_close_rolls_its_staged_outcomes_back(store: Store) -> None:
    """A close refused after staging (its retry set is off the plan) leaves no request
    with an outcome; the next ingest stages and closes them once."""
    batch = await downloading(store, 3)
    await store.ledger.store_results([result(batch, 0, "succeeded"), result(batch, 1, "succeeded")])
    wrong = ChildBatch(f"{batch.key}:retry", "tchild04", attempt=2, requests=5, wire_bytes=1)
    async with store.ledger.stage(batch) as stage:
        await stage.succeeded([0, 1])
        closing = Closing(rules=await rules_for(store, batch), child=wrong)
        with pytest.raises(RuntimeError, match="1 request"):
            await store.ledger.close_batch(batch, closing, worker="w", stage=stage)
    assert await store.ledger.job_counts(batch.job_id) == {"pending": 3}
    assert (await store.batches.get(batch.id)).state == State.DOWNLOADING
    child = ChildBatch(f"{batch.key}:retry", "tchild05", attempt=2, requests=1, wire_bytes=1)
    async with store.ledger.stage(batch) as stage:
        await stage.succeeded([0, 1])
        closing = Closing(rules=await rules_for(store, batch), child=child)
        await store.ledger.close_batch(batch, closing, worker="w", stage=stage)
    assert await store.ledger.job_counts(batch.job_id) == {"succeeded": 2, "pending": 1}


async def test_a_second_close_is_stale_and_changes_nothing(store: Store) -> None:
    """Closing twice raises StaleTransition; outcomes are applied once."""
    batch = await downloading(store, 2)
    await store.ledger.store_results([result(batch, 0, "succeeded"), result(batch, 1, "succeeded")])
    closing = Closing(rules=await rules_for(store, batch))
    await store.ledger.close_batch(batch, closing, worker="w")
    with pytest.raises(StaleTransition):
        await store.ledger.close_batch(batch, closing, worker="w")
    assert await store.ledger.job_counts(batch.job_id) == {"succeeded": 2}


async def test_storing_results_again_keeps_the_first_rows(store: Store) -> None:
    """A chunk stored again after a crash (PostgreSQL: COPY meets stored rows, then the
    INSERT ... ON CONFLICT DO NOTHING path) keeps the rows as first stored."""
    batch = await downloading(store, 4)
    await store.ledger.store_results([result(batch, 0, "succeeded"), result(batch, 1, "succeeded")])
    again = [result(batch, s, "errored", "permanent") for s in range(4)]
    await store.ledger.store_results(again)
    stored = {r.seq: r.outcome for r in await store.ledger.results_of(batch.id)}
    assert stored == {0: "succeeded", 1: "succeeded", 2: "errored", 3: "errored"}
    assert [s async for part in store.ledger.seqs_of(batch.id) for s in part] == [0, 1, 2, 3]


async def test_results_are_stored_only_under_the_batchs_lease(store: Store) -> None:
    """Inside a leased step, results of a batch leased to another worker raise LeaseLost
    and store nothing; under its own lease, a chunk met again (a restart) keeps the rows
    first stored and raises nothing."""
    batch = await downloading(store, 3)
    async with store.engine.begin() as conn:
        await conn.execute(update(batches).where(batches.c.id == batch.id).values(lease_owner="w1"))
    with guarded_by("w2"), pytest.raises(LeaseLost):
        await store.ledger.store_results([result(batch, 0, "succeeded")])
    assert await store.ledger.results_of(batch.id) == []
    with guarded_by("w1"):
        await store.ledger.store_results([result(batch, 0, "succeeded")])
        await store.ledger.store_results([result(batch, 0, "errored"), result(batch, 1, "errored")])
        await store.ledger.store_results([result(batch, 0, "errored")])
    stored = {r.seq: r.outcome for r in await store.ledger.results_of(batch.id)}
    assert stored == {0: "succeeded", 1: "errored"}


async def test_held_requests_stay_behind_when_the_retry_set_moves(store: Store) -> None:
    """Requests the rules hold (WAIT, e.g. an account failure) keep no outcome and stay in
    the closed batch; only the RETRY ones move to the child."""
    batch = await downloading(store, 4)
    await store.ledger.store_results(
        [
            result(batch, 0, "errored", "account"),
            result(batch, 1, "errored", "retryable"),
            result(batch, 2, "succeeded"),
        ]
    )
    decisions = {**DECISIONS, ("errored", "account"): WAIT}
    rules = OutcomeRules(decisions, NO_RESULT, await store.ledger.result_shapes(batch))
    child = ChildBatch(f"{batch.key}:retry", "tchild03", attempt=2, requests=2, wire_bytes=1)
    child_id = await store.ledger.close_batch(batch, Closing(rules=rules, child=child), worker="w")
    rows = await rows_of(store, batch.job_id)
    assert {s for s, r in rows.items() if r["batch_id"] == child_id} == {1, 3}
    assert rows[0]["batch_id"] == batch.id and rows[0]["outcome"] is None
    assert rows[0]["last_error"] == {"code": "code-0", "message": "message 0", "outcome": "errored"}
