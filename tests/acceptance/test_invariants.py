"""DESIGN.md invariants 1, 2 and 4 under random fault plans (hypothesis).

Each plan is one Job run through the real engine, both adapters and the official
SDKs against the simulator, with per-request failures (retryable, permanent,
listed ids), expiry, a user cancel, accept-then-drop creates, 429s, read 5xx and
injected crashes: an exception raised before or after one call of the engine's
store or vendor (the process dies there), after which a fresh Kiln with another
worker id resumes on the same store once the dead worker's lease has run out.

When the Job is done, the store is checked against what the simulator actually
did (its batches and their timelines), never against the engine's own account:

- every request has exactly one final outcome, and it is the one the vendor
  batches dictate (a success anywhere is recorded as a success, a retryable
  failure in the last attempt is `exhausted`, ...);
- no request that succeeded is sent again, and no request is in two live vendor
  batches at once;
- every retry batch holds only retryable failures of its parent, at the next
  attempt, with a new key and tag;
- at most one vendor batch per batch key (simulator `created_by_tag` <= 1), and
  every vendor batch is one of ours;
- the billed requests recorded in costs are exactly the successes (costs once).

The hypothesis run is SQLite only, with a fresh database per example (function
fixtures are not reset between examples); one fixed plan also runs on PostgreSQL.
Polling starts at 30 s with a 6 h cap so a 24 h expiry takes a dozen polls; the
schedule decides when we look, never what we find.
"""

from __future__ import annotations

import asyncio
import atexit
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from batchkiln.clock import FakeClock
from batchkiln.engine.kiln import JobStatus, Kiln
from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.engine.schedule import Backoff
from batchkiln.intake.keys import parse_wire_id
from batchkiln.providers import make_provider
from batchkiln.providers.base import Provider, ResultLine, VendorBatch, VendorError
from batchkiln.simulator import Faults, Simulator
from batchkiln.simulator.anthropic_batches import AnthropicBatch
from batchkiln.simulator.faults import RETRYABLE_KINDS
from batchkiln.simulator.gemini_batches import GeminiBatch
from batchkiln.simulator.openai_batches import OpenAIBatch
from batchkiln.store import BatchRow, Store
from batchkiln.store.tables import costs, requests

from .conftest import MODELS, Env, write_requests

SIM_URL = "http://sim.test"

FINAL = {"succeeded", "failed", "exhausted", "cancelled"}
MAX_ITERATIONS = 3000


class Crash(BaseException):
    """An injected process death: nothing after this point of the step runs. Not an
    Exception, so the engine's per-batch error handling cannot swallow it."""


@dataclass(frozen=True)
class CrashPoint:
    """Die before or after the `nth` call of `target` (for results: the nth line)."""

    target: str
    after: bool
    nth: int

    def __str__(self) -> str:
        return f"{'after' if self.after else 'before'} {self.target} #{self.nth}"


@dataclass(frozen=True)
class Plan:
    vendor: str
    requests: int
    seed: int
    faults: Faults
    max_attempts: int
    cancel_after: int | None  # the user cancels the Job after this many engine rounds
    crashes: tuple[CrashPoint, ...] = ()


CALL_TARGETS = (
    "provider.create",
    "provider.retrieve",
    "provider.cancel",
    "provider.results",
    "ledger.store_results",
    "ledger.close_batch",
    "batches.transition",
    "batches.update",
    "audit.record",
)


