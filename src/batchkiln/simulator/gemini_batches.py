"""Gemini Batch Mode (Developer API, `v1beta`): files, the batch Operation at any instant,
and the results, as `google-genai` 3.3.0 reads them (spec section 5).

- A batch is Operation-shaped: `name` (`batches/{id}`), `done`, `metadata` (the
  GenerateContentBatch: `model`, `displayName`, `inputConfig`, `state`, times,
  `batchStats` with int64 counters as strings, `output`), and `response` / `error`
  once done.
- States on the wire: `BATCH_STATE_PENDING / RUNNING / SUCCEEDED / FAILED / CANCELLED /
  EXPIRED`. EXPIRED after 48 h pending or running, with no results (as the docs say).
- Results: a JSONL responses file (file input) or `inlinedResponses` (inline input), one
  entry per request with `key` (file) or `metadata.key` (inline) and either a
  GenerateContentResponse (camelCase `usageMetadata`) or an `error {code, message, status}`.
  Documented as input order; `Faults.out_of_order` gives finish order instead, and
  `Faults.drop_inline_keys` drops the echoed metadata of some inline responses.

UNCONFIRMED here: proto3 JSON leaves zero counters out of `batchStats` (we do too); the
exact error shape of a failed line (`error` with `code`, `message`, `status`); whether a
cancelled batch keeps the results of finished requests (we write them); the output file's
retention (we keep it 48 h like inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from batchkiln.simulator.anthropic_batches import rfc3339
from batchkiln.simulator.faults import FailureKind, Faults, unit
from batchkiln.simulator.model import estimate_tokens, output_tokens, reply_text, short_id, text_of
from batchkiln.simulator.timeline import Timeline

# Static project webhooks (Standard Webhooks, whsec_ HMAC), as of 2026-05. There is no
# documented cancelled event (a third-party guide names batch.cancelled: UNCONFIRMED),
# and the payload shape is UNCONFIRMED: we send the thin `{id, type, data: {id: name}}`.
EVENT_TYPES = {
    "completed": "batch.succeeded",
    "failed": "batch.failed",
    "expired": "batch.expired",
}
WINDOW_SECONDS = 48 * 3600.0  # pending or running longer than this: EXPIRED
FILE_TTL_SECONDS = 48 * 3600  # Files API: files are deleted after 48 h [DOC]
MAX_FILE_BYTES = 2 * 1024**3  # an input file up to 2 GB [DOC]
MAX_INLINE_BYTES = 20 * 1024 * 1024  # inline requests under 20 MB [DOC]
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"

_STATES = {
    "queued": "BATCH_STATE_PENDING",
    "processing": "BATCH_STATE_RUNNING",
    "finalizing": "BATCH_STATE_RUNNING",
    "completed": "BATCH_STATE_SUCCEEDED",
    "expired": "BATCH_STATE_EXPIRED",
    "cancelled": "BATCH_STATE_CANCELLED",
    "failed": "BATCH_STATE_FAILED",
}
# failure kind -> (HTTP code, canonical status, message) of a failed line
ERRORS: dict[FailureKind, tuple[int, str, str]] = {
    "timeout": (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    "server_error": (500, "INTERNAL", "An internal error has occurred."),
    "overloaded": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "invalid_request": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
}


@dataclass
class GeminiFile:
    """One file of the Files API (uploaded input, or a generated responses file)."""

    name: str  # files/{id}
    display_name: str | None
    mime_type: str
    content: bytes
    created_at: float
    source: Literal["UPLOADED", "GENERATED"] = "UPLOADED"
    deleted: bool = False

    @property
    def expires_at(self) -> float:
        return self.created_at + FILE_TTL_SECONDS

    def gone(self, now: float) -> bool:
        return self.deleted or now >= self.expires_at

    def to_json(self, base_url: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "mimeType": self.mime_type,
            "sizeBytes": str(len(self.content)),
            "createTime": rfc3339(self.created_at),
            "updateTime": rfc3339(self.created_at),
            "expirationTime": rfc3339(self.expires_at),
            "sha256Hash": short_id(self.name, len(self.content), length=44),
            "uri": f"{base_url}/v1beta/{self.name}",
            "state": "ACTIVE",
            "source": self.source,
        }
        if self.display_name is not None:
            data["displayName"] = self.display_name
        if self.source == "GENERATED":
            data["downloadUri"] = f"{base_url}/download/v1beta/{self.name}:download?alt=media"
        return data


@dataclass
class UploadSession:
    """A resumable upload between `start` and `finalize`."""

    file: GeminiFile
    size: int
    data: bytearray = field(default_factory=bytearray)


@dataclass
class GeminiRequest:
    """One request of a batch: its key (None when an inline request has none)."""

    key: str | None
    request: Any
    problem: str | None = None  # why the model endpoint would answer 400

    def plan_id(self, index: int) -> str:
        return self.key if self.key is not None else f"#{index}"


@dataclass
class GeminiBatch:
    """One batch; its state is read off `timeline` at each request."""

    id: str  # the part after "batches/"
    model: str  # models/...
    display_name: str
    input_file: str | None  # files/... (file input), None for inline
    requests: list[GeminiRequest]
    tag: str | None
    faults: Faults
    seed: int
    timeline: Timeline
    failure_message: str | None = None  # why a FAILED batch failed
    output_file: str | None = None  # files/... once written
    notified: bool = False  # its webhook event is queued
    deleted: bool = False

    @property
    def name(self) -> str:
        return f"batches/{self.id}"

    @property
    def inline(self) -> bool:
        return self.input_file is None


def request_problem(request: Any) -> str | None:
    """Why a GenerateContentRequest would be refused (INVALID_ARGUMENT)."""
    if not isinstance(request, dict):
        return "request: must be a GenerateContentRequest object"
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    return None


def parse_input_file(content: bytes) -> tuple[list[GeminiRequest], str | None]:
    """The requests of a JSONL input file, or the reason the whole batch fails."""
    requests: list[GeminiRequest] = []
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [], f"Invalid JSON on line {number} of the input file."
        if not isinstance(line, dict) or "request" not in line:
            return [], f"Line {number} of the input file has no request."
        key = line.get("key")
        requests.append(
            GeminiRequest(
                str(key) if key is not None else None,
                line["request"],
                request_problem(line["request"]),
            )
        )
    if not requests:
        return [], "The input file holds no requests."
    return requests, None


def input_tokens(request: Any) -> int:
    if not isinstance(request, dict):
        return 0
    system = request.get("systemInstruction")
    extra = estimate_tokens(text_of(system)) if system else 0
    return 3 + estimate_tokens(text_of(request.get("contents"))) + extra


def output_cap(request: Any) -> int | None:
    config = request.get("generationConfig") if isinstance(request, dict) else None
    value = config.get("maxOutputTokens") if isinstance(config, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def thinking(request: Any) -> bool:
    config = request.get("generationConfig") if isinstance(request, dict) else None
    budget = config.get("thinkingConfig", {}).get("thinkingBudget") if config else None
    return isinstance(budget, int) and budget > 0


def planned_output(key: str, request: Any, tokens_in: int) -> int:
    return output_tokens(key, tokens_in, output_cap(request))


def generate_content_response(
    b: GeminiBatch, req: GeminiRequest, plan_id: str, tokens_in: int, tokens_out: int
) -> dict[str, Any]:
    """The GenerateContentResponse the model would have answered with."""
    key = f"{b.seed}|{b.id}|{plan_id}"
    thoughts = tokens_out // 3 if thinking(req.request) else 0
    candidates = tokens_out - thoughts
    usage: dict[str, Any] = {
        "promptTokenCount": tokens_in,
        "candidatesTokenCount": candidates,
        "totalTokenCount": tokens_in + tokens_out,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens_in}],
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    capped = tokens_out == output_cap(req.request)
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": reply_text(key, candidates)}], "role": "model"},
                "finishReason": "MAX_TOKENS" if capped else "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": usage,
        "modelVersion": b.model.removeprefix("models/"),
        "responseId": short_id(key, "response", length=22),
    }


def _entries(b: GeminiBatch) -> list[tuple[int, dict[str, Any]]]:
    """(input index, result entry without its key) of every finished request."""
    tl = b.timeline
    out: list[tuple[int, dict[str, Any]]] = []
    finished = tl.finished(tl.processing_end())
    if not b.faults.out_of_order:
        finished = sorted(finished, key=lambda p: p.index)  # documented: input order
    for plan in finished:
        req = b.requests[plan.index]
        if plan.failure is None:
            body = generate_content_response(
                b, req, plan.custom_id, plan.input_tokens, plan.output_tokens
            )
            out.append((plan.index, {"response": body}))
        else:
            code, status, message = ERRORS[plan.failure]
            if req.problem is not None:
                message = req.problem
            error = {"code": code, "message": message, "status": status}
            out.append((plan.index, {"error": error}))
    return out


def responses_jsonl(b: GeminiBatch) -> bytes:
    """The responses file of a file-input batch: one line per finished request."""
    lines = []
    for index, entry in _entries(b):
        key = b.requests[index].key
        lines.append(orjson.dumps({"key": key, **entry} if key is not None else entry))
    return b"\n".join(lines) + (b"\n" if lines else b"")


def inlined_responses(b: GeminiBatch) -> list[dict[str, Any]]:
    """The inline responses, each with the request's metadata echoed (unless dropped)."""
    out = []
    for index, entry in _entries(b):
        req = b.requests[index]
        dropped = unit(b.seed, b.id, index, "drop-key") < b.faults.drop_inline_keys
        if req.key is not None and not dropped:
            entry = {**entry, "metadata": {"key": req.key}}
        out.append(entry)
    return out


