"""OpenAI batches: the input file's validation, the Batch object at any instant, and the
output and error files written when a batch ends.

Validation codes other than `token_limit_exceeded` come from third-party reports
(`invalid_json_line`, `duplicate_custom_id`, `url_mismatch`, `model_mismatch`,
`empty_file`, `too_many_tasks`) and are UNCONFIRMED, as is 1-based line numbering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from batchkiln.simulator.faults import FailureKind, Faults, unit
from batchkiln.simulator.files import FILE_TTL_SECONDS, FileRecord, FileStore
from batchkiln.simulator.model import openai_body_problem, openai_response_body, short_id
from batchkiln.simulator.timeline import RequestPlan, Timeline

MAX_REQUESTS = 50_000
STATUS = {
    "queued": "validating",
    "processing": "in_progress",
    "finalizing": "finalizing",
    "cancelling": "cancelling",
    "completed": "completed",
    "expired": "expired",
    "cancelled": "cancelled",
    "failed": "failed",
}
EVENT_TYPES = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
}


@dataclass(frozen=True)
class InputLine:
    custom_id: str
    body: Any
    line: int  # 1-based


@dataclass
class OpenAIBatch:
    """One OpenAI batch; its status is read off `timeline` at each request."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    model: str | None
    tag: str | None
    faults: Faults
    seed: int
    lines: list[InputLine]
    timeline: Timeline
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_ttl: int = FILE_TTL_SECONDS
    output_file_id: str | None = None
    error_file_id: str | None = None
    settled: bool = False

    def status(self, now: float) -> str:
        return STATUS[self.timeline.phase(now)]