class Injector:
    """Raises Crash at the planned points, one after the other."""

    def __init__(self, crashes: Iterable[CrashPoint]) -> None:
        self.pending = list(crashes)
        self.fired: list[CrashPoint] = []
        self._calls = 0

    def check(self, target: str, *, after: bool) -> None:
        if not self.pending:
            return
        point = self.pending[0]
        if point.target != target or point.after != after:
            return
        self._calls += 1
        if self._calls >= point.nth:
            self.pending.pop(0)
            self.fired.append(point)
            self._calls = 0
            raise Crash(str(point))

    def wrap(self, owner: object, name: str, target: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        async def crashing(*args: Any, **kwargs: Any) -> Any:
            self.check(target, after=False)
            result = await original(*args, **kwargs)
            self.check(target, after=True)
            return result

        setattr(owner, name, crashing)

    def wrap_results(self, provider: Provider) -> None:
        original = provider.results

        async def results(batch: VendorBatch) -> AsyncIterator[ResultLine]:
            stream = original(batch)
            try:
                async for line in stream:
                    self.check("provider.results", after=False)
                    yield line
            finally:
                await stream.aclose()  # type: ignore[attr-defined]

        provider.results = results  # type: ignore[method-assign]

    def install(self, store: Store, providers: dict[str, Provider]) -> None:
        for provider in providers.values():
            for name in ("create", "retrieve", "cancel"):
                self.wrap(provider, name, f"provider.{name}")
            self.wrap_results(provider)
        self.wrap(store.ledger, "store_results", "ledger.store_results")
        self.wrap(store.ledger, "close_batch", "ledger.close_batch")
        self.wrap(store.batches, "transition", "batches.transition")
        self.wrap(store.batches, "update", "batches.update")
        self.wrap(store.audit, "record", "audit.record")


@dataclass
class Run:
    plan: Plan
    clock: FakeClock
    sim: Simulator
    store: Store
    providers: dict[str, Provider]
    injector: Injector
    tmp: Path
    restarts: int = 0
    notes: list[str] = field(default_factory=list)

    def kiln(self, worker: str) -> Kiln:
        return Kiln(
            self.store,
            self.providers,
            clock=self.clock,
            worker=worker,
            rng=random.Random(f"{self.plan.seed}:{worker}"),
            backoff=Backoff(first=30.0, cap=6 * 3600.0),
        )


async def run_plan(plan: Plan, store: Store, clock: FakeClock, tmp: Path) -> Run:
    """Run `plan` to the end on `store` and check every invariant."""
    sim = Simulator(clock=clock, seed=plan.seed, faults=plan.faults, base_url=SIM_URL)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app), base_url=SIM_URL
    ) as http:
        providers: dict[str, Provider] = {
            "openai": make_provider(
                "openai", http_client=http, base_url=sim.openai_base_url, api_key="test"
            ),
            "anthropic": make_provider(
                "anthropic", http_client=http, base_url=sim.anthropic_base_url, api_key="test"
            ),
            "gemini": make_provider(
                "gemini", http_client=http, base_url=sim.gemini_base_url, api_key="test"
            ),
        }
        injector = Injector(plan.crashes)
        injector.install(store, providers)
        run = Run(plan, clock, sim, store, providers, injector, tmp)
        try:
            job_id = await _submit(run)
            status = await _drive(run, job_id)
            await check_invariants(run, job_id, status)
            return run
        finally:
            for provider in providers.values():
                await provider.aclose()


async def _submit(run: Run) -> str:
    path = write_requests(run.tmp / "in.jsonl", run.plan.requests, vendor=run.plan.vendor)
    options = JobOptions(retry=RetryPolicy(max_attempts=run.plan.max_attempts))
    submitted = await run.kiln("w0").submit(
        path, provider=run.plan.vendor, model=MODELS[run.plan.vendor], options=options
    )
    return submitted.job.id


async def _drive(run: Run, job_id: str) -> JobStatus:
    """`run_until_done`, unrolled: a user cancel after some rounds, and a fresh Kiln
    (a restarted process) after each injected crash."""
    kiln = run.kiln("w0")
    rounds = 0
    cancelled = False
    for _ in range(MAX_ITERATIONS):
        try:
            cancel_after = run.plan.cancel_after
            if cancel_after is not None and not cancelled and rounds >= cancel_after:
                cancelled = True
                try:
                    await kiln.cancel(job_id)
                except VendorError as exc:  # e.g. the batch ended meanwhile
                    run.notes.append(f"cancel: {exc.message}")
            await kiln.run_once(job_id=job_id)
            rounds += 1
            status = await kiln.status(job_id)
            if status.state in ("done", "awaiting_retry"):
                return status
            due = await run.store.batches.next_due_at(job_id=job_id)
            assert due is not None, f"nothing is due but the job is {status.state}"
            await run.clock.sleep(max(0.0, due - run.clock.now()))
        except Crash as crash:
            run.restarts += 1
            run.notes.append(f"crash {crash}")
            run.clock.advance(kiln.lease_seconds + 1)  # the dead worker's lease runs out
            kiln = run.kiln(f"w{run.restarts}")
    raise AssertionError(f"the job did not finish in {MAX_ITERATIONS} rounds: {run.notes}")