def has_output(b: GeminiBatch, phase: str) -> bool:
    """Whether this terminal phase comes with results (not FAILED or EXPIRED)."""
    return phase in ("completed", "cancelled")


def _stats(b: GeminiBatch, now: float) -> dict[str, str]:
    tl = b.timeline
    n = len(b.requests)
    ok, bad = tl.done_counts(now) if tl.started(now) else (0, 0)
    counts = {
        "requestCount": n,
        "successfulRequestCount": ok,
        "failedRequestCount": bad,
        "pendingRequestCount": n - ok - bad,
    }
    return {k: str(v) for k, v in counts.items() if v}  # proto3 JSON omits zeros


def render_batch(b: GeminiBatch, now: float, base_url: str) -> dict[str, Any]:
    """The batch Operation at `now` (`output` is filled in by the caller once written)."""
    tl = b.timeline
    phase = tl.phase(now)
    ended = phase in ("completed", "expired", "cancelled", "failed")
    if phase == "cancelling":
        state = "BATCH_STATE_RUNNING" if tl.started(now) else "BATCH_STATE_PENDING"
    else:
        state = _STATES[phase]
    metadata: dict[str, Any] = {
        "@type": BATCH_TYPE,
        "name": b.name,
        "model": b.model,
        "displayName": b.display_name,
        "inputConfig": {"fileName": b.input_file} if b.input_file else {"requests": {}},
        "createTime": rfc3339(tl.created_at),
        "updateTime": rfc3339(min(now, tl.ended_at()) if ended else now),
        "state": state,
        "batchStats": _stats(b, now),
    }
    operation: dict[str, Any] = {"name": b.name, "metadata": metadata, "done": ended}
    if ended:
        metadata["endTime"] = rfc3339(tl.ended_at())
    if ended and has_output(b, phase):
        if b.inline:
            output: dict[str, Any] = {
                "inlinedResponses": {"inlinedResponses": inlined_responses(b)}
            }
        else:
            output = {"responsesFile": b.output_file} if b.output_file else {}
        if output:
            metadata["output"] = output
            operation["response"] = {"@type": OUTPUT_TYPE, **output}
    if phase == "failed":
        operation["error"] = {"code": 400, "message": b.failure_message or "The batch failed."}
    elif phase == "expired":
        operation["error"] = {
            "code": 4,
            "message": "The batch was pending or running for more than 48 hours.",
        }
    return operation
