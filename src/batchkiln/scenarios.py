"""The practice scenarios of the seed document, run for real on the simulator.

Each one answers the seed's question (which terminal state? which action?) by
doing it: a real job through the real adapters and SDKs, with the fault that
makes the scenario happen, and checks of what must hold afterwards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from batchkiln.app import App, fresh_sqlite_url
from batchkiln.clock import Clock
from batchkiln.intake import InputError
from batchkiln.service.webhooks import webhook_app
from batchkiln.settings import Settings
from batchkiln.simulator import Faults
from batchkiln.store import AuditEvent

MODEL = "gpt-4o-mini"


@dataclass
class Report:
    number: int
    title: str
    walked: dict[str, str] = field(default_factory=dict)  # batch -> states passed through
    terminal: str = "-"
    action: str = "-"
    outcome: str = "-"
    checks: dict[str, bool] = field(default_factory=dict)  # what must hold, and whether it did

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(self.checks.values())


def write_requests(path: Path, count: int, *, bad_line: int | None = None) -> Path:
    """An eval-grading job of `count` plain lines; `bad_line` (1-based) is cut short."""
    with path.open("wb") as out:
        for i in range(count):
            content = f"Grade answer {i} of the eval set."
            line = orjson.dumps(
                {
                    "custom_id": f"q{i}",
                    "body": {"max_tokens": 120, "messages": [{"role": "user", "content": content}]},
                }
            )
            out.write((line[:30] if bad_line == i + 1 else line) + b"\n")
    return path


def _walk(events: list[AuditEvent], batch_id: str) -> str:
    states = [e.to_state for e in events if e.batch_id == batch_id and e.to_state]
    return " -> ".join(dict.fromkeys(s for s in states if s))


def _terminals(events: list[AuditEvent]) -> str:
    ended = [e.from_state for e in events if e.kind == "batch.download" and e.from_state]
    return ", then ".join(ended) or "-"


async def _describe(rt: App, report: Report, job_id: str) -> list[AuditEvent]:
    events = await rt.kiln.store.audit.for_job(job_id)
    status = await rt.kiln.status(job_id)
    for b in status.batches:
        label = f"{b.id} (attempt {b.attempt}, {b.request_count} requests)"
        report.walked[label] = _walk(events, b.id)
    report.terminal = _terminals(events)
    report.outcome = ", ".join(f"{n} {k}" for k, n in sorted(status.counts.items()))
    return events


def _costs(events: list[AuditEvent]) -> list[dict[str, Any]]:
    return [e.data or {} for e in events if e.kind == "cost.recorded"]


async def _job(rt: App, path: Path, key: str) -> str:
    submitted = await rt.kiln.submit(path, provider="simulator", model=MODEL, key=key)
    await rt.kiln.run_until_done(submitted.job.id)
    return submitted.job.id


async def overnight_eval(rt: App, work: Path) -> Report:
    report = Report(1, "Large eval run finishes overnight, all sub-requests succeed")
    job = await _job(rt, write_requests(work / "s1.jsonl", 200), "scenario-1")
    events = await _describe(rt, report, job)
    report.action = "download results; record cost at the batch price; archive the key"
    counts = await rt.kiln.store.ledger.job_counts(job)
    report.checks = {
        "every request succeeded": counts == {"succeeded": 200},
        "one cost record": len(_costs(events)) == 1,
        "key archived": any(e.kind == "key.archived" for e in events),
    }
    return report


async def partial_then_retry(rt: App, work: Path) -> Report:
    report = Report(2, "95 of 100 succeed, 5 hit a model timeout")
    assert rt.simulator is not None
    timeouts = {str(seq): "timeout" for seq in (3, 17, 42, 66, 91)}
    rt.simulator.faults = Faults(fail_ids=timeouts, fail_ids_times=1)  # type: ignore[arg-type]
    job = await _job(rt, write_requests(work / "s2.jsonl", 100), "scenario-2")
    await _describe(rt, report, job)
    report.action = "download the 95; retry exactly the 5 timeouts as a child batch, new key"
    batches = (await rt.kiln.status(job)).batches
    parent, child = batches[0], batches[-1]
    report.checks = {
        "the retry batch holds exactly the 5 failures": child.request_count == 5,
        "the retry batch is a child with a new key": child.parent_id == parent.id
        and child.key != parent.key,
        "all 100 succeeded in the end": await rt.kiln.store.ledger.job_counts(job)
        == {"succeeded": 100},
        "two vendor batches, no more": rt.simulator.counters.batches_created == 2,
    }
    return report


async def rejected_input(rt: App, work: Path) -> Report:
    report = Report(3, "JSONL had a malformed line; and a vendor-side rejection")
    assert rt.simulator is not None
    bad = write_requests(work / "s3.jsonl", 20, bad_line=7)
    message = ""
    try:
        await rt.kiln.submit(bad, provider="simulator", model=MODEL, key="scenario-3a")
    except InputError as exc:
        message = str(exc)
    calls_before = sum(rt.simulator.counters.calls.values())
    # The vendor refuses the first batch for its enqueued-token limit: a transient
    # rejection, so its requests go again as a child once capacity frees.
    submitted = await rt.kiln.submit(
        write_requests(work / "s3b.jsonl", 10), provider="simulator", model=MODEL, key="scenario-3b"
    )
    job = submitted.job.id
    first = (await rt.kiln.status(job)).batches[0]
    rt.simulator.set_batch_faults(first.tag, Faults(reject_batch="token_limit_exceeded"))
    await rt.kiln.run_until_done(job)
    events = await _describe(rt, report, job)
    report.outcome = f"malformed file: {message.splitlines()[0] if message else '-'}; " + (
        f"token limit: {report.outcome}"
    )
    report.action = (
        "fix the input (line number given); a token-limit rejection is transient: wait"
        " for capacity, then the same requests go as a child batch"
    )
    cost = _costs(events)
    batches = (await rt.kiln.status(job)).batches
    report.checks = {
        "the malformed line is named with its number": f"{bad}:7:" in message,
        "nothing reached the vendor for the malformed file": calls_before == 0,
        "the token-limit batch failed with the vendor's reason": "token_limit_exceeded"
        in str(batches[0].error),
        "its requests went again as a child and succeeded": len(batches) == 2
        and batches[1].parent_id == batches[0].id
        and await rt.kiln.store.ledger.job_counts(job) == {"succeeded": 10},
        "the rejected batch billed nothing": cost[0].get("billed_requests") == 0,
    }
    return report


async def expired_window(rt: App, work: Path) -> Report:
    report = Report(4, "The batch outlives its 24 h window")
    assert rt.simulator is not None
    submitted = await rt.kiln.submit(
        write_requests(work / "s4.jsonl", 60), provider="simulator", model=MODEL, key="scenario-4"
    )
    first = (await rt.kiln.status(submitted.job.id)).batches[0]
    rt.simulator.set_batch_faults(first.tag, Faults(expire=True, expire_finished_share=0.4))
    await rt.kiln.run_until_done(submitted.job.id)
    await _describe(rt, report, submitted.job.id)
    report.action = "keep what finished; resubmit only the rest as a child batch"
    batches = (await rt.kiln.status(submitted.job.id)).batches
    kept = batches[0].vendor_succeeded or 0
    report.checks = {
        "the first batch expired": "expired" in report.terminal,
        "finished results were kept": kept > 0,
        "only the unfinished were resubmitted": len(batches) == 2
        and batches[1].request_count == 60 - kept,
        "every request succeeded in the end": await rt.kiln.store.ledger.job_counts(
            submitted.job.id
        )
        == {"succeeded": 60},
    }
    return report


async def network_drop(rt: App, work: Path) -> Report:
    report = Report(5, "Network drops mid-submit; the client retries with the same key")
    assert rt.simulator is not None
    rt.simulator.faults = Faults(drop_create="cut", drop_create_count=1)
    path = write_requests(work / "s5.jsonl", 30)
    first = await rt.kiln.submit(path, provider="simulator", model=MODEL, key="scenario-5")
    await rt.kiln.run_once(job_id=first.job.id)  # the create is accepted; the answer is lost
    again = await rt.kiln.submit(path, provider="simulator", model=MODEL, key="scenario-5")
    await rt.kiln.run_until_done(again.job.id)
    events = await _describe(rt, report, again.job.id)
    report.action = "reconcile with the vendor's list by tag before any resend"
    report.checks = {
        "the same key found the same job": again.job.id == first.job.id and not again.created,
        "one vendor batch": rt.simulator.counters.batches_created == 1,
        "the lost answer was reconciled": any(e.kind == "submit.unknown" for e in events),
        "billed once": len(_costs(events)) == 1,
    }
    return report


class _Relay:
    """An ASGI app whose target is set later (the receiver needs the store)."""

    target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


async def late_duplicate_webhook(rt: App, work: Path) -> Report:
    report = Report(6, "A webhook delivered twice, and late")
    assert rt.simulator is not None
    job = await _job(rt, write_requests(work / "s6.jsonl", 25), "scenario-6")
    await rt.clock.sleep(1000)  # the late deliveries come due
    await rt.simulator.deliver_due_webhooks()
    events = await _describe(rt, report, job)
    report.action = "verify, deduplicate on webhook-id, only mark due; state comes from the vendor"
    kinds = [e.kind for e in events]
    report.checks = {
        "both deliveries arrived": rt.simulator.counters.webhook_deliveries >= 2,
        "the first was recorded": kinds.count("webhook.received") == 1,
        "the replay was recognised": kinds.count("webhook.duplicate") >= 1,
        "the job stayed done, billed once": (await rt.kiln.status(job)).state == "done"
        and len(_costs(events)) == 1,
    }
    return report


Scenario = Callable[[App, Path], Awaitable[Report]]
SCENARIOS: dict[int, Scenario] = {
    1: overnight_eval,
    2: partial_then_retry,
    3: rejected_input,
    4: expired_window,
    5: network_drop,
    6: late_duplicate_webhook,
}


async def run_scenario(
    number: int, work: Path, *, clock: Clock | None = None, settings: Settings | None = None
) -> Report:
    """Run one scenario in its own store and simulator under `work`."""
    database_url = fresh_sqlite_url(work / f"scenario-{number}.db")
    relay = _Relay()
    hooks = None
    faults = None
    if number == 6:
        hooks = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=relay), base_url="http://kiln.hooks"
        )
        faults = Faults(webhook_duplicate=1.0, webhook_delay_seconds=900)
    try:
        async with App.simulated(
            settings or Settings.load(),
            clock=clock,
            database_url=database_url,
            faults=faults,
            seed=number,
            webhook_urls=["http://kiln.hooks/webhooks/openai"] if hooks else (),
            webhook_client=hooks,
        ) as rt:
            if rt.simulator is not None:
                relay.target = webhook_app(rt.kiln.store, [rt.simulator.webhook_secret])
            return await SCENARIOS[number](rt, work)
    finally:
        if hooks is not None:
            await hooks.aclose()