# ---- what the simulator did ---------------------------------------------------------


@dataclass(frozen=True)
class VendorView:
    """One simulator batch: which of our requests it held and how each one ended."""

    vendor_id: str
    tag: str
    created_at: float
    ended_at: float
    outcome: str  # completed | expired | cancelled | failed
    seqs: tuple[int, ...]
    succeeded: frozenset[int]
    retryable: frozenset[int]  # failed retryably, or cut off by the 24 h window
    permanent: frozenset[int]
    unfinished: frozenset[int]


def _view(
    vendor_id: str,
    tag: str | None,
    custom_ids: list[str],
    batch: OpenAIBatch | AnthropicBatch | GeminiBatch,
    *,
    results_on_expiry: bool = True,
) -> VendorView:
    tl = batch.timeline
    assert tag is not None, f"vendor batch {vendor_id} carries no tag of ours"
    seq_of: dict[str, int] = {}
    for cid in custom_ids:
        parsed = parse_wire_id(cid)
        assert parsed is not None and parsed[0] == tag, f"{cid!r} in {vendor_id} is not ours"
        seq_of[cid] = parsed[1]
    finished = tl.finished(tl.processing_end())
    # Never ran: cut off by expiry or cancel, or the whole batch was rejected first.
    unfinished = set(seq_of.values()) - {seq_of[p.custom_id] for p in finished}
    retryable = {seq_of[p.custom_id] for p in finished if p.failure in RETRYABLE_KINDS}
    if tl.outcome() == "expired":
        retryable |= unfinished
    if tl.outcome() == "expired" and not results_on_expiry:  # Gemini: no results at all
        finished, unfinished = [], set(seq_of.values())
        retryable = set(unfinished)
    return VendorView(
        vendor_id=vendor_id,
        tag=tag,
        created_at=tl.created_at,
        ended_at=tl.ended_at(),
        outcome=tl.outcome(),
        seqs=tuple(seq_of[c] for c in custom_ids),
        succeeded=frozenset(seq_of[p.custom_id] for p in finished if p.failure is None),
        retryable=frozenset(retryable),
        permanent=frozenset(
            seq_of[p.custom_id] for p in finished if p.failure == "invalid_request"
        ),
        unfinished=frozenset(unfinished),
    )


def vendor_views(sim: Simulator) -> list[VendorView]:
    """Every batch the simulator committed, oldest first."""
    views = [
        _view(b.id, b.tag, [ln.custom_id for ln in b.lines], b) for b in sim.openai_batches.values()
    ]
    views += [
        _view(b.id, b.tag, [cid for cid, _ in b.requests], b)
        for b in sim.anthropic_batches.values()
    ]
    views += [
        _view(b.name, b.tag, [r.key or "" for r in b.requests], b, results_on_expiry=False)
        for b in sim.gemini_batches.values()
    ]
    for view in views:
        assert view.outcome in ("completed", "expired", "cancelled", "failed"), view
    return sorted(views, key=lambda v: v.created_at)


# ---- the checks ---------------------------------------------------------------------


