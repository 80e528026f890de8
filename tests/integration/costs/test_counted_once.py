"""A batch's cost is recorded exactly once (DESIGN.md invariant 4), whatever repeats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from batchkiln.engine import ingest as ingest_module
from batchkiln.lifecycle import State
from batchkiln.providers.base import ResultLine, VendorBatch
from batchkiln.simulator import Faults
from batchkiln.store import StaleTransition
from batchkiln.store import ledger as ledger_module
from batchkiln.store.tables import costs, results

from .conftest import MODELS, Env, write_requests

VENDORS = ["openai", "anthropic", "gemini"]


async def cost_rows(env: Env, job_id: str) -> list[dict[str, Any]]:
    async with env.store.engine.connect() as conn:
        rows = await conn.execute(select(costs).where(costs.c.job_id == job_id))
        return [dict(r) for r in rows.mappings()]


async def billed_usage(env: Env, batch_id: str) -> tuple[int, int, int]:
    """Billed requests and tokens, summed straight from the stored result rows."""
    async with env.store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    func.count(),
                    func.sum(results.c.input_tokens),
                    func.sum(results.c.output_tokens),
                ).where(results.c.batch_id == batch_id, results.c.billed == 1)
            )
        ).one()
    return int(row[0]), int(row[1] or 0), int(row[2] or 0)


async def recorded_events(env: Env, job_id: str) -> int:
    return sum(1 for e in await env.store.audit.for_job(job_id) if e.kind == "cost.recorded")


async def run_to_ended(env: Env, job_id: str) -> None:
    """Drive until the (single) batch has ended at the vendor, not yet ingested."""
    for _ in range(50):
        (batch,) = await env.store.batches.for_job(job_id)
        if batch.state in (State.COMPLETED, State.PARTIAL, State.EXPIRED):
            return
        await env.kiln.run_once(job_id=job_id)
        env.clock.advance(600)
    raise AssertionError("the batch never ended")


@pytest.mark.parametrize("vendor", VENDORS)
async def test_ingesting_a_done_batch_again_records_no_second_cost(env: Env, vendor: str) -> None:
    """Re-running ingest on a done batch is refused by its state; the cost stays single."""
    path = write_requests(env.tmp / "in.jsonl", 8, vendor=vendor)
    job = (await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])).job
    await env.kiln.run_until_done(job.id)
    (batch,) = await env.store.batches.for_job(job.id)
    with pytest.raises(StaleTransition):
        await env.kiln.ingestor.ingest(job, batch, env.kiln.provider(vendor))
    rows = await cost_rows(env, job.id)
    assert len(rows) == 1
    assert await recorded_events(env, job.id) == 1
    billed, input_tokens, output_tokens = await billed_usage(env, batch.id)
    assert (rows[0]["billed_requests"], rows[0]["input_tokens"], rows[0]["output_tokens"]) == (
        billed,
        input_tokens,
        output_tokens,
    )


class Killed(BaseException):
    """The worker process dies here (not an Exception: the engine must not handle it)."""


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_crash_inside_the_closing_transaction_then_a_retried_ingest_counts_once(
    env: Env, vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost row is written, the close fails before commit, ingest runs again: one row."""
    path = write_requests(env.tmp / "in.jsonl", 8, vendor=vendor)
    job = (await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])).job
    await run_to_ended(env, job.id)
    real = ledger_module.append_event
    crashes = []

    async def crash_at_done(conn: Any, **fields: Any) -> None:
        if fields["kind"] == "key.archived" and not crashes:  # after the cost row
            crashes.append(fields)
            raise Killed("worker killed mid-close")
        await real(conn, **fields)

    monkeypatch.setattr(ledger_module, "append_event", crash_at_done)
    with pytest.raises(Killed, match="mid-close"):
        await env.kiln.run_once(job_id=job.id)
    (batch,) = await env.store.batches.for_job(job.id)
    assert batch.state == State.DOWNLOADING
    assert await cost_rows(env, job.id) == []  # rolled back with the rest of the close
    env.clock.advance(env.kiln.lease_seconds + 1)  # the crashed worker's lease runs out
    await env.kiln.run_until_done(job.id)
    assert len(await cost_rows(env, job.id)) == 1
    assert await recorded_events(env, job.id) == 1


