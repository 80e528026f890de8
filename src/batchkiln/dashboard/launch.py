"""The seed's practice scenarios, launched from the dashboard as real jobs.

Unlike `batchkiln.scenarios` (which runs each one to the end in a store of its
own, for `kiln demo`), a launch here submits a real job into the served App's
store, on its built-in simulator, with the fault that makes the scenario happen
set on that job's batch only, and returns at once: the service's worker moves it,
and the page watches it go through the diagram.

A launch is a POST with an Idempotency-Key (the same rule as the API): the job key
is derived from it, so the same key launches the same job again, never a second.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchkiln.engine.policy import JobOptions, RetryPolicy
from batchkiln.errors import ConfigError, InputError, NotFound
from batchkiln.intake import batch_tag, derive_batch_key, job_key, validate_file
from batchkiln.scenarios import MODEL, write_requests
from batchkiln.simulator import Faults

if TYPE_CHECKING:
    from batchkiln.app import App


@dataclass(frozen=True)
class Practice:
    number: int
    title: str  # the seed's wording
    terminal: str  # the seed's "which terminal state?"
    action: str  # the seed's "action?"


PRACTICE: dict[int, Practice] = {
    1: Practice(
        1,
        "Large eval run finishes overnight, all sub-requests succeed",
        "completed",
        "download the results; cost recorded at the batch price; key archived",
    ),
    2: Practice(
        2,
        "95 of 100 sub-requests succeed, 5 hit a model timeout",
        "partial",
        "download the 95; press Retry: only the 5 go again, as a child batch with a new key",
    ),
    3: Practice(
        3,
        "JSONL upload had a malformed line; and a batch the vendor rejects",
        "failed",
        "fix the input (the line is named); no blind retry of a rejected batch",
    ),
    4: Practice(
        4,
        "Job is queued but exceeds the 24 h window",
        "expired",
        "keep what finished; the rest are resubmitted as a child batch",
    ),
    5: Practice(
        5,
        "Network drops mid-submit, client retries with the same idempotency key",
        "completed",
        "reconcile with the vendor's list by tag; the same key finds the same job, billed once",
    ),
    6: Practice(
        6,
        "A vendor webhook is delivered twice, and late",
        "completed",
        "verify the signature, drop the duplicate by webhook-id, fetch the state",
    ),
}

_SIZES = {1: 40, 2: 100, 3: 10, 4: 60, 5: 30, 6: 25}
_TIMEOUTS = (3, 17, 42, 66, 91)  # the five of scenario 2


class ScenarioUnavailable(ConfigError):
    """Scenarios need the built-in simulator (kiln serve --simulator)."""


def catalogue() -> list[dict[str, Any]]:
    return [p.__dict__ for p in PRACTICE.values()]


class Launcher:
    def __init__(self, app: App, work: Path | None = None) -> None:
        self.app = app
        self._work = work

    @property
    def work(self) -> Path:
        if self._work is None:
            self._work = Path(tempfile.mkdtemp(prefix="kiln-dashboard-"))
        return self._work

    async def launch(self, number: int, idempotency_key: str) -> dict[str, Any]:
        practice = PRACTICE.get(number)
        if practice is None:
            raise NotFound(f"no practice scenario {number} (there are 1 to {len(PRACTICE)})")
        if self.app.simulator is None:
            raise ScenarioUnavailable(
                "practice scenarios run on the built-in simulator: start `kiln serve --simulator`"
            )
        key = f"dashboard-scenario-{number}-{idempotency_key}"
        name = hashlib.sha256(key.encode()).hexdigest()[:16]
        path = self.work / f"scenario-{number}-{name}.jsonl"
        out: dict[str, Any] = {"scenario": practice.__dict__}
        if number == 3:
            bad = write_requests(self.work / f"malformed-{name}.jsonl", 20, bad_line=7)
            try:
                validate_file(bad, provider="openai", model=MODEL)
            except InputError as exc:
                out["rejected_input"] = [str(e) for e in exc.errors]  # nothing was stored
        write_requests(path, _SIZES[number])
        faults = self._faults(number)
        options = JobOptions(retry=RetryPolicy(auto_retry=number != 2))
        if faults is not None:
            summary = validate_file(path, provider="openai", model=MODEL)
            tag = batch_tag(derive_batch_key(job_key(key, summary.fingerprint), 0, 1))
            self.app.simulator.set_batch_faults(tag, faults)  # before any worker can send it
        submitted = await self.app.kiln.submit(
            path, provider="simulator", model=MODEL, key=key, options=options
        )
        if number == 5:  # the client "retries" the submission with the same key
            again = await self.app.kiln.submit(
                path, provider="simulator", model=MODEL, key=key, options=options
            )
            out["same_job_again"] = again.job.id == submitted.job.id and not again.created
        if number == 6 and not self.app.simulator.webhook_urls:
            out["note"] = (
                "this server's simulator sends no webhooks (none is wired to /webhooks/openai),"
                " so the duplicate is not delivered here; `kiln demo --scenario 6` runs it"
            )
        out.update({"job_id": submitted.job.id, "created": submitted.created})
        return out

    @staticmethod
    def _faults(number: int) -> Faults | None:
        if number == 2:
            return Faults(fail_ids={str(s): "timeout" for s in _TIMEOUTS}, fail_ids_times=1)
        if number == 3:
            return Faults(reject_batch="token_limit_exceeded")
        if number == 4:
            return Faults(expire=True, expire_finished_share=0.4)
        if number == 5:
            return Faults(drop_create="cut", drop_create_count=1)
        if number == 6:
            return Faults(webhook_duplicate=1.0, webhook_delay_seconds=60)
        return None
