"""Two stores sharing one Anthropic account (two teams, one key): a batch adopted by
window + request count is provisional until its results show our tag, is never
cancelled at the vendor while provisional, and a foreign adoption costs no attempt."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchkiln import Kiln, Store
from batchkiln.lifecycle import State

from .conftest import MODELS, Env, write_requests
from .killing import Killed, KilledBeforeCreate


async def _store_x_batch(env: Env, tmp: Path, n: int) -> tuple[Kiln, Store, str, str]:
    """Store X (its own SQLite database) submits `n` requests on the shared account."""
    store_x = await Store.open(f"sqlite:///{tmp}/x.db", clock=env.clock)
    kiln_x = Kiln(store_x, env.app.providers, clock=env.clock, worker="team-x")
    path = write_requests(tmp / "x.jsonl", n, vendor="anthropic", prefix="x")
    job_x = (await kiln_x.submit(path, provider="anthropic", model=MODELS["anthropic"])).job
    await kiln_x.run_once(job_id=job_x.id)
    (batch_x,) = await store_x.batches.for_job(job_x.id)
    assert batch_x.vendor_id is not None
    return kiln_x, store_x, job_x.id, batch_x.vendor_id


async def _store_y_adopts(env: Env, n: int) -> tuple[str, str]:
    """Store Y (the fixture's store) submits `n` requests; its process is killed just
    before the create leaves; the restarted engine reconciles."""
    path = write_requests(env.tmp / "y.jsonl", n, vendor="anthropic", prefix="y")
    job_y = (await env.kiln.submit(path, provider="anthropic", model=MODELS["anthropic"])).job
    providers = KilledBeforeCreate(env.app.providers)
    doomed = Kiln(env.store, providers, clock=env.clock, worker="y-dead")
    with pytest.raises(Killed):
        await doomed.run_once(job_id=job_y.id)
    (batch,) = await env.store.batches.for_job(job_y.id)
    assert batch.state == State.SUBMITTING and batch.submit_attempts == 1
    env.clock.advance(doomed.lease_seconds + 1)  # the dead process's lease runs out
    await env.kiln.run_once(job_id=job_y.id)
    return job_y.id, batch.id


async def test_store_y_never_cancels_store_x_batch_it_adopted_without_proof(env: Env) -> None:
    """Y adopts X's same-size batch provisionally; Y's cancel is recorded, never sent;
    X's batch runs to the end untouched; Y ends cancelled without sending anything."""
    kiln_x, store_x, job_x, vendor_x = await _store_x_batch(env, env.tmp, 6)
    try:
        job_y, batch_y = await _store_y_adopts(env, 6)
        adopted = await env.store.batches.get(batch_y)
        assert adopted.vendor_id == vendor_x and adopted.provisional == 1

        reports = await env.kiln.cancel(job_y)
        (report,) = reports
        assert report.action == "recorded" and "without proof" in report.detail
        assert not [path for (_, path) in env.sim.counters.calls if path.endswith("/cancel")]
        snapshot = await env.kiln.provider("anthropic").retrieve(vendor_x)
        assert snapshot.state != State.CANCELLING

        status_y = await env.kiln.run_until_done(job_y)
        status_x = await kiln_x.run_until_done(job_x)
        assert status_x.counts == {"succeeded": 6}  # X's batch was never cancelled
        assert status_y.counts == {"cancelled": 6}
        assert env.sim.counters.batches_created == 1  # Y never sent one
        (final,) = status_y.batches
        assert final.vendor_id is None and final.foreign_vendor_ids == [vendor_x]
        kinds = [e.kind for e in await env.store.audit.for_job(job_y)]
        assert "batch.disowned" in kinds
    finally:
        await store_x.close()


async def test_a_foreign_adoption_costs_no_attempt_and_the_requests_go_out_again(
    env: Env,
) -> None:
    """Disowned, Y's own requests go out on the normal path: same batch, attempt 1,
    all succeed, none exhausted; X's batch is untouched."""
    kiln_x, store_x, job_x, vendor_x = await _store_x_batch(env, env.tmp, 6)
    try:
        job_y, batch_y = await _store_y_adopts(env, 6)
        assert (await env.store.batches.get(batch_y)).provisional == 1
        status_y = await env.kiln.run_until_done(job_y)
        status_x = await kiln_x.run_until_done(job_x)
        assert status_x.counts == {"succeeded": 6}
        assert status_y.counts == {"succeeded": 6}
        (final,) = status_y.batches  # no retry child: the adoption used no attempt
        assert final.attempt == 1 and final.vendor_id not in (None, vendor_x)
        assert final.provisional == 0
        assert env.sim.counters.batches_created == 2
        events = await env.store.audit.for_job(job_y)
        assert not [e for e in events if e.kind == "results.foreign"]
        assert [e.kind for e in events].count("batch.disowned") == 1
    finally:
        await store_x.close()
