"""Submission reads a valid file once, storing each request as it is validated, and
writes the Job with its estimate at once, or nothing; an ingest asks the vendor for the
batch once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

import batchkiln.engine.intake as intake_module
import batchkiln.store.drafts as drafts_module
from batchkiln import BudgetExceeded, FileChanged, InputError, JobOptions, RetryPolicy, State
from batchkiln.engine.worker import Worker
from batchkiln.intake.sharding import PROVIDER_LIMITS, Limits
from batchkiln.store.tables import (
    audit_events,
    batches,
    estimates,
    idempotency_keys,
    job_drafts,
    jobs,
    request_bodies,
    requests,
)
from batchkiln.store.unpublished import STALE_AFTER

from .conftest import MODELS, Env, write_requests

CHUNK = drafts_module.CHUNK


async def _count(env: Env, table: Any) -> int:
    async with env.store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _nothing_stored(env: Env) -> bool:
    tables = (jobs, batches, requests, request_bodies, estimates, idempotency_keys, job_drafts)
    return [await _count(env, t) for t in tables] == [0] * len(tables)


def _counting_opens(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[str]:
    opened: list[str] = []
    real_open = type(path).open

    def counting_open(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            opened.append(str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(type(path), "open", counting_open)
    return opened


def _append(path: Path, *lines: bytes) -> None:
    with path.open("ab") as out:
        for line in lines:
            out.write(line + b"\n")


async def test_a_valid_file_is_read_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation, fingerprint, shard plan, estimate and storing share one read."""
    path = write_requests(env.tmp / "in.jsonl", 7)
    opened = _counting_opens(monkeypatch, path)
    job = (await env.kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    assert len(opened) == 1
    assert job.request_count == 7 and job.key.startswith("fp-") and job.model == MODELS["openai"]


async def test_a_resubmission_by_key_stores_nothing_and_reads_once(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key that names a Job already: one validating read finds it, no row is written."""
    path = write_requests(env.tmp / "in.jsonl", 5)
    first = await env.kiln.submit(path, provider="openai", model=MODELS["openai"], key="k1")
    before = await _count(env, requests)
    opened = _counting_opens(monkeypatch, path)
    again = await env.kiln.submit(path, provider="openai", model=MODELS["openai"], key="k1")
    assert not again.created and again.job.id == first.job.id
    assert len(opened) == 1 and await _count(env, requests) == before


async def test_a_bad_line_after_many_stored_rows_rolls_all_back_and_reports_every_line(
    env: Env,
) -> None:
    """Rows already written when the pass meets a bad line are rolled back; the report
    (from a validating read) names every bad line, the duplicate with its first line."""
    path = write_requests(env.tmp / "in.jsonl", 2 * CHUNK + 50)
    _append(path, b"{not json", orjson.dumps({"custom_id": "r7", "body": {"messages": []}}))
    with pytest.raises(InputError) as raised:
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    assert not isinstance(raised.value, FileChanged)
    lines = [(e.line, e.reason) for e in raised.value.errors]
    assert lines[0][0] == 2 * CHUNK + 51 and "not valid JSON" in lines[0][1]
    assert lines[1] == (2 * CHUNK + 52, "duplicate custom_id 'r7' (first seen on line 8)")
    assert await _nothing_stored(env)
    assert env.sim.counters.batches_created == 0


async def test_a_duplicate_far_apart_is_refused_by_the_store_and_reported(env: Env) -> None:
    """A custom_id seen twice, chunks apart, stops the store's unique index: nothing is
    stored and the report names both lines."""
    path = write_requests(env.tmp / "in.jsonl", 3 * CHUNK)
    line = {"custom_id": "r3", "method": "POST", "url": "/v1/chat/completions"}
    _append(path, orjson.dumps({**line, "body": {"messages": [{"role": "user", "content": "x"}]}}))
    with pytest.raises(InputError) as raised:
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    assert [str(e) for e in raised.value.errors] == [
        f"{path}:{3 * CHUNK + 1}: duplicate custom_id 'r3' (first seen on line 4)"
    ]
    assert await _nothing_stored(env)


async def test_a_file_changed_between_the_store_pass_and_the_report_is_refused(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad line that is valid when the report reads the file again: FileChanged, with
    nothing stored."""
    path = write_requests(env.tmp / "in.jsonl", 5)
    _append(path, b"{broken")
    real = intake_module.validate_file

    def fixed_meanwhile(*args: Any, **kwargs: Any) -> Any:
        write_requests(path, 6)  # someone rewrites it after the first read
        return real(*args, **kwargs)

    monkeypatch.setattr(intake_module, "validate_file", fixed_meanwhile)
    with pytest.raises(FileChanged, match="changed while it was being submitted") as raised:
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    assert raised.value.errors[0].line == 6
    assert await _nothing_stored(env)


async def test_a_crash_while_writing_the_estimate_leaves_no_job_behind(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job and estimate commit together: no Job can exist with its budget under-counted."""
    path = write_requests(env.tmp / "in.jsonl", 5)

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed while writing the estimate")

    monkeypatch.setattr(drafts_module, "write_estimates", crash)
    with pytest.raises(RuntimeError, match="killed"):
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    assert await _nothing_stored(env)
    monkeypatch.undo()
    job = (await env.kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    assert len(await env.store.costs.estimates_for_job(job.id)) == 1


async def test_a_crash_mid_stream_leaves_nothing_and_a_rerun_stores_every_row(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after chunks were written: nothing is committed; the same command again
    stores the whole Job, each request once."""
    path = write_requests(env.tmp / "in.jsonl", 3 * CHUNK + 5)
    real = drafts_module.insert_together
    calls: list[int] = []

    async def dies_on_the_third_chunk(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise ConnectionResetError("the process died")
        await real(*args, **kwargs)

    monkeypatch.setattr(drafts_module, "insert_together", dies_on_the_third_chunk)
    with pytest.raises(ConnectionResetError):
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"], key="k-crash")
    assert await _nothing_stored(env)
    monkeypatch.undo()
    job = (
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"], key="k-crash")
    ).job
    assert job.request_count == 3 * CHUNK + 5
    assert await _count(env, requests) == 3 * CHUNK + 5
    assert await _count(env, request_bodies) == 3 * CHUNK + 5
    assert await env.store.ledger.job_counts(job.id) == {"pending": 3 * CHUNK + 5}


async def test_rows_a_killed_submission_left_are_swept_by_a_workers_housekeeping(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submission that dies with chunks committed (and no clean-up: the process is
    gone) shows no Job; a worker's housekeeping deletes its rows once they are stale."""
    path = write_requests(env.tmp / "in.jsonl", 2 * CHUNK + 5)
    real = drafts_module.insert_together
    calls: list[int] = []

    async def dies_on_the_second_chunk(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionResetError("the process died")
        await real(*args, **kwargs)

    async def gone(*args: Any) -> None:
        return None  # a dead process deletes nothing

    monkeypatch.setattr(drafts_module, "insert_together", dies_on_the_second_chunk)
    monkeypatch.setattr(drafts_module, "_discard", gone)
    with pytest.raises(ConnectionResetError):
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    monkeypatch.undo()
    assert await env.store.jobs.list() == [] and await _count(env, requests) == CHUNK
    await Worker(env.kiln).run(max_steps=0)  # housekeeping: not stale yet
    assert await _count(env, requests) == CHUNK
    env.clock.advance(STALE_AFTER + 1)
    await Worker(env.kiln).run(max_steps=0)
    assert await _nothing_stored(env)


async def test_a_refused_budget_stores_nothing_and_audits_the_refusal(env: Env) -> None:
    """Over its budget the Job is rolled back after the whole read; the refusal is kept."""
    path = write_requests(env.tmp / "in.jsonl", CHUNK + 10)
    options = JobOptions(budget_usd=1e-9)
    with pytest.raises(BudgetExceeded):
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"], options=options)
    assert await _nothing_stored(env)
    async with env.store.engine.connect() as conn:
        kinds = (await conn.execute(select(audit_events.c.kind))).scalars().all()
    assert "budget.refused" in kinds and "job.created" not in kinds


async def test_shards_get_their_batches_keys_and_requests(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shard of the plan is one not_submitted batch with its derived key, tag, size
    and its own requests; no provisional key survives the commit."""
    monkeypatch.setitem(PROVIDER_LIMITS, "openai", Limits(requests=CHUNK + 7, bytes=200_000_000))
    path = write_requests(env.tmp / "in.jsonl", 2 * CHUNK + 20)
    job = (await env.kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    shards = await env.store.batches.for_job(job.id)
    assert [(b.shard, b.request_count, b.state) for b in shards] == [
        (0, CHUNK + 7, State.NOT_SUBMITTED),
        (1, CHUNK + 7, State.NOT_SUBMITTED),
        (2, 6, State.NOT_SUBMITTED),
    ]
    for b in shards:
        assert b.key == f"{job.key}:shard{b.shard}:attempt1" and len(b.tag) == 8
        seqs = [seq for seq, _ in await env.store.ledger.requests_of(b.id)]
        assert seqs == list(range(b.shard * (CHUNK + 7), b.shard * (CHUNK + 7) + b.request_count))
    async with env.store.engine.connect() as conn:
        keys = (await conn.execute(select(idempotency_keys.c.key))).scalars().all()
    assert sorted(keys) == sorted([job.key, *(b.key for b in shards)])


async def test_stored_bodies_are_the_canonical_vendor_bodies(env: Env) -> None:
    """What the store keeps for a request is its vendor body with the model set."""
    path = env.tmp / "in.jsonl"
    line = {
        "custom_id": "a",
        "body": {"max_tokens": 5, "messages": [{"role": "user", "content": "é"}]},
    }
    path.write_bytes(orjson.dumps(line) + b"\n")
    job = (await env.kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    (batch,) = await env.store.batches.for_job(job.id)
    ((_, body),) = await env.store.ledger.requests_of(batch.id)
    assert orjson.loads(body) == {**line["body"], "model": MODELS["openai"]}


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_an_ingest_retrieves_the_vendor_batch_exactly_once(env: Env, vendor: str) -> None:
    """Download and file clean-up use the ingest's one snapshot (the simulator counts)."""
    path = write_requests(env.tmp / "in.jsonl", 6, vendor=vendor)
    options = JobOptions(retry=RetryPolicy(), delete_vendor_files=True)
    job = (await env.kiln.submit(path, provider=vendor, model=MODELS[vendor], options=options)).job
    for _ in range(50):
        (batch,) = await env.store.batches.for_job(job.id)
        if batch.state == State.COMPLETED:
            break
        await env.kiln.run_once(job_id=job.id)
        env.clock.advance(600)
    assert batch.state == State.COMPLETED and batch.vendor_id
    route = "/v1/batches/{batch_id}" if vendor == "openai" else "/v1/messages/batches/{batch_id}"
    before = dict(env.sim.counters.calls)
    await env.kiln.run_once(job_id=job.id)  # the ingest step
    (batch,) = await env.store.batches.for_job(job.id)
    assert batch.state == State.DONE
    retrieves = env.sim.counters.calls[("GET", route)] - before.get(("GET", route), 0)
    # anthropic 2.10's `batches.results()` retrieves the batch itself to find its
    # results_url: that second GET is the SDK's, not ours (see the issue note).
    assert retrieves == (1 if vendor == "openai" else 2)