def batch_error(
    code: str, message: str, line: int | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def parse_input(content: bytes, endpoint: str) -> tuple[list[InputLine], list[dict[str, Any]]]:
    """The input file's request lines, and the validation errors that fail the batch."""
    lines: list[InputLine] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    raw_lines = [(n, raw) for n, raw in enumerate(content.split(b"\n"), start=1) if raw.strip()]
    if not raw_lines:
        return [], [batch_error("empty_file", "The input file is empty.")]
    if len(raw_lines) > MAX_REQUESTS:
        errors.append(
            batch_error("too_many_tasks", f"The batch has more than {MAX_REQUESTS} requests.")
        )
    for n, raw in raw_lines:
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            errors.append(
                batch_error("invalid_json_line", "This line is not parseable as valid JSON.", n)
            )
            continue
        if not isinstance(item, dict):
            errors.append(batch_error("invalid_json_line", "Each line must be a JSON object.", n))
            continue
        missing = [k for k in ("custom_id", "method", "url", "body") if k not in item]
        if missing:
            errors.append(
                batch_error(
                    "invalid_request", f"Missing required field '{missing[0]}'.", n, missing[0]
                )
            )
            continue
        cid = item["custom_id"]
        if not isinstance(cid, str) or not cid:
            errors.append(
                batch_error(
                    "invalid_request", "custom_id must be a non-empty string.", n, "custom_id"
                )
            )
            continue
        if item["method"] != "POST":
            errors.append(batch_error("invalid_request", "The method must be POST.", n, "method"))
        if item["url"] != endpoint:
            errors.append(
                batch_error(
                    "url_mismatch",
                    f"The url {item['url']!r} does not match the batch endpoint {endpoint!r}.",
                    n,
                    "url",
                )
            )
        if cid in seen:
            errors.append(
                batch_error(
                    "duplicate_custom_id",
                    f"The custom_id {cid!r} is not unique in the file.",
                    n,
                    "custom_id",
                )
            )
        seen.add(cid)
        body = item["body"]
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            models.add(body["model"])
            if len(models) > 1:
                errors.append(
                    batch_error(
                        "model_mismatch",
                        "All requests in a batch must use the same model.",
                        n,
                        "body.model",
                    )
                )
                models = {next(iter(models))}
        lines.append(InputLine(cid, body, n))
    return lines, errors[:1000]


def forced_rejection(
    kind: str, *, model: str | None, limit: int | None, seed: int, batch_id: str, n_lines: int
) -> dict[str, Any]:
    """The validation error a `reject_batch` fault produces."""
    if kind == "invalid_json_line":
        line = 1 + int(unit(seed, batch_id, "reject_line") * max(n_lines, 1))
        return batch_error("invalid_json_line", "This line is not parseable as valid JSON.", line)
    return token_limit_error(model, limit)


def token_limit_error(model: str | None, limit: int | None) -> dict[str, Any]:
    shown = f"{limit:,}" if limit is not None else "2,000,000"
    return batch_error(
        "token_limit_exceeded",
        f"Enqueued token limit reached for {model or 'the model'} in organization org-sim."
        f" Limit: {shown} enqueued tokens. Please try again once some in_progress batches"
        " have been completed.",
    )


def render_batch(b: OpenAIBatch, now: float) -> dict[str, Any]:
    """The Batch object as GET /v1/batches/{id} returns it at `now`."""
    tl = b.timeline
    phase = tl.phase(now)
    started = tl.started(now)
    ok, bad = tl.done_counts(now) if started else (0, 0)
    tokens_in, tokens_out = tl.usage(now) if started else (0, 0)
    ended = int(tl.ended_at())

    def at(cond: bool, when: float) -> int | None:
        return int(when) if cond else None

    return {
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "model": b.model,
        "errors": {"object": "list", "data": b.errors} if phase == "failed" else None,
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": STATUS[phase],
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": int(tl.created_at),
        "in_progress_at": at(started, tl.start_at),
        "expires_at": int(tl.expires_at),
        "finalizing_at": at(tl.outcome() == "completed" and now >= tl.natural_end, tl.natural_end),
        "completed_at": at(phase == "completed", ended),
        "failed_at": at(phase == "failed", ended),
        "expired_at": at(phase == "expired", ended),
        "cancelling_at": at(tl.cancel_at is not None, tl.cancel_at or 0.0),
        "cancelled_at": at(phase == "cancelled", ended),
        "request_counts": {
            "total": len(tl.plans) if started else 0,
            "completed": ok,
            "failed": bad,
        },
        # Requests that expired or were cancelled unprocessed count as neither completed
        # nor failed here (they are in the error file): UNCONFIRMED.
        "usage": {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        },
        "metadata": b.metadata,
    }


def _failure_line(
    b: OpenAIBatch, plan: RequestPlan, kind: FailureKind, body: Any
) -> dict[str, Any]:
    rid = f"req_{short_id(b.id, plan.custom_id, 'rid')}"
    if kind == "timeout":
        # Shape 3 (`response: null`); the code `request_timeout` is from [3P] only: UNCONFIRMED.
        return {
            "response": None,
            "error": {
                "code": "request_timeout",
                "message": "The request timed out before the model produced a response.",
            },
        }
    if kind == "invalid_request":
        problem = openai_body_problem(b.endpoint, body)
        if problem is not None:
            message, param = problem
            err = {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": "missing_required_parameter" if param else "invalid_request",
            }
        else:
            err = {
                "message": f"This model's maximum context length is 128000 tokens. However,"
                f" your messages resulted in {128000 + plan.input_tokens} tokens. Please"
                " reduce the length of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        status = 400
    elif kind == "credit_balance":
        status = 429
        err = {
            "message": "You exceeded your current quota, please check your plan and billing"
            " details.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    elif kind == "overloaded":
        status = 503
        err = {
            "message": "The engine is currently overloaded, please try again later.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    else:
        status = 500
        err = {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    return {
        "response": {"status_code": status, "request_id": rid, "body": {"error": err}},
        "error": None,
    }


def result_lines(b: OpenAIBatch) -> tuple[list[bytes], list[bytes]]:
    """The output file's lines (successes) and the error file's lines (failures, then the
    requests that never ran), each in the order the results were produced."""
    tl = b.timeline
    bodies = {ln.custom_id: ln.body for ln in b.lines}
    created = int(tl.ended_at())
    out: list[bytes] = []
    err: list[bytes] = []
    for plan in tl.finished(tl.processing_end()):
        head = {"id": f"batch_req_{short_id(b.id, plan.custom_id)}", "custom_id": plan.custom_id}
        body = bodies[plan.custom_id]
        if plan.failure is None:
            response = openai_response_body(
                b.endpoint,
                body,
                key=f"{b.seed}|{b.id}|{plan.custom_id}",
                created=created,
                input_tokens=plan.input_tokens,
                output_tokens=plan.output_tokens,
            )
            line = {
                **head,
                "response": {
                    "status_code": 200,
                    "request_id": f"req_{short_id(b.id, plan.custom_id)}",
                    "body": response,
                },
                "error": None,
            }
            out.append(orjson.dumps(line))
        else:
            err.append(orjson.dumps({**head, **_failure_line(b, plan, plan.failure, body)}))
    if tl.outcome() == "expired":
        code, message = (
            "batch_expired",
            ("This request could not be executed before the completion window expired."),
        )
    else:  # cancelled; the code `batch_cancelled` is from [3P] only: UNCONFIRMED
        code, message = "batch_cancelled", "This request was not executed: the batch was cancelled."
    for plan in tl.unfinished():
        err.append(
            orjson.dumps(
                {
                    "id": f"batch_req_{short_id(b.id, plan.custom_id)}",
                    "custom_id": plan.custom_id,
                    "response": None,
                    "error": {"code": code, "message": message},
                }
            )
        )
    return out, err


def settle(b: OpenAIBatch, files: FileStore, now: float) -> bool:
    """Write the output and error files once the batch has ended; True the first time."""
    tl = b.timeline
    if b.settled or not tl.is_terminal(now):
        return False
    b.settled = True
    if tl.outcome() == "failed" or not tl.started(tl.ended_at()):
        return True
    created = int(tl.ended_at())
    out, err = result_lines(b)
    # the request bodies were needed for the results only (the input file keeps them);
    # the ids and line numbers stay, for whoever inspects the batch
    b.lines = [InputLine(ln.custom_id, None, ln.line) for ln in b.lines]
    for kind, lines in (("output", out), ("error", err)):
        if not lines:
            continue  # a batch whose requests all failed has no output file, as the real one
        file_id = f"file-{short_id(b.id, kind, length=22)}"
        files.add(
            FileRecord(
                id=file_id,
                filename=f"batch_{b.id}_{kind}.jsonl",
                purpose="batch_output",
                content=b"\n".join(lines) + b"\n",
                created_at=created,
                expires_at=created + b.output_ttl,
            )
        )
        if kind == "output":
            b.output_file_id = file_id
        else:
            b.error_file_id = file_id
    return True
