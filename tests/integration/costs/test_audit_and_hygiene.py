"""The audit log explains every step, cannot be rewritten, and Done hygiene shows in it."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError

from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.lifecycle import INITIAL, State
from batchkiln.simulator import Faults
from batchkiln.store import KEY_RETENTION_SECONDS
from batchkiln.store.tables import audit_events, idempotency_keys

from .conftest import MODELS, Env, write_requests

SCENARIOS = {
    "completed": Faults(),
    "partial_then_retry": Faults(fail_ids={"1": "timeout", "3": "invalid_request"}),
    "expired": Faults(expire=True, expire_finished_share=0.5),
    "rejected": Faults(reject_create="this organization cannot create batches"),
    "failed_validation": Faults(reject_batch="invalid_json_line"),
}


async def assert_every_transition_is_audited(env: Env, job_id: str) -> None:
    """For each batch the audited (from, to) pairs chain from not_submitted to its state."""
    events = await env.store.audit.for_job(job_id)
    for batch in await env.store.batches.for_job(job_id):
        moves = [
            (e.from_state, e.to_state) for e in events if e.batch_id == batch.id and e.to_state
        ]
        assert moves[0] == (None, INITIAL.value), moves
        for (_, reached), (left, _) in itertools.pairwise(moves):
            assert left == reached, f"{batch.id}: a silent transition between {moves}"
        assert moves[-1][1] == batch.state.value
        for e in events:
            # batch.created is written by the store while the job is created: no worker yet
            if e.batch_id == batch.id and e.from_state:
                assert e.at > 0 and e.worker, e


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_every_transition_leaves_an_audit_event(env: Env, vendor: str, scenario: str) -> None:
    """Whatever path a job takes, no batch changes state without its event."""
    if vendor == "anthropic" and scenario == "failed_validation":
        pytest.skip("Anthropic refuses a bad batch at create time (the 'rejected' case)")
    env.sim.faults = SCENARIOS[scenario]
    path = write_requests(env.tmp / "in.jsonl", 8, vendor=vendor)
    job = (await env.kiln.submit(path, provider=vendor, model=MODELS[vendor])).job
    await env.kiln.run_once(job_id=job.id)
    env.clock.advance(25 * 3600)
    env.sim.faults = Faults()  # retry children run clean (no second day of polling)
    status = await env.kiln.run_until_done(job.id)
    assert status.state == "done"
    await assert_every_transition_is_audited(env, job.id)
    kinds = {e.kind for e in await env.store.audit.for_job(job.id)}
    assert {"job.created", "cost.estimated", "submit.attempt", "job.done"} <= kinds
    if scenario != "rejected":
        assert {"poll", "cost.recorded", "key.archived", "batch.ingested"} <= kinds


async def test_the_audit_log_is_append_only_in_the_database(env: Env) -> None:
    """UPDATE and DELETE on audit_events are refused by the database itself."""
    path = write_requests(env.tmp / "in.jsonl", 2)
    await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    for statement in (
        update(audit_events).values(reason="rewritten"),
        delete(audit_events),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with env.store.engine.begin() as conn:
                await conn.execute(statement)
    async with env.store.engine.connect() as conn:
        reasons = (await conn.execute(select(audit_events.c.reason))).scalars().all()
    assert "rewritten" not in reasons and reasons


async def test_done_archives_keys_with_their_retention_and_the_reaper_removes_them_later(
    env: Env,
) -> None:
    """A done batch's key is kept for the published 30 days, then reaped."""
    assert KEY_RETENTION_SECONDS == 30 * 86400  # the figure the README publishes
    path = write_requests(env.tmp / "in.jsonl", 3)
    job = (await env.kiln.submit(path, provider="openai", model=MODELS["openai"])).job
    await env.kiln.run_until_done(job.id)
    (batch,) = await env.store.batches.for_job(job.id)
    async with env.store.engine.connect() as conn:
        key = (
            (
                await conn.execute(
                    select(idempotency_keys).where(idempotency_keys.c.key == batch.key)
                )
            )
            .mappings()
            .one()
        )
    assert key["expires_at"] - key["archived_at"] == KEY_RETENTION_SECONDS
    archived = [e for e in await env.store.audit.for_job(job.id) if e.kind == "key.archived"]
    assert archived and archived[0].data == {"key": batch.key, "expires_at": key["expires_at"]}
    assert (await env.store.webhooks.reap())["keys"] == 0
    env.clock.advance(KEY_RETENTION_SECONDS + 1)
    assert (await env.store.webhooks.reap())["keys"] == 2  # the batch key and the job key


@pytest.mark.parametrize("delete_files", [True, False])
async def test_vendor_files_are_deleted_after_ingest_only_when_the_job_asks(
    env: Env, delete_files: bool
) -> None:
    """delete_vendor_files: the batch's input and output files go, and the timeline says so."""
    env.sim.faults = Faults(fail_ids={"1": "timeout"})
    path = write_requests(env.tmp / "in.jsonl", 5)
    options = JobOptions(delete_vendor_files=delete_files, retry=RetryPolicy(max_attempts=2))
    job = (
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"], options=options)
    ).job
    status = await env.kiln.run_until_done(job.id)
    assert status.counts == {"succeeded": 5}
    live = env.sim.files.live(env.sim.now())
    kinds = [e.kind for e in await env.store.audit.for_job(job.id)]
    if delete_files:
        assert live == []
        assert kinds.count("vendor.files_deleted") == 2  # the batch and its retry
        assert kinds.index("vendor.files_deleted") > kinds.index("batch.ingested")
    else:
        assert {f.purpose for f in live} >= {"batch", "batch_output"}
        assert "vendor.files_deleted" not in kinds


async def test_a_failed_file_deletion_is_audited_and_the_job_still_finishes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cleanup is after the commit: a vendor error there is recorded, nothing is undone."""
    from batchkiln.providers.base import VendorError

    provider = env.kiln.provider("openai")

    async def refuse(batch: object) -> None:
        raise VendorError("files API unavailable", retryable=True, status=503)

    monkeypatch.setattr(provider, "cleanup", refuse)
    path = write_requests(env.tmp / "in.jsonl", 3)
    options = JobOptions(delete_vendor_files=True)
    job = (
        await env.kiln.submit(path, provider="openai", model=MODELS["openai"], options=options)
    ).job
    status = await env.kiln.run_until_done(job.id)
    assert status.state == "done" and status.counts == {"succeeded": 3}
    failed = [e for e in await env.store.audit.for_job(job.id) if e.kind == "vendor.cleanup_failed"]
    assert failed and "files API unavailable" in (failed[0].reason or "")
    (batch,) = status.batches
    assert batch.state == State.DONE
