"""Every real vendor payload in `../shared/realpayloads/*.jsonl` parses through the
adapters, maps to a state and classifies as the vendor means it.

The records are read where they live (never copied into the project): the folder
`shared/realpayloads` next to the repository (or next to a parent of it, for a
worktree). Absent: skipped with a reason; under CI=true: a failure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from anthropic.types.messages import MessageBatch
from openai.types import Batch

from batchkiln.lifecycle import STATE_INFO, State
from batchkiln.providers import FailureClass, Outcome
from batchkiln.providers import anthropic as anth
from batchkiln.providers import openai as oai
from batchkiln.providers.failures import classify_batch_errors

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[3]
KINDS = ("openai_batch", "openai_line", "anthropic_batch", "anthropic_line")
R, P, A = FailureClass.RETRYABLE, FailureClass.PERMANENT, FailureClass.ACCOUNT


def corpus_dir() -> Path | None:
    """`../shared/realpayloads` from the repository, or from the nearest parent that has it."""
    for parent in REPO.parents:
        candidate = parent / "shared" / "realpayloads"
        if candidate.is_dir():
            return candidate
    return None


def load_records() -> list[dict[str, Any]]:
    folder = corpus_dir()
    if folder is None:
        return []
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        for number, text in enumerate(path.read_bytes().splitlines(), 1):
            if text.strip():
                record = orjson.loads(text)
                record["_at"] = f"{path.name}:{number}"
                records.append(record)
    return records


RECORDS = load_records()


def absent(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the real-payload suite must run, not skip)")
    pytest.skip(reason)


def by_kind(kind: str) -> list[Any]:
    chosen = [r for r in RECORDS if r["kind"] == kind]
    if not chosen:  # one placeholder case, so the absence is reported, not silent
        return [pytest.param(None, id=f"{kind}-absent")]
    return [pytest.param(r, id=r["id"]) for r in chosen]


def wire_bytes(record: dict[str, Any] | None) -> bytes:
    """The line as the vendor sent it when the source kept it (`raw`), else the payload."""
    if record is None:
        absent(f"no real payloads at {REPO.parent}/shared/realpayloads (or above)")
        raise AssertionError  # unreachable: absent() raises
    raw = record.get("raw")
    return raw.encode() if isinstance(raw, str) else orjson.dumps(record["payload"])


def test_the_corpus_is_read_whole() -> None:
    """Every record of every corpus file is read, and each has a kind we handle."""
    if not RECORDS:
        absent(f"no real payloads at {REPO.parent}/shared/realpayloads (or above)")
    assert {r["kind"] for r in RECORDS} <= set(KINDS), [r["_at"] for r in RECORDS]
    assert len({r["id"] for r in RECORDS}) == len(RECORDS)
    assert len(RECORDS) >= 270  # the corpus as first recorded; it may only grow


# --- batches ---------------------------------------------------------------------

# What the vendor means by each OpenAI status; `completed` by its counts (it ran).
OPENAI_MEANS = {
    "validating": State.PENDING,
    "in_progress": State.IN_PROGRESS,
    "finalizing": State.IN_PROGRESS,
    "cancelling": State.CANCELLING,
    "failed": State.FAILED,
    "expired": State.EXPIRED,
    "cancelled": State.CANCELLED,
}

# Records whose meaning the corpus notes spell out; each failed on the first pass.
NOTED_STATES = {
    "tr-001": State.PARTIAL,  # `completed`, 9 of 9 failed: it ran, so partial (0 succeeded)
    "tr-027": State.PARTIAL,  # Anthropic `ended`, 5 of 5 errored: partial, not failed
}


@pytest.mark.parametrize("record", by_kind("openai_batch"))
def test_openai_batch(record: dict[str, Any] | None) -> None:
    """An OpenAI Batch object parses through the SDK type and maps to what the vendor means."""
    payload = orjson.loads(wire_bytes(record))
    assert record is not None
    vb = oai.to_vendor_batch(Batch.model_validate(payload))
    counts = payload.get("request_counts") or {"total": 0, "completed": 0, "failed": 0}
    assert (vb.total, vb.succeeded, vb.failed) == (
        counts["total"],
        counts["completed"],
        counts["failed"],
    )
    status = payload["status"]
    if status == "completed":
        expected = State.PARTIAL if counts["failed"] else State.COMPLETED
    else:
        expected = OPENAI_MEANS[status]
    assert vb.state == expected == NOTED_STATES.get(record["id"], expected)
    assert vb.state in STATE_INFO and vb.vendor_status == status
    codes = [e.code for e in vb.errors]
    assert codes == [e["code"] for e in (payload.get("errors") or {}).get("data") or []]
    if status == "failed":
        # "Enqueued token limit reached ... try again": the only transient rejection
        transient = codes == ["token_limit_exceeded"]
        assert classify_batch_errors(codes) == (R if transient else P)


@pytest.mark.parametrize("record", by_kind("anthropic_batch"))
def test_anthropic_batch(record: dict[str, Any] | None) -> None:
    """An Anthropic MessageBatch parses through the SDK type and maps to what the vendor means."""
    payload = orjson.loads(wire_bytes(record))
    assert record is not None
    vb = anth.to_vendor_batch(MessageBatch.model_validate(payload))
    rc = payload["request_counts"]
    assert vb.total == sum(rc.values())
    assert (vb.succeeded, vb.failed) == (
        rc["succeeded"],
        rc["errored"] + rc["canceled"] + rc["expired"],
    )
    status = payload["processing_status"]
    if status == "in_progress":
        expected = State.IN_PROGRESS
    elif status == "canceling":
        expected = State.CANCELLING
    elif payload.get("cancel_initiated_at"):
        expected = State.CANCELLED
    elif rc["expired"]:
        expected = State.EXPIRED
    elif rc["succeeded"] == vb.total:
        expected = State.COMPLETED
    else:
        expected = State.PARTIAL  # it ran; some (maybe none) succeeded
    assert vb.state == expected == NOTED_STATES.get(record["id"], expected)


# --- result lines ------------------------------------------------------------------

NOTED_CLASSES = {
    "tr-016": R,  # status_code 0, body {}: no HTTP response at all
    "tr-030": A,  # "Your credit balance is too low": fixed by a top-up, not by waiting
}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@pytest.mark.parametrize("record", by_kind("openai_line"))
def test_openai_line(record: dict[str, Any] | None) -> None:
    """An OpenAI output/error line gives its outcome, usage and failure class."""
    raw = wire_bytes(record)
    assert record is not None
    data = orjson.loads(raw)
    line = oai.parse_line(raw)
    assert line.wire_id == data["custom_id"] and line.raw == raw
    response = _mapping(data.get("response"))
    status = response.get("status_code")
    if isinstance(status, int) and 200 <= status < 300:
        assert (line.outcome, line.failure, line.billed) == (Outcome.SUCCEEDED, None, True)
        usage = _mapping(_mapping(response.get("body")).get("usage"))
        if "input_tokens" in usage:  # responses API
            details = _mapping(usage.get("input_tokens_details"))
            expected = (
                usage["input_tokens"],
                details.get("cached_tokens", 0),
                usage["output_tokens"],
            )
        elif usage:  # chat completions, embeddings
            details = _mapping(usage.get("prompt_tokens_details"))
            expected = (
                usage["prompt_tokens"],
                details.get("cached_tokens", 0),
                usage.get("completion_tokens", 0),
            )
        else:
            expected = (0, 0, 0)
        got = line.usage
        assert (got.input_tokens, got.cached_input_tokens, got.output_tokens) == expected
        return
    assert line.outcome != Outcome.SUCCEEDED and not line.billed and line.error
    code = _mapping(data.get("error")).get("code")
    if code == "batch_expired":
        assert (line.outcome, line.failure) == (Outcome.EXPIRED, R)
    elif code == "batch_cancelled":
        assert (line.outcome, line.failure) == (Outcome.CANCELLED, R)
    elif status == 0 or (isinstance(status, int) and (status >= 500 or status == 429)):
        assert (line.outcome, line.failure) == (Outcome.ERRORED, R)
    else:
        assert (line.outcome, line.failure) == (Outcome.ERRORED, P)
    assert line.failure == NOTED_CLASSES.get(record["id"], line.failure)


ANTHROPIC_RETRYABLE = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


@pytest.mark.parametrize("record", by_kind("anthropic_line"))
def test_anthropic_line(record: dict[str, Any] | None) -> None:
    """An Anthropic results line gives its outcome, usage (cache reads and writes apart)
    and failure class."""
    raw = wire_bytes(record)
    assert record is not None
    data = orjson.loads(raw)
    line = anth.parse_line(raw)
    assert line.wire_id == data["custom_id"] and line.raw == raw
    result = data["result"]
    kind = result["type"]
    if kind == "succeeded":
        assert (line.outcome, line.failure, line.billed) == (Outcome.SUCCEEDED, None, True)
        usage = _mapping(result["message"].get("usage"))
        read = usage.get("cache_read_input_tokens") or 0
        written = usage.get("cache_creation_input_tokens") or 0
        split = _mapping(usage.get("cache_creation"))
        one_hour = split.get("ephemeral_1h_input_tokens") or 0
        got = line.usage
        assert got.input_tokens == usage["input_tokens"] + read + written
        assert got.cached_input_tokens == read
        assert got.output_tokens == usage["output_tokens"]
        assert (got.cache_write_5m_tokens, got.cache_write_1h_tokens) == (
            written - one_hour,
            one_hour,
        )
        return
    assert not line.billed
    if kind == "expired":
        assert (line.outcome, line.failure) == (Outcome.EXPIRED, R)
    elif kind == "canceled":
        assert (line.outcome, line.failure) == (Outcome.CANCELLED, R)
    else:
        inner = _mapping(_mapping(result.get("error")).get("error"))
        message = str(inner.get("message") or "").lower()
        if "credit balance" in message or inner.get("type") == "billing_error":
            expected = A
        elif inner.get("type") in ANTHROPIC_RETRYABLE:
            expected = R
        else:
            expected = P
        assert (line.outcome, line.failure) == (Outcome.ERRORED, expected)
    assert line.failure == NOTED_CLASSES.get(record["id"], line.failure)