async def check_invariants(run: Run, job_id: str, status: JobStatus) -> None:
    plan, store, sim = run.plan, run.store, run.sim
    context = f"{plan} notes={run.notes}"
    assert status.state == "done", context

    # Invariant 1: exactly one final outcome per request.
    counts = await store.ledger.job_counts(job_id)
    assert "pending" not in counts, (counts, context)
    assert set(counts) <= FINAL, (counts, context)
    assert sum(counts.values()) == plan.requests, (counts, context)
    job = await store.jobs.get(job_id)
    assert job.status == "done", (f"every batch is done but the job is {job.status}", context)

    batches = {b.id: b for b in status.batches}
    by_tag = {b.tag: b for b in batches.values()}
    assert all(b.state == "done" for b in batches.values()), context

    # Invariant 2: at most one vendor batch per batch key, and each is one of ours.
    assert sim.counters.batches_created == sum(sim.counters.created_by_tag.values()), context
    assert all(n <= 1 for n in sim.counters.created_by_tag.values()), (
        sim.counters.created_by_tag,
        context,
    )
    views = vendor_views(sim)
    for view in views:
        ours = by_tag.get(view.tag)
        assert ours is not None, (f"vendor batch {view.vendor_id} has a foreign tag", context)
        assert ours.vendor_id == view.vendor_id, (
            f"{ours.id} never adopted its vendor batch",
            context,
        )
    view_of = {v.tag: v for v in views}

    # New key and tag for every child, at the next attempt.
    assert len({b.key for b in batches.values()}) == len(batches), context
    assert len({b.tag for b in batches.values()}) == len(batches), context
    carried = await _carried(store, job_id, batches)
    for b in batches.values():
        if b.parent_id is None:
            assert b.attempt == 1, context
            continue
        parent = batches[b.parent_id]
        assert b.key != parent.key and b.tag != parent.tag, context
        assert b.attempt == parent.attempt + 1 <= plan.max_attempts, context
        assert carried[b.id] <= carried[parent.id], context
        # Only retryable failures of the parent, as the vendor reported them.
        pview = view_of.get(parent.tag)
        assert pview is not None, (f"{b.id} retries {parent.id}, which never ran", context)
        assert pview.outcome != "cancelled", (f"{b.id} retries a cancelled batch", context)
        assert carried[b.id] <= pview.retryable, (
            f"{b.id} retries {sorted(carried[b.id] - pview.retryable)} that were not"
            f" retryable failures of {parent.id}",
            context,
        )
        assert carried[b.id], (f"{b.id} retries nothing", context)

    # What each vendor batch held is what the ledger says the batch carried.
    for view in views:
        assert set(view.seqs) == carried[by_tag[view.tag].id], (view.tag, context)

    # Nothing sent twice once succeeded; never in two live vendor batches at once.
    succeeded_in: dict[int, str] = {}
    last_end: dict[int, float] = {}
    for view in views:  # oldest first
        for seq in view.seqs:
            assert seq not in succeeded_in, (
                f"request {seq} succeeded in {succeeded_in.get(seq)} and was sent again"
                f" in {view.vendor_id}",
                context,
            )
            assert view.created_at >= last_end.get(seq, float("-inf")), (
                f"request {seq} was in two live vendor batches",
                context,
            )
            last_end[seq] = view.ended_at
        for seq in view.succeeded:
            succeeded_in[seq] = view.vendor_id

    # The one outcome is the one the vendor batches dictate.
    rows = await _requests(store, job_id)
    for seq, (outcome, result_batch_id) in rows.items():
        expected = _expected_outcome(seq, result_batch_id, batches, view_of, plan)
        assert outcome == expected, (
            f"request {seq}: {outcome}, expected {expected} (final batch {result_batch_id})",
            context,
        )
    assert {s for s, (o, _) in rows.items() if o == "succeeded"} == set(succeeded_in), context

    # Invariant 4: billed once per success, and one cost record per closed batch.
    async with store.engine.connect() as conn:
        billed, records = (
            await conn.execute(
                select(func.coalesce(func.sum(costs.c.billed_requests), 0), func.count()).where(
                    costs.c.job_id == job_id
                )
            )
        ).one()
    assert int(billed) == counts.get("succeeded", 0), context
    assert int(records) == len(batches), context


def _expected_outcome(
    seq: int,
    result_batch_id: str | None,
    batches: dict[str, BatchRow],
    view_of: dict[str, VendorView],
    plan: Plan,
) -> str:
    assert result_batch_id is not None, f"request {seq} has no final batch"
    final = batches[result_batch_id]
    view = view_of.get(final.tag)
    if view is None:  # never reached the vendor: rejected at create, or cancelled first
        return "failed" if final.error else "cancelled"
    if seq in view.succeeded:
        return "succeeded"
    if seq in view.permanent or view.outcome == "failed":
        return "failed"
    if view.outcome == "cancelled" or final.cancel_requested_at is not None:
        return "cancelled"  # cut off, or its retries stopped by the cancel
    assert seq in view.retryable, (seq, view)
    # A retryable failure is final only at the last attempt (otherwise it has a child).
    return "exhausted" if final.attempt >= plan.max_attempts else "in a retry child"


