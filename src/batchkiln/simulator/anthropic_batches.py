"""Anthropic Message Batches: the create body's checks, the MessageBatch object at any
instant, and the results JSONL.

Only `processing` is non-zero in `request_counts` until the batch has ended. Results
are kept 29 days from `created_at`; after that `archived_at` is set and the results
URL answers 404 (the status code is UNCONFIRMED).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from batchkiln.simulator.errors import SimError
from batchkiln.simulator.faults import FailureKind, Faults
from batchkiln.simulator.model import anthropic_message, short_id
from batchkiln.simulator.timeline import Timeline

MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1024 * 1024
RETENTION_SECONDS = 29 * 24 * 3600
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_PROCESSING = {
    "queued": "in_progress",
    "processing": "in_progress",
    "finalizing": "in_progress",
    "cancelling": "canceling",
}
_ERRORS: dict[FailureKind, tuple[str, str]] = {
    "timeout": ("timeout_error", "Request timed out while the model was generating."),
    "server_error": ("api_error", "Internal server error."),
    "overloaded": ("overloaded_error", "Overloaded"),
    "invalid_request": (
        "invalid_request_error",
        "prompt is too long: 210000 tokens > 200000 maximum",
    ),
    # as Anthropic sends it (real payload tr-030): a billing condition under a generic type
    "credit_balance": (
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. Please go to Plans &"
        " Billing to upgrade or purchase credits.",
    ),
}


def rfc3339(when: float) -> str:
    """`2024-09-24T18:37:24.100435Z`, as Anthropic writes timestamps."""
    return (
        datetime.fromtimestamp(when, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )


@dataclass
class AnthropicBatch:
    """One Message Batch; its state is read off `timeline` at each request."""

    id: str
    requests: list[tuple[str, Any]]  # (custom_id, params), in input order
    problems: dict[str, str]  # custom_id -> why its params are invalid
    tag: str | None
    faults: Faults
    seed: int
    timeline: Timeline
    deleted: bool = False

    def ended(self, now: float) -> bool:
        return self.timeline.is_terminal(now)

    def archived(self, now: float) -> bool:
        return now >= self.timeline.created_at + RETENTION_SECONDS


def check_requests(body: Any) -> list[tuple[str, Any]]:
    """The (custom_id, params) pairs of a create body, or a 400 as the API would answer.
    Whether bad or duplicate custom_ids are refused synchronously is UNCONFIRMED."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise SimError(400, "requests: Field required")
    requests = body["requests"]
    if not requests:
        raise SimError(400, "requests: List should have at least 1 item after validation")
    if len(requests) > MAX_REQUESTS:
        raise SimError(400, f"requests: List should have at most {MAX_REQUESTS} items")
    pairs: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(requests):
        if not isinstance(item, dict) or "custom_id" not in item or "params" not in item:
            raise SimError(400, f"requests.{i}: custom_id and params are required")
        cid = item["custom_id"]
        if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
            raise SimError(
                400,
                f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
            )
        if cid in seen:
            raise SimError(400, f"requests.{i}.custom_id: Duplicate custom_id {cid!r}")
        seen.add(cid)
        pairs.append((cid, item["params"]))
    return pairs


def render_message_batch(b: AnthropicBatch, now: float, base_url: str) -> dict[str, Any]:
    """The MessageBatch object at `now`."""
    tl = b.timeline
    phase = tl.phase(now)
    ended = tl.is_terminal(now)
    counts = {
        "processing": len(b.requests),
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    if ended:
        ok, bad = tl.done_counts(now)
        left = len(b.requests) - ok - bad
        counts = {
            "processing": 0,
            "succeeded": ok,
            "errored": bad,
            "canceled": left if phase == "cancelled" else 0,
            "expired": left if phase == "expired" else 0,
        }
    archive_at = tl.created_at + RETENTION_SECONDS
    return {
        "id": b.id,
        "type": "message_batch",
        "processing_status": "ended" if ended else _PROCESSING[phase],
        "request_counts": counts,
        "ended_at": rfc3339(tl.ended_at()) if ended else None,
        "created_at": rfc3339(tl.created_at),
        "expires_at": rfc3339(tl.expires_at),
        "archived_at": rfc3339(archive_at) if ended and now >= archive_at else None,
        "cancel_initiated_at": rfc3339(tl.cancel_at) if tl.cancel_at is not None else None,
        "results_url": f"{base_url}/v1/messages/batches/{b.id}/results" if ended else None,
    }


def _errored(b: AnthropicBatch, cid: str, kind: FailureKind) -> dict[str, Any]:
    type_, message = _ERRORS[kind]
    if cid in b.problems:
        type_, message = "invalid_request_error", b.problems[cid]
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": type_, "message": message},
            "request_id": f"req_{short_id(b.id, cid, 'rid')}",
        },
    }


def results_jsonl(b: AnthropicBatch) -> bytes:
    """The results file: one line per request, in the order results were produced, with
    no blank lines (the SDK's JSONL decoder fails on one)."""
    tl = b.timeline
    params = dict(b.requests)
    lines: list[bytes] = []
    for plan in tl.finished(tl.processing_end()):
        cid = plan.custom_id
        if plan.failure is None:
            message = anthropic_message(
                params[cid],
                key=f"{b.seed}|{b.id}|{cid}",
                input_tokens=plan.input_tokens,
                output_tokens=plan.output_tokens,
            )
            result: dict[str, Any] = {"type": "succeeded", "message": message}
        else:
            result = _errored(b, cid, plan.failure)
        lines.append(orjson.dumps({"custom_id": cid, "result": result}))
    left_type = "expired" if tl.outcome() == "expired" else "canceled"
    for plan in tl.unfinished():
        lines.append(orjson.dumps({"custom_id": plan.custom_id, "result": {"type": left_type}}))
    return b"\n".join(lines) + (b"\n" if lines else b"")