async def stored_lines(env: Env, batch_id: str) -> dict[int, bytes]:
    async with env.store.engine.connect() as conn:
        rows = await conn.execute(
            select(results.c.seq, results.c.raw).where(results.c.batch_id == batch_id)
        )
        return {int(seq): bytes(raw) for seq, raw in rows}


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_crash_mid_download_with_a_chunk_in_flight_then_a_restart_stores_each_row_once(
    env: Env, vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small chunks written while the next is parsed; the stream dies at line 8 with a
    chunk in flight: what was stored stays as it was, and the restarted ingest gives one
    result row a request, one outcome each and one cost."""
    monkeypatch.setattr(ingest_module, "_FLUSH", 4)  # chunks of 4 rows
    monkeypatch.setattr(ingest_module, "_YIELD_EVERY", 1)
    path = write_requests(env.tmp / "in.jsonl", 10, vendor=vendor)
    job = (await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])).job
    await run_to_ended(env, job.id)
    provider = env.kiln.provider(vendor)
    real = provider.results

    async def dying(batch: VendorBatch) -> AsyncIterator[ResultLine]:
        count = 0
        async for line in real(batch):
            count += 1
            if count == 8:
                raise Killed("worker killed mid-download")
            yield line

    monkeypatch.setattr(provider, "results", dying)
    with pytest.raises(Killed, match="mid-download"):
        await env.kiln.run_once(job_id=job.id)
    (batch,) = await env.store.batches.for_job(job.id)
    assert batch.state == State.DOWNLOADING
    before = await stored_lines(env, batch.id)
    assert len(before) == 4  # every full chunk, the one in flight included
    assert await env.store.ledger.job_counts(job.id) == {"pending": 10}
    monkeypatch.setattr(provider, "results", real)
    env.clock.advance(env.kiln.lease_seconds + 1)  # the crashed worker's lease runs out
    await env.kiln.run_until_done(job.id)
    after = await stored_lines(env, batch.id)
    assert len(after) == 10 and {s: after[s] for s in before} == before
    counts = await env.store.ledger.job_counts(job.id)
    assert sum(counts.values()) == 10 and "pending" not in counts
    assert len(await cost_rows(env, job.id)) == 1
    assert await recorded_events(env, job.id) == 1


@pytest.mark.parametrize("vendor", VENDORS)
async def test_two_workers_ingesting_one_batch_at_once_record_one_cost(
    env: Env, vendor: str
) -> None:
    """Two engines close the same ended batch concurrently; one wins, one is told so."""
    path = write_requests(env.tmp / "in.jsonl", 8, vendor=vendor)
    job = (await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])).job
    await run_to_ended(env, job.id)
    await env.kiln.run_once(job_id=job.id)  # downloading -> done by the first worker ...
    (batch,) = await env.store.batches.for_job(job.id)
    assert batch.state == State.DONE
    # ... so replay the race from downloading with two fresh engines on a second job.
    path2 = write_requests(env.tmp / "in2.jsonl", 9, vendor=vendor)
    job2 = (await env.kiln.submit(path2, provider=vendor, model=MODELS[vendor])).job
    await run_to_ended(env, job2.id)
    (ended,) = await env.store.batches.for_job(job2.id)
    a, b = env.new_kiln("worker-a"), env.new_kiln("worker-b")
    provider = env.kiln.provider(vendor)
    outcomes = await asyncio.gather(
        a.ingestor.ingest(job2, ended, provider),
        b.ingestor.ingest(job2, ended, provider),
        return_exceptions=True,
    )
    assert sum(isinstance(o, StaleTransition) for o in outcomes) == 1
    assert len(await cost_rows(env, job2.id)) == 1
    assert await recorded_events(env, job2.id) == 1


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_duplicate_completion_signal_after_done_records_no_second_cost(
    env: Env, vendor: str
) -> None:
    """A late, replayed webhook marks the done batch due again; nothing is re-counted."""
    path = write_requests(env.tmp / "in.jsonl", 6, vendor=vendor)
    job = (await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])).job
    await env.kiln.run_until_done(job.id)
    (batch,) = await env.store.batches.for_job(job.id)
    for delivery in ("wh_1", "wh_1", "wh_2"):
        fresh = await env.store.webhooks.record(
            delivery,
            event_type="batch.completed",
            vendor_batch_id=batch.vendor_id,
            batch_id=batch.id,
            job_id=job.id,
            keep_seconds=3600,
        )
        if fresh:
            await env.store.batches.mark_due(batch.id)
        await env.kiln.run_once(job_id=job.id)
    assert len(await cost_rows(env, job.id)) == 1
    assert await recorded_events(env, job.id) == 1


async def test_the_database_refuses_a_second_cost_row_for_one_batch(env: Env) -> None:
    """Counted once is a primary key, not a convention: a second insert fails."""
    path = write_requests(env.tmp / "in.jsonl", 3)
    job = (await env.kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    await env.kiln.run_until_done(job.id)
    (row,) = await cost_rows(env, job.id)
    with pytest.raises(IntegrityError):
        async with env.store.engine.begin() as conn:
            await conn.execute(insert(costs).values(**row))


async def test_retry_chain_costs_add_up_to_the_job_total_with_each_batch_once(env: Env) -> None:
    """A partial batch and its retry child: one cost row each, summed per chain and job."""
    env.sim.faults = Faults(fail_ids={"1": "timeout", "4": "server_error"})  # wire <tag>-<seq>
    path = write_requests(env.tmp / "in.jsonl", 10)
    job = (await env.kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    status = await env.kiln.run_until_done(job.id)
    assert status.counts == {"succeeded": 10}
    rows = await cost_rows(env, job.id)
    assert sorted(r["billed_requests"] for r in rows) == [2, 8]
    assert len({r["batch_id"] for r in rows}) == 2
    from batchkiln.costs.report import job_cost

    report = await job_cost(env.store, job.id)
    assert report.actual.requests == 10
    assert report.actual.cost_usd == pytest.approx(sum(r["cost_usd"] for r in rows))
    (chain,) = report.chains
    assert [r.attempt for r in chain.rows] == [1, 2]
    assert report.retry_estimate.requests == 2