async def _carried(store: Store, job_id: str, batches: dict[str, BatchRow]) -> dict[str, set[int]]:
    """The requests each batch carried: those it still holds, plus its descendants'."""
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(requests.c.seq, requests.c.batch_id).where(requests.c.job_id == job_id)
            )
        ).all()
    carried: dict[str, set[int]] = {b: set() for b in batches}
    for seq, batch_id in rows:
        at: str | None = batch_id
        while at is not None:
            carried[at].add(seq)
            at = batches[at].parent_id
    return carried


async def _requests(store: Store, job_id: str) -> dict[int, tuple[str | None, str | None]]:
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(requests.c.seq, requests.c.outcome, requests.c.result_batch_id).where(
                    requests.c.job_id == job_id
                )
            )
        ).all()
    return {seq: (outcome, batch_id) for seq, outcome, batch_id in rows}


# ---- plans --------------------------------------------------------------------------


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    n = draw(st.integers(1, 30))
    retryable = draw(st.sampled_from([0.0, 0.0, 0.1, 0.3, 0.6]))
    permanent = draw(st.sampled_from([0.0, 0.0, 0.1, 0.3]))
    listed = draw(
        st.dictionaries(
            st.integers(0, n - 1).map(str),
            st.sampled_from(["timeout", "server_error", "overloaded", "invalid_request"]),
            max_size=min(n, 5),
        )
    )
    drop = draw(st.sampled_from(["none", "none", "cut", "500"]))
    faults = Faults(
        retryable_rate=retryable,
        permanent_rate=permanent,
        fail_ids=listed,
        fail_ids_times=draw(st.integers(0, 2)),
        expire=draw(st.sampled_from([False, False, True])),
        expire_finished_share=draw(st.sampled_from([0.3, 0.7])),
        drop_create=drop,  # type: ignore[arg-type]
        drop_create_count=draw(st.integers(1, 2)),
        read_5xx_rate=draw(st.sampled_from([0.0, 0.0, 0.1, 0.3])),
        rate_limit_rate=draw(st.sampled_from([0.0, 0.0, 0.05])),
        reject_batch=draw(st.sampled_from([None] * 9 + ["invalid_json_line"])),  # type: ignore[arg-type]
    )
    crashes = draw(
        st.lists(
            st.builds(
                CrashPoint,
                target=st.sampled_from(CALL_TARGETS),
                after=st.booleans(),
                nth=st.sampled_from([1, 1, 2, 3, 5]),
            ),
            max_size=2,
        )
    )
    return Plan(
        vendor=draw(st.sampled_from(["openai", "anthropic", "gemini"])),
        requests=n,
        seed=draw(st.integers(0, 2**16)),
        faults=faults,
        max_attempts=draw(st.integers(1, 3)),
        cancel_after=draw(st.integers(0, 8)) if draw(st.integers(0, 3)) == 0 else None,
        crashes=tuple(crashes),
    )


_TEMPLATE: list[Path] = []  # one migrated SQLite file, copied for each example


async def _fresh_sqlite(tmp: Path, clock: FakeClock) -> Store:
    if not _TEMPLATE:
        folder = tempfile.mkdtemp(prefix="kiln-prop-template-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = Path(folder) / "kiln.db"
        store = await Store.open(f"sqlite:///{template}", clock=clock)
        await store.close()
        _TEMPLATE.append(template)
    shutil.copyfile(_TEMPLATE[0], tmp / "kiln.db")
    return await Store.open(f"sqlite:///{tmp}/kiln.db", clock=clock, run_migrations=False)


async def _run_on_sqlite(plan: Plan) -> Run:
    with tempfile.TemporaryDirectory(prefix="kiln-prop-") as tmp:
        clock = FakeClock()
        store = await _fresh_sqlite(Path(tmp), clock)
        try:
            return await run_plan(plan, store, clock, Path(tmp))
        finally:
            await store.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=plans())
def test_every_fault_plan_keeps_the_invariants(plan: Plan) -> None:
    """Any fault plan ends with one final outcome per request, nothing sent twice."""
    run = asyncio.run(_run_on_sqlite(plan))
    for point in run.injector.fired:
        event(f"crash {point.target} {'after' if point.after else 'before'}")
    event(f"vendor batches: {run.sim.counters.batches_created}")
    for note in run.notes:
        if note.startswith("cancel"):
            event("cancel refused by the vendor")


FIXED = Faults(
    retryable_rate=0.3,
    permanent_rate=0.1,
    fail_ids={"0": "timeout", "1": "invalid_request"},
    drop_create="cut",
    drop_create_count=1,
    read_5xx_rate=0.2,
)


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "gemini"])
async def test_a_fixed_fault_plan_keeps_the_invariants(
    store: Store, clock: FakeClock, tmp_path: Path, vendor: str
) -> None:
    """Failures, a dropped create, read 5xx and two crashes: invariants hold on each database."""
    plan = Plan(
        vendor=vendor,
        requests=20,
        seed=7,
        faults=FIXED,
        max_attempts=3,
        cancel_after=None,
        crashes=(CrashPoint("provider.results", False, 5), CrashPoint("provider.create", True, 1)),
    )
    await run_plan(plan, store, clock, tmp_path)


async def test_a_crash_right_after_the_last_batch_closes_still_finishes_the_job(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    """A process dying just after the last batch closes still leaves the job done."""
    plan = Plan(
        vendor="openai",
        requests=1,
        seed=0,
        faults=Faults(),
        max_attempts=1,
        cancel_after=None,
        crashes=(CrashPoint("ledger.close_batch", True, 1),),
    )
    await run_plan(plan, sqlite_store, clock, tmp_path)  # every other invariant holds
    (job,) = await sqlite_store.jobs.list()
    assert job.status == "done", "the only batch is done, the job is still active"


async def test_a_user_cancel_stops_the_retries_of_a_cancelled_batch(env: Env) -> None:
    """A request that failed retryably in a batch the user cancelled is not sent again."""
    env.sim.faults = Faults(fail_ids={"0": "timeout", "1": "timeout"}, fail_ids_times=0)
    path = write_requests(env.tmp / "in.jsonl", 2, vendor="anthropic")
    submitted = await env.kiln.submit(path, provider="anthropic", model=MODELS["anthropic"])
    await env.kiln.run_once()  # created; the two requests finish at +90 s and +150 s
    env.clock.advance(100)  # one has failed with a timeout, the other is still running
    assert await env.kiln.cancel(submitted.job.id)
    status = await env.kiln.run_until_done(submitted.job.id)
    assert env.sim.counters.batches_created == 1
    assert status.counts == {"cancelled": 2}


async def test_a_cancel_while_a_create_outcome_is_unknown_still_cancels_the_vendor_batch(
    env: Env,
) -> None:
    """A cancel during an unknown create outcome ends the adopted vendor batch cancelled."""
    env.sim.faults = Faults(drop_create="cut")
    path = write_requests(env.tmp / "in.jsonl", 3)
    submitted = await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    await env.kiln.run_once()  # the vendor commits the batch; the answer is lost
    await env.kiln.cancel(submitted.job.id)
    await env.kiln.run_until_done(submitted.job.id)
    (vendor,) = vendor_views(env.sim)
    assert vendor.outcome == "cancelled"


async def test_a_cancel_after_a_partial_batch_ended_sends_no_retry_child(env: Env) -> None:
    """A cancel between a partial batch's end and its ingest sends no retry batch."""
    env.sim.faults = Faults(fail_ids={"0": "timeout"})
    path = write_requests(env.tmp / "in.jsonl", 3)
    submitted = await env.kiln.submit(path, provider="openai", model=MODELS["openai"])
    await env.kiln.run_once()  # created
    env.clock.advance(3600)
    await env.kiln.run_once()  # the tracker sees it partial; not yet ingested
    (batch,) = (await env.kiln.status(submitted.job.id)).batches
    assert batch.state == "partial"
    await env.kiln.cancel(submitted.job.id)
    await env.kiln.run_until_done(submitted.job.id)
    assert env.sim.counters.batches_created == 1
